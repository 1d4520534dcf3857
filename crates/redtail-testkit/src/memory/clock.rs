//! `Clock`: the in-memory backend's notion of now, which tests can move forward at will.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The time the in-memory backend runs on: key expiry and script `TIME` read it.
///
/// [`Clock::system`] follows real time; [`Clock::manual`] stands still until advanced.
/// Either can be moved forward with [`Clock::advance`], which makes keys expire instantly.
/// Blocking commands still wait in real time.
#[derive(Debug, Clone)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    manual: AtomicBool,
    // Manual clocks: the time in Unix milliseconds. System clocks: the offset added to real time.
    millis: AtomicU64,
}

impl Clock {
    /// Real time, plus whatever has been [advanced](Clock::advance).
    pub fn system() -> Clock {
        Clock { inner: Arc::new(ClockInner { manual: AtomicBool::new(false), millis: AtomicU64::new(0) }) }
    }

    /// A clock standing at `start` until advanced.
    pub fn manual(start: SystemTime) -> Clock {
        let millis = redtail_core::unix_ms(start);
        Clock { inner: Arc::new(ClockInner { manual: AtomicBool::new(true), millis: AtomicU64::new(millis) }) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.inner.millis.fetch_add(by, Ordering::SeqCst);
    }

    /// Now, in Unix milliseconds.
    pub fn now_millis(&self) -> u64 {
        let millis = self.inner.millis.load(Ordering::SeqCst);
        if self.inner.manual.load(Ordering::SeqCst) {
            millis
        } else {
            let real =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
            real.saturating_add(millis)
        }
    }

    /// Now, as a `SystemTime`.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_millis())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

/// The virtual clock as the crates read wall-clock time (`redtail_core::Clock`), so that one
/// `advance` moves the backend's TTLs and the crates' own clocks together.
impl From<Clock> for redtail_core::Clock {
    fn from(clock: Clock) -> Self {
        redtail_core::Clock::from_fn(move || clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_000));
        assert_eq!(clock.now_millis(), 1_000_000);
        clock.advance(Duration::from_secs(90 * 86_400));
        assert_eq!(clock.now_millis(), 1_000_000 + 90 * 86_400_000);
    }

    #[test]
    fn system_clock_adds_advances_to_real_time() {
        let clock = Clock::system();
        let before = clock.now_millis();
        clock.advance(Duration::from_secs(3_600));
        assert!(clock.now_millis() >= before + 3_600_000);
    }
}
