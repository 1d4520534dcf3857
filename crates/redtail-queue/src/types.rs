//! The queue's plain data: job ids, what an add did, counts and metrics.

use std::{fmt, time::Duration};

use serde::Serialize;

/// The id of a job: a number the queue assigned, or the custom id it was added with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(id: &str) -> Self {
        JobId(id.to_owned())
    }
}

/// What [`Queue::add_with`](crate::Queue::add_with) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The job's id.
    pub id: JobId,
    /// `false` when a job with this custom id already existed, and nothing was added.
    pub created: bool,
}

/// Counts of a queue's jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Ready to run (prioritized included).
    pub waiting: u64,
    /// Waiting for their time: delayed, or retrying after a backoff.
    pub delayed: u64,
    /// Running under a lease.
    pub active: u64,
    /// Completed and still retained.
    pub completed: u64,
    /// Dead-lettered: failed every attempt, still retained.
    pub dead: u64,
    /// Flow parents waiting for their children ([`FlowJob`](crate::FlowJob)).
    pub waiting_children: u64,
}

/// Jobs finished in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// The minute's start, in milliseconds since the Unix epoch (Redis's clock).
    pub start_ms: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts failed (retried or dead-lettered).
    pub failed: u64,
    /// Adds deduplicated against an existing job ([`JobOptions::dedup`](crate::JobOptions::dedup)).
    pub deduplicated: u64,
}

/// A queue's state and recent throughput.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Jobs by state.
    pub counts: Counts,
    /// Whether delivery is paused.
    pub paused: bool,
    /// How long the oldest waiting job has waited: of the prioritized, the plain and the first
    /// job of the group whose turn is next (other groups' first jobs are not read).
    pub oldest_waiting: Option<Duration>,
    /// The last minutes, newest (the current, partial one) first.
    pub minutes: Vec<Minute>,
    /// Totals over the queue's groups.
    pub groups: GroupTotals,
}

/// Totals over a queue's groups ([`JobOptions::group`](crate::JobOptions::group)), for
/// metrics: no group is named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupTotals {
    /// Groups with jobs waiting.
    pub waiting: u64,
    /// Groups with jobs running (or holding their place through a backoff).
    pub running: u64,
    /// Groups paused.
    pub paused: u64,
    /// Grouped jobs waiting (counted in [`Counts::waiting`] too).
    pub jobs_waiting: u64,
    /// Grouped jobs running, or holding their group's place through a backoff.
    pub jobs_active: u64,
}

/// One group's state ([`Queue::group`](crate::Queue::group)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// The group.
    pub name: String,
    /// Its jobs waiting.
    pub waiting: u64,
    /// Its jobs running, or holding its place through a backoff.
    pub active: u64,
    /// Whether it is paused.
    pub paused: bool,
}

/// Which finished jobs [`Queue::clean`](crate::Queue::clean) removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Completed jobs.
    Completed,
    /// Dead-lettered jobs.
    Dead,
}
