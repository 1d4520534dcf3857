//! A typed cache on Redis with the protections a plain `GET`/`SETEX` cache lacks.
//!
//! - **Stampede protection**: [`Cache::get_or_compute`] runs one loader per key in a process
//!   (single flight) and, with a short lock in Redis, one across processes.
//! - **Stale-while-revalidate, early refresh (XFetch) and fail-safe**: a value can be kept past
//!   its TTL and served while one caller refreshes it, or when its loader fails.
//! - **Tags that cannot leak**: each tag is one small record holding a random version; entries
//!   carry the versions they were written under and are valid only while those still match.
//!   Invalidating a tag is one write; nothing grows with the number of tagged entries; a lost
//!   tag record invalidates rather than resurrects.
//! - **Pattern invalidation** with `SCAN` + `UNLINK` on every primary, never `KEYS`.
//! - **An in-process first tier** ([`LocalTier`], moka) kept consistent across instances by a
//!   pub/sub channel, and cleared whenever messages may have been missed.
//! - **Canonical keys** for requests ([`canonical_key`]): parameters in any order share a key.
//!
//! Reads never fail: a Redis error is a miss, counted in [`CacheStats`] and logged at a bounded
//! rate; a value that does not decode is a miss, deleted and counted.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use redtail_cache::{Cache, CacheConfig, EntryOptions};
//! # async fn demo(backend: Arc<dyn redtail_core::Backend>) -> redtail_cache::Result<()> {
//! let cache = Cache::new(backend, CacheConfig::default()).await?;
//! let options = EntryOptions::ttl(Duration::from_secs(60)).tag("plex").stale_for(Duration::from_secs(300));
//! let libraries: Vec<String> = cache
//!     .get_or_compute("plex:libraries", &options, || async {
//!         Ok::<_, std::io::Error>(vec!["Movies".to_owned(), "Shows".to_owned()])
//!     })
//!     .await?;
//! cache.invalidate_tag("plex").await?;
//! # let _ = libraries; Ok(()) }
//! ```

mod cache;
mod canonical;
mod config;
mod envelope;
mod error;
mod local;
mod stats;

pub use cache::Cache;
pub use canonical::canonical_key;
pub use config::{CacheConfig, Clock, EntryOptions, LocalTier};
pub use error::{Error, Result};
/// What this crate's API takes from `redtail-core`, so that a service needs only this crate and
/// `redtail-connection`.
pub use redtail_core::{Backend, Codec, JsonCodec};
pub use stats::CacheStats;
