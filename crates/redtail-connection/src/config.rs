//! `Config`: where Redis is and how to talk to it, from a URL, `REDIS_URL` or a builder.

use std::time::Duration;

use fred::types::{
    RespVersion,
    config::{Config as FredConfig, ServerConfig},
};

use crate::{Error, Result};

/// The URL schemes `Config::from_url` accepts.
const SCHEMES: &[&str] =
    &["redis", "rediss", "redis-cluster", "rediss-cluster", "redis-sentinel", "rediss-sentinel", "redis+unix"];

/// How to reach Redis and how patient to be with it.
///
/// The defaults close the gaps of a plain client setup: reconnect forever with a
/// delay of `min(attempt * 50 ms, 2 s)`, at most 3 attempts per command after dropped
/// connections (state-changing scripts are sent once), and a 5 s command timeout so that a stalled
/// server never hangs a request.
///
/// ```
/// use std::time::Duration;
/// use redtail_connection::Config;
///
/// let config = Config::from_url("redis://:secret@127.0.0.1:6379/0")?
///     .with_pool_size(4)
///     .with_command_timeout(Duration::from_secs(2));
/// assert_eq!(config.target(), "redis://127.0.0.1:6379");
/// # Ok::<(), redtail_connection::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    pub(crate) fred: FredConfig,
    pub(crate) pool_size: usize,
    pub(crate) blocking_connections: usize,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) health_timeout: Duration,
    pub(crate) max_command_attempts: u32,
    pub(crate) reconnect: Backoff,
    pub(crate) replica_acks: Option<ReplicaAcks>,
    target: String,
}

/// How many replicas must hold a write before it is answered, and how long to wait for them:
/// see [`Config::with_replica_acks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAcks {
    /// Replicas that must acknowledge each write (at least 1).
    pub replicas: u32,
    /// How long a write waits for them (1 ms to 1 min).
    pub timeout: Duration,
}

/// The reconnect delay: `min(attempt * step, max)`, retried forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Added to the delay at each attempt.
    pub step: Duration,
    /// The longest delay between attempts.
    pub max: Duration,
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (counting from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.step.saturating_mul(attempt).min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { step: Duration::from_millis(50), max: Duration::from_secs(2) }
    }
}

impl Config {
    /// Parses a URL:
    /// `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS,
    /// `redis-cluster://host:port?node=host:port&node=...`,
    /// `redis-sentinel://host:port/db?sentinelServiceName=name&node=host:port`,
    /// `redis+unix:///path/to/redis.sock`.
    pub fn from_url(url: &str) -> Result<Config> {
        let shown = redact(url);
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::Config(format!(
                "cannot parse redis URL `{shown}`: no scheme (expected for example redis://127.0.0.1:6379)"
            )));
        };
        if !SCHEMES.contains(&scheme) {
            // Only a plausible scheme is repeated: anything else may hold credentials.
            let named = if is_scheme(scheme) { format!("`{scheme}`") } else { "(not a scheme)".to_owned() };
            return Err(Error::Config(format!(
                "cannot parse redis URL `{shown}`: unknown scheme {named} (expected one of {})",
                SCHEMES.join(", ")
            )));
        }
        if rest.is_empty() || rest.starts_with('/') && scheme != "redis+unix" {
            return Err(Error::Config(format!("cannot parse redis URL `{shown}`: no host")));
        }
        #[cfg(not(feature = "tls"))]
        if scheme.starts_with("rediss") {
            return Err(Error::Config(format!(
                "cannot use `{shown}`: TLS needs the `tls` feature of redtail-connection"
            )));
        }
        if scheme.ends_with("-sentinel") && !url.contains("sentinelServiceName=") {
            return Err(Error::Config(format!(
                "cannot use `{shown}`: a sentinel URL needs `?sentinelServiceName=<primary name>`"
            )));
        }
        let mut fred = FredConfig::from_url(url)
            .map_err(|e| Error::Config(format!("cannot parse redis URL `{shown}`: {}", e.details())))?;
        fred.fail_fast = false;
        Ok(Config {
            fred,
            pool_size: 2,
            blocking_connections: 2,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            health_timeout: Duration::from_secs(1),
            max_command_attempts: 3,
            replica_acks: None,
            reconnect: Backoff::default(),
            target: target_of(&shown),
        })
    }

    /// Reads `REDIS_URL`, or `redis://127.0.0.1:6379` when it is unset.
    pub fn from_env() -> Result<Config> {
        match std::env::var("REDIS_URL") {
            Ok(url) => Config::from_url(&url).map_err(|e| Error::Config(format!("REDIS_URL: {e}"))),
            Err(std::env::VarError::NotPresent) => Config::from_url("redis://127.0.0.1:6379"),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::Config("REDIS_URL is not valid UTF-8".to_owned())),
        }
    }

    /// Trusts exactly the CA certificates in `pem` (one or more `BEGIN CERTIFICATE` blocks) for
    /// `rediss://` connections, instead of the system's roots: the usual setup for a Redis with
    /// certificates from a private CA. A server whose certificate no such CA signed is refused
    /// during the handshake.
    ///
    /// Fails when `pem` holds no certificate or one that cannot be used as a root.
    #[cfg(feature = "tls")]
    pub fn with_tls_root_certificates(mut self, pem: &[u8]) -> Result<Config> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};

        let invalid = |what: String| Error::Config(format!("TLS root certificates: {what}"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(format!("cannot read the PEM: {e}")))?;
            roots.add(cert).map_err(|e| invalid(format!("a certificate cannot be a root: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("no `BEGIN CERTIFICATE` block found".to_owned()));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.fred.tls = Some(fred::types::config::TlsConnector::from(client).into());
        Ok(self)
    }

    /// Number of multiplexed connections commands are spread over (per cluster node), 1 to 64.
    /// Default 2.
    #[must_use]
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Number of connections reserved for blocking commands, 1 to 64. Default 2.
    #[must_use]
    pub fn with_blocking_connections(mut self, n: usize) -> Self {
        self.blocking_connections = n;
        self
    }

    /// How long a command may wait for its reply, 1 ms to a day. Default 5 s.
    #[must_use]
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long [`Redis::connect`](crate::Redis::connect) waits for the first connection, 1 ms to
    /// a day. Default 10 s.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long [`Redis::health`](crate::Redis::health) waits before reporting down, 1 ms to a
    /// day. Default 1 s.
    #[must_use]
    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// How many times a command is written in all when connections drop under it, 1 to 100.
    /// Default 3. Scripts are always written once.
    #[must_use]
    pub fn with_max_command_attempts(mut self, attempts: u32) -> Self {
        self.max_command_attempts = attempts;
        self
    }

    /// Answers a write (a script, a transaction, or a pipeline or command that can write) only
    /// once `replicas` replicas hold it: each that succeeds is followed by `WAIT replicas timeout`
    /// on the same connection. Default off.
    ///
    /// Replication is asynchronous: without this, a write the primary acknowledged in the last
    /// milliseconds before a failover (Sentinel or cluster) can be lost with the old primary, and
    /// a job added then is never run. With it, such a write fails with
    /// [`redtail_core::Error::NotReplicated`] instead of succeeding: it was applied on the
    /// primary and may or may not survive, as after a timeout.
    ///
    /// It costs each write a second round trip and the replica's acknowledgement, on one of
    /// `max(pool size, 8)` connections held for the write and its `WAIT` (the server holds a
    /// connection's later commands behind a `WAIT`, so it cannot share one); reads keep the
    /// shared connections. Set `min-replicas-to-write` on the server too: a primary without its
    /// replica then refuses writes at once, instead of each one waiting out `timeout`.
    ///
    /// `replicas` is at least 1 and `timeout` 1 ms to 1 min (`WAIT 0` would block forever).
    #[must_use]
    pub fn with_replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_acks = Some(ReplicaAcks { replicas, timeout });
        self
    }

    /// The replica acknowledgements every write waits for, if any.
    pub fn replica_acks(&self) -> Option<ReplicaAcks> {
        self.replica_acks
    }

    /// The reconnect backoff (its step up to a day, its max 1 ms to a day). Default
    /// `min(attempt * 50 ms, 2 s)`.
    #[must_use]
    pub fn with_reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// ACL username and password, replacing any from the URL.
    #[must_use]
    pub fn with_credentials(mut self, username: Option<String>, password: impl Into<String>) -> Self {
        self.fred.username = username;
        self.fred.password = Some(password.into());
        self
    }

    /// Speaks RESP3 (`HELLO 3`) instead of RESP2. Default off.
    #[must_use]
    pub fn with_resp3(mut self, on: bool) -> Self {
        self.fred.version = if on { RespVersion::RESP3 } else { RespVersion::RESP2 };
        self
    }

    /// The server this configuration points at, without credentials, for logs and errors.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether this is a cluster configuration.
    pub fn is_cluster(&self) -> bool {
        matches!(self.fred.server, ServerConfig::Clustered { .. })
    }

    /// Checks every setting, once, when a client is built ([`Redis::new`](crate::Redis::new)):
    /// [`Error::Config`] names the one out of range.
    pub(crate) fn check(&self) -> Result<()> {
        let within = |setting: &str, value: u128, low: u128, high: u128, unit: &str| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(Error::Config(format!("{setting} must be {low} to {high}{unit}, got {value}{unit}")))
            }
        };
        const DAY_MS: u128 = 24 * 3600 * 1000;
        within("the pool size", self.pool_size as u128, 1, 64, "")?;
        within("the blocking connections", self.blocking_connections as u128, 1, 64, "")?;
        within("the command timeout", self.command_timeout.as_millis(), 1, DAY_MS, " ms")?;
        within("the connect timeout", self.connect_timeout.as_millis(), 1, DAY_MS, " ms")?;
        within("the health timeout", self.health_timeout.as_millis(), 1, DAY_MS, " ms")?;
        within("the command attempts", u128::from(self.max_command_attempts), 1, 100, "")?;
        within("the reconnect backoff's step", self.reconnect.step.as_millis(), 0, DAY_MS, " ms")?;
        within("the reconnect backoff's max", self.reconnect.max.as_millis(), 1, DAY_MS, " ms")?;
        if let Some(acks) = self.replica_acks {
            within("the replica acknowledgements' replicas", u128::from(acks.replicas), 1, 1_000, "")?;
            within("the replica acknowledgements' timeout", acks.timeout.as_millis(), 1, 60_000, " ms")?;
        }
        Ok(())
    }

    /// The command timeout.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }
}

/// The URL with any password replaced by `***`.
fn is_scheme(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b"+-.".contains(&b))
}

fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (Some(scheme), rest),
        _ => (None, url),
    };
    // Everything before the last `@` is credentials, even when malformed (a `/` or `?` in a
    // password, no scheme): better to hide too much of a bad URL than to print a password.
    let redacted = match rest.rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{user}:***@{}", &rest[at + 1..]),
            None => format!("***@{}", &rest[at + 1..]),
        },
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{redacted}"),
        None => redacted,
    }
}

/// `scheme://host:port` (or the socket path) from a redacted URL.
fn target_of(shown: &str) -> String {
    let Some((scheme, rest)) = shown.split_once("://") else { return shown.to_owned() };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if scheme == "redis+unix" {
        return format!("{scheme}://{}", rest.split('?').next().unwrap_or(rest));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    format!("{scheme}://{}", &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings out of range are refused when a client is built, naming the setting: never
    /// clamped in silence, never a panic (an `Instant` plus `Duration::MAX`) later.
    #[test]
    fn settings_out_of_range_are_refused_naming_them() -> Result<()> {
        let base = Config::from_url("redis://127.0.0.1:6379")?;
        assert_eq!(base.check().ok(), Some(()));
        let max = Duration::MAX;
        let cases = [
            (base.clone().with_pool_size(0), "pool size"),
            (base.clone().with_pool_size(65), "pool size"),
            (base.clone().with_blocking_connections(0), "blocking connections"),
            (base.clone().with_command_timeout(Duration::ZERO), "command timeout"),
            (base.clone().with_command_timeout(max), "command timeout"),
            (base.clone().with_connect_timeout(max), "connect timeout"),
            (base.clone().with_health_timeout(Duration::ZERO), "health timeout"),
            (base.clone().with_max_command_attempts(0), "command attempts"),
            (base.clone().with_replica_acks(0, Duration::from_secs(1)), "replicas"),
            (base.clone().with_replica_acks(1, Duration::ZERO), "acknowledgements' timeout"),
            (base.clone().with_replica_acks(1, max), "acknowledgements' timeout"),
            (base.clone().with_reconnect(Backoff { step: max, max }), "backoff's step"),
            (base.clone().with_reconnect(Backoff { step: Duration::ZERO, max: Duration::ZERO }), "backoff's max"),
        ];
        for (config, setting) in cases {
            let checked = config.check();
            assert!(matches!(&checked, Err(Error::Config(m)) if m.contains(setting)), "{setting}: {checked:?}");
        }
        let edges = base
            .with_pool_size(64)
            .with_command_timeout(Duration::from_millis(1))
            .with_connect_timeout(Duration::from_secs(24 * 3600))
            .with_replica_acks(1, Duration::from_secs(60));
        assert_eq!(edges.check().ok(), Some(()));
        Ok(())
    }

    fn config_error(url: &str) -> String {
        match Config::from_url(url) {
            Ok(_) => panic!("{url} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn credentials_never_reach_an_error_however_the_url_is_broken() {
        // Found by the hostile-input property test: no scheme, or a "scheme" holding credentials.
        for url in ["user:hunter2@host", "user:hunter2@redis://x", "redis://user:pa/ss:hunter2@host:x", "hunter2@"] {
            let msg = config_error(url);
            assert!(!msg.contains("hunter2"), "{url}: {msg}");
        }
    }

    #[test]
    fn unknown_scheme_names_the_choices() {
        let msg = config_error("redi://x");
        assert!(msg.contains("unknown scheme `redi`"), "{msg}");
        assert!(msg.contains("redis-sentinel"), "{msg}");
    }

    #[test]
    fn malformed_urls_are_refused_with_reason() {
        assert!(config_error("127.0.0.1:6379").contains("no scheme"));
        assert!(config_error("redis://").contains("no host"));
        assert!(config_error("redis://h:notaport").contains("cannot parse"));
        assert!(config_error("redis-sentinel://h:26379").contains("sentinelServiceName"));
    }

    #[test]
    fn passwords_never_appear_in_messages() {
        let msg = config_error("redis://user:hunter2@h:notaport");
        assert!(!msg.contains("hunter2"), "{msg}");
        let config = Config::from_url("redis://user:hunter2@h:6379/2").ok();
        assert_eq!(config.map(|c| c.target().to_owned()).as_deref(), Some("redis://h:6379"));
    }

    #[test]
    fn backoff_follows_policy() {
        let b = Backoff::default();
        assert_eq!(b.delay(1), Duration::from_millis(50));
        assert_eq!(b.delay(10), Duration::from_millis(500));
        assert_eq!(b.delay(40), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn every_scheme_parses() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001",
            "redis-sentinel://127.0.0.1:26379/0?sentinelServiceName=mymaster",
            "redis+unix:///tmp/redis.sock",
            #[cfg(feature = "tls")]
            "rediss://user:pass@127.0.0.1:6380/1",
        ] {
            assert!(Config::from_url(url).is_ok(), "{url}");
        }
    }
}
