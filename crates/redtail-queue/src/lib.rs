//! A reliable Redis job queue: leases, retries, dead letters, progress and events, batched for throughput.
#![doc = include_str!("../README.md")]

mod config;
mod error;
mod events;
mod flow;
mod import;
mod job;
mod queue;
mod record;
mod scheduler;
mod script;
mod types;
mod worker;

pub use config::{
    Backoff, Dedup, DedupMode, Groups, JobOptions, MAX_DURATION, MAX_GROUP_CONCURRENCY, QueueConfig, RateLimit,
    Retention,
};
pub use error::{Error, Result};
pub use events::{EventKind, QueueEvent, QueueEvents, Start};
pub use flow::{Child, ChildFailure, ChildOutcome, FlowJob, FlowNode, FlowTree, MAX_FLOW_DEPTH, MAX_FLOW_JOBS};
pub use import::{BullmqImport, BullmqJob, BullmqState};
pub use job::{Job, JobInfo, JobState};
pub use queue::Queue;
/// What this crate's API takes from `redtail-core`, so that a service needs only this crate and
/// `redtail-connection`.
pub use redtail_core::{Backend, Clock, Namespace};
pub use scheduler::{Definition, Repeat, Scheduler, SchedulerInfo};
pub use types::{Added, Counts, Finished, GroupInfo, GroupTotals, JobId, Metrics, Minute};
pub use worker::{WorkerHandle, WorkerOptions, WorkerStats};

/// The highest job priority.
pub const MAX_PRIORITY: u32 = 1 << 20;
