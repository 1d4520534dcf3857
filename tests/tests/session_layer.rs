//! `SessionLayer` in a real axum app, on every backend: the cookie's attributes, the round trips
//! a request costs, rotation, logout, forged cookies, and Redis down.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    routing::{get, post},
};
use http_body_util::BodyExt;
use redtail_session::{CurrentSession, NewSession, SameSite, SessionConfig, SessionCookie, SessionLayer, SessionStore};
use redtail_tests::{Counted, Env, Target, TestResult, for_each_backend};
use tower::ServiceExt;

for_each_backend!(a_session_from_login_to_logout_through_the_cookie, a_login_replaces_the_session_it_came_with);

type Store = SessionStore<String>;

async fn login(session: CurrentSession<String>) -> StatusCode {
    match session.login("ada", "admin".to_owned(), NewSession::standard()).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn me(session: CurrentSession<String>) -> Result<String, StatusCode> {
    session.get().map(|s| format!("{}:{}", s.user_id, s.data)).ok_or(StatusCode::UNAUTHORIZED)
}

async fn promote(session: CurrentSession<String>) -> StatusCode {
    let updated = session.update("owner".to_owned()).await;
    let rotated = session.rotate().await;
    match (updated, rotated) {
        (Ok(true), Ok(true)) => StatusCode::OK,
        (Ok(false), _) | (_, Ok(false)) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn logout(session: CurrentSession<String>) -> StatusCode {
    match session.logout().await {
        Ok(true) => StatusCode::NO_CONTENT,
        Ok(false) => StatusCode::UNAUTHORIZED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A response's status, `Set-Cookie` header and body.
struct Reply {
    status: StatusCode,
    set_cookie: Option<String>,
    body: String,
}

impl Reply {
    /// The `name=value` part of the cookie set.
    fn cookie(&self) -> Option<String> {
        self.set_cookie.as_deref().and_then(|c| c.split(';').next()).map(str::to_owned)
    }

    fn clears_cookie(&self) -> bool {
        self.set_cookie.as_deref().is_some_and(|c| c.contains("Max-Age=0"))
    }
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app.clone().oneshot(request.body(Body::empty())?).await?;
    let status = response.status();
    let set_cookies: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    assert!(set_cookies.len() <= 1, "one request set the cookie more than once: {set_cookies:?}");
    let body = String::from_utf8(response.into_body().collect().await?.to_bytes().to_vec())?;
    Ok(Reply { status, set_cookie: set_cookies.into_iter().next(), body })
}

fn app(store: &Arc<Store>, cookie: SessionCookie) -> Result<Router, redtail_session::Error> {
    Ok(Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/promote", post(promote))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(Arc::clone(store), cookie)?))
}

async fn a_session_from_login_to_logout_through_the_cookie(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let counted = Counted::new(Arc::clone(&env.backend));
    // A slide is due once the expiry would move by more than 2 s of a 10 s idle lifetime.
    let config = SessionConfig::default()
        .with_namespace(env.ns.child("s"))
        .with_idle_lifetimes(Duration::from_secs(10), Duration::from_secs(20))
        .with_extend_fraction(0.2);
    let store = Arc::new(Store::new(Arc::clone(&counted) as Arc<dyn redtail_core::Backend>, config)?);
    let app = app(&store, SessionCookie::host_only().with_same_site(SameSite::Strict))?;
    let trips = |f: usize| counted.calls() - f;

    // Anonymous: nothing sent to Redis.
    let before = counted.calls();
    let reply = send(&app, "GET", "/me", None).await?;
    assert_eq!((reply.status, trips(before)), (StatusCode::UNAUTHORIZED, 0));
    assert_eq!(reply.set_cookie, None);

    // Login sets the cookie with the configured attributes and the session's lifetime.
    let reply = send(&app, "POST", "/login", None).await?;
    assert_eq!(reply.status, StatusCode::OK);
    let set = reply.set_cookie.clone().ok_or("login set no cookie")?;
    assert!(set.starts_with("__Host-rt_session="), "{set}");
    for attribute in ["; Path=/", "; HttpOnly", "; Secure", "; SameSite=Strict"] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    assert!(!set.contains("Domain"), "a __Host- cookie has no Domain: {set}");
    let max_age: u64 =
        set.split("; ").find_map(|a| a.strip_prefix("Max-Age=")).and_then(|v| v.parse().ok()).ok_or("no Max-Age")?;
    assert!((8..=10).contains(&max_age), "Max-Age {max_age} for a 10 s session");
    let cookie = reply.cookie().ok_or("no cookie value")?;

    // A request with no slide due: one round trip, and the cookie is left alone.
    let before = counted.calls();
    let reply = send(&app, "GET", "/me", Some(&cookie)).await?;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ada:admin"));
    assert_eq!(trips(before), 1, "a request without a slide due costs one round trip");
    assert_eq!(reply.set_cookie, None);

    // Forged, truncated or foreign cookies: refused without touching Redis, and cleared.
    let token = cookie.split_once('=').map(|(_, t)| t.to_owned()).ok_or("no token")?;
    for forged in [
        format!("__Host-rt_session={}", &token[..token.len() - 1]),
        "__Host-rt_session=garbage".to_owned(),
        format!("__Host-rt_session={token}x"),
        "__Host-rt_session=".to_owned(),
        "__Host-rt_session=%00%0d%0aSet-Cookie:%20evil".to_owned(),
    ] {
        let before = counted.calls();
        let reply = send(&app, "GET", "/me", Some(&forged)).await?;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{forged}");
        assert_eq!(trips(before), 0, "{forged} reached Redis");
        assert!(reply.clears_cookie(), "{forged}: the bad cookie is not cleared: {:?}", reply.set_cookie);
    }

    // Rotation on a privilege change: a new token in the cookie, exactly one live.
    let reply = send(&app, "POST", "/promote", Some(&cookie)).await?;
    assert_eq!(reply.status, StatusCode::OK);
    let rotated = reply.cookie().ok_or("rotation set no cookie")?;
    assert_ne!(rotated, cookie);
    assert_eq!(send(&app, "GET", "/me", Some(&cookie)).await?.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, "GET", "/me", Some(&rotated)).await?.body, "ada:owner");
    assert_eq!(store.list("ada").await?.len(), 1);

    // Past the slide threshold: two round trips (the read, then the extension), and the
    // cookie is renewed for the extended lifetime.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let before = counted.calls();
    let reply = send(&app, "GET", "/me", Some(&rotated)).await?;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(trips(before), 2, "a request with a slide due costs two round trips");
    assert_eq!(reply.cookie().as_deref(), Some(rotated.as_str()), "the slide renews the same token");
    let before = counted.calls();
    assert_eq!(send(&app, "GET", "/me", Some(&rotated)).await?.set_cookie, None);
    assert_eq!(trips(before), 1, "right after a slide, no other is due");

    // A slide that fails (writes refused) still serves the session, unextended.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    counted.set_scripts_down(true);
    let reply = send(&app, "GET", "/me", Some(&rotated)).await?;
    counted.set_scripts_down(false);
    assert_eq!((reply.status, reply.set_cookie.as_deref()), (StatusCode::OK, None));

    // Redis unavailable: 503, the handler is not called, nothing is cleared.
    counted.set_down(true);
    let reply = send(&app, "GET", "/me", Some(&rotated)).await?;
    counted.set_down(false);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.body.contains("sessions are unavailable"), "{}", reply.body);
    assert_eq!(reply.set_cookie, None);

    // Logout clears the cookie and ends the session; the old cookie is then refused and cleared.
    let reply = send(&app, "POST", "/logout", Some(&rotated)).await?;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.clears_cookie(), "{:?}", reply.set_cookie);
    assert!(store.list("ada").await?.is_empty());
    let reply = send(&app, "GET", "/me", Some(&rotated)).await?;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.clears_cookie());
    Ok(())
}

async fn a_login_replaces_the_session_it_came_with(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store =
        Arc::new(Store::new(Arc::clone(&env.backend), SessionConfig::default().with_namespace(env.ns.child("s")))?);
    let app = app(&store, SessionCookie::named("sid").with_secure(false).with_path("/"))?;
    let first = send(&app, "POST", "/login", None).await?.cookie().ok_or("no cookie")?;
    assert!(first.starts_with("sid="));
    // Logging in again with a session: a new token, and the old one is dead (no fixation).
    let second = send(&app, "POST", "/login", Some(&first)).await?.cookie().ok_or("no cookie")?;
    assert_ne!(first, second);
    assert_eq!(send(&app, "GET", "/me", Some(&first)).await?.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, "GET", "/me", Some(&second)).await?.status, StatusCode::OK);
    assert_eq!(store.list("ada").await?.len(), 1);
    // Other cookies beside it are ignored.
    let both = format!("theme=dark; {second}; other=1");
    assert_eq!(send(&app, "GET", "/me", Some(&both)).await?.body, "ada:admin");
    Ok(())
}

#[test]
fn cookie_settings_a_browser_would_refuse_are_refused() {
    let store = Arc::new(
        Store::new(redtail_tests::MemoryBackend::new(), SessionConfig::default()).unwrap_or_else(|e| panic!("{e}")),
    );
    let refused = [
        SessionCookie::host_only().with_secure(false),
        SessionCookie::host_only().with_path("/app"),
        SessionCookie::host_only().with_domain("example.com"),
        SessionCookie::named("__Secure-sid").with_secure(false),
        SessionCookie::named("sid").with_secure(false).with_same_site(SameSite::None),
        SessionCookie::named("s id"),
        SessionCookie::named(""),
        SessionCookie::named("sid;"),
        SessionCookie::named("sid").with_path("/a;Domain=evil"),
        SessionCookie::named("sid").with_path("relative"),
        SessionCookie::named("sid").with_domain("evil.com; Secure"),
    ];
    for cookie in refused {
        assert!(SessionLayer::new(Arc::clone(&store), cookie.clone()).is_err(), "{cookie:?} was accepted");
    }
    for cookie in [
        SessionCookie::default(),
        SessionCookie::host_only(),
        SessionCookie::named("__Secure-sid").with_domain("example.com").with_path("/app"),
        SessionCookie::named("sid").with_secure(false).with_same_site(SameSite::Strict).with_http_only(false),
    ] {
        assert!(SessionLayer::new(Arc::clone(&store), cookie.clone()).is_ok(), "{cookie:?} was refused");
    }
}
