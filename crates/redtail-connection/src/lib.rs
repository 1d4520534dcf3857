//! The real redtail [`Backend`](redtail_core::Backend): Redis through the `fred` client, with
//! pooling, cluster and sentinel support, reconnect with backoff, `READONLY` handling, health
//! checks and graceful shutdown. This is the only redtail crate that talks to fred.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use redtail_connection::{Config, Redis};
//! use redtail_core::{Backend, Cmd};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::connect(Config::from_env()?).await?;
//! let backend: Arc<dyn Backend> = redis.clone().into();
//! backend.call(Cmd::new("PING")).await?;
//! println!("{}", serde_json::to_string(&redis.health().await)?);
//! redis.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

mod config;
mod convert;
mod error;
mod health;
mod redis;

pub use config::{Backoff, Config};
pub use error::{Error, Result};
pub use health::Health;
pub use redis::Redis;
