//! The fred-based redtail `Backend`: pooling, cluster, sentinel, reconnect, health and shutdown.
#![doc = include_str!("../README.md")]

mod config;
mod convert;
mod error;
mod health;
mod redis;
mod tracking;

pub use config::{Backoff, Config, ReplicaAcks};
pub use error::{Error, Result};
pub use health::Health;
pub use redis::Redis;
