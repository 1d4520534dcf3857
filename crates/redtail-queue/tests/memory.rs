//! Queue behaviour on the in-memory backend: retries on a virtual clock, dead letters, poison
//! jobs, panics, timeouts, priorities, pause, shutdown, administration and events.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use redtail_core::Backend;
use redtail_queue::{
    Backoff, Error, EventKind, Finished, JobOptions, JobState, Queue, QueueConfig, Result, Retention, Start,
    WorkerOptions,
};
use redtail_testkit::{Clock, MemoryBackend};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Download {
    url: String,
    user: u32,
}

fn download(i: u32) -> Download {
    Download { url: format!("https://example.invalid/v/{i}"), user: i % 10 }
}

fn queue(backend: &MemoryBackend, config: QueueConfig) -> Queue<Download> {
    Queue::new(backend.clone(), config).unwrap_or_else(|e| panic!("{e}"))
}

fn fast() -> WorkerOptions {
    WorkerOptions::default().idle_poll(Duration::from_millis(20)).shutdown_deadline(Duration::from_secs(5))
}

/// Waits (real time, bounded) until `done` holds.
async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_job_runs_once_with_progress_logs_result_and_events() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("youtube-downloads"));
    let mut events = queue.events(Start::Beginning).await?;
    let id = queue.add(&download(1)).await?;
    assert_eq!(queue.get(id.as_str()).await?.map(|j| j.state), Some(JobState::Waiting));
    let worker = queue.worker(fast(), |job| async move {
        assert_eq!((job.attempt, job.max_attempts), (1, 3));
        job.log("starting").await?;
        assert!(job.progress(50).await?);
        assert!(job.progress(serde_json::json!({"step": "done"})).await?);
        Ok::<_, Error>(format!("saved {}", job.data.url))
    })?;
    until("the job completes", || async { queue.counts().await.ok().map(|c| c.completed) == Some(1) }).await;
    let stats = worker.shutdown().await;
    assert_eq!((stats.completed, stats.retried, stats.dead, stats.refused), (1, 0, 0, 0));
    let job = queue.get(id.as_str()).await?.unwrap_or_else(|| panic!("job {id} is gone"));
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.result, Some(serde_json::json!("saved https://example.invalid/v/1")));
    assert_eq!(job.progress, Some(serde_json::json!({"step": "done"})));
    assert_eq!(job.attempts_started, 1);
    assert!(job.finished_ms >= job.started_ms && job.started_ms >= Some(job.created_ms));
    assert_eq!(queue.logs(id.as_str()).await?, vec!["starting".to_owned()]);
    let mut kinds = Vec::new();
    while kinds.last() != Some(&EventKind::Completed) {
        let event = events.next().await?;
        assert_eq!(event.job, id);
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        [EventKind::Added, EventKind::Active, EventKind::Progress, EventKind::Progress, EventKind::Completed]
    );
    Ok(())
}

#[tokio::test]
async fn retries_follow_the_backoff_schedule_on_the_server_clock() -> Result<()> {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let clock = redis.clock().clone();
    let defaults = JobOptions::default().attempts(4).backoff(Backoff::Exponential {
        base: Duration::from_secs(2),
        max: Duration::from_secs(5),
        jitter: 0.0,
    });
    let queue = queue(&redis, QueueConfig::new("retries").defaults(defaults));
    let id = queue.add(&download(1)).await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let (seen, clock) = (Arc::clone(&seen), clock.clone());
        queue.worker(fast(), move |job| {
            let (seen, clock) = (Arc::clone(&seen), clock.clone());
            async move {
                seen.lock().map_err(|_| "poisoned")?.push((job.attempt, clock.now()));
                Err::<(), _>(format!("source down (attempt {})", job.attempt))
            }
        })?
    };
    // Move the server clock in 100 ms steps and let the worker look each time.
    for _ in 0..200 {
        if queue.counts().await?.dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        clock.advance(Duration::from_millis(100));
    }
    worker.shutdown().await;
    let seen = seen.lock().map_err(|_| Error::InvalidInput("poisoned".into()))?.clone();
    assert_eq!(seen.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let gaps: Vec<u128> =
        seen.windows(2).map(|w| w[1].1.duration_since(w[0].1).unwrap_or_default().as_millis()).collect();
    // 2 s, 4 s, then capped at 5 s; the worker looks within a 100 ms step of each due time.
    for (gap, expected) in gaps.iter().zip([2000u128, 4000, 5000]) {
        assert!((expected..=expected + 300).contains(gap), "gaps {gaps:?}, expected about 2000, 4000, 5000");
    }
    let job = queue.get(id.as_str()).await?.unwrap_or_else(|| panic!("job gone"));
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.errors.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(job.errors[3].1, "source down (attempt 4)");
    Ok(())
}

#[tokio::test]
async fn the_dead_letter_set_holds_exactly_the_jobs_that_failed_every_attempt() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let defaults =
        JobOptions::default().attempts(2).backoff(Backoff::Fixed { delay: Duration::from_millis(1), jitter: 0.0 });
    let queue = queue(&redis, QueueConfig::new("dead").defaults(defaults));
    let ids = queue.add_bulk(&(0..40).map(download).collect::<Vec<_>>()).await?;
    // Odd jobs always fail; jobs divisible by 4 fail once and then succeed.
    let worker = queue.worker(fast().concurrency(8), |job| async move {
        let n: u32 = job.data.url.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if n % 2 == 1 || (n.is_multiple_of(4) && job.attempt == 1) { Err(format!("job {n} failed")) } else { Ok(n) }
    })?;
    until("every job finishes", || async {
        queue.counts().await.ok().map(|c| (c.completed, c.dead)) == Some((20, 20))
    })
    .await;
    let stats = worker.shutdown().await;
    assert_eq!((stats.completed, stats.dead, stats.retried), (20, 20, 30));
    let mut dead: Vec<String> = queue.list(JobState::Dead, 0, 100).await?.into_iter().map(|j| j.id.0).collect();
    dead.sort_by_key(|id| id.parse::<u32>().unwrap_or(0));
    let expected: Vec<String> =
        ids.iter().enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, id)| id.0.clone()).collect();
    assert_eq!(dead, expected);
    // From the dead-letter set a job can be retried (as many attempts again) or deleted.
    assert!(queue.retry_dead(&dead[0]).await?);
    let retried = queue.get(&dead[0]).await?.unwrap_or_else(|| panic!("retried job gone"));
    assert_eq!((retried.state, retried.attempts_started, retried.max_attempts), (JobState::Waiting, 2, 4));
    assert_eq!(retried.errors.len(), 2, "the errors of the first attempts stay");
    assert!(queue.delete(&dead[1]).await?);
    assert_eq!(queue.get(&dead[1]).await?, None);
    assert!(!queue.retry_dead(&dead[1]).await?, "a deleted job cannot be retried");
    assert_eq!(queue.counts().await?.dead, 18);
    Ok(())
}

#[tokio::test]
async fn poison_data_panics_and_timeouts_fail_attempts_and_the_worker_keeps_going() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("bad").defaults(JobOptions::default().attempts(1)));
    // Same queue, but data of another shape: it cannot decode as a Download.
    let raw: Queue<serde_json::Value> = Queue::new(redis.clone(), QueueConfig::new("bad"))?;
    let poison = raw.add(&serde_json::json!({"not": "a download"})).await?;
    let panics = queue.add(&download(1)).await?;
    let slow =
        queue.add_with(&download(2), JobOptions::default().attempts(1).timeout(Duration::from_millis(50))).await?.id;
    let fine = queue.add(&download(3)).await?;
    let worker = queue.worker(fast().concurrency(4), |job| async move {
        match job.data.user {
            1 => panic!("boom in handler"),
            2 => tokio::time::sleep(Duration::from_secs(30)).await,
            _ => {}
        }
        Ok::<_, Error>(())
    })?;
    until("all four finish", || async { queue.counts().await.ok().map(|c| c.completed + c.dead) == Some(4) }).await;
    let stats = worker.shutdown().await;
    assert_eq!((stats.completed, stats.dead, stats.panicked, stats.timed_out), (1, 3, 1, 1));
    let error = |id: String| {
        let queue = queue.clone();
        async move { queue.get(&id).await.map(|j| j.and_then(|j| j.errors.first().map(|e| e.1.clone()))) }
    };
    assert!(error(poison.0).await?.is_some_and(|e| e.starts_with("cannot decode job data")));
    assert_eq!(error(panics.0).await?, Some("handler panicked: boom in handler".to_owned()));
    assert_eq!(error(slow.0).await?, Some("timed out after 50ms".to_owned()));
    assert_eq!(queue.get(fine.as_str()).await?.map(|j| j.state), Some(JobState::Completed));
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_added() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("input").max_payload_bytes(100));
    let huge = Download { url: "x".repeat(200), user: 1 };
    assert!(matches!(queue.add(&huge).await, Err(Error::TooLarge { max: 100, .. })));
    let fine = download(1);
    let batch = vec![(&fine, JobOptions::default()), (&huge, JobOptions::default())];
    assert!(matches!(queue.add_bulk_with(batch).await, Err(Error::TooLarge { .. })));
    for options in [
        JobOptions::default().attempts(0),
        JobOptions::default().priority(redtail_queue::MAX_PRIORITY + 1),
        JobOptions::default().id("123"),
        JobOptions::default().id(""),
        JobOptions::default().id("has space"),
        JobOptions::default().id("x".repeat(129)),
        JobOptions::default().timeout(Duration::ZERO),
        JobOptions::default().backoff(Backoff::Fixed { delay: Duration::ZERO, jitter: 2.0 }),
    ] {
        assert!(matches!(queue.add_with(&download(1), options).await, Err(Error::InvalidInput(_))));
    }
    assert_eq!(queue.counts().await?.waiting, 0, "nothing was added");
    for name in ["", "has space", "a{b}", &"q".repeat(65)] {
        assert!(matches!(Queue::<Download>::new(redis.clone(), QueueConfig::new(name)), Err(Error::InvalidInput(_))));
    }
    // A custom id makes adding idempotent.
    let first = queue.add_with(&download(1), JobOptions::default().id("dl:user1:abc")).await?;
    let again = queue.add_with(&download(2), JobOptions::default().id("dl:user1:abc")).await?;
    assert!(first.created && !again.created);
    assert_eq!(first.id, again.id);
    assert_eq!(queue.counts().await?.waiting, 1);
    Ok(())
}

#[tokio::test]
async fn priorities_run_first_and_delayed_jobs_wait_for_their_time() -> Result<()> {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("order"));
    let plain_a = queue.add(&download(1)).await?;
    let plain_b = queue.add(&download(2)).await?;
    let low = queue.add_with(&download(3), JobOptions::default().priority(5)).await?.id;
    let high = queue.add_with(&download(4), JobOptions::default().priority(10)).await?.id;
    let later = queue.add_with(&download(5), JobOptions::default().delay(Duration::from_secs(60))).await?.id;
    let waiting: Vec<_> = queue.list(JobState::Waiting, 0, 10).await?.into_iter().map(|j| j.id).collect();
    assert_eq!(waiting, [high.clone(), low.clone(), plain_a.clone(), plain_b.clone()]);
    let order = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let order = Arc::clone(&order);
        queue.worker(fast().concurrency(1), move |job| {
            let order = Arc::clone(&order);
            async move {
                order.lock().map_err(|_| "poisoned")?.push(job.id);
                Ok::<_, &str>(())
            }
        })?
    };
    until("the ready jobs finish", || async { queue.counts().await.ok().map(|c| c.completed) == Some(4) }).await;
    assert_eq!(queue.counts().await?.delayed, 1, "the delayed job waits");
    redis.clock().advance(Duration::from_secs(61));
    until("the delayed job finishes", || async { queue.counts().await.ok().map(|c| c.completed) == Some(5) }).await;
    worker.shutdown().await;
    let order = order.lock().map_err(|_| Error::InvalidInput("poisoned".into()))?.clone();
    assert_eq!(order, [high, low, plain_a, plain_b, later]);
    Ok(())
}

#[tokio::test]
async fn pause_stops_delivery_and_resume_restarts_it() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("pause"));
    let worker = queue.worker(fast(), |_job| async move { Ok::<_, Error>(()) })?;
    queue.pause().await?;
    queue.add_bulk(&(0..10).map(download).collect::<Vec<_>>()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = queue.metrics(5).await?;
    assert!(metrics.paused);
    assert_eq!((metrics.counts.waiting, metrics.counts.completed), (10, 0));
    assert!(metrics.oldest_waiting.is_some());
    queue.resume().await?;
    until("every job completes", || async { queue.counts().await.ok().map(|c| c.completed) == Some(10) }).await;
    let metrics = queue.metrics(5).await?;
    assert_eq!(metrics.minutes.len(), 5);
    assert_eq!(metrics.minutes.iter().map(|m| m.completed).sum::<u64>(), 10);
    assert_eq!(metrics.oldest_waiting, None);
    worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_hands_unfinished_jobs_back_without_spending_an_attempt() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("shutdown"));
    queue.add_bulk(&(0..6).map(download).collect::<Vec<_>>()).await?;
    // Even jobs finish quickly, odd ones would take a minute.
    let worker =
        queue.worker(fast().concurrency(6).shutdown_deadline(Duration::from_millis(300)), |job| async move {
            if job.data.user % 2 == 1 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok::<_, Error>(())
        })?;
    until("the quick jobs finish", || async {
        queue.counts().await.ok().map(|c| (c.completed, c.active)) == Some((3, 3))
    })
    .await;
    let stats = worker.shutdown().await;
    assert_eq!((stats.completed, stats.released), (3, 3));
    let counts = queue.counts().await?;
    assert_eq!((counts.waiting, counts.active, counts.completed), (3, 0, 3));
    for job in queue.list(JobState::Waiting, 0, 10).await? {
        assert_eq!(job.attempts_started, 0, "a handed-back attempt does not count");
    }
    Ok(())
}

#[tokio::test]
async fn a_lost_lease_refuses_the_late_completion_and_the_job_runs_again() -> Result<()> {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("lease"));
    let id = queue.add(&download(1)).await?;
    let (release, released) = tokio::sync::watch::channel(false);
    let slow = queue.worker(fast().lease(Duration::from_secs(30)), move |job| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Ok::<_, Error>(format!("slow attempt {}", job.attempt))
        }
    })?;
    until("the slow worker holds the job", || async { queue.counts().await.ok().map(|c| c.active) == Some(1) }).await;
    // The slow worker renews every 10 s of real time; the server clock jumps past its lease.
    redis.clock().advance(Duration::from_secs(31));
    let fast_worker =
        queue.worker(fast(), |job| async move { Ok::<_, Error>(format!("fast attempt {}", job.attempt)) })?;
    until("the job completes elsewhere", || async { queue.counts().await.ok().map(|c| c.completed) == Some(1) }).await;
    let _ = release.send(true);
    // The slow worker finds its lease lost at its next round trip: the handler is cancelled or
    // its completion refused, whichever comes first.
    until("the slow worker gives the job up", || {
        let stats = slow.stats();
        async move { stats.refused + stats.lost == 1 }
    })
    .await;
    let (slow, fast) = (slow.shutdown().await, fast_worker.shutdown().await);
    assert_eq!((slow.completed, slow.refused + slow.lost, fast.completed), (0, 1, 1));
    let job = queue.get(id.as_str()).await?.unwrap_or_else(|| panic!("job gone"));
    assert_eq!(job.result, Some(serde_json::json!("fast attempt 2")));
    assert!(job.errors[0].1.starts_with("lease expired"), "{:?}", job.errors);
    Ok(())
}

#[tokio::test]
async fn drain_clean_and_obliterate_remove_what_they_say() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let keep = Retention::new(Duration::from_secs(3600), 1000);
    let queue = queue(&redis, QueueConfig::new("admin").defaults(JobOptions::default().keep_completed(keep)));
    queue.add_bulk(&(0..5).map(download).collect::<Vec<_>>()).await?;
    let worker = queue.worker(fast(), |_job| async move { Ok::<_, Error>(()) })?;
    until("five complete", || async { queue.counts().await.ok().map(|c| c.completed) == Some(5) }).await;
    worker.shutdown().await;
    queue.add_bulk(&(0..2500).map(download).collect::<Vec<_>>()).await?;
    queue.add_with(&download(1), JobOptions::default().delay(Duration::from_secs(600))).await?;
    assert_eq!(queue.drain(false).await?, 2500);
    assert_eq!(queue.counts().await?.delayed, 1, "drain without delayed keeps them");
    assert_eq!(queue.drain(true).await?, 1);
    assert_eq!(queue.clean(Finished::Completed, Duration::from_secs(60), 100).await?, 0, "too recent");
    assert_eq!(queue.clean(Finished::Completed, Duration::ZERO, 3).await?, 3);
    assert_eq!(queue.counts().await?.completed, 2);
    assert!(queue.obliterate(false).await? > 0);
    assert_eq!(redis.call(redtail_core::Cmd::new("DBSIZE")).await?.as_int()?, 0, "nothing of the queue is left");
    Ok(())
}

#[tokio::test]
async fn retention_bounds_completed_jobs_by_count_and_age() -> Result<()> {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let config = QueueConfig::new("retention")
        .defaults(JobOptions::default().keep_completed(Retention::new(Duration::from_secs(60), 10)));
    let queue = queue(&redis, config);
    queue.add_bulk(&(0..30).map(download).collect::<Vec<_>>()).await?;
    let worker = queue.worker(fast(), |_job| async move { Ok::<_, Error>(()) })?;
    until("all complete", || async { queue.metrics(1).await.ok().map(|m| m.minutes[0].completed) == Some(30) }).await;
    worker.shutdown().await;
    assert_eq!(queue.counts().await?.completed, 10, "only the last 10 are kept");
    redis.clock().advance(Duration::from_secs(3700));
    assert_eq!(queue.list(JobState::Completed, 0, 100).await?.len(), 0, "and none after their age");
    // Only the queue's own counters remain: no job, no index entry, nothing without an end.
    let keys = redis.call(redtail_core::Cmd::new("DBSIZE")).await?.as_int()?;
    assert!(keys <= 3, "{keys} keys left");
    Ok(())
}

/// A completed record past its age reads as gone by id on the queue's clock (here the backend's
/// virtual one), although the records' hash outlives it by up to a minute.
#[tokio::test]
async fn an_expired_record_reads_as_gone_on_the_queues_clock() -> Result<()> {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let config = QueueConfig::new("aged")
        .defaults(JobOptions::default().keep_completed(Retention::new(Duration::from_secs(60), 10)))
        .clock(redis.clock().clone().into());
    let queue = queue(&redis, config);
    let id = queue.add(&download(1)).await?;
    let worker = queue.worker(fast(), |_job| async move { Ok::<_, Error>(()) })?;
    until("it completes", || async { queue.counts().await.ok().map(|c| c.completed) == Some(1) }).await;
    worker.shutdown().await;
    assert_eq!(queue.get(id.as_str()).await?.map(|job| job.state), Some(JobState::Completed));
    redis.clock().advance(Duration::from_secs(61));
    assert_eq!(queue.get(id.as_str()).await?, None, "past its age of 60 s");
    Ok(())
}

#[tokio::test]
async fn a_rate_limited_queue_starts_at_most_max_jobs_per_window() -> Result<()> {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("limited").rate_limit(5, Duration::from_secs(10)));
    queue.add_bulk(&(0..12).map(download).collect::<Vec<_>>()).await?;
    let worker = queue.worker(fast().concurrency(20), |_job| async move { Ok::<_, Error>(()) })?;
    until("the first window's jobs complete", || async { queue.counts().await.ok().map(|c| c.completed) == Some(5) })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(queue.counts().await?.completed, 5, "no more within the window");
    redis.clock().advance(Duration::from_secs(10));
    until("the second window's jobs complete", || async { queue.counts().await.ok().map(|c| c.completed) == Some(10) })
        .await;
    worker.shutdown().await;
    Ok(())
}

/// A backend whose next script call is carried out but answered with a timeout, as when a
/// connection drops after Redis applied a command and before its reply arrived.
#[derive(Debug, Clone)]
struct LosesOneReply {
    inner: MemoryBackend,
    lose_next: Arc<std::sync::atomic::AtomicBool>,
}

#[redtail_core::async_trait]
impl Backend for LosesOneReply {
    async fn call(&self, cmd: redtail_core::Cmd) -> redtail_core::Result<redtail_core::Value> {
        self.inner.call(cmd).await
    }
    async fn pipeline(&self, cmds: Vec<redtail_core::Cmd>) -> redtail_core::Result<Vec<redtail_core::Value>> {
        self.inner.pipeline(cmds).await
    }
    async fn transaction(&self, cmds: Vec<redtail_core::Cmd>) -> redtail_core::Result<Vec<redtail_core::Value>> {
        self.inner.transaction(cmds).await
    }
    async fn eval(
        &self,
        script: &redtail_core::Script,
        keys: &[redtail_core::Key],
        args: Vec<redtail_core::Arg>,
    ) -> redtail_core::Result<redtail_core::Value> {
        let reply = self.inner.eval(script, keys, args).await?;
        if script.name() == "queue_step" && self.lose_next.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(redtail_core::Error::Timeout(Duration::from_secs(1)));
        }
        Ok(reply)
    }
    async fn scan(
        &self,
        cursor: redtail_core::Cursor,
        pattern: &redtail_core::Pattern,
        count: u32,
    ) -> redtail_core::Result<redtail_core::ScanPage> {
        self.inner.scan(cursor, pattern, count).await
    }
    async fn publish(&self, channel: &str, message: redtail_core::Bytes) -> redtail_core::Result<u64> {
        self.inner.publish(channel, message).await
    }
    async fn subscribe(&self, channels: &[&str]) -> redtail_core::Result<redtail_core::Subscription> {
        self.inner.subscribe(channels).await
    }
    async fn blocking(&self, cmd: redtail_core::Cmd) -> redtail_core::Result<redtail_core::Value> {
        self.inner.blocking(cmd).await
    }
    fn is_cluster(&self) -> bool {
        self.inner.is_cluster()
    }
}

#[tokio::test]
async fn jobs_taken_by_a_call_whose_reply_was_lost_run_without_waiting_for_the_lease() -> Result<()> {
    let backend = LosesOneReply { inner: MemoryBackend::new().auditing_script_keys(), lose_next: Arc::default() };
    let queue = Queue::<Download>::new(Arc::new(backend.clone()) as Arc<dyn Backend>, QueueConfig::new("lost-reply"))?;
    queue.add_bulk(&(0..10).map(download).collect::<Vec<_>>()).await?;
    backend.lose_next.store(true, std::sync::atomic::Ordering::SeqCst);
    // The lease is 30 s: only handing the unseen jobs back lets them run within the wait below.
    let worker = queue.worker(fast().concurrency(4), |_job| async move { Ok::<_, Error>(()) })?;
    until("every job completes", || async { queue.counts().await.ok().map(|c| c.completed) == Some(10) }).await;
    let stats = worker.shutdown().await;
    assert_eq!((stats.completed, stats.redis_errors), (10, 1));
    assert!(!backend.lose_next.load(std::sync::atomic::Ordering::SeqCst), "a reply was lost");
    Ok(())
}

#[tokio::test]
async fn a_completion_whose_reply_was_lost_is_recognised_when_resent() -> Result<()> {
    let backend = LosesOneReply { inner: MemoryBackend::new().auditing_script_keys(), lose_next: Arc::default() };
    let queue = Queue::<Download>::new(Arc::new(backend.clone()) as Arc<dyn Backend>, QueueConfig::new("lost-ack"))?;
    let ids = queue.add_bulk(&(0..10).map(download).collect::<Vec<_>>()).await?;
    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = queue.worker(fast().concurrency(1), {
        let (backend, runs) = (backend.clone(), Arc::clone(&runs));
        move |job| {
            // The step that acknowledges the first job is carried out, but its reply is lost:
            // the worker sends the acknowledgement again, and the job's record shows it applied.
            if runs
                .lock()
                .map(|mut r| {
                    r.push(job.id.clone());
                    r.len()
                })
                .unwrap_or(0)
                == 1
            {
                backend.lose_next.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            async move { Ok::<_, Error>(()) }
        }
    })?;
    until("every job completes", || async { queue.counts().await.ok().map(|c| c.completed) == Some(10) }).await;
    let stats = worker.shutdown().await;
    assert_eq!((stats.completed, stats.refused, stats.redis_errors), (10, 0, 1));
    assert!(!backend.lose_next.load(std::sync::atomic::Ordering::SeqCst), "a reply was lost");
    let mut ran = runs.lock().map(|r| r.clone()).unwrap_or_default();
    ran.sort();
    let mut listed: Vec<_> = queue.list(JobState::Completed, 0, 100).await?.into_iter().map(|j| j.id).collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!((ran, listed), (expected.clone(), expected), "each job ran and completed once");
    Ok(())
}

/// `2026-10-25T00:00:00Z` and the like, in ms.
fn utc_ms(text: &str) -> u64 {
    let (date, time) = text.split_once('T').unwrap_or_else(|| panic!("{text}"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap_or(0)).collect();
    let t: Vec<i64> = time.trim_end_matches('Z').split(':').map(|p| p.parse().unwrap_or(0)).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000) as u64
}

/// Job schedulers on the virtual clock, through both daylight-saving changes in Paris: a job
/// every 30 minutes runs through both passes of the repeated autumn hour; a 02:30 job runs at
/// 03:00 on the spring day, when 02:30 does not exist; an interval with an end time stops at it. Each tick's job runs once; the clock moves only once the tick's
/// acknowledgement made the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedulers_on_the_virtual_clock_through_both_daylight_saving_changes() -> Result<()> {
    use redtail_queue::Scheduler;
    let start = utc_ms("2026-10-24T23:50:00Z");
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_millis(start)))
        .auditing_script_keys();
    let clock = redis.clock().clone();
    let config = QueueConfig::new("tz").clock(clock.clone().into());
    let queue = queue(&redis, config);
    let runs: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let worker = queue.worker(fast(), move |job| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().map_err(|_| Error::InvalidInput("poisoned".into()))?.push(job.id.as_str().to_owned());
            Ok::<_, Error>(())
        }
    })?;
    // Waits until job `id` has completed: its acknowledgement applied, so that moving the clock
    // on cannot expire the lease it ran under (which would run it again, as it should).
    let completed = |id: String| {
        let queue = queue.clone();
        async move {
            until(&format!("{id} completed"), || async {
                queue.get(&id).await.ok().flatten().is_some_and(|j| j.state == JobState::Completed)
            })
            .await;
        }
    };
    // Moves the clock to each expected tick in turn, once the scheduler waits for it.
    let follow = |id: &'static str, ticks: Vec<u64>| {
        let (queue, clock) = (queue.clone(), clock.clone());
        async move {
            for tick in ticks {
                until(&format!("{id} waits for {tick}"), || async {
                    queue.scheduler(id).await.ok().flatten().is_some_and(|s| s.next_ms == Some(tick))
                })
                .await;
                clock.advance(Duration::from_millis(tick.saturating_sub(clock.now_millis())));
            }
        }
    };

    queue.upsert_scheduler(Scheduler::cron("half-hourly", "*/30 * * * *", "Europe/Paris")?, &download(1)).await?;
    // 02:00 and 02:30 CEST, 02:00 and 02:30 CET (the repeated hour), 03:00 CET.
    let autumn: Vec<u64> =
        ["00:00", "00:30", "01:00", "01:30", "02:00"].iter().map(|t| utc_ms(&format!("2026-10-25T{t}:00Z"))).collect();
    follow("half-hourly", autumn.clone()).await;
    until("the fifth half hour ran", || async { runs.lock().map_or(0, |r| r.len()) == 5 }).await;
    completed(format!("half-hourly:{}", autumn[4])).await;
    assert!(queue.remove_scheduler("half-hourly").await?);

    queue.upsert_scheduler(Scheduler::cron("nightly", "0 30 2 * * *", "Europe/Paris")?, &download(2)).await?;
    // Upserted at 03:00 CET on the 25th: 02:30 CET on the 26th; then on 2027-03-28 (no 02:30 in
    // Paris) 03:00 CEST, and 02:30 CEST on the 29th. (That a 02:30 in the repeated hour runs
    // once is checked in src/scheduler.rs.)
    let nightly = vec![utc_ms("2026-10-26T01:30:00Z")];
    follow("nightly", nightly.clone()).await;
    until("the nightly job ran", || async { runs.lock().map_or(0, |r| r.len()) == 6 }).await;
    completed(format!("nightly:{}", nightly[0])).await;
    assert!(queue.remove_scheduler("nightly").await?);
    clock.advance(Duration::from_millis(utc_ms("2027-03-27T12:00:00Z") - clock.now_millis()));
    queue.upsert_scheduler(Scheduler::cron("nightly", "0 30 2 * * *", "Europe/Paris")?, &download(3)).await?;
    let spring = vec![utc_ms("2027-03-28T01:00:00Z"), utc_ms("2027-03-29T00:30:00Z")];
    follow("nightly", spring.clone()).await;
    until("the spring nights ran", || async { runs.lock().map_or(0, |r| r.len()) == 8 }).await;
    completed(format!("nightly:{}", spring[1])).await;
    assert!(queue.remove_scheduler("nightly").await?);

    // Every 10 minutes from now, ending 25 minutes from now: 3 jobs.
    let now = clock.now_millis();
    let ending = SystemTime::UNIX_EPOCH + Duration::from_millis(now + 25 * 60_000);
    queue.upsert_scheduler(Scheduler::every("ten", Duration::from_secs(600))?.ending_at(ending), &download(4)).await?;
    follow("ten", vec![now + 600_000, now + 1_200_000]).await;
    until("the interval ended at its end time", || async {
        queue.scheduler("ten").await.ok().flatten().is_some_and(|s| s.next_ms.is_none())
    })
    .await;
    worker.shutdown().await;
    let runs = runs.lock().map_err(|_| Error::InvalidInput("poisoned".into()))?.clone();
    let mut expected: Vec<String> = autumn.iter().map(|t| format!("half-hourly:{t}")).collect();
    expected.extend(nightly.iter().chain(&spring).map(|t| format!("nightly:{t}")));
    expected.extend([now, now + 600_000, now + 1_200_000].iter().map(|t| format!("ten:{t}")));
    assert_eq!(runs, expected, "each tick once, at the times daylight saving gives");
    Ok(())
}

/// A flow over two queues whose producer stops midway (here: a child's id exists, so the second
/// level's call is refused after the first was added) leaves its parent waiting for a child
/// that never comes: a minute later (the server's clock) the parent is dead-lettered, saying
/// so, rather than waiting forever, and its queue counts no parent waiting.
#[tokio::test]
async fn a_flow_not_fully_added_fails_its_parent_after_the_deadline() -> Result<()> {
    let redis = MemoryBackend::with_clock(Clock::manual(SystemTime::now())).auditing_script_keys();
    let clock = redis.clock().clone();
    let (parents, children) = (queue(&redis, QueueConfig::new("p")), queue(&redis, QueueConfig::new("c")));
    children.add_with(&download(0), JobOptions::default().id("taken")).await?;
    let flow = redtail_queue::FlowJob::new(&parents, &download(1))?
        .child(redtail_queue::FlowJob::new(&children, &download(2))?.options(JobOptions::default().id("taken")));
    match flow.add().await {
        Err(Error::InvalidInput(message)) => assert!(message.contains("c:taken already exists"), "{message}"),
        other => panic!("the clash was not refused: {other:?}"),
    }
    let stuck = parents.list(JobState::WaitingChildren, 0, 10).await?;
    assert_eq!(stuck.len(), 1, "the first level was added");
    let worker = parents.worker(fast(), |_job| async { Ok::<_, String>(()) })?;
    clock.advance(Duration::from_secs(59));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(parents.counts().await?.waiting_children, 1, "still within its deadline");
    clock.advance(Duration::from_secs(2));
    until("the parent fails", || async { parents.counts().await.is_ok_and(|c| c.dead == 1) }).await;
    worker.shutdown().await;
    let dead = parents.get(stuck[0].id.as_str()).await?.unwrap_or_else(|| panic!("parent gone"));
    assert_eq!(dead.state, JobState::Dead);
    assert!(dead.errors.iter().any(|(_, e)| e.contains("not fully added")), "{:?}", dead.errors);
    assert_eq!(parents.counts().await?.waiting_children, 0);
    Ok(())
}

/// A step that takes and acknowledges thousands of grouped jobs at once (its groups go back to
/// the ring in commands of 1,000): every job runs once, and the groups' counts end at nothing.
#[tokio::test]
async fn thousands_of_groups_taken_and_freed_in_one_step_each_run_every_job_once() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let queue = queue(&redis, QueueConfig::new("wide"));
    let jobs: Vec<(Download, JobOptions)> =
        (0..6000).map(|i| (download(i), JobOptions::default().group(format!("g{}", i % 3000)))).collect();
    for chunk in jobs.chunks(1000) {
        queue.add_bulk_with(chunk.iter().map(|(d, o)| (d, o.clone())).collect()).await?;
    }
    let seen = Arc::new(Mutex::new(std::collections::HashMap::<String, u32>::new()));
    let ran = Arc::clone(&seen);
    let worker = queue.worker(fast().concurrency(10_000), move |job| {
        let ran = Arc::clone(&ran);
        async move {
            *ran.lock().map_err(|_| Error::Reply("poisoned".to_owned()))?.entry(job.id.to_string()).or_default() += 1;
            Ok::<_, Error>(())
        }
    })?;
    until("6,000 grouped jobs complete", || async { worker.stats().completed == 6000 }).await;
    worker.shutdown().await;
    let runs: Vec<u32> = seen.lock().map_err(|_| Error::Reply("poisoned".to_owned()))?.values().copied().collect();
    assert_eq!(runs.len(), 6000);
    assert!(runs.iter().all(|&n| n == 1), "a job ran twice");
    assert!(queue.groups(None, 10).await?.is_empty(), "no group is left counted");
    let totals = queue.metrics(1).await?.groups;
    assert_eq!((totals.jobs_waiting, totals.jobs_active, totals.waiting, totals.running), (0, 0, 0, 0), "{totals:?}");
    Ok(())
}
