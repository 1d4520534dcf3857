//! The job queues and their worker: simulated YouTube downloads with progress, and media
//! requests. Failures are injectable per job so retries and dead letters can be seen.

use std::{sync::Arc, time::Duration};

use redtail_core::Backend;
use redtail_queue::{Backoff, Job, Queue, QueueConfig, WorkerHandle, WorkerOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A YouTube download, as the original design queued it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Download {
    pub(crate) url: String,
    pub(crate) user_id: String,
    /// `once`: the first attempt fails half way; `always`: every attempt fails;
    /// `until-retried`: every attempt fails until an admin retries the job from the dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fail: Option<String>,
}

/// A request for a movie or show to be added to the library.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MediaRequest {
    pub(crate) title: String,
    pub(crate) media_type: String,
    pub(crate) user_id: String,
}

/// The service's two queues.
#[derive(Debug, Clone)]
pub(crate) struct Queues {
    pub(crate) downloads: Queue<Download>,
    pub(crate) requests: Queue<MediaRequest>,
}

impl Queues {
    pub(crate) fn new(backend: &Arc<dyn Backend>) -> Result<Queues, redtail_queue::Error> {
        // The original queues; retries after 2 s then 4 s, so a failing job is dead in seconds.
        let fast = |config: QueueConfig| {
            let defaults = config.defaults.clone().backoff(Backoff::Exponential {
                base: Duration::from_secs(2),
                max: Duration::from_secs(30),
                jitter: 0.0,
            });
            config.defaults(defaults)
        };
        Ok(Queues {
            downloads: Queue::new(Arc::clone(backend), fast(QueueConfig::youtube_downloads()))?,
            requests: Queue::new(Arc::clone(backend), fast(QueueConfig::media_requests()))?,
        })
    }

    /// The queue named `name`, type-erased for the admin routes.
    pub(crate) fn by_name(&self, name: &str) -> Option<Admin<'_>> {
        match name {
            "youtube-downloads" => Some(Admin::Downloads(&self.downloads)),
            "media-requests" => Some(Admin::Requests(&self.requests)),
            _ => None,
        }
    }

    /// Which queue holds a job, from its id's prefix.
    pub(crate) fn of_job(&self, id: &str) -> Option<Admin<'_>> {
        if id.starts_with("dl-") {
            Some(Admin::Downloads(&self.downloads))
        } else if id.starts_with("mr-") {
            Some(Admin::Requests(&self.requests))
        } else {
            None
        }
    }

    /// Starts a worker on each queue.
    pub(crate) fn start_workers(&self, step: Duration) -> Vec<WorkerHandle> {
        let options = WorkerOptions::default().concurrency(4).shutdown_deadline(Duration::from_secs(10));
        let downloads = self.downloads.worker(options.clone(), move |job| download(job, step));
        let requests = self.requests.worker(options, move |job: Job<MediaRequest>| async move {
            tokio::time::sleep(step).await;
            Ok::<_, String>(json!({"status": "requested", "title": job.data.title}))
        });
        vec![downloads, requests]
    }
}

/// One of the queues, whatever its job type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Admin<'a> {
    Downloads(&'a Queue<Download>),
    Requests(&'a Queue<MediaRequest>),
}

macro_rules! each {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            Admin::Downloads($q) => $e,
            Admin::Requests($q) => $e,
        }
    };
}

impl Admin<'_> {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Admin::Downloads(_) => "youtube-downloads",
            Admin::Requests(_) => "media-requests",
        }
    }
    pub(crate) async fn get(self, id: &str) -> redtail_queue::Result<Option<redtail_queue::JobInfo>> {
        each!(self, q => q.get(id).await)
    }
    pub(crate) async fn metrics(self) -> redtail_queue::Result<redtail_queue::Metrics> {
        each!(self, q => q.metrics(10).await)
    }
    pub(crate) async fn list(
        self,
        state: redtail_queue::JobState,
        n: u64,
    ) -> redtail_queue::Result<Vec<redtail_queue::JobInfo>> {
        each!(self, q => q.list(state, 0, n).await)
    }
    pub(crate) async fn retry_dead(self, id: &str) -> redtail_queue::Result<bool> {
        each!(self, q => q.retry_dead(id).await)
    }
    pub(crate) async fn delete(self, id: &str) -> redtail_queue::Result<bool> {
        each!(self, q => q.delete(id).await)
    }
}

/// A simulated download: five steps with progress, failing as the job asks.
async fn download(job: Job<Download>, step: Duration) -> Result<Value, String> {
    job.log(format!("attempt {} of {}: fetching {}", job.attempt, job.max_attempts, job.data.url))
        .await
        .map_err(|e| e.to_string())?;
    for percent in [20, 40, 60, 80, 100] {
        tokio::time::sleep(step).await;
        let fail = match job.data.fail.as_deref() {
            Some("always") => true,
            Some("once") => job.attempt == 1,
            // A retry from the dead letters grants a second set of attempts.
            Some("until-retried") => job.max_attempts <= QueueConfig::youtube_downloads().defaults.attempts,
            _ => false,
        };
        if fail && percent == 60 {
            return Err(format!("simulated failure at 60% (fail={})", job.data.fail.as_deref().unwrap_or_default()));
        }
        job.progress(percent).await.map_err(|e| e.to_string())?;
    }
    let name: String = job.id.as_str().chars().filter(char::is_ascii_alphanumeric).collect();
    Ok(json!({"file": format!("/media/youtube/{name}.mp4"), "bytes": 48_000_000 + job.data.url.len() as u64}))
}
