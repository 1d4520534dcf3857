//! redtail behind `tower_sessions` in an axum app: log in, use the cookie, log out, and the old
//! cookie is refused; on every backend.

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    routing::{get, post},
};
use http_body_util::BodyExt;
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
    assert_eq!(send(&app, "POST", "/logout", Some(&cookie)).await?.0, StatusCode::NO_CONTENT);
    assert_eq!(
        send(&app, "GET", "/me", Some(&cookie)).await?.0,
        StatusCode::UNAUTHORIZED,
        "the old cookie still works"
    );
    Ok(())
}
