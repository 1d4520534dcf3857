//! `SessionConfig`: lifetimes, limits and the key namespace.

use std::time::Duration;

use redtail_core::Namespace;

/// How sessions live and where they are kept.
///
/// Defaults: idle lifetime 24 h, 90 days with "remember me"; an absolute cap of 7 days (standard)
/// and 180 days (remember me) that sliding extension never passes; extension writes only when the
/// expiry would move by more than 10 % of the idle lifetime; 64 KiB of data at most; no cap on
/// sessions per user; keys under `rt:s`. Lifetimes count in whole seconds, from 1 s to
/// [`SessionConfig::MAX_LIFETIME`]; others make `create` and `extend` fail with
/// [`Error::InvalidInput`](crate::Error::InvalidInput) naming the lifetime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionConfig {
    pub(crate) namespace: Namespace,
    pub(crate) idle: Duration,
    pub(crate) remember_idle: Duration,
    pub(crate) absolute: Option<Duration>,
    pub(crate) remember_absolute: Option<Duration>,
    pub(crate) extend_fraction: f64,
    pub(crate) max_data_bytes: usize,
    pub(crate) max_sessions_per_user: Option<usize>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        SessionConfig {
            namespace: Namespace::new("rt:s").unwrap_or_else(|_| unreachable!("a valid literal prefix")),
            idle: Duration::from_secs(DAY),
            remember_idle: Duration::from_secs(90 * DAY),
            absolute: Some(Duration::from_secs(7 * DAY)),
            remember_absolute: Some(Duration::from_secs(180 * DAY)),
            extend_fraction: 0.1,
            max_data_bytes: 64 * 1024,
            max_sessions_per_user: None,
        }
    }
}

impl SessionConfig {
    /// Keys go under `namespace` instead of `rt:s`.
    #[must_use]
    pub fn with_namespace(mut self, namespace: Namespace) -> Self {
        self.namespace = namespace;
        self
    }

    /// Idle lifetimes of standard and "remember me" sessions.
    #[must_use]
    pub fn with_idle_lifetimes(mut self, standard: Duration, remember_me: Duration) -> Self {
        self.idle = standard;
        self.remember_idle = remember_me;
        self
    }

    /// Absolute lifetimes that extension never passes; `None` turns the cap off (not advised).
    #[must_use]
    pub fn with_absolute_lifetimes(mut self, standard: Option<Duration>, remember_me: Option<Duration>) -> Self {
        self.absolute = standard;
        self.remember_absolute = remember_me;
        self
    }

    /// Extension writes only when the expiry would move by more than `fraction` of the idle
    /// lifetime (clamped to 0..=1).
    #[must_use]
    pub fn with_extend_fraction(mut self, fraction: f64) -> Self {
        self.extend_fraction = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.1 };
        self
    }

    /// The largest encoded session data accepted.
    #[must_use]
    pub fn with_max_data_bytes(mut self, bytes: usize) -> Self {
        self.max_data_bytes = bytes;
        self
    }

    /// At most `n` live sessions per user; creating one more ends the oldest.
    #[must_use]
    pub fn with_max_sessions_per_user(mut self, n: Option<usize>) -> Self {
        self.max_sessions_per_user = n.filter(|n| *n > 0);
        self
    }

    /// The longest lifetime a session may have: ten years. Each becomes an expiry in Redis,
    /// which must stay a time Redis can keep.
    pub const MAX_LIFETIME: Duration = redtail_core::MAX_TTL;

    /// Checks the lifetimes, with an error naming the one out of range.
    pub(crate) fn check(&self) -> Result<(), String> {
        let lifetimes = [
            ("idle lifetime", Some(self.idle)),
            ("remember-me idle lifetime", Some(self.remember_idle)),
            ("absolute lifetime", self.absolute),
            ("remember-me absolute lifetime", self.remember_absolute),
        ];
        for (name, lifetime) in lifetimes {
            if let Some(lifetime) = lifetime
                && (lifetime < Duration::from_secs(1) || lifetime > Self::MAX_LIFETIME)
            {
                return Err(format!("the {name} must be 1 s to 10 years, got {lifetime:?}"));
            }
        }
        Ok(())
    }

    pub(crate) fn lifetimes(&self, remember_me: bool) -> (Duration, Option<Duration>) {
        if remember_me { (self.remember_idle, self.remember_absolute) } else { (self.idle, self.absolute) }
    }
}
