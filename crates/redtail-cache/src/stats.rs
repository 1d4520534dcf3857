//! Counters of what the cache did.

use redtail_core::metrics::Counter;

/// A snapshot of a cache's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Fresh values served from Redis.
    pub hits: u64,
    /// Fresh values served from the in-process tier.
    pub local_hits: u64,
    /// Lookups that found no fresh value.
    pub misses: u64,
    /// Stale values served while refreshing, while another process loaded, or because the
    /// loader failed (fail-safe).
    pub stale_served: u64,
    /// Times a loader ran.
    pub loader_runs: u64,
    /// Times a loader failed.
    pub loader_errors: u64,
    /// Keys, tags and patterns invalidated.
    pub invalidations: u64,
    /// Stored values that could not be decoded (each was deleted).
    pub decode_errors: u64,
    /// Redis failures on reads and background writes, answered as misses.
    pub redis_errors: u64,
}

/// What the cache counts, each also reported (feature `metrics`) with the label `cache` (its
/// key prefix).
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) hits: Counter,
    pub(crate) local_hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) stale_served: Counter,
    pub(crate) loader_runs: Counter,
    pub(crate) loader_errors: Counter,
    pub(crate) invalidations: Counter,
    pub(crate) decode_errors: Counter,
    pub(crate) redis_errors: Counter,
}

impl Counters {
    pub(crate) fn new(prefix: &str) -> Counters {
        let cache = || ("cache", prefix.to_owned());
        let request = |tier: &str, outcome: &str| {
            Counter::new(
                "redtail_cache_requests_total",
                &[cache(), ("tier", tier.to_owned()), ("outcome", outcome.to_owned())],
            )
        };
        Counters {
            hits: request("redis", "hit"),
            local_hits: request("local", "hit"),
            misses: request("redis", "miss"),
            stale_served: Counter::new("redtail_cache_stale_served_total", &[cache()]),
            loader_runs: Counter::new("redtail_cache_loads_total", &[cache()]),
            loader_errors: Counter::new("redtail_cache_load_errors_total", &[cache()]),
            invalidations: Counter::new("redtail_cache_invalidations_total", &[cache()]),
            decode_errors: Counter::new("redtail_cache_decode_errors_total", &[cache()]),
            redis_errors: Counter::new("redtail_cache_redis_errors_total", &[cache()]),
        }
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.get(),
            local_hits: self.local_hits.get(),
            misses: self.misses.get(),
            stale_served: self.stale_served.get(),
            loader_runs: self.loader_runs.get(),
            loader_errors: self.loader_errors.get(),
            invalidations: self.invalidations.get(),
            decode_errors: self.decode_errors.get(),
            redis_errors: self.redis_errors.get(),
        }
    }
}
