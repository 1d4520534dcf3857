//! The job queues and their worker: simulated YouTube downloads with progress, and media
//! requests. Failures are injectable per job so retries and dead letters can be seen.

use std::{fs::File, future::Future, io::Write, path::Path, sync::Arc, time::Duration};

use media_api::presets;
use redtail_core::Backend;
use redtail_queue::{Backoff, Job, JobInfo, Queue, QueueConfig, Retention, WorkerHandle, WorkerOptions};
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
    /// The original queues, keeping `keep_completed` completed jobs each when given.
    pub(crate) fn new(backend: &Arc<dyn Backend>, keep_completed: Option<u64>) -> Result<Queues, redtail_queue::Error> {
        // Retries after 2 s then 4 s, so a failing job is dead in seconds.
        let fast = |config: QueueConfig| {
            let mut defaults = config.defaults.clone().backoff(Backoff::Exponential {
                base: Duration::from_secs(2),
                max: Duration::from_secs(30),
                jitter: 0.0,
            });
            if let Some(count) = keep_completed {
                let age = defaults.keep_completed.age;
                defaults = defaults.keep_completed(Retention::new(age, count));
            }
            config.defaults(defaults)
        };
        Ok(Queues {
            downloads: Queue::new(Arc::clone(backend), fast(presets::youtube_downloads()))?,
            requests: Queue::new(Arc::clone(backend), fast(presets::media_requests()))?,
        })
    }

    /// A job by id, with the name of its queue (from the id's prefix).
    pub(crate) async fn get(&self, id: &str) -> redtail_queue::Result<Option<(&'static str, JobInfo)>> {
        let job = if id.starts_with("dl-") {
            self.downloads.get(id).await?.map(|job| ("youtube-downloads", job))
        } else if id.starts_with("mr-") {
            self.requests.get(id).await?.map(|job| ("media-requests", job))
        } else {
            None
        };
        Ok(job)
    }

    /// Starts a worker on each queue, recording every attempt in `ledger`.
    pub(crate) fn start_workers(&self, step: Duration, ledger: &Ledger) -> redtail_queue::Result<Vec<WorkerHandle>> {
        let options = WorkerOptions::default().concurrency(4).shutdown_deadline(Duration::from_secs(10));
        let record = ledger.clone();
        let downloads = self.downloads.worker(options.clone(), move |job: Job<Download>| {
            record.clone().around(job.id.as_str().to_owned(), job.attempt, download(job, step))
        })?;
        let record = ledger.clone();
        let requests = self.requests.worker(options, move |job: Job<MediaRequest>| {
            record.clone().around(job.id.as_str().to_owned(), job.attempt, async move {
                tokio::time::sleep(step).await;
                Ok::<_, String>(json!({"status": "requested", "title": job.data.title}))
            })
        })?;
        Ok(vec![downloads, requests])
    }
}

/// Where a worker records each attempt it runs (`MEDIA_API_JOB_LEDGER`): lines of
/// `<unix ms> start|done|fail <job id> <attempt>`, each written by one `write` to a file opened
/// for appending, so lines from several worker processes never mix and a killed worker's
/// lines are kept. `cargo xtask soak` counts duplicates and in-flight jobs from it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger(Option<Arc<File>>);

impl Ledger {
    /// A ledger appending to `path`, or none.
    pub(crate) fn open(path: Option<&Path>) -> std::io::Result<Ledger> {
        let Some(path) = path else { return Ok(Ledger(None)) };
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Ledger(Some(Arc::new(file))))
    }

    /// Runs one attempt, recording its start and its outcome.
    async fn around<R, E>(
        self,
        id: String,
        attempt: u32,
        attempt_future: impl Future<Output = Result<R, E>>,
    ) -> Result<R, E> {
        self.record("start", &id, attempt);
        let outcome = attempt_future.await;
        self.record(if outcome.is_ok() { "done" } else { "fail" }, &id, attempt);
        outcome
    }

    fn record(&self, event: &str, id: &str, attempt: u32) {
        let Some(file) = &self.0 else { return };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        if let Err(e) = (&**file).write_all(format!("{now} {event} {id} {attempt}\n").as_bytes()) {
            eprintln!("media-api: cannot write the job ledger: {e}");
        }
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
            Some("until-retried") => job.max_attempts <= presets::youtube_downloads().defaults.attempts,
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
