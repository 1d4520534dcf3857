//! Exact, atomic, cluster-safe rate limits on Redis.
#![doc = include_str!("../README.md")]

mod error;
#[cfg(feature = "tower")]
mod key;
#[cfg(feature = "tower")]
mod layer;
mod limiter;
mod policy;
mod script;

pub use error::{Error, Result};
#[cfg(feature = "tower")]
pub use key::{ClientIp, HeaderKey, KeyExtractor, Subject, SubjectKey};
#[cfg(feature = "tower")]
pub use layer::{RateLimit, RateLimitLayer, Refused};
pub use limiter::{Decision, PolicyState, RateLimiter, Stats};
pub use policy::{Algorithm, OnFailure, Policy};
/// What this crate's API takes from `redtail-core`, so that a service needs only this crate and
/// `redtail-connection`.
pub use redtail_core::{Backend, Clock, Namespace};
