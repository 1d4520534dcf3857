//! redtail behind `tower_sessions` in an axum app: log in, use the cookie, log out, and the old
//! cookie is refused; on every backend.

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    routing::{get, post},
};
use http_body_util::BodyExt;
use redtail_core::{Cmd, Cursor};
use redtail_session::TowerSessionStore;
use redtail_tests::{Env, Target, TestResult, for_each_backend};
use tower::ServiceExt;
use tower_sessions::{Session, SessionManagerLayer};

for_each_backend!(login_cookie_logout_and_the_old_cookie_is_refused);

async fn login(session: Session) -> StatusCode {
    // A new id at login, so a session id planted before login is worthless.
    let cycled = session.cycle_id().await;
    let stored = session.insert("user", "ada").await;
    if cycled.is_ok() && stored.is_ok() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR }
}

async fn me(session: Session) -> Result<String, StatusCode> {
    match session.get::<String>("user").await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(StatusCode::UNAUTHORIZED),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn logout(session: Session) -> StatusCode {
    match session.flush().await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> Result<(StatusCode, Option<String>, String), Box<dyn std::error::Error + Send + Sync>> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app.clone().oneshot(request.body(Body::empty())?).await?;
    let status = response.status();
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = String::from_utf8(response.into_body().collect().await?.to_bytes().to_vec())?;
    Ok((status, cookie, body))
}

async fn login_cookie_logout_and_the_old_cookie_is_refused(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = TowerSessionStore::new(env.backend.clone(), env.ns.child("tower"));
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .layer(SessionManagerLayer::new(store).with_secure(false));

    assert_eq!(send(&app, "GET", "/me", None).await?.0, StatusCode::UNAUTHORIZED);
    let (status, cookie, _) = send(&app, "POST", "/login", None).await?;
    assert_eq!(status, StatusCode::OK);
    let cookie = cookie.ok_or("login set no cookie")?;
    let (status, _, body) = send(&app, "GET", "/me", Some(&cookie)).await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ada"));
    // What Redis holds is no usable cookie: neither the key nor the value carries the id.
    let id = cookie.split_once('=').map(|(_, id)| id).ok_or("a cookie without a value")?;
    let (mut cursor, mut keys) = (Cursor::START, Vec::new());
    loop {
        // On a cluster the scan walks every primary, a page at a time.
        let page = env.backend.scan(cursor, &env.ns.child("tower").pattern([] as [&str; 0]), 100).await?;
        keys.extend(page.keys);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(keys.len(), 1, "one session stored");
    let stored = env.backend.call(Cmd::new("GET").key(&keys[0])).await?.into_bytes()?;
    let stored = String::from_utf8_lossy(&stored);
    // The id in any form: as the cookie writes it, or as the number tower-sessions serializes.
    let number = id.parse::<tower_sessions::session::Id>()?.0.to_string();
    for form in [id, number.as_str()] {
        assert!(!keys[0].to_string().contains(form) && !stored.contains(form), "the id is at rest: {stored}");
    }
    assert!(stored.contains("ada"), "the data is stored: {stored}");
    assert_eq!(send(&app, "POST", "/logout", Some(&cookie)).await?.0, StatusCode::NO_CONTENT);
    assert_eq!(
        send(&app, "GET", "/me", Some(&cookie)).await?.0,
        StatusCode::UNAUTHORIZED,
        "the old cookie still works"
    );
    Ok(())
}
