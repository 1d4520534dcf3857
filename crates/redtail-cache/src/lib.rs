//! A typed two-tier cache on Redis: stampede protection, stale-while-revalidate, tags that cannot leak.
#![doc = include_str!("../README.md")]

mod cache;
mod canonical;
mod config;
mod envelope;
mod error;
mod local;
mod script;
mod stats;

pub use cache::Cache;
pub use canonical::canonical_key;
pub use config::{CacheConfig, Clock, EntryOptions, Invalidation, LocalTier, MAX_DURATION};
pub use error::{Error, Result};
/// What this crate's API takes from `redtail-core`, so that a service needs only this crate and
/// `redtail-connection`.
pub use redtail_core::{Backend, Codec, JsonCodec, Namespace};
pub use stats::CacheStats;
