//! Exact, atomic, cluster-safe rate limits on Redis.
//!
//! - Three algorithms, each in one Lua script on the server's clock: GCRA (default), an exact
//!   sliding log for small quotas, and a fixed window (the plain `INCR` + `EXPIRE` counter).
//! - Several policies checked in one call, all or nothing: a request refused by one policy is
//!   charged to none.
//! - A subject's keys share a hash tag, so it works on Redis Cluster.
//! - Being limited is a [`Decision`], not an error; a cost that can never fit is [`Error::CannotFit`].
//!
//! ```
//! use std::time::Duration;
//! use redtail_ratelimit::{Algorithm, Namespace, Policy, RateLimiter};
//! use redtail_testkit::MemoryBackend;
//!
//! const API: Policy = Policy::new("api", 100, Duration::from_secs(60));
//! const DOWNLOADS: Policy = Policy::new("downloads", 5, Duration::from_secs(3_600)).with_algorithm(Algorithm::SlidingLog);
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let limiter = RateLimiter::new(MemoryBackend::new(), Namespace::new("rt:rl")?);
//! let decision = limiter.check("user-1", &[API, DOWNLOADS]).await?;
//! assert!(decision.is_allowed());
//! # Ok::<(), redtail_ratelimit::Error>(()) }).unwrap();
//! ```
//!
//! - When Redis cannot be reached, each policy decides by its [`OnFailure`] mode (open, closed,
//!   or an in-process GCRA); subjects refused for a second or more are answered in process until
//!   their retry time; shadow policies decide and count but never refuse. [`RateLimiter::stats`]
//!   counts each kind.
//!
//! - With the default `tower` feature, [`RateLimitLayer`] limits HTTP requests (in axum too),
//!   with IETF `RateLimit` headers and a problem+json 429 body.
//!
//! - Hosts that forbid `TIME` in scripts can run on this process's clock
//!   ([`RateLimiter::with_client_clock`]), clamped so stored time never goes backwards.
//! - Policies are checked before anything is sent: limits, bursts, periods, costs, refunds,
//!   penalties and blocks outside what Redis can keep with a TTL are refused with an error that
//!   names the setting (see [`Policy`]).
//!
//! Not yet here: metrics through the `metrics` facade (counts are in [`RateLimiter::stats`]).

mod error;
#[cfg(feature = "tower")]
mod key;
#[cfg(feature = "tower")]
mod layer;
mod limiter;
mod policy;

pub use error::{Error, Result};
#[cfg(feature = "tower")]
pub use key::{ClientIp, HeaderKey, KeyExtractor, Subject, SubjectKey};
#[cfg(feature = "tower")]
pub use layer::{RateLimit, RateLimitLayer};
pub use limiter::{Decision, PolicyState, RateLimiter, Stats};
pub use policy::{Algorithm, OnFailure, Policy};
/// What this crate's API takes from `redtail-core`, so that a service needs only this crate and
/// `redtail-connection`.
pub use redtail_core::{Backend, Namespace};
