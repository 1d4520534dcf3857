//! Lifetimes, the per-user index and bad input, on the in-memory backend with a virtual clock.

use std::time::{Duration, SystemTime};

use redtail_core::{Backend, Cmd, Cursor, Namespace};
use redtail_session::{Device, Error, JwtDenylist, NewSession, Result, SessionConfig, SessionStore};
use redtail_testkit::{Clock, MemoryBackend};

const HOUR: u64 = 3_600;
const DAY: u64 = 24 * HOUR;

/// Session data as an application keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct UserSession {
    user_id: String,
    role: String,
}

impl UserSession {
    fn new(user_id: &str, role: &str) -> Self {
        UserSession { user_id: user_id.to_owned(), role: role.to_owned() }
    }
}

fn setup(config: SessionConfig) -> (MemoryBackend, SessionStore<UserSession>) {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let store =
        SessionStore::new(redis.clone(), config).unwrap_or_else(|e| panic!("the default settings are valid: {e}"));
    (redis, store)
}

fn data(user: &str) -> UserSession {
    UserSession::new(user, "user")
}

fn advance(redis: &MemoryBackend, seconds: u64) {
    redis.clock().advance(Duration::from_secs(seconds));
}

#[tokio::test]
async fn standard_session_ends_after_a_day_and_remember_me_after_ninety() -> Result<()> {
    let (redis, store) = setup(SessionConfig::default());
    let (standard, _) = store.create("u1", data("u1"), NewSession::standard()).await?;
    let (remembered, _) = store.create("u1", data("u1"), NewSession::remember_me()).await?;
    advance(&redis, DAY - 1);
    assert!(store.get(standard.as_str()).await?.is_some());
    advance(&redis, 2);
    assert!(store.get(standard.as_str()).await?.is_none());
    advance(&redis, 89 * DAY - 2);
    assert!(store.get(remembered.as_str()).await?.is_some());
    advance(&redis, 2);
    assert!(store.get(remembered.as_str()).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn extension_slides_but_never_passes_the_absolute_cap() -> Result<()> {
    let (redis, store) = setup(SessionConfig::default());
    let (token, created) = store.create("u1", data("u1"), NewSession::standard()).await?;
    let deadline = created.absolute_deadline.expect("capped by default");
    assert_eq!(deadline.duration_since(created.created_at).ok(), Some(Duration::from_secs(7 * DAY)));
    advance(&redis, 23 * HOUR);
    let extended = store.extend(token.as_str()).await?.expect("live");
    assert!(extended > created.expires_at);
    advance(&redis, 2 * HOUR);
    assert!(store.get(token.as_str()).await?.is_some(), "an extended session outlives its first day");
    // A busy user extending every 12 hours is still logged out at the absolute deadline.
    for _ in 0..14 {
        advance(&redis, 12 * HOUR);
        if store.extend(token.as_str()).await?.is_none() {
            break;
        }
    }
    assert!(store.get(token.as_str()).await?.is_none());
    assert!(redis.clock().now() >= deadline);
    Ok(())
}

#[tokio::test]
async fn extension_writes_only_when_the_expiry_moves_enough() -> Result<()> {
    let (redis, store) = setup(SessionConfig::default());
    let (token, created) = store.create("u1", data("u1"), NewSession::standard()).await?;
    advance(&redis, 60);
    // One minute moves the expiry by far less than 10 % of a day: nothing is written.
    assert_eq!(store.extend(token.as_str()).await?, Some(created.expires_at));
    assert_eq!(store.get(token.as_str()).await?.map(|s| s.last_seen), Some(created.last_seen));
    advance(&redis, 3 * HOUR);
    let moved = store.extend(token.as_str()).await?.expect("live");
    assert!(moved > created.expires_at);
    Ok(())
}

#[tokio::test]
async fn remember_me_session_created_before_a_standard_one_is_still_logged_out_everywhere() -> Result<()> {
    // The original design's bug: the user set took the newest session's TTL and expired with it.
    let (redis, store) = setup(SessionConfig::default());
    let (long, _) = store.create("u1", data("u1"), NewSession::remember_me()).await?;
    let (short, _) = store.create("u1", data("u1"), NewSession::standard()).await?;
    advance(&redis, DAY + HOUR);
    assert!(store.get(short.as_str()).await?.is_none());
    assert_eq!(store.list("u1").await?.len(), 1);
    assert_eq!(store.invalidate_all("u1").await?, 1);
    assert!(store.get(long.as_str()).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn list_shows_devices_and_prunes_expired_sessions() -> Result<()> {
    let (redis, store) = setup(SessionConfig::default());
    let phone = Device::new(Some("203.0.113.7".to_owned()), Some("Phone".to_owned()));
    store.create("u1", data("u1"), NewSession::remember_me().with_device(phone.clone())).await?;
    store.create("u1", data("u1"), NewSession::standard()).await?;
    store.create("u2", data("u2"), NewSession::standard()).await?;
    assert_eq!(store.list("u1").await?.len(), 2);
    advance(&redis, 2 * DAY);
    let listed = store.list("u1").await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].device.as_ref(), Some(&phone));
    assert!(listed[0].remember_me);
    Ok(())
}

#[tokio::test]
async fn update_never_brings_back_an_ended_session() -> Result<()> {
    let (_, store) = setup(SessionConfig::default());
    let (token, _) = store.create("u1", data("u1"), NewSession::standard()).await?;
    let mut changed = data("u1");
    changed.role = "admin".to_owned();
    assert!(store.update(token.as_str(), &changed).await?);
    assert_eq!(store.get(token.as_str()).await?.map(|s| s.data.role), Some("admin".to_owned()));
    assert!(store.invalidate(token.as_str()).await?);
    assert!(!store.update(token.as_str(), &changed).await?);
    assert!(store.get(token.as_str()).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn rotation_leaves_exactly_one_live_token() -> Result<()> {
    let (_, store) = setup(SessionConfig::default());
    let (old, _) = store.create("u1", data("u1"), NewSession::standard()).await?;
    let new = store.rotate(old.as_str()).await?.expect("rotated");
    assert_ne!(old, new);
    assert!(store.get(old.as_str()).await?.is_none());
    assert_eq!(store.get(new.as_str()).await?.map(|s| s.user_id), Some("u1".to_owned()));
    assert_eq!(store.list("u1").await?.len(), 1);
    assert!(store.rotate(old.as_str()).await?.is_none(), "a dead token cannot be rotated");
    Ok(())
}

#[tokio::test]
async fn the_cap_on_sessions_per_user_ends_the_oldest() -> Result<()> {
    let (redis, store) = setup(SessionConfig::default().with_max_sessions_per_user(Some(2)));
    let (first, _) = store.create("u1", data("u1"), NewSession::remember_me()).await?;
    advance(&redis, 1);
    let (second, _) = store.create("u1", data("u1"), NewSession::standard()).await?;
    advance(&redis, 1);
    let (third, _) = store.create("u1", data("u1"), NewSession::standard()).await?;
    assert!(store.get(first.as_str()).await?.is_none());
    assert!(store.get(second.as_str()).await?.is_some());
    assert!(store.get(third.as_str()).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_or_treated_as_no_session() -> Result<()> {
    let (redis, store) = setup(SessionConfig::default().with_max_data_bytes(256));
    for token in ["", "short", &"A".repeat(10_000), "ééé", "../../etc/passwd"] {
        assert!(store.get(token).await?.is_none());
        assert!(!store.invalidate(token).await?);
    }
    assert!(matches!(store.create("", data(""), NewSession::standard()).await, Err(Error::InvalidInput(_))));
    let huge_id = "x".repeat(100_000);
    assert!(matches!(store.invalidate_all(&huge_id).await, Err(Error::InvalidInput(_))));
    let mut big = data("u1");
    big.role = "e".repeat(1_000);
    assert!(matches!(store.create("u1", big, NewSession::standard()).await, Err(Error::TooLarge { limit: 256, .. })));
    // Hostile user ids stay in their own slot and namespace.
    let (token, _) = store.create("a}b:*{c", data("a}b:*{c"), NewSession::standard()).await?;
    assert!(store.get(token.as_str()).await?.is_some());

    // Foreign data under a session key: no session, counted, never a panic.
    let (victim, session) = store.create("u1", data("u1"), NewSession::standard()).await?;
    let key = find_key(&redis, &session.id).await?;
    redis.call(Cmd::new("SET").key(&key).arg("{\"u\":1}\nnot json").arg("KEEPTTL")).await?;
    assert!(store.get(victim.as_str()).await?.is_none());
    assert!(store.extend(victim.as_str()).await?.is_none());
    redis.call(Cmd::new("DEL").key(&key)).await?;
    redis.call(Cmd::new("HSET").key(&key).arg("a").arg("hash")).await?;
    redis.call(Cmd::new("EXPIRE").key(&key).arg(60)).await?;
    assert!(store.get(victim.as_str()).await?.is_none());
    assert!(store.extend(victim.as_str()).await?.is_none());
    assert!(!store.update(victim.as_str(), &data("u1")).await?);
    assert_eq!(store.corrupt_reads(), 2);
    // Foreign data does not break the user's other operations.
    assert_eq!(store.list("u1").await?.len(), 0);
    store.invalidate_all("u1").await?;
    Ok(())
}

/// Lifetimes Redis cannot keep (`Duration::MAX`, zero) are refused when the store is built, with
/// an error naming the lifetime, so nothing can be written with them.
#[tokio::test]
async fn lifetimes_out_of_range_are_refused_naming_the_lifetime() -> Result<()> {
    let forever = Duration::MAX;
    let configs = [
        (SessionConfig::default().with_idle_lifetimes(forever, forever), "idle lifetime"),
        (SessionConfig::default().with_idle_lifetimes(Duration::ZERO, Duration::from_secs(60)), "idle lifetime"),
        (SessionConfig::default().with_absolute_lifetimes(Some(forever), None), "absolute lifetime"),
        (SessionConfig::default().with_absolute_lifetimes(None, Some(forever)), "remember-me absolute lifetime"),
    ];
    for (config, name) in configs {
        let Err(error) = SessionStore::<UserSession>::new(MemoryBackend::new().auditing_script_keys(), config) else {
            panic!("a config with a bad {name} was accepted");
        };
        assert!(matches!(&error, Error::InvalidInput(m) if m.contains(name)), "{name}: {error}");
    }
    // The longest allowed works.
    let longest = SessionConfig::MAX_LIFETIME;
    let (_, store) =
        setup(SessionConfig::default().with_idle_lifetimes(longest, longest).with_absolute_lifetimes(None, None));
    let (token, _) = store.create("u1", data("u1"), NewSession::standard()).await?;
    assert!(store.get(token.as_str()).await?.is_some());
    Ok(())
}

async fn find_key(redis: &MemoryBackend, id: &str) -> Result<redtail_core::Key> {
    let page = redis.scan(Cursor::START, &Namespace::new("rt")?.pattern(["s"]), 10_000).await?;
    Ok(page.keys.into_iter().find(|k| k.to_string().ends_with(id)).expect("the session's key"))
}

#[tokio::test]
async fn every_key_has_a_ttl() -> Result<()> {
    let (redis, store) = setup(SessionConfig::default());
    for user in ["u1", "u2", "u3"] {
        let (token, _) = store.create(user, data(user), NewSession::remember_me()).await?;
        store.create(user, data(user), NewSession::standard()).await?;
        store.rotate(token.as_str()).await?;
    }
    let page = redis.scan(Cursor::START, &Namespace::new("rt")?.pattern(["s"]), 10_000).await?;
    assert_eq!(page.keys.len(), 9, "6 sessions and 3 indexes");
    for key in page.keys {
        let ttl = redis.call(Cmd::new("PTTL").key(&key)).await?.as_int()?;
        assert!(ttl > 0, "{key} has no TTL");
    }
    Ok(())
}

#[tokio::test]
async fn revoked_jwts_are_remembered_until_they_expire() -> Result<()> {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let denylist = JwtDenylist::new(redis.clone(), Namespace::new("rt:jwt")?);
    let exp = SystemTime::now() + Duration::from_secs(HOUR);
    assert!(denylist.revoke("jti-1", exp).await?);
    assert!(denylist.is_revoked("jti-1").await?);
    assert!(!denylist.is_revoked("jti-2").await?);
    assert!(!denylist.revoke("old", SystemTime::now() - Duration::from_secs(1)).await?);
    advance(&redis, HOUR + 1);
    assert!(!denylist.is_revoked("jti-1").await?, "the entry expires with the token");
    assert!(matches!(denylist.is_revoked("").await, Err(Error::InvalidInput(_))));
    // A token expiring in more than ten years is refused, naming why, and nothing is written.
    let far = SystemTime::now() + Duration::from_secs(11 * 365 * 24 * HOUR);
    let refused = denylist.revoke("far", far).await;
    assert!(
        matches!(&refused, Err(Error::InvalidInput(m)) if m.contains("JWT") && m.contains("10 years")),
        "{refused:?}"
    );
    assert!(!denylist.is_revoked("far").await?);
    let nine_years = SystemTime::now() + Duration::from_secs(9 * 365 * 24 * HOUR);
    assert!(denylist.revoke("nine", nine_years).await?);
    assert!(denylist.is_revoked("nine").await?);
    Ok(())
}

#[tokio::test]
async fn a_tokens_session_id_is_the_id_its_session_is_stored_under() -> redtail_session::Result<()> {
    let (_redis, store) = setup(SessionConfig::default());
    let (token, session) = store.create("u1", UserSession::new("u1", "user"), NewSession::standard()).await?;
    assert_eq!(token.session_id(), session.id);
    let fresh = redtail_session::Token::generate("u1")?;
    assert_ne!(fresh.session_id(), session.id);
    assert!(redtail_session::Token::parse(fresh.as_str()).is_some(), "a generated token parses");
    assert!(store.get(fresh.as_str()).await?.is_none(), "a token alone opens nothing");
    Ok(())
}
