//! `Policy`: a named limit, its window and its algorithm.

use std::{borrow::Cow, time::Duration};

use crate::script::AlgorithmCode;

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
    /// A counter per window, as a plain `INCR` + `EXPIRE` limiter keeps: admits up to twice the
    /// limit across a window edge. Windows are aligned on the clock (a window of a minute starts
    /// on the minute), as Envoy's are. Checked alone, it runs without a script (see
    /// [`RateLimiter`](crate::RateLimiter)).
    FixedWindow,
    /// Cloudflare's sliding-window counter: a counter per window aligned on the clock, with the
    /// previous window's count weighted by how much of it the sliding window still covers
    /// (rounded up). Exact
    /// when the previous window is empty; across an edge it estimates, assuming the previous
    /// window's requests were spread evenly, so a window ending a fraction `f` into the current
    /// one holds at most `limit × (1 + f)` (only when the previous window's requests all came at
    /// its very end). Two small counters per subject whatever the limit, and checked alone it
    /// runs without a script.
    SlidingWindow,
}

impl Algorithm {
    /// Its code in the scripts, which also ends its keys' names (docs/keys.md).
    pub(crate) fn code(self) -> &'static str {
        match self {
            Algorithm::Gcra => AlgorithmCode::Gcra,
            Algorithm::SlidingLog => AlgorithmCode::SlidingLog,
            Algorithm::FixedWindow => AlgorithmCode::FixedWindow,
            Algorithm::SlidingWindow => AlgorithmCode::SlidingWindow,
        }
        .code()
    }

    /// Whether it counts per window (a fixed window, a sliding-window counter): its keys are
    /// named by window, and checked alone it runs without a script.
    pub(crate) fn is_counter(self) -> bool {
        matches!(self, Algorithm::FixedWindow | Algorithm::SlidingWindow)
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
/// A policy is a value, checked where it is given: by `RateLimitLayer::new`
/// once, when the layer is built, and by a direct call before it sends anything: a limit and a
/// burst of 1 to [`Policy::MAX_LIMIT`] (a sliding log: up to [`Policy::MAX_LOG_LIMIT`]), a period
/// of 1 ms to [`Policy::MAX_PERIOD`]; otherwise the layer or the call fails with
/// [`Error::InvalidInput`](crate::Error) naming the policy and the setting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Policy {
    /// Names the policy in keys, headers and decisions: 1 to 64 letters, digits, `-` and `_`.
    pub name: Cow<'static, str>,
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
    /// Once the policy refuses a request, refuse the subject for this long (`None`: only until
    /// the policy admits again). Attempts during the block do not extend it.
    pub block_for: Option<Duration>,
}

impl Policy {
    /// `limit` per `period` with GCRA and a burst of `limit`.
    pub const fn new(name: &'static str, limit: u64, period: Duration) -> Policy {
        Policy {
            name: Cow::Borrowed(name),
            limit,
            period,
            burst: limit,
            algorithm: Algorithm::Gcra,
            on_failure: OnFailure::Closed,
            shadow: false,
            block_for: None,
        }
    }

    /// [`Policy::new`] with a name known only at run time (read from configuration, say).
    pub fn named(name: impl Into<Cow<'static, str>>, limit: u64, period: Duration) -> Policy {
        Policy { name: name.into(), ..Policy::new("", limit, period) }
    }

    /// The same policy refusing the subject for `duration` once it refuses a request (1 ms to
    /// [`Policy::MAX_PERIOD`]), as rate-limiter-flexible's `blockDuration` does.
    #[must_use]
    pub const fn with_block_for(mut self, duration: Duration) -> Policy {
        self.block_for = Some(duration);
        self
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
        let name = &*self.name;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("policy name {name:?} must be 1 to 64 letters, digits, `-` or `_`"));
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
        if let Some(block) = self.block_for
            && (block.as_millis() == 0 || block > Self::MAX_PERIOD)
        {
            return Err(format!("policy {name}: block_for must be 1 ms to 10 years, got {block:?}"));
        }
        if self.algorithm == Algorithm::SlidingWindow && self.period > Self::MAX_PERIOD / 2 {
            // A window's counter is kept for two periods: its own and the next one's estimate.
            return Err(format!(
                "policy {name}: a sliding window's period must be at most 5 years, got {:?}",
                self.period
            ));
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
            Algorithm::SlidingLog | Algorithm::FixedWindow | Algorithm::SlidingWindow => self.limit,
        }
    }
}
