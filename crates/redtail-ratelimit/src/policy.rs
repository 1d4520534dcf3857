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
    /// The original design's counter per window: admits up to twice the limit across a window
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

    /// The original design's API limit: 100 requests a minute per user; when Redis is down it
    /// falls back to an in-process limit.
    pub const API: Policy =
        Policy::new("api", 100, Duration::from_secs(60)).with_on_failure(OnFailure::Local { instances: 1 });
    /// The original design's download limit: 5 YouTube downloads an hour, counted exactly; refused
    /// when Redis is down.
    pub const YOUTUBE_DOWNLOAD: Policy =
        Policy::new("youtube", 5, Duration::from_secs(3_600)).with_algorithm(Algorithm::SlidingLog);
    /// The original design's media-request limit: 20 an hour; refused when Redis is down.
    pub const MEDIA_REQUEST: Policy = Policy::new("media-request", 20, Duration::from_secs(3_600));

    /// Checks that the policy can ever admit anything.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("policy name {:?} must be non-empty letters, digits, `-` or `_`", self.name));
        }
        if self.limit == 0 {
            return Err(format!("policy {}: the limit must be at least 1", self.name));
        }
        if self.period.as_millis() == 0 {
            return Err(format!("policy {}: the period must be at least 1 ms", self.name));
        }
        if self.burst == 0 {
            return Err(format!("policy {}: the burst must be at least 1", self.name));
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
