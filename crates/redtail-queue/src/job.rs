//! Jobs: what a handler receives, and what the queue tells about a job by id.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redtail_core::Arg;
use serde::{Deserialize, Serialize};

use crate::{
    Error, JobId, Result,
    queue::Inner,
    script::{
        log::{self, LogArg},
        progress::{self, ProgressArg},
        update::{self, UpdateArg},
    },
};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready to run.
    Waiting,
    /// Waiting for its time: delayed, or retrying after a backoff.
    Delayed,
    /// Running under a worker's lease.
    Active,
    /// Completed; its result is kept.
    Completed,
    /// Failed every attempt; its errors are kept in the dead-letter set.
    Dead,
    /// A flow's parent waiting for its children ([`FlowJob`](crate::FlowJob)).
    #[serde(rename = "waiting_children")]
    WaitingChildren,
}

/// What the queue holds about a job, as [`Queue::get`](crate::Queue::get) reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// Its data, as JSON.
    pub data: serde_json::Value,
    /// Attempts started so far (a running one included).
    pub attempts_started: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// `0` for none.
    pub priority: u32,
    /// When it was added, in ms since the Unix epoch (Redis's clock).
    pub created_ms: u64,
    /// When its latest attempt started.
    pub started_ms: Option<u64>,
    /// When it completed or was dead-lettered.
    pub finished_ms: Option<u64>,
    /// The latest progress its handler reported.
    pub progress: Option<serde_json::Value>,
    /// The handler's result, once completed.
    pub result: Option<serde_json::Value>,
    /// The error of each failed attempt: `(attempt, message)`, in order.
    pub errors: Vec<(u32, String)>,
    /// Its group ([`JobOptions::group`](crate::JobOptions::group)); `None` too once it has
    /// completed on its first attempt without log or progress, when only a record of it is kept.
    pub group: Option<String>,
}

/// A job handed to a worker's handler.
pub struct Job<T> {
    /// The job's id.
    pub id: JobId,
    /// Its data.
    pub data: T,
    /// This attempt's number, from 1: a handler that must not repeat side effects can check it.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// When it was added, in ms since the Unix epoch (Redis's clock).
    pub created_ms: u64,
    /// Its group ([`JobOptions::group`](crate::JobOptions::group)), if any.
    pub group: Option<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) token: Arc<str>,
    pub(crate) inner: Arc<Inner>,
    /// Set by [`Job::log`], so that the log expires with the job.
    pub(crate) logged: Arc<AtomicBool>,
    /// Set by [`Job::progress`] and [`Job::update_data`]: the job keeps its hash, which holds
    /// the progress and the data, when it completes (others leave it for a smaller record).
    pub(crate) progressed: Arc<AtomicBool>,
    /// Set by [`Job::discard`]: a failure of this attempt is not retried.
    pub(crate) discarded: Arc<AtomicBool>,
    /// Set by [`Job::move_to_delayed`]: the delay in ms, or [`NOT_DELAYED`].
    pub(crate) delayed: Arc<AtomicU64>,
}

/// [`Job::delayed`] when the handler did not ask for a delay.
pub(crate) const NOT_DELAYED: u64 = u64::MAX;

impl<T> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job").field("id", &self.id).field("attempt", &self.attempt).finish_non_exhaustive()
    }
}

impl<T> Job<T> {
    /// Records progress: a number such as `42` or any JSON value, readable by id and sent as a
    /// `progress` event. Returns `false` when this worker no longer holds the job's lease
    /// (the job is running elsewhere, or finished): the handler may stop early.
    pub async fn progress(&self, progress: impl Serialize) -> Result<bool> {
        let value = serde_json::to_string(&progress).map_err(Error::Encode)?;
        let args = ProgressArg::ALL.iter().map(|arg| match arg {
            ProgressArg::Id => Arg::from(self.id.as_str()),
            ProgressArg::Token => Arg::from(&*self.token),
            ProgressArg::Progress => Arg::from(value.as_str()),
        });
        self.progressed.store(true, Ordering::Relaxed);
        Ok(progress::SCRIPT.run(&self.inner, args).await?.as_int()? == 1)
    }

    /// Appends a line to the job's log. The last `max_log_lines` are kept, as long as the job
    /// once it finishes (a week from the last line while it has not).
    pub async fn log(&self, line: impl Into<String>) -> Result<()> {
        let line = line.into();
        let args = LogArg::ALL.iter().map(|arg| match arg {
            LogArg::Id => Arg::from(self.id.as_str()),
            LogArg::Line => Arg::from(line.as_str()),
            LogArg::Keep => Arg::from(self.inner.config.max_log_lines),
        });
        self.logged.store(true, Ordering::Relaxed);
        log::SCRIPT.run(&self.inner, args).await?;
        Ok(())
    }

    /// Replaces the job's stored data (BullMQ's `job.updateData`), for example to record how
    /// far it got so that a retry resumes there: the next attempt, and the job as read by id,
    /// see the new data. Returns `false`, writing nothing, when this worker no longer holds the
    /// job's lease. (`job.data` in hand is left as it is.)
    pub async fn update_data(&self, data: &T) -> Result<bool>
    where
        T: Serialize,
    {
        let value = serde_json::to_string(data).map_err(Error::Encode)?;
        let args = UpdateArg::ALL.iter().map(|arg| match arg {
            UpdateArg::Id => Arg::from(self.id.as_str()),
            UpdateArg::Token => Arg::from(&*self.token),
            UpdateArg::Data => Arg::from(value.as_str()),
        });
        // The job keeps its hash, which holds the new data, when it completes.
        self.progressed.store(true, Ordering::Relaxed);
        Ok(update::SCRIPT.run(&self.inner, args).await?.as_int()? == 1)
    }

    /// Marks the job as not worth retrying (BullMQ's `UnrecoverableError` and `job.discard()`):
    /// if this attempt fails, the job goes to the dead letters at once, whatever attempts it
    /// has left (a download whose URL is gone). A success still completes it.
    pub fn discard(&self) {
        self.discarded.store(true, Ordering::Relaxed);
    }

    /// Puts the job off (BullMQ's `moveToDelayed`): once the handler returns, whatever it
    /// returns, the job waits `delay` in the delayed set and then runs again, this attempt not
    /// spent (a rate-limited upstream, a file not there yet). Its data, log and progress stay.
    /// The last call before the handler returns wins. A handler that puts a job off on every
    /// attempt keeps it forever: bound that in the handler (say, by a count in its data).
    ///
    /// A delay of 1 ms to [`MAX_DURATION`](crate::MAX_DURATION); anything else is refused,
    /// naming the setting, and changes nothing.
    pub fn move_to_delayed(&self, delay: Duration) -> Result<()> {
        if delay < Duration::from_millis(1) {
            return Err(Error::InvalidInput(format!("move_to_delayed needs a delay of at least 1 ms, got {delay:?}")));
        }
        crate::config::at_most_max("move_to_delayed", delay)?;
        let ms = u64::try_from(delay.as_millis()).unwrap_or(NOT_DELAYED - 1);
        self.delayed.store(ms, Ordering::Relaxed);
        Ok(())
    }

    /// The per-attempt timeout in force for this job.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}
