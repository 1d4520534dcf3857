//! Real `redis-server` harnesses and an in-memory backend for testing redtail and services built on it.
#![doc = include_str!("../README.md")]

mod binaries;
#[cfg(feature = "testcontainers")]
mod container;
mod deployment;
mod error;
mod memory;
mod proxy;
pub mod resp;
mod server;

pub use binaries::{ServerBinaries, ServerKind};
pub use deployment::{Deployment, SENTINEL_SERVICE, SlotMigration, TestRedis};
pub use error::{Error, Result};
pub use memory::{Clock, MemoryBackend};
pub use proxy::FaultProxy;
