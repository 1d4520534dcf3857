//! `Policy`: a named limit, its window and its algorithm.

use std::time::Duration;

/// How a policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Generic cell rate algorithm: one small value per key, smooth, exact retry-after, with
    /// up to `burst` requests at once. The default.
    Gcra,
    /// An exact log of request times: never more than `limit` in any window of `period`. Costs a
    /// sorted-set entry per request, so it suits small quotas such as 5 an hour.
    SlidingLog,
    /// A counter per window, as a plain `INCR` + `EXPIRE` limiter keeps: admits up to twice the limit across a window
    /// edge. For compatibility only.
    FixedWindow,
}

impl Algorithm {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Algorithm::Gcra => "g",
            Algorithm::SlidingLog => "s",
            Algorithm::FixedWindow => "f",
        }
    }
}

/// What a policy decides when Redis cannot be reached (a timeout, a lost connection).
/// Other errors, such as a misconfigured cluster, are returned, never papered over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnFailure {
    /// Admit the request.
    Open,
    /// Refuse the request.
    Closed,
    /// Decide with an in-process GCRA at `limit / instances`, so that `instances` processes
    /// together stay near the limit.
    Local {
        /// How many processes share the limit.
        instances: u32,
    },
}

/// A rate limit: at most `limit` units of cost per `period`, `burst` of them at once (GCRA).
///
/// A policy is checked before any call that uses it sends anything: a limit and a burst of 1 to
/// [`Policy::MAX_LIMIT`] (a sliding log: up to [`Policy::MAX_LOG_LIMIT`]), a period of 1 ms to
/// [`Policy::MAX_PERIOD`]; otherwise the call fails with [`Error::InvalidInput`](crate::Error)
/// naming the policy and the setting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Policy {
    /// Names the policy in keys, headers and decisions: letters, digits, `-` and `_`.
    pub name: &'static str,
    /// Units allowed per period.
    pub limit: u64,
    /// The window.
    pub period: Duration,
    /// Units that may be spent at once (GCRA); equal to `limit` unless set.
    pub burst: u64,
    /// How requests are counted.
    pub algorithm: Algorithm,
    /// What to decide when Redis cannot be reached. [`OnFailure::Closed`] unless set.
    pub on_failure: OnFailure,
    /// Decide, log and count, but never refuse.
    pub shadow: bool,
}

impl Policy {
    /// `limit` per `period` with GCRA and a burst of `limit`.
    pub const fn new(name: &'static str, limit: u64, period: Duration) -> Policy {
        Policy {
            name,
            limit,
            period,
            burst: limit,
            algorithm: Algorithm::Gcra,
            on_failure: OnFailure::Closed,
            shadow: false,
        }
    }

    /// The same policy with another failure mode.
    #[must_use]
    pub const fn with_on_failure(mut self, on_failure: OnFailure) -> Policy {
        self.on_failure = on_failure;
        self
    }

    /// The same policy in shadow mode: it decides and counts but never refuses.
    #[must_use]
    pub const fn shadow(mut self) -> Policy {
        self.shadow = true;
        self
    }

    /// The same policy counted by `algorithm`.
    #[must_use]
    pub const fn with_algorithm(mut self, algorithm: Algorithm) -> Policy {
        self.algorithm = algorithm;
        self
    }

    /// The same policy with a different burst (GCRA).
    #[must_use]
    pub const fn with_burst(mut self, burst: u64) -> Policy {
        self.burst = burst;
        self
    }

    /// The longest period, block or GCRA state a policy may ask Redis to keep: ten years.
    /// Longer ones are refused before anything is sent, since a TTL Redis cannot store would
    /// leave a key that never expires.
    pub const MAX_PERIOD: Duration = redtail_core::MAX_TTL;
    /// The largest limit or burst: 10^15, so that every count stays exact in Lua's numbers.
    pub const MAX_LIMIT: u64 = 1_000_000_000_000_000;
    /// The largest limit of a [`Algorithm::SlidingLog`] policy, which keeps one sorted-set entry
    /// per unit admitted: 10,000.
    pub const MAX_LOG_LIMIT: u64 = 10_000;

    /// Checks that the policy can ever admit anything and that Redis can hold its state with a
    /// TTL. The error names the policy and the setting.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let name = self.name;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("policy name {name:?} must be non-empty letters, digits, `-` or `_`"));
        }
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(format!("policy {name}: the limit must be 1 to {}, got {}", Self::MAX_LIMIT, self.limit));
        }
        if self.algorithm == Algorithm::SlidingLog && self.limit > Self::MAX_LOG_LIMIT {
            return Err(format!(
                "policy {name}: a sliding log keeps an entry per request, so its limit must be at most {}, got {} \
                 (use GCRA or a fixed window for large limits)",
                Self::MAX_LOG_LIMIT,
                self.limit
            ));
        }
        if self.period.as_millis() == 0 || self.period > Self::MAX_PERIOD {
            return Err(format!("policy {name}: the period must be 1 ms to 10 years, got {:?}", self.period));
        }
        if self.burst == 0 || self.burst > Self::MAX_LIMIT {
            return Err(format!("policy {name}: the burst must be 1 to {}, got {}", Self::MAX_LIMIT, self.burst));
        }
        // GCRA keeps its state for up to burst emission intervals.
        let state_ms = u128::from(self.burst) * self.period.as_millis() / u128::from(self.limit);
        if self.algorithm == Algorithm::Gcra && state_ms > Self::MAX_PERIOD.as_millis() {
            return Err(format!(
                "policy {name}: a burst of {} at {} per {:?} keeps state for more than 10 years",
                self.burst, self.limit, self.period
            ));
        }
        Ok(())
    }

    /// The most cost one request can ever be admitted with.
    pub(crate) fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst,
            Algorithm::SlidingLog | Algorithm::FixedWindow => self.limit,
        }
    }
}
