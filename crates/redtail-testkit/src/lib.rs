//! Real Redis servers for tests, in this repository and in the services built on redtail:
//! [`TestRedis`] starts a standalone server, a 6-node cluster, or a sentinel set on free loopback
//! ports, injects faults with one call, and stops everything on drop.
//!
//! Where servers come from, in order: `REDIS_URL` (`REDIS_CLUSTER_URL`, `REDIS_SENTINEL_URL`)
//! when set; else `redis-server` from `PATH`; else, with the `testcontainers` feature, a container
//! when a Docker engine answers; else an [`Error::NotInstalled`] that says what to install.
//! Tests never skip silently.
//!
//! ```no_run
//! use redtail_testkit::{Deployment, TestRedis};
//!
//! // A cluster of this test's own, so faults are allowed.
//! let cluster = TestRedis::owned(Deployment::Cluster)?;
//! // ... connect a client to cluster.url() and start work ...
//! cluster.cluster_failover()?;
//! # Ok::<(), redtail_testkit::Error>(())
//! ```

#[cfg(feature = "testcontainers")]
mod container;
mod deployment;
mod error;
mod memory;
pub mod resp;
mod server;

pub use deployment::{Deployment, SENTINEL_SERVICE, TestRedis};
pub use error::{Error, Result};
pub use memory::{Clock, MemoryBackend};
