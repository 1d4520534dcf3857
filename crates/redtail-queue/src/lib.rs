//! A reliable Redis job queue: at-least-once delivery under leases, retries with backoff, a
//! dead-letter set, delayed and prioritized jobs, progress, logs, events and metrics, with jobs
//! taken and acknowledged in batches for throughput.
//!
//! ```no_run
//! # async fn demo(backend: std::sync::Arc<dyn redtail_core::Backend>) -> redtail_queue::Result<()> {
//! use redtail_queue::{Queue, QueueConfig, WorkerOptions};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Download { url: String }
//!
//! let queue = Queue::<Download>::new(backend, QueueConfig::new("downloads"))?;
//! let id = queue.add(&Download { url: "https://example.invalid/v/1".into() }).await?;
//! let worker = queue.worker(WorkerOptions::default().concurrency(4), |job| async move {
//!     job.progress(50).await?;
//!     Ok::<_, redtail_queue::Error>(format!("fetched {}", job.data.url))
//! });
//! // ... on shutdown:
//! let stats = worker.shutdown().await;
//! # let _ = (id, stats); Ok(()) }
//! ```
//!
//! Every key of a queue carries the queue's name as its hash tag, so a queue works on Redis
//! Cluster without `CROSSSLOT`; every state change is one Lua script in `lua/`.
//! See the crate README for the guarantees and the key layout.

mod config;
mod error;
mod events;
mod job;
mod queue;
mod record;
mod script;
mod types;
mod worker;

pub use config::{Backoff, JobOptions, QueueConfig, RateLimit, Retention};
pub use error::{Error, Result};
pub use events::{EventKind, QueueEvent, QueueEvents, Start};
pub use job::{Job, JobInfo, JobState};
pub use queue::Queue;
/// What this crate's API takes from `redtail-core`, so that a service needs only this crate and
/// `redtail-connection`.
pub use redtail_core::Backend;
pub use types::{Added, Counts, Finished, JobId, Metrics, Minute};
pub use worker::{WorkerHandle, WorkerOptions, WorkerStats};

/// The highest job priority.
pub const MAX_PRIORITY: u32 = 1 << 20;
