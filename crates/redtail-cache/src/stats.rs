//! Counters of what the cache did.

use std::sync::atomic::{AtomicU64, Ordering};

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

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) local_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) loader_runs: AtomicU64,
    pub(crate) loader_errors: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&self.hits),
            local_hits: get(&self.local_hits),
            misses: get(&self.misses),
            stale_served: get(&self.stale_served),
            loader_runs: get(&self.loader_runs),
            loader_errors: get(&self.loader_errors),
            invalidations: get(&self.invalidations),
            decode_errors: get(&self.decode_errors),
            redis_errors: get(&self.redis_errors),
        }
    }
}
