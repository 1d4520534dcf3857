//! Moving off the Node service: its session tokens are exchanged once each for redtail sessions,
//! and "log out everywhere" ends both kinds; on every backend, against keys written as the Node
//! service wrote them.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    routing::get,
};
use redtail_core::{Backend, Cmd, Key};
use redtail_session::{
    CurrentSession, Legacy, LegacySession, NewSession, SessionConfig, SessionCookie, SessionLayer, SessionStore,
};
use redtail_tests::{Env, Target, TestResult, for_each_backend};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

for_each_backend!(
    a_legacy_token_is_upgraded_once_with_the_lifetime_it_had_left,
    concurrent_requests_with_one_legacy_token_make_one_session,
    log_out_everywhere_ends_legacy_and_redtail_sessions,
    a_refused_or_unknown_legacy_session_is_left_as_it_was
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserSession {
    role: String,
    plex_id: Option<String>,
}

fn convert(old: &LegacySession) -> Option<UserSession> {
    // A banned role is not carried over.
    let role = old.role.clone().unwrap_or_else(|| "user".to_owned());
    (role != "banned").then(|| UserSession { role, plex_id: old.plex_id.clone() })
}

/// The Node service's `SessionService.createSession`, command for command: `SETEX` the JSON,
/// `SADD` the id to the user's set, `EXPIRE` the set. Returns the token (the id).
async fn legacy_create(
    backend: &dyn Backend,
    user_id: &str,
    role: &str,
    ttl_secs: u64,
) -> Result<String, redtail_core::Error> {
    let mut id = [0u8; 32];
    getrandom::fill(&mut id).map_err(|e| redtail_core::Error::InvalidInput(e.to_string()))?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let created_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
    let json = serde_json::json!({
        "userId": user_id, "role": role, "plexId": format!("plex-{user_id}"),
        "createdAt": created_at as u64, "rememberMe": false,
    });
    let session = Key::from_raw(format!("session:{id}"));
    let user = Key::from_raw(format!("user:sessions:{user_id}"));
    backend.call(Cmd::new("SETEX").key(&session).arg(ttl_secs).arg(json.to_string())).await?;
    backend.call(Cmd::new("SADD").key(&user).arg(id.as_str())).await?;
    backend.call(Cmd::new("EXPIRE").key(&user).arg(ttl_secs)).await?;
    Ok(id)
}

fn store(env: &Env) -> Arc<SessionStore<UserSession>> {
    let config = SessionConfig::default().with_namespace(env.ns.child("s"));
    Arc::new(
        SessionStore::new(Arc::clone(&env.backend), config)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_legacy(Legacy::new(convert)),
    )
}

/// A user id of this test only (legacy keys carry no namespace).
fn user(env: &Env, name: &str) -> String {
    format!("{}-{name}", env.ns.prefix())
}

async fn exists(backend: &dyn Backend, key: String) -> Result<bool, redtail_core::Error> {
    Ok(backend.call(Cmd::new("EXISTS").key(&Key::from_raw(key))).await?.as_int()? == 1)
}

async fn me(session: CurrentSession<UserSession>) -> Result<String, StatusCode> {
    session.get().map(|s| format!("{}:{}", s.user_id, s.data.role)).ok_or(StatusCode::UNAUTHORIZED)
}

async fn a_legacy_token_is_upgraded_once_with_the_lifetime_it_had_left(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = store(&env);
    let ada = user(&env, "ada");
    let legacy = legacy_create(env.backend.as_ref(), &ada, "admin", 3_600).await?;
    let app = Router::new()
        .route("/me", get(me))
        .layer(SessionLayer::new(Arc::clone(&store), SessionCookie::named("sid").with_secure(false))?);
    let send = |cookie: String| {
        let app = app.clone();
        async move {
            let request = Request::get("/me").header(header::COOKIE, cookie).body(Body::empty())?;
            let response = app.oneshot(request).await?;
            let set = response.headers().get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((response.status(), set))
        }
    };

    // The legacy cookie opens a session and is replaced by a redtail token.
    let (status, set) = send(format!("sid={legacy}")).await?;
    assert_eq!(status, StatusCode::OK);
    let set = set.ok_or("the upgrade set no cookie")?;
    let new = set.split(';').next().and_then(|c| c.strip_prefix("sid=")).ok_or("no token")?.to_owned();
    assert_ne!(new, legacy);
    let session = store.get(&new).await?.ok_or("the new token opens no session")?;
    assert_eq!(session.user_id, ada);
    assert_eq!(session.data, UserSession { role: "admin".to_owned(), plex_id: Some(format!("plex-{ada}")) });
    // The lifetime it had left (an hour), not a fresh 24 h.
    let left = session.expires_at.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(left <= Duration::from_secs(3_600) && left >= Duration::from_secs(3_590), "{left:?} left");
    // The legacy session is gone from Redis and from its user's set.
    assert!(!exists(env.backend.as_ref(), format!("session:{legacy}")).await?);
    let members = env.backend.call(Cmd::new("SMEMBERS").key(&Key::from_raw(format!("user:sessions:{ada}")))).await?;
    assert!(members.into_array()?.is_empty());

    // Once only: the legacy cookie now opens nothing (and is left alone), the new one works.
    let (status, set) = send(format!("sid={legacy}")).await?;
    assert_eq!((status, set), (StatusCode::UNAUTHORIZED, None));
    assert_eq!(send(format!("sid={new}")).await?.0, StatusCode::OK);
    Ok(())
}

async fn concurrent_requests_with_one_legacy_token_make_one_session(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = store(&env);
    let bob = user(&env, "bob");
    let legacy = legacy_create(env.backend.as_ref(), &bob, "user", 600).await?;
    let upgrades: Vec<_> = (0..100)
        .map(|_| {
            let (store, legacy) = (Arc::clone(&store), legacy.clone());
            tokio::spawn(async move { store.upgrade_legacy(&legacy).await })
        })
        .collect();
    let mut made = 0;
    for upgrade in upgrades {
        made += usize::from(upgrade.await??.is_some());
    }
    assert_eq!(made, 1, "100 concurrent upgrades of one token");
    assert_eq!(store.list(&bob).await?.len(), 1);
    Ok(())
}

async fn log_out_everywhere_ends_legacy_and_redtail_sessions(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = store(&env);
    let cy = user(&env, "cy");
    let first = legacy_create(env.backend.as_ref(), &cy, "user", 600).await?;
    let second = legacy_create(env.backend.as_ref(), &cy, "user", 600).await?;
    let (token, _) = store.create(&cy, convert_plain(), NewSession::standard()).await?;
    assert_eq!(store.invalidate_all(&cy).await?, 3);
    for legacy in [&first, &second] {
        assert!(!exists(env.backend.as_ref(), format!("session:{legacy}")).await?);
        assert!(store.upgrade_legacy(legacy).await?.is_none());
    }
    assert!(!exists(env.backend.as_ref(), format!("user:sessions:{cy}")).await?);
    assert!(store.get(token.as_str()).await?.is_none());
    // Without legacy upgrades, another user's legacy sessions are not this store's business.
    let plain = SessionStore::<UserSession>::new(
        Arc::clone(&env.backend),
        SessionConfig::default().with_namespace(env.ns.child("p")),
    )?;
    let kept = legacy_create(env.backend.as_ref(), &cy, "user", 600).await?;
    assert_eq!(plain.invalidate_all(&cy).await?, 0);
    assert!(plain.upgrade_legacy(&kept).await?.is_none());
    assert!(exists(env.backend.as_ref(), format!("session:{kept}")).await?);
    Ok(())
}

fn convert_plain() -> UserSession {
    UserSession { role: "user".to_owned(), plex_id: None }
}

async fn a_refused_or_unknown_legacy_session_is_left_as_it_was(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = store(&env);
    let dee = user(&env, "dee");
    // The conversion refuses it: nothing is created, and the legacy session is put back.
    let banned = legacy_create(env.backend.as_ref(), &dee, "banned", 600).await?;
    assert!(store.upgrade_legacy(&banned).await?.is_none());
    assert!(exists(env.backend.as_ref(), format!("session:{banned}")).await?);
    let ttl = env.backend.call(Cmd::new("TTL").key(&Key::from_raw(format!("session:{banned}")))).await?.as_int()?;
    assert!((590..=600).contains(&ttl), "put back with {ttl} s left");
    assert!(store.list(&dee).await?.is_empty());
    // Unknown tokens and tokens of other shapes: nothing.
    assert!(store.upgrade_legacy(&"ab".repeat(32)).await?.is_none());
    assert!(store.upgrade_legacy("not-a-legacy-token").await?.is_none());
    assert!(!store.accepts_legacy(&"zz".repeat(32)));
    Ok(())
}
