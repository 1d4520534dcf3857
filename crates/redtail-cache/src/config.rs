//! Cache-wide configuration and per-entry options.

use std::time::Duration;

pub use redtail_core::Clock;

use redtail_core::Namespace;

use crate::{Error, Result};

/// The longest TTL, stale window, lock wait or lock TTL accepted: ten years
/// ([`redtail_core::MAX_TTL`]); longer ones are refused with an error naming the setting.
pub const MAX_DURATION: Duration = redtail_core::MAX_TTL;

/// Fails with an error naming `setting` when `value` is longer than [`MAX_DURATION`].
fn at_most_max(setting: &str, value: Duration) -> Result<()> {
    redtail_core::check_ttl(setting, value).map_err(Error::InvalidInput)
}

/// The longest tag accepted, in bytes.
pub(crate) const MAX_TAG: usize = 255;
/// The most tags one entry may carry.
pub(crate) const MAX_TAGS: usize = 32;

/// How a [`crate::Cache`] is set up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Where every key the cache writes goes. Default `rt:c`.
    pub namespace: Namespace,
    /// Values whose encoded form is larger are refused by `set`. Default 1 MiB.
    pub max_value_bytes: usize,
    /// How long a distributed load lock is held at most, should its holder die. Default 10 s.
    pub lock_ttl: Duration,
    /// The optional in-process first tier.
    pub local: Option<LocalTier>,
    /// The clock freshness is measured by (Redis TTLs follow the server's). Default: the system clock.
    pub clock: Clock,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            namespace: Namespace::new("rt:c").unwrap_or_else(|_| unreachable!("a valid literal prefix")),
            max_value_bytes: 1 << 20,
            lock_ttl: Duration::from_secs(10),
            local: None,
            clock: Clock::system(),
        }
    }
}

impl CacheConfig {
    /// Checks the settings, with an error naming the one out of range.
    pub(crate) fn check(&self) -> Result<()> {
        if self.lock_ttl.is_zero() {
            return Err(Error::InvalidInput("lock_ttl must be longer than zero".to_owned()));
        }
        at_most_max("lock_ttl", self.lock_ttl)?;
        if let Some(tier) = self.local {
            at_most_max("the local tier's TTL", tier.ttl)?;
            if let Some(idle) = tier.time_to_idle {
                if idle.is_zero() {
                    return Err(Error::InvalidInput(
                        "the local tier's time to idle must be longer than zero".to_owned(),
                    ));
                }
                at_most_max("the local tier's time to idle", idle)?;
            }
        }
        Ok(())
    }

    /// Keys go under `namespace` instead of `rt:c`.
    #[must_use]
    pub fn with_namespace(mut self, namespace: Namespace) -> Self {
        self.namespace = namespace;
        self
    }

    /// Refuse values larger than `bytes` once encoded.
    #[must_use]
    pub fn with_max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Hold distributed load locks for at most `ttl`.
    #[must_use]
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// Measure freshness with `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Put an in-process tier of `tier` in front of Redis, kept consistent across instances by a
    /// pub/sub channel or by Redis's key tracking ([`LocalTier::invalidation`]).
    #[must_use]
    pub fn with_local_tier(mut self, tier: LocalTier) -> Self {
        self.local = Some(tier);
        self
    }
}

/// The in-process first tier: most recently used entries, each kept at most `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalTier {
    /// How many entries it holds at most (or, with [`LocalTier::by_bytes`], how many bytes of
    /// keys and values). Default 10,000 entries.
    pub capacity: u64,
    /// Whether `capacity` counts bytes rather than entries.
    pub weighed: bool,
    /// How long an entry stays at most, however long its Redis TTL; bounds how stale a value
    /// can be should an invalidation message be lost without the connection dropping. Default 30 s.
    pub ttl: Duration,
    /// An entry not read for this long leaves early. Default none.
    pub time_to_idle: Option<Duration>,
    /// How the tier learns of changes made by other instances. Default
    /// [`Invalidation::PubSub`].
    pub invalidation: Invalidation,
}

/// How a [`LocalTier`] learns that another instance changed an entry or a tag.
///
/// Both keep the tier exact to within one message's delay after a write, clear it whenever
/// messages may have been missed (a reconnect: at once, and again once they flow anew), and
/// fall back on the tier's TTL only if a connection dies without anyone noticing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Invalidation {
    /// Each instance publishes what it changed on the cache's channel (`<prefix>:inv`), one
    /// message per write, delete or invalidation. Works on every backend; changes made to the
    /// cache's keys by anything but a `Cache` are not seen.
    #[default]
    PubSub,
    /// Redis itself reports every change to the cache's entries and tag records
    /// (`CLIENT TRACKING ... BCAST PREFIX`, on a connection of its own to every primary): no
    /// application messages, and writes by any client count, expiry and `FLUSHALL` included.
    /// Needs Redis 6 or later (or Valkey) and a backend that implements
    /// [`Backend::track`](redtail_core::Backend::track) (both redtail backends do).
    Tracking,
}

impl Default for LocalTier {
    fn default() -> Self {
        LocalTier {
            capacity: 10_000,
            weighed: false,
            ttl: Duration::from_secs(30),
            time_to_idle: None,
            invalidation: Invalidation::PubSub,
        }
    }
}

impl LocalTier {
    /// A tier of at most `capacity` entries, each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        LocalTier { capacity, ttl, ..LocalTier::default() }
    }

    /// A tier of at most `bytes` of keys and values (entries of very different sizes), each
    /// kept at most `ttl`.
    pub fn by_bytes(bytes: u64, ttl: Duration) -> Self {
        LocalTier { capacity: bytes, weighed: true, ttl, ..LocalTier::default() }
    }

    /// Entries not read for `idle` leave before their `ttl`.
    #[must_use]
    pub fn with_time_to_idle(mut self, idle: Duration) -> Self {
        self.time_to_idle = Some(idle);
        self
    }

    /// Learn of other instances' changes from Redis's key tracking rather than from messages
    /// they publish ([`Invalidation::Tracking`]).
    #[must_use]
    pub fn with_tracking(mut self) -> Self {
        self.invalidation = Invalidation::Tracking;
        self
    }
}

/// How one entry is stored and loaded.
///
/// ```
/// use std::time::Duration;
/// use redtail_cache::EntryOptions;
///
/// let options = EntryOptions::ttl(Duration::from_secs(60))
///     .tag("service-status")
///     .stale_for(Duration::from_secs(600)) // serve up to 10 min stale while refreshing or when the loader fails
///     .early_refresh(1.0); // XFetch
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EntryOptions {
    /// How long the value is fresh. Default 5 minutes.
    pub ttl: Duration,
    /// Tags to invalidate the entry by.
    pub tags: Vec<String>,
    /// Each TTL is lengthened by a random fraction up to this one, so that entries written
    /// together do not expire together. Default 0.
    pub jitter: f64,
    /// How long after its TTL the value is kept and may be served stale: by `get_or_compute`
    /// while one caller refreshes it, and when the loader fails (fail-safe). Default 0.
    pub stale_for: Duration,
    /// XFetch's β: refresh probabilistically before expiry, earlier for slower loaders. `None`
    /// (the default) refreshes only on expiry; 1.0 is the usual choice.
    pub early_refresh: Option<f64>,
    /// With `Some(wait)`, one caller across all processes loads a missing value under a lock
    /// while the others wait up to `wait` for it (or serve the stale value). Default 2 s.
    pub lock_wait: Option<Duration>,
    /// How long a caller of [`Cache::get_or_spawn`](crate::Cache::get_or_spawn) waits for a
    /// refresh before it is served the stale value instead; the load goes on in the background
    /// and stores its value for the next read. Without a stale value the caller waits on (up to
    /// the hard timeout). `None` (the default): no soft timeout.
    pub soft_timeout: Option<Duration>,
    /// How long a loader may run before it is stopped: the caller then gets the stale value if
    /// there is one, else [`Error::LoadTimeout`]. `None` (the default): no limit.
    pub hard_timeout: Option<Duration>,
    /// With `Some(fraction)`, [`Cache::get_or_spawn`](crate::Cache::get_or_spawn) refreshes an
    /// entry in the background once `fraction` of its TTL has passed, and the caller gets the
    /// fresh value at once: no caller waits for a refresh. One process refreshes an entry (under
    /// its load lock); the others go on serving it. `None` (the default): no eager refresh.
    pub eager_refresh: Option<f64>,
}

impl Default for EntryOptions {
    fn default() -> Self {
        EntryOptions {
            ttl: Duration::from_secs(300),
            tags: Vec::new(),
            jitter: 0.0,
            stale_for: Duration::ZERO,
            early_refresh: None,
            lock_wait: Some(Duration::from_secs(2)),
            soft_timeout: None,
            hard_timeout: None,
            eager_refresh: None,
        }
    }
}

impl EntryOptions {
    /// Options with a TTL of `ttl`, the rest default.
    pub fn ttl(ttl: Duration) -> Self {
        EntryOptions { ttl, ..EntryOptions::default() }
    }

    /// Adds a tag.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Lengthens each TTL by a random fraction up to `fraction` (0 to 1).
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Keeps the value `window` past its TTL to serve it stale.
    #[must_use]
    pub fn stale_for(mut self, window: Duration) -> Self {
        self.stale_for = window;
        self
    }

    /// Refreshes early, XFetch style, with `beta`.
    #[must_use]
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.early_refresh = Some(beta);
        self
    }

    /// Waits up to `wait` for another process's load, or with `None` loads without a lock.
    #[must_use]
    pub fn lock_wait(mut self, wait: Option<Duration>) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Serves the stale value after `after` while the refresh finishes in the background
    /// ([`Cache::get_or_spawn`](crate::Cache::get_or_spawn)).
    #[must_use]
    pub fn soft_timeout(mut self, after: Duration) -> Self {
        self.soft_timeout = Some(after);
        self
    }

    /// Refreshes in the background once `fraction` (between 0 and 1) of the TTL has passed
    /// ([`Cache::get_or_spawn`](crate::Cache::get_or_spawn)).
    #[must_use]
    pub fn eager_refresh(mut self, fraction: f64) -> Self {
        self.eager_refresh = Some(fraction);
        self
    }

    /// Stops a loader that runs longer than `after`.
    #[must_use]
    pub fn hard_timeout(mut self, after: Duration) -> Self {
        self.hard_timeout = Some(after);
        self
    }

    /// Refuses options that cannot be stored.
    pub(crate) fn check(&self) -> Result<()> {
        if self.ttl.is_zero() {
            return Err(Error::InvalidInput("a cache TTL must be longer than zero".to_owned()));
        }
        at_most_max("a cache TTL", self.ttl)?;
        at_most_max("stale_for", self.stale_for)?;
        at_most_max("lock_wait", self.lock_wait.unwrap_or_default())?;
        for (name, timeout) in [("soft_timeout", self.soft_timeout), ("hard_timeout", self.hard_timeout)] {
            if let Some(timeout) = timeout {
                if timeout.is_zero() {
                    return Err(Error::InvalidInput(format!("{name} must be longer than zero")));
                }
                at_most_max(name, timeout)?;
            }
        }
        if let Some(fraction) = self.eager_refresh
            && !(fraction > 0.0 && fraction < 1.0)
        {
            return Err(Error::InvalidInput(format!(
                "eager_refresh is the fraction of the TTL after which an entry is refreshed: between 0 and 1 (both excluded), got {fraction}"
            )));
        }
        if let (Some(soft), Some(hard)) = (self.soft_timeout, self.hard_timeout)
            && soft >= hard
        {
            return Err(Error::InvalidInput(format!(
                "soft_timeout ({soft:?}) must be shorter than hard_timeout ({hard:?}): past the hard one the load is stopped"
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::InvalidInput(format!("jitter must be between 0 and 1, got {}", self.jitter)));
        }
        if let Some(beta) = self.early_refresh
            && !(beta.is_finite() && beta > 0.0)
        {
            return Err(Error::InvalidInput(format!("early refresh beta must be positive, got {beta}")));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(Error::InvalidInput(format!("at most {MAX_TAGS} tags per entry, got {}", self.tags.len())));
        }
        if let Some(tag) = self.tags.iter().find(|t| t.is_empty() || t.len() > MAX_TAG) {
            return Err(Error::InvalidInput(format!("a tag must be 1 to {MAX_TAG} bytes, got {} bytes", tag.len())));
        }
        Ok(())
    }
}
