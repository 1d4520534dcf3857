//! `Clock`: where the crates read wall-clock time, so a test's virtual clock can drive them.

use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

/// Where a crate reads the wall-clock time when it must (the cache's freshness, the rate
/// limiter's client-clock option, the queue hiding expired completed records); by default the
/// system clock. Redis TTLs and script times follow the server's clock, never this one.
/// Timers (timeouts, polls) stay on tokio's monotonic time, which tests pause.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use redtail_core::Clock;
///
/// let fixed = Clock::from_fn(|| UNIX_EPOCH + Duration::from_millis(1_500));
/// assert_eq!(fixed.now_ms(), 1_500);
/// ```
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime::now))
    }

    /// A clock that asks `now`, such as a test's virtual clock.
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }

    /// The time now in milliseconds since the Unix epoch (0 before it).
    pub fn now_ms(&self) -> u64 {
        unix_ms(self.now())
    }
}

/// `t` in milliseconds since the Unix epoch: 0 before it, `u64::MAX` past what fits.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for Clock {
    /// The system clock.
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}
