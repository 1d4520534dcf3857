//! `redtail-queue` on every backend (the original three queues, all features), and against
//! real servers: a worker killed with SIGKILL, Redis restarted, a sentinel failover, a lost
//! lease, and shutdown under load.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use media_api::presets;
use redtail_core::{Cmd, Key, Namespace};
use redtail_queue::{
    Backoff, Error, EventKind, JobId, JobOptions, JobState, Queue, QueueConfig, Retention, Scheduler, Start,
    WorkerOptions,
};
use redtail_tests::{Ctx, Env, Target, TestRedis, TestResult, for_each_backend};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Download {
    url: String,
    #[serde(rename = "userId")]
    user_id: String,
}

fn download(i: u32) -> Download {
    Download { url: format!("https://example.invalid/v/{i}"), user_id: format!("u{}", i % 100) }
}

fn fast() -> WorkerOptions {
    WorkerOptions::default().idle_poll(Duration::from_millis(50))
}

/// Every completed job kept, so that the record can be checked.
fn keep_all(config: QueueConfig) -> QueueConfig {
    let defaults = config.defaults.clone().keep_completed(Retention::new(Duration::from_secs(3600), 1_000_000));
    config.defaults(defaults)
}

/// Waits (bounded) until `done` holds, failing with `what`.
async fn until<F, Fut>(what: &str, limit: Duration, mut done: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("timed out after {limit:?} waiting until {what}").into())
}

for_each_backend!(
    the_three_original_queues_with_every_feature,
    a_first_attempt_success_is_kept_as_a_record_that_reads_like_a_job,
    a_busy_worker_leaves_the_wake_up_to_an_idle_one,
    a_dead_job_retried_while_no_worker_runs_keeps_its_log_expiring,
    durations_redis_cannot_keep_are_refused_naming_the_setting,
    a_discarded_job_is_dead_lettered_without_its_retries,
    a_job_put_off_by_its_handler_runs_again_later_without_spending_an_attempt,
    delayed_jobs_and_backoffs_are_promoted_to_run_now,
    a_scheduler_makes_one_job_per_tick_however_many_workers_run,
    a_cron_scheduler_runs_a_missed_tick_once_and_an_upsert_replaces_its_pending_job,
    a_producer_waits_until_its_job_has_finished,
    a_handler_updates_its_jobs_data_for_the_next_attempt,
    a_waiting_job_given_a_higher_priority_runs_first,
    adds_are_deduplicated_simple_throttle_and_debounce,
    a_thousand_concurrent_adds_of_one_dedup_id_make_one_job_in_each_mode
);

/// 1,000 concurrent adds with one deduplication id make one job in each mode, every add naming
/// it; a debounced job then takes the data of the add that came last.
async fn a_thousand_concurrent_adds_of_one_dedup_id_make_one_job_in_each_mode(target: Target) -> TestResult {
    use redtail_queue::Dedup;
    let env = Env::new(target).await;
    let queue = Queue::<Download>::new(Arc::clone(&env.backend), QueueConfig::new("crowd").namespace(env.ns.clone()))?;
    let hour = Duration::from_secs(3600);
    for (n, dedup) in
        [Dedup::simple("s", hour), Dedup::throttle("t", hour), Dedup::debounce("d", hour)].into_iter().enumerate()
    {
        let options = JobOptions::default().dedup(dedup.clone()).delay(hour);
        let adds = (0..1_000).map(|i| {
            let (queue, options) = (queue.clone(), options.clone());
            tokio::spawn(async move { queue.add_with(&download(i), options).await })
        });
        let mut added = Vec::new();
        for add in futures_util::future::join_all(adds).await {
            added.push(add??);
        }
        let made: Vec<_> = added.iter().filter(|a| a.created).collect();
        assert_eq!(made.len(), 1, "{dedup:?}: one job");
        assert!(added.iter().all(|a| a.id == made[0].id), "{dedup:?}: every add names it");
        assert_eq!(queue.counts().await?.delayed, n as u64 + 1);
        if matches!(dedup.mode, redtail_queue::DedupMode::Debounce) {
            let last = queue.add_with(&download(5_000), options).await?;
            assert_eq!(last.id, made[0].id);
            let job = queue.get(made[0].id.as_str()).await?.ok_or("the debounced job is gone")?;
            assert_eq!(job.data, serde_json::to_value(download(5_000))?, "the last add's data");
        }
    }
    queue.obliterate(false).await?;
    Ok(())
}

/// `Dedup`: a simple id holds while its job has not finished, a throttle id for its whole ttl,
/// a debounce id replaces the delayed job's data and restarts its delay; each add says whether
/// it made a job and which job it was deduplicated against.
async fn adds_are_deduplicated_simple_throttle_and_debounce(target: Target) -> TestResult {
    use redtail_queue::Dedup;
    let env = Env::new(target).await;
    let queue = Queue::<Download>::new(Arc::clone(&env.backend), QueueConfig::new("dedup").namespace(env.ns.clone()))?;
    let with = |dedup: Dedup| JobOptions::default().dedup(dedup);
    let hour = Duration::from_secs(3600);

    let first = queue.add_with(&download(1), with(Dedup::simple("scan", hour))).await?;
    let again = queue.add_with(&download(2), with(Dedup::simple("scan", hour))).await?;
    assert!(first.created && !again.created);
    assert_eq!(again.id, first.id, "deduplicated against the first job");

    let throttled = queue.add_with(&download(3), with(Dedup::throttle("clean", hour))).await?;
    assert!(throttled.created);

    let quiet = Duration::from_millis(400);
    let debounced = with(Dedup::debounce("notify", hour)).delay(quiet);
    let pending = queue.add_with(&download(4), debounced.clone()).await?;
    let replaced = queue.add_with(&download(5), debounced).await?;
    assert!(pending.created && !replaced.created && replaced.id == pending.id);
    let stored = queue.get(pending.id.as_str()).await?.ok_or("the debounced job is gone")?;
    assert_eq!((stored.state, &stored.data["url"]), (JobState::Delayed, &serde_json::json!(download(5).url)));

    let runs: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let worker = queue.worker(fast(), move |job| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().map_err(|_| "poisoned")?.push(job.data.url.clone());
            Ok::<_, &str>(())
        }
    })?;
    until("three jobs complete", Duration::from_secs(20), || async { Ok(queue.counts().await?.completed == 3) })
        .await?;

    // The simple id's job has finished: a new add makes a new job. The throttle holds for its ttl.
    let after = queue.add_with(&download(6), with(Dedup::simple("scan", hour))).await?;
    assert!(after.created && after.id != first.id);
    let still = queue.add_with(&download(7), with(Dedup::throttle("clean", hour))).await?;
    assert!(!still.created && still.id == throttled.id);
    until("the new job completes", Duration::from_secs(20), || async { Ok(queue.counts().await?.completed == 4) })
        .await?;
    worker.shutdown().await;
    let mut ran = runs.lock().map_err(|_| "poisoned")?.clone();
    ran.sort();
    let mut expected: Vec<String> = [1, 3, 5, 6].into_iter().map(|i| download(i).url).collect();
    expected.sort();
    assert_eq!(ran, expected, "each deduplicated add ran once, the debounced job with its last data");
    // Three adds were deduplicated (simple, debounce, throttle), counted by minute for the admin.
    let minutes = queue.metrics(2).await?.minutes;
    assert_eq!(minutes.iter().map(|m| m.deduplicated).sum::<u64>(), 3, "{minutes:?}");

    for bad in [
        Dedup::simple("", hour),
        Dedup::throttle("x y", hour),
        Dedup::debounce("d", Duration::ZERO),
        Dedup::simple("m", Duration::MAX),
    ] {
        let out = queue.add_with(&download(8), with(bad.clone())).await;
        assert!(matches!(out, Err(Error::InvalidInput(_))), "{bad:?}: {out:?}");
    }
    queue.obliterate(false).await?;
    Ok(())
}

/// `Queue::change_priority`: a waiting job moves ahead of the others; a delayed one keeps its
/// new priority; finished, unknown and out-of-range answers are clear.
async fn a_waiting_job_given_a_higher_priority_runs_first(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = Queue::<Download>::new(Arc::clone(&env.backend), QueueConfig::new("prio").namespace(env.ns.clone()))?;
    let ids: Vec<JobId> = queue.add_bulk(&(1..=5).map(download).collect::<Vec<_>>()).await?;
    let later = queue.add_with(&download(9), JobOptions::default().delay(Duration::from_secs(3600))).await?.id;
    assert!(queue.change_priority(ids[4].as_str(), 10).await?);
    assert!(queue.change_priority(ids[3].as_str(), 5).await?);
    assert!(queue.change_priority(later.as_str(), 7).await?);
    assert_eq!(queue.get(later.as_str()).await?.map(|j| (j.state, j.priority)), Some((JobState::Delayed, 7)));
    assert!(!queue.change_priority("no-such-job", 1).await?);
    assert!(matches!(
        queue.change_priority(ids[0].as_str(), redtail_queue::MAX_PRIORITY + 1).await,
        Err(Error::InvalidInput(_))
    ));

    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&order);
    let worker = queue.worker(fast().concurrency(1), move |job| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().map_err(|_| "poisoned")?.push(job.id.0.clone());
            Ok::<_, &str>(())
        }
    })?;
    until("the five waiting jobs complete", Duration::from_secs(20), || async {
        Ok(queue.counts().await?.completed == 5)
    })
    .await?;
    worker.shutdown().await;
    let order = order.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(order[..2], [ids[4].0.clone(), ids[3].0.clone()], "the raised jobs first: {order:?}");
    // A finished job keeps the priority it ran with.
    assert!(!queue.change_priority(ids[0].as_str(), 3).await?);
    queue.obliterate(false).await?;
    Ok(())
}

/// `Job::update_data`: the data a failed attempt stored is what the next attempt gets, and what
/// the completed job holds (also when the first attempt succeeds: the job keeps its hash).
async fn a_handler_updates_its_jobs_data_for_the_next_attempt(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = Queue::<Download>::new(
        Arc::clone(&env.backend),
        QueueConfig::new("updates").namespace(env.ns.clone()).defaults(
            JobOptions::default().attempts(2).backoff(Backoff::Fixed { delay: Duration::from_millis(10), jitter: 0.0 }),
        ),
    )?;
    let resumed = queue.add(&download(1)).await?;
    let at_once = queue.add(&download(2)).await?;
    let worker = queue.worker(fast(), |job| async move {
        match (job.data.url.rsplit('/').next(), job.attempt) {
            // The first attempt records where it got to, then fails.
            (Some("1"), 1) => {
                let mut data = job.data.clone();
                data.url.push_str("?from=42");
                if !job.update_data(&data).await.map_err(|e| e.to_string())? {
                    return Err("lease lost".to_owned());
                }
                Err("interrupted".to_owned())
            }
            (Some("1?from=42"), 2) => Ok("resumed at 42"),
            (Some("2"), 1) => {
                let mut data = job.data.clone();
                data.user_id = "moved".to_owned();
                job.update_data(&data).await.map_err(|e| e.to_string())?;
                Ok("done")
            }
            other => Err(format!("unexpected {other:?}")),
        }
    })?;
    until("both jobs complete", Duration::from_secs(20), || async { Ok(queue.counts().await?.completed == 2) }).await?;
    worker.shutdown().await;
    let resumed = queue.get(resumed.as_str()).await?.ok_or("job gone")?;
    assert_eq!(resumed.data["url"], "https://example.invalid/v/1?from=42");
    assert_eq!((resumed.attempts_started, resumed.result), (2, Some(serde_json::json!("resumed at 42"))));
    let at_once = queue.get(at_once.as_str()).await?.ok_or("job gone")?;
    assert_eq!((at_once.state, &at_once.data["userId"]), (JobState::Completed, &serde_json::json!("moved")));
    queue.obliterate(false).await?;
    Ok(())
}

/// `Queue::wait_until_finished`: a producer waiting on a job before any worker runs gets it as it
/// ended once one does; a finished job answers at once; an unknown one is `None`.
async fn a_producer_waits_until_its_job_has_finished(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = Queue::<Download>::new(
        Arc::clone(&env.backend),
        QueueConfig::new("waits").namespace(env.ns.clone()).defaults(JobOptions::default().attempts(1)),
    )?;
    let ok_id = queue.add(&download(1)).await?;
    let bad_id = queue.add(&download(2)).await?;
    let waiting = {
        let (queue, ok, bad) = (queue.clone(), ok_id.clone(), bad_id.clone());
        tokio::spawn(async move {
            let ok = queue.wait_until_finished(ok.as_str()).await?;
            let bad = queue.wait_until_finished(bad.as_str()).await?;
            Ok::<_, Error>((ok, bad))
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "nothing has run yet");
    let worker = queue.worker(fast(), |job| async move {
        if job.data.url.ends_with("/1") { Ok(format!("saved {}", job.data.url)) } else { Err("no such video") }
    })?;
    let (ok, bad) = tokio::time::timeout(Duration::from_secs(20), waiting).await???;
    assert_eq!(ok.map(|j| j.state), Some(JobState::Completed));
    assert_eq!(bad.map(|j| j.state), Some(JobState::Dead));
    // Finished already: at once. Unknown: None.
    assert_eq!(queue.wait_until_finished(ok_id.as_str()).await?.map(|j| j.state), Some(JobState::Completed));
    assert_eq!(queue.wait_until_finished(bad_id.as_str()).await?.map(|j| j.state), Some(JobState::Dead));
    assert!(queue.wait_until_finished("no-such-job").await?.is_none());
    worker.shutdown().await;
    queue.obliterate(false).await?;
    Ok(())
}

/// `Job::discard` (BullMQ's `UnrecoverableError`): a job whose handler discards it and fails is
/// dead-lettered after that attempt though it has attempts left; one that fails without
/// discarding uses them all; one that discards and then succeeds completes.
async fn a_discarded_job_is_dead_lettered_without_its_retries(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = Queue::<Download>::new(
        Arc::clone(&env.backend),
        QueueConfig::new("discard").namespace(env.ns.clone()).defaults(
            JobOptions::default().attempts(3).backoff(Backoff::Fixed { delay: Duration::from_millis(10), jitter: 0.0 }),
        ),
    )?;
    let gone = queue.add(&download(1)).await?;
    let flaky = queue.add(&download(2)).await?;
    let fine = queue.add(&download(3)).await?;
    let worker = queue.worker(fast(), |job| async move {
        match job.data.url.rsplit('/').next() {
            Some("1") => {
                job.discard();
                Err("the video is gone")
            }
            Some("2") => Err("try again"),
            _ => {
                job.discard();
                Ok(())
            }
        }
    })?;
    until("two jobs are dead and one completed", Duration::from_secs(20), || async {
        let counts = queue.counts().await?;
        Ok(counts.dead == 2 && counts.completed == 1)
    })
    .await?;
    let stats = worker.shutdown().await;
    let gone = queue.get(gone.as_str()).await?.ok_or("the discarded job is gone")?;
    assert_eq!((gone.state, gone.attempts_started), (JobState::Dead, 1), "{gone:?}");
    assert_eq!(gone.errors.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>(), ["the video is gone"]);
    let flaky = queue.get(flaky.as_str()).await?.ok_or("the flaky job is gone")?;
    assert_eq!((flaky.state, flaky.attempts_started), (JobState::Dead, 3), "{flaky:?}");
    assert_eq!(queue.get(fine.as_str()).await?.map(|j| j.state), Some(JobState::Completed));
    assert_eq!((stats.retried, stats.dead, stats.completed), (2, 2, 1));
    queue.obliterate(false).await?;
    Ok(())
}

/// `Job::move_to_delayed` (BullMQ's `moveToDelayed`): a job with one attempt, put off by its
/// handler (which then fails, to show the outcome does not matter), waits its delay in the
/// delayed set and runs again as the same attempt, then completes; bad delays are refused.
async fn a_job_put_off_by_its_handler_runs_again_later_without_spending_an_attempt(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = Queue::<Download>::new(
        Arc::clone(&env.backend),
        QueueConfig::new("put-off").namespace(env.ns.clone()).defaults(JobOptions::default().attempts(1)),
    )?;
    let id = queue.add(&download(1)).await?;
    let runs: Arc<Mutex<Vec<(u32, std::time::Instant)>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let worker = queue.worker(fast(), move |job| {
        let seen = Arc::clone(&seen);
        async move {
            let first = {
                let mut runs = seen.lock().map_err(|_| "poisoned".to_owned())?;
                runs.push((job.attempt, std::time::Instant::now()));
                runs.len() == 1
            };
            if first {
                for bad in [Duration::ZERO, Duration::MAX] {
                    let refused = job.move_to_delayed(bad);
                    assert!(
                        matches!(&refused, Err(Error::InvalidInput(m)) if m.contains("move_to_delayed")),
                        "{refused:?}"
                    );
                }
                job.move_to_delayed(Duration::from_millis(300)).map_err(|e| e.to_string())?;
                return Err("not yet".to_owned());
            }
            Ok(())
        }
    })?;
    until("the put-off job completes", Duration::from_secs(20), || async {
        Ok(queue.get(id.as_str()).await?.is_some_and(|j| j.state == JobState::Completed))
    })
    .await?;
    let stats = worker.shutdown().await;
    let runs = runs.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(runs.iter().map(|(attempt, _)| *attempt).collect::<Vec<_>>(), [1, 1], "the same attempt twice");
    assert!(runs[1].1 - runs[0].1 >= Duration::from_millis(300), "ran again before its delay");
    assert_eq!((stats.delayed, stats.completed, stats.retried, stats.dead), (1, 1, 0, 0));
    let job = queue.get(id.as_str()).await?.ok_or("the job is gone")?;
    assert!(job.errors.is_empty(), "a put-off attempt records no error: {:?}", job.errors);
    queue.obliterate(false).await?;
    Ok(())
}

/// `Queue::promote` (BullMQ's `promote`): a job delayed an hour and a job waiting out an hour's
/// retry backoff both run at once when promoted; anything else is refused with `false`.
async fn delayed_jobs_and_backoffs_are_promoted_to_run_now(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let hour = Duration::from_secs(3600);
    let defaults = JobOptions::default().attempts(2).backoff(Backoff::Fixed { delay: hour, jitter: 0.0 });
    let queue = Queue::<Download>::new(
        Arc::clone(&env.backend),
        QueueConfig::new("promote").namespace(env.ns.clone()).defaults(defaults.clone()),
    )?;
    let later = queue.add_with(&download(1), defaults.delay(hour)).await?.id;
    let failing = queue.add(&download(2)).await?;
    let runs: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let worker = queue.worker(fast(), move |job| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().map_err(|_| "poisoned")?.push((job.data.url.clone(), job.attempt));
            if job.attempt == 1 && job.data.url == download(2).url { Err("first attempt fails") } else { Ok(()) }
        }
    })?;
    until("the failed job waits out its backoff", Duration::from_secs(20), || async {
        Ok(queue.get(failing.as_str()).await?.is_some_and(|j| j.state == JobState::Delayed))
    })
    .await?;
    assert_eq!(queue.get(later.as_str()).await?.map(|j| j.state), Some(JobState::Delayed));
    assert!(!queue.promote("no-such-job").await?);
    for id in [&later, &failing] {
        assert!(queue.promote(id.as_str()).await?, "{id} is delayed");
    }
    for id in [&later, &failing] {
        until("a promoted job completes", Duration::from_secs(20), || async {
            Ok(queue.get(id.as_str()).await?.is_some_and(|j| j.state == JobState::Completed))
        })
        .await?;
        assert!(!queue.promote(id.as_str()).await?, "a completed job is not promoted");
    }
    worker.shutdown().await;
    let mut runs = runs.lock().map_err(|_| "poisoned")?.clone();
    runs.sort();
    let expected = [(download(1).url, 1), (download(2).url, 1), (download(2).url, 2)];
    assert_eq!(runs, expected, "each promoted job ran once more, at once");
    queue.obliterate(false).await?;
    Ok(())
}

/// Runs of each job id, shared by a test's workers.
type Runs = Arc<Mutex<Vec<(String, Instant)>>>;

/// A worker on `queue` that records each job it runs in `runs`.
fn recording(queue: &Queue<Download>, runs: &Runs) -> Result<redtail_queue::WorkerHandle, Error> {
    let runs = Arc::clone(runs);
    queue.worker(fast().concurrency(2), move |job| {
        let runs = Arc::clone(&runs);
        async move {
            runs.lock().map_err(|_| "poisoned")?.push((job.id.as_str().to_owned(), Instant::now()));
            Ok::<_, &str>(())
        }
    })
}

/// `upsert_scheduler` with an interval and a limit: 8 workers on 4 queue handles make and run
/// exactly one job per tick (ids `<scheduler>:<tick ms>`), each with the template's data; the
/// same upsert again changes nothing; the limit ends it; `remove_scheduler` forgets it.
async fn a_scheduler_makes_one_job_per_tick_however_many_workers_run(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let config = keep_all(QueueConfig::new("scheduled").namespace(env.ns.clone()));
    let handles: Vec<Queue<Download>> =
        (0..4).map(|_| Queue::new(Arc::clone(&env.backend), config.clone())).collect::<Result<_, _>>()?;
    let scan = || Scheduler::every("library-scan", Duration::from_millis(300)).map(|s| s.limit(6));
    let first = handles[0].upsert_scheduler(scan()?, &download(7)).await?;
    assert_eq!((first.runs, first.next_ms.is_some()), (1, true), "{first:?}");
    let again = handles[1].upsert_scheduler(scan()?, &download(7)).await?;
    assert_eq!(again, first, "the same definition again changes nothing");

    let runs: Runs = Arc::default();
    let mut workers = Vec::new();
    for queue in handles.iter().chain(handles.iter()) {
        workers.push(recording(queue, &runs)?);
    }
    until("the scheduler ends after 6 jobs", Duration::from_secs(30), || async {
        let info = handles[2].scheduler("library-scan").await?;
        Ok(info.is_some_and(|i| i.next_ms.is_none()) && runs.lock().map_or(0, |r| r.len()) >= 6)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for worker in workers {
        worker.shutdown().await;
    }
    let runs = runs.lock().map_err(|_| "poisoned")?.clone();
    let ids: std::collections::BTreeSet<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!((runs.len(), ids.len()), (6, 6), "one run per tick: {runs:?}");
    assert!(ids.iter().all(|id| id.starts_with("library-scan:")), "{ids:?}");
    for id in &ids {
        let job = handles[3].get(id).await?.ok_or("a scheduled job is gone")?;
        assert_eq!((job.state, &job.data), (JobState::Completed, &serde_json::to_value(download(7))?));
    }
    let info = handles[0].scheduler("library-scan").await?.ok_or("the scheduler is gone")?;
    assert_eq!((info.runs, info.next_ms), (6, None));
    assert_eq!(handles[0].schedulers().await?.len(), 1);
    assert!(handles[0].remove_scheduler("library-scan").await?);
    assert!(!handles[0].remove_scheduler("library-scan").await?);
    assert!(handles[0].scheduler("library-scan").await?.is_none());
    handles[0].obliterate(false).await?;
    Ok(())
}

/// A cron scheduler (with seconds) whose ticks pass while no worker runs: when one starts, the
/// overdue tick's job runs once and the schedule goes on from then (docs: missed ticks are
/// skipped). An upsert with new data replaces the pending job rather than adding one.
async fn a_cron_scheduler_runs_a_missed_tick_once_and_an_upsert_replaces_its_pending_job(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = Queue::<Download>::new(Arc::clone(&env.backend), QueueConfig::new("cron").namespace(env.ns.clone()))?;
    let yearly = || Scheduler::cron("report", "0 0 0 1 1 *", "Europe/Paris");
    queue.upsert_scheduler(yearly()?, &download(1)).await?;
    let replaced = queue.upsert_scheduler(yearly()?, &download(2)).await?;
    assert_eq!(queue.counts().await?.delayed, 1, "the pending job was replaced, not added to");
    let pending = queue.get(replaced.last_job.as_ref().ok_or("no pending job")?.as_str()).await?.ok_or("gone")?;
    assert_eq!(pending.data, serde_json::to_value(download(2))?);
    assert!(queue.remove_scheduler("report").await?);
    assert_eq!(queue.counts().await?.delayed, 0, "removed with its pending job");

    queue.upsert_scheduler(Scheduler::cron("tick", "* * * * * *", "UTC")?, &download(3)).await?;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let runs: Runs = Arc::default();
    let started = Instant::now();
    let worker = recording(&queue, &runs)?;
    until("the overdue tick runs", Duration::from_secs(10), || async { Ok(runs.lock().map_or(0, |r| r.len()) >= 1) })
        .await?;
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    worker.shutdown().await;
    let runs = runs.lock().map_err(|_| "poisoned")?.clone();
    // The overdue tick once, then the first tick after it ran (the missed ones skipped), then
    // one a second; each tick once.
    let mut ticks: Vec<u64> =
        runs.iter().filter_map(|(id, _)| id.strip_prefix("tick:").and_then(|t| t.parse().ok())).collect();
    ticks.sort_unstable();
    assert!(ticks.len() >= 3 && ticks.len() == runs.len(), "{runs:?}");
    assert!(ticks[1] - ticks[0] >= 3_000, "the missed ticks were skipped: {ticks:?}");
    assert!(ticks[1..].windows(2).all(|w| w[1] - w[0] == 1_000), "then one a second: {ticks:?}");
    // The overdue tick ran first, at once (the next tick may follow within milliseconds: it is
    // the first whole second after the overdue one was acknowledged).
    let first = runs.iter().min_by_key(|(_, at)| *at).ok_or("no run")?;
    assert_eq!(first.0, format!("tick:{}", ticks[0]), "{runs:?}");
    assert!(first.1.duration_since(started) < Duration::from_secs(1), "the overdue tick waited: {runs:?}");
    queue.obliterate(true).await?;
    Ok(())
}

/// `youtube-downloads`, `media-requests` and `notifications` side by side (on a cluster, each in
/// its own slot): adds in bulk, custom ids, priorities, delays, progress, retries, dead letters,
/// events, metrics, and cleaning up.
async fn the_three_original_queues_with_every_feature(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let fast_retry = Backoff::Fixed { delay: Duration::from_millis(20), jitter: 0.5 };
    let make = |config: QueueConfig| {
        let defaults = config.defaults.clone().backoff(fast_retry);
        Queue::<Download>::new(Arc::clone(&env.backend), keep_all(config.namespace(env.ns.clone()).defaults(defaults)))
    };
    let (downloads, requests, notifications) =
        (make(presets::youtube_downloads())?, make(presets::media_requests())?, make(presets::notifications())?);
    let mut events = downloads.events(Start::Now).await?;

    let ids = downloads.add_bulk(&(0..30).map(download).collect::<Vec<_>>()).await?;
    let urgent = downloads.add_with(&download(99), JobOptions::default().attempts(3).priority(7)).await?.id;
    let custom = requests.add_with(&download(1), JobOptions::default().attempts(5).id("request:u1:dune")).await?;
    assert!(!requests.add_with(&download(1), JobOptions::default().attempts(5).id("request:u1:dune")).await?.created);
    requests.add_with(&download(2), JobOptions::default().attempts(5).delay(Duration::from_millis(300))).await?;
    let doomed = notifications.add(&download(3)).await?;

    // Downloads report progress; every 10th fails its first attempt. Requests fail twice then
    // succeed (5 attempts). Notifications have 1 attempt and this one always fails.
    let w1 = downloads.worker(fast().concurrency(8), |job| async move {
        job.progress(50).await?;
        job.progress(100).await?;
        if job.data.url.ends_with('0') && job.attempt == 1 {
            return Err(Error::InvalidInput("flaky source".into()));
        }
        Ok(job.data.url.len())
    })?;
    let w2 = requests.worker(fast(), |job| async move {
        if job.attempt < 3 { Err(format!("indexer busy ({})", job.attempt)) } else { Ok("requested") }
    })?;
    let w3 = notifications.worker(fast(), |_job| async move { Err::<(), _>("smtp down") })?;

    until("every job finishes", Duration::from_secs(20), || async {
        let (d, r, n) = (downloads.counts().await?, requests.counts().await?, notifications.counts().await?);
        Ok(d.completed == 31 && r.completed == 2 && n.dead == 1)
    })
    .await?;
    let (s1, s2, s3) = (w1.shutdown().await, w2.shutdown().await, w3.shutdown().await);
    assert_eq!((s1.completed, s1.retried, s1.dead), (31, 3, 0));
    assert_eq!((s2.completed, s2.retried), (2, 4));
    assert_eq!((s3.dead, s3.retried), (1, 0));

    let urgent_job = downloads.get(urgent.as_str()).await?.ok_or("urgent job gone")?;
    let first_plain = downloads.get(ids[0].as_str()).await?.ok_or("first job gone")?;
    assert!(urgent_job.started_ms <= first_plain.started_ms, "the prioritized job starts first");
    assert_eq!(urgent_job.progress, Some(serde_json::json!(100)));
    let request = requests.get(custom.id.as_str()).await?.ok_or("request gone")?;
    assert_eq!((request.state, request.attempts_started, request.errors.len()), (JobState::Completed, 3, 2));
    let dead = notifications.list(JobState::Dead, 0, 10).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.clone(), dead[0].errors.clone()), (doomed, vec![(1, "smtp down".to_owned())]));

    let mut seen: HashMap<EventKind, usize> = HashMap::new();
    while seen.get(&EventKind::Completed).copied().unwrap_or(0) < 31 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await??;
        *seen.entry(event.kind).or_default() += 1;
    }
    assert_eq!(seen.get(&EventKind::Added), Some(&31));
    assert_eq!(seen.get(&EventKind::Failed), Some(&3));
    assert_eq!(seen.get(&EventKind::Progress), Some(&68), "two per attempt, 34 attempts");

    let metrics = downloads.metrics(2).await?;
    assert_eq!(metrics.minutes.iter().map(|m| m.completed).sum::<u64>(), 31);
    assert_eq!(metrics.minutes.iter().map(|m| m.failed).sum::<u64>(), 3);
    for queue in [&downloads, &requests, &notifications] {
        assert!(queue.obliterate(false).await? > 0);
        assert_eq!(queue.counts().await?, Default::default());
    }
    Ok(())
}

/// A job that succeeds on its first attempt, without log or progress, leaves its hash for a
/// record in the queue's completed-records hash: it reads back, lists, counts, is deleted and
/// cleaned like any completed job, and retention trims it by count. A job with a log keeps its
/// hash (and the log goes with it).
async fn a_first_attempt_success_is_kept_as_a_record_that_reads_like_a_job(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let prefix = env.ns.prefix().to_owned();
    let keep = Retention::new(Duration::from_secs(3600), 7);
    let defaults = JobOptions::default().attempts(2).keep_completed(keep);
    let queue = Queue::<Download>::new(
        Arc::clone(&env.backend),
        QueueConfig::new("records").namespace(env.ns.clone()).defaults(defaults),
    )?;
    let hash_exists = |id: &str| {
        let cmd = Cmd::new("EXISTS").key(&Key::from_raw(format!("{prefix}:{{records}}:j:{id}")));
        let backend = Arc::clone(&env.backend);
        async move { Ok::<_, Error>(backend.call(cmd).await?.as_int()? == 1) }
    };
    let ids = queue.add_bulk(&(0..5).map(download).collect::<Vec<_>>()).await?;
    let priority = |p| JobOptions::default().attempts(2).priority(p);
    let trimmed = queue.add_with(&download(6), priority(3)).await?.id;
    let urgent = queue.add_with(&download(7), priority(2)).await?.id;
    let logged = queue.add_with(&download(8), priority(1)).await?.id;
    // One at a time, so they finish in order: the three prioritized jobs, then 0..=4.
    let worker = queue.worker(fast().concurrency(1), |job| async move {
        if job.data.url.ends_with('8') {
            job.log("kept in the hash").await?;
        }
        Ok::<_, Error>(job.data.url.len())
    })?;
    until("every job completes", Duration::from_secs(20), || async { Ok(worker.stats().completed == 8) }).await?;
    worker.shutdown().await;

    assert_eq!(queue.counts().await?.completed, 7, "the first to finish is past the count kept");
    assert_eq!(queue.get(trimmed.as_str()).await?, None);
    let listed = queue.list(JobState::Completed, 0, 10).await?;
    let listed_ids: Vec<&str> = listed.iter().map(|j| j.id.as_str()).collect();
    let newest_first: Vec<&str> = ids.iter().rev().chain([&logged, &urgent]).map(|id| id.as_str()).collect();
    assert_eq!(listed_ids, newest_first);
    for (job, (n, priority)) in listed.iter().zip([(4, 0), (3, 0), (2, 0), (1, 0), (0, 0), (8, 1), (7, 2)]) {
        assert_eq!(job.state, JobState::Completed);
        assert_eq!(serde_json::from_value::<Download>(job.data.clone())?, download(n));
        assert_eq!(job.result, Some(serde_json::json!(download(n).url.len())));
        assert_eq!((job.attempts_started, job.max_attempts, job.priority), (1, 2, priority));
        assert!(job.created_ms > 0 && Some(job.created_ms) <= job.started_ms && job.started_ms <= job.finished_ms);
        assert_eq!(queue.get(job.id.as_str()).await?.as_ref(), Some(job), "get reads what list does");
        assert_eq!(hash_exists(job.id.as_str()).await?, n == 8, "only job {} (with a log) keeps its hash", job.id);
    }
    assert_eq!(queue.logs(logged.as_str()).await?, ["kept in the hash"]);

    assert!(queue.delete(ids[4].as_str()).await?);
    assert_eq!(queue.get(ids[4].as_str()).await?, None);
    assert!(!queue.delete(ids[4].as_str()).await?, "deleted once");
    // Cleaning takes the oldest first: the record, then the hash with its log.
    assert_eq!(queue.clean(redtail_queue::Finished::Completed, Duration::ZERO, 2).await?, 2);
    assert_eq!((queue.get(urgent.as_str()).await?, queue.get(logged.as_str()).await?), (None, None));
    assert!(queue.logs(logged.as_str()).await?.is_empty());
    let left: Vec<JobId> = queue.list(JobState::Completed, 0, 10).await?.into_iter().map(|j| j.id).collect();
    assert_eq!(left, ids[..4].iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(queue.counts().await?.completed, 4);

    // A custom id stays taken while its job is kept, as a record too.
    let once = || JobOptions::default().attempts(2).id("once");
    assert!(queue.add_with(&download(9), once()).await?.created);
    let worker = queue.worker(fast(), |_job| async move { Ok::<_, Error>(()) })?;
    until("the job with a custom id completes", Duration::from_secs(20), || async {
        Ok(worker.stats().completed == 1)
    })
    .await?;
    worker.shutdown().await;
    assert!(!hash_exists("once").await?);
    assert!(!queue.add_with(&download(9), once()).await?.created, "the id is still taken");
    queue.obliterate(false).await?;
    Ok(())
}

/// A dead job with a log, retried (from the dashboard, say) while no worker runs: its hash is the
/// work again and has no expiry, and its log lives a week from the retry, as an unfinished job's
/// log does (the retry used to `PERSIST` the log, so it lived forever).
async fn a_dead_job_retried_while_no_worker_runs_keeps_its_log_expiring(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let prefix = env.ns.prefix().to_owned();
    let queue = Queue::<Download>::new(
        Arc::clone(&env.backend),
        QueueConfig::new("relog").namespace(env.ns.clone()).defaults(JobOptions::default().attempts(1)),
    )?;
    let id = queue.add(&download(1)).await?;
    let worker = queue.worker(fast(), |job| async move {
        job.log("source gone").await?;
        Err::<(), _>(Error::InvalidInput("gone".into()))
    })?;
    until("the job is dead", Duration::from_secs(20), || async { Ok(queue.counts().await?.dead == 1) }).await?;
    worker.shutdown().await;
    let ttl = |part: &str| {
        let cmd = Cmd::new("PTTL").key(&Key::from_raw(format!("{prefix}:{{relog}}:{part}:{id}")));
        let backend = Arc::clone(&env.backend);
        async move { Ok::<_, Error>(backend.call(cmd).await?.as_int()?) }
    };
    assert!(ttl("lg").await? > 0, "a dead job's log expires with it");
    assert!(queue.retry_dead(id.as_str()).await?);
    assert_eq!(ttl("j").await?, -1, "a waiting job's hash has no expiry: it is the work");
    let week_ms = 7 * 24 * 3600 * 1000;
    let log_ttl = ttl("lg").await?;
    assert!(log_ttl > week_ms - 60_000 && log_ttl <= week_ms, "the log expires a week from the retry: {log_ttl} ms");
    assert_eq!(queue.logs(id.as_str()).await?, ["source gone"]);
    queue.obliterate(false).await?;
    Ok(())
}

/// `Duration::MAX` (or anything past ten years) as a delay, timeout, backoff, retention, rate-limit
/// window or worker setting is refused before anything is sent, with an error naming the setting;
/// a worker with settings out of range does not start. The longest allowed delay and retention
/// work and leave keys that expire.
async fn durations_redis_cannot_keep_are_refused_naming_the_setting(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let config = || QueueConfig::new("durations").namespace(env.ns.clone());
    let queue = Queue::<Download>::new(Arc::clone(&env.backend), config())?;
    let max = Duration::MAX;
    let cases = [
        (JobOptions::default().delay(max), "delay"),
        (JobOptions::default().timeout(max), "timeout"),
        (JobOptions::default().keep_completed(Retention::new(max, 10)), "keep_completed"),
        (JobOptions::default().keep_failed(Retention::new(max, 10)), "keep_failed"),
        (JobOptions::default().backoff(Backoff::Fixed { delay: max, jitter: 0.0 }), "backoff"),
        (JobOptions::default().backoff(Backoff::exponential(max)), "backoff"),
    ];
    for (options, setting) in cases {
        let error = queue.add_with(&download(1), options).await.err().ok_or(setting)?;
        assert!(matches!(error, Error::InvalidInput(_)) && error.to_string().contains(setting), "{setting}: {error}");
    }
    // A scheduler starting further away than the longest delay.
    let far = std::time::SystemTime::now() + Duration::from_secs(11 * 365 * 24 * 3600);
    let scheduler = redtail_queue::Scheduler::every("far", Duration::from_secs(60))?.starting_at(far);
    let error = queue.upsert_scheduler(scheduler, &download(1)).await.err().ok_or("scheduler start")?;
    assert!(matches!(error, Error::InvalidInput(_)) && error.to_string().contains("start"), "{error}");
    assert!(queue.schedulers().await?.is_empty(), "no scheduler was kept");
    assert_eq!(queue.counts().await?, Default::default(), "nothing was added");
    let error = Queue::<Download>::new(Arc::clone(&env.backend), config().rate_limit(5, max)).err().ok_or("rate")?;
    assert!(error.to_string().contains("rate-limit period"), "{error}");
    let workers = [
        (fast().concurrency(0), "concurrency"),
        (fast().lease(max), "lease"),
        (fast().lease(Duration::from_millis(1)), "lease"),
        (fast().shutdown_deadline(max), "shutdown deadline"),
        (fast().idle_poll(max), "idle poll"),
        (fast().idle_poll(Duration::ZERO), "idle poll"),
    ];
    for (options, setting) in workers {
        let error = queue.worker(options, |_job| async move { Ok::<_, Error>(()) }).err().ok_or(setting)?;
        assert!(error.to_string().contains(setting), "{setting}: {error}");
    }
    // The longest allowed: a delayed job whose keys Redis keeps.
    let longest = JobOptions::default()
        .delay(redtail_queue::MAX_DURATION)
        .keep_completed(Retention::new(redtail_queue::MAX_DURATION, 10));
    let id = queue.add_with(&download(2), longest).await?.id;
    assert_eq!(queue.get(id.as_str()).await?.map(|job| job.state), Some(JobState::Delayed));
    queue.obliterate(false).await?;
    Ok(())
}

/// A worker whose lanes are all busy does not listen for wake-ups, so a new job wakes a worker
/// that can take it, long before that worker would look on its own.
async fn a_busy_worker_leaves_the_wake_up_to_an_idle_one(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let config = QueueConfig::new("wake").namespace(env.ns.clone());
    let queue = Queue::<Download>::new(Arc::clone(&env.backend), config)?;
    let release = Arc::new(tokio::sync::Notify::new());
    // Both wait long between looks of their own, so only a wake-up starts the second job soon.
    let idle_poll = Duration::from_secs(60);
    let slow = queue.worker(WorkerOptions::default().idle_poll(idle_poll).concurrency(1), {
        let release = Arc::clone(&release);
        move |_job| {
            let release = Arc::clone(&release);
            async move {
                release.notified().await;
                Ok::<_, Error>(())
            }
        }
    })?;
    queue.add(&download(1)).await?;
    until("the busy worker runs the first job", Duration::from_secs(10), || async {
        Ok(queue.counts().await?.active == 1)
    })
    .await?;
    let idle = queue.worker(WorkerOptions::default().idle_poll(idle_poll), |_job| async move { Ok::<_, Error>(()) })?;
    // Let the idle worker find the queue empty and start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    queue.add(&download(2)).await?;
    until("the idle worker is woken to run the second job", Duration::from_secs(3), || async {
        Ok(idle.stats().completed == 1)
    })
    .await?;
    release.notify_one();
    until("the first job finishes", Duration::from_secs(10), || async { Ok(slow.stats().completed == 1) }).await?;
    slow.shutdown().await;
    idle.shutdown().await;
    queue.obliterate(false).await?;
    Ok(())
}

mod servers {
    use redtail_connection::Redis;
    use redtail_core::Backend;
    use redtail_tests::Deployment;

    use super::*;

    /// Runs `jobs` through in-process workers while `fault` runs, then checks the record: every
    /// job completed exactly once in the completed set, and every run counted.
    async fn run_through_fault<F>(ctx: &Ctx, jobs: u32, max_repeated: usize, fault: F) -> TestResult
    where
        F: FnOnce(&TestRedis) -> redtail_testkit::Result<()>,
    {
        run_on(&ctx.backend, &ctx.ns, jobs, max_repeated, || fault(&ctx.servers)).await
    }

    /// [`run_through_fault`] on any backend, with any fault.
    async fn run_on<F>(
        backend: &Arc<dyn Backend>,
        ns: &Namespace,
        jobs: u32,
        max_repeated: usize,
        fault: F,
    ) -> TestResult
    where
        F: FnOnce() -> redtail_testkit::Result<()>,
    {
        let queue =
            Queue::<Download>::new(Arc::clone(backend), keep_all(QueueConfig::new("faults").namespace(ns.clone())))?;
        let items: Vec<Download> = (0..jobs).map(download).collect();
        queue.add_bulk(&items).await.map_err(|e| format!("adding the jobs: {e}"))?;
        let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let options = fast().concurrency(50).lease(Duration::from_secs(3));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let runs = Arc::clone(&runs);
                queue.worker(options.clone(), move |job| {
                    let runs = Arc::clone(&runs);
                    async move {
                        *runs.lock().map_err(|_| "poisoned")?.entry(job.id.0).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Ok::<_, &str>(())
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        until("a third of the jobs complete", Duration::from_secs(60), || async {
            Ok(queue.counts().await.map(|c| c.completed).unwrap_or(0) >= u64::from(jobs / 3))
        })
        .await?;
        // The fault blocks this thread; the workers run on the other.
        tokio::task::block_in_place(fault)?;
        let finished = until("every job completes", Duration::from_secs(120), || async {
            Ok(queue.counts().await.map(|c| c.completed).unwrap_or(0) == u64::from(jobs))
        })
        .await;
        if let Err(e) = finished {
            // What the queue and the workers say, so that a run that stalls can be explained.
            let counts = queue.counts().await;
            let stats: Vec<_> = workers.iter().map(|w| w.stats()).collect();
            return Err(format!("{e}; counts {counts:?}; worker stats {stats:?}").into());
        }
        let mut stats = Vec::new();
        for worker in workers {
            stats.push(worker.shutdown().await);
        }
        let counts = queue.counts().await.map_err(|e| format!("counts after the run: {e}"))?;
        assert_eq!((counts.waiting, counts.active, counts.delayed, counts.dead), (0, 0, 0, 0));
        let completed = queue
            .list(JobState::Completed, 0, u64::from(jobs) + 10)
            .await
            .map_err(|e| format!("listing the completed jobs: {e}"))?;
        let mut ids: Vec<&str> = completed.iter().map(|j| j.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), jobs as usize, "every job exactly once in the completed record");
        let runs = runs.lock().map_err(|_| "poisoned")?;
        let repeated = runs.values().filter(|&&n| n > 1).count();
        assert_eq!(runs.len(), jobs as usize, "every job ran");
        assert!(repeated <= max_repeated, "{repeated} jobs ran more than once; stats {stats:?}");
        println!("{jobs} jobs through the fault: {repeated} ran twice; worker stats {stats:?}");
        Ok(())
    }

    /// A listener whose connections are dropped (`CLIENT KILL`) in the middle of a run reads on
    /// after the reconnect from where it was: every job's completion is seen exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_events_resume_where_they_left_off_after_connections_drop() -> TestResult {
        let ctx = Ctx::owned(Deployment::Standalone, |c| c).await;
        let queue =
            Queue::<Download>::new(Arc::clone(&ctx.backend), QueueConfig::new("events").namespace(ctx.ns.clone()))?;
        let mut events = queue.events(Start::Now).await?;
        let ids = queue.add_bulk(&(0..400).map(download).collect::<Vec<_>>()).await?;
        let worker = queue.worker(fast().concurrency(4), |_job| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, Error>(())
        })?;
        let mut completed: HashMap<String, u32> = HashMap::new();
        let mut dropped = false;
        while completed.len() < ids.len() {
            let event = tokio::time::timeout(Duration::from_secs(20), events.next()).await??;
            if event.kind == EventKind::Completed {
                *completed.entry(event.job.0).or_default() += 1;
            }
            if !dropped && completed.len() >= 100 {
                tokio::task::block_in_place(|| ctx.servers.drop_clients())?;
                dropped = true;
            }
        }
        worker.shutdown().await;
        assert!(dropped);
        assert!(completed.values().all(|&n| n == 1), "no completion seen twice");
        assert_eq!(completed.len(), ids.len());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_killed_and_restarted_with_aof_during_ten_thousand_jobs() -> TestResult {
        let ctx = Ctx::persistent(|c| c).await;
        // With every write on disk before it is acknowledged, re-runs happen only for jobs in
        // flight at the kill: at most 2 workers × 50.
        run_through_fault(&ctx, 10_000, 100, |servers| {
            let port = servers.kill_primary()?;
            std::thread::sleep(Duration::from_millis(500));
            servers.restart_killed(port)
        })
        .await
    }

    /// Workers whose connections go through a proxy that adds 2 s of latency for 3 s, against a
    /// 1 s command timeout and 3 s leases renewed each second: every job completes once in the
    /// record, and only jobs in flight at the spike may run twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_two_second_latency_spike_during_two_thousand_jobs() -> TestResult {
        let (servers, proxy, config) = redtail_tests::behind_proxy().await;
        let backend: Arc<dyn Backend> =
            Redis::connect(config.with_command_timeout(Duration::from_secs(1))).await?.into();
        let prefix = servers.namespace().child("spike");
        run_on(&backend, &prefix, 2_000, 100, || {
            proxy.set_latency(Duration::from_secs(2));
            std::thread::sleep(Duration::from_secs(3));
            proxy.set_latency(Duration::ZERO);
            Ok(())
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sentinel_failover_during_ten_thousand_jobs() -> TestResult {
        let ctx = Ctx::owned(Deployment::Sentinel, |c| c).await;
        // Replication is asynchronous: what workers wrote to the old primary between the
        // promotion and its demotion is lost, so those jobs run again (the record stays exact).
        run_through_fault(&ctx, 10_000, 10_000, |servers| servers.sentinel_failover().map(|_| ())).await
    }

    /// With replica acknowledgements every write holds a connection for its `WAIT`; a cluster
    /// failover (which unblocks a `WAIT` on the old primary with `UNBLOCKED`) must leave the
    /// workers taking jobs on the new one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_failover_with_replica_acks_during_two_thousand_jobs() -> TestResult {
        // The library's default timeout (5 s) rather than the suites' 2 s: six servers, a
        // failover and a full suite share two cores in CI, where a call once waited past 2 s.
        let ctx = Ctx::owned(Deployment::Cluster, |c| {
            c.with_replica_acks(1, Duration::from_millis(250)).with_command_timeout(Duration::from_secs(5))
        })
        .await;
        run_through_fault(&ctx, 2_000, 2_000, |servers| servers.cluster_failover().map(|_| ())).await
    }
}

mod processes {
    use super::*;

    /// A `queue_worker` process on the queue `name` under `prefix` (a lease of 1 s), which runs
    /// jobs until killed and counts each run in `<prefix>:runs`.
    fn queue_worker(url: &str, prefix: &str, name: &str, concurrency: usize) -> std::io::Result<std::process::Child> {
        queue_workers(url, prefix, name, concurrency, 1000, 1)
    }

    /// A `queue_worker` process running `workers` workers with a lease of `lease_ms`.
    fn queue_workers(
        url: &str,
        prefix: &str,
        name: &str,
        concurrency: usize,
        lease_ms: u64,
        workers: usize,
    ) -> std::io::Result<std::process::Child> {
        Command::new(env!("CARGO_BIN_EXE_queue_worker"))
            .args([url, prefix, name, &concurrency.to_string(), &lease_ms.to_string(), &workers.to_string()])
            .stdout(Stdio::null())
            .spawn()
    }

    /// 8 workers in 4 processes run 1,000 jobs of 40 groups, one at a time per group (the
    /// default): a ledger in Redis of every grouped job's start and end across the processes
    /// finds no two jobs of a group running at once, while jobs of different groups did.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_groups_concurrency_of_one_holds_across_eight_workers_in_four_processes() -> TestResult {
        let ctx = Ctx::new(redtail_tests::Deployment::Standalone).await;
        let prefix = ctx.ns.prefix().to_owned();
        let queue = Queue::<Download>::new(
            Arc::clone(&ctx.backend),
            keep_all(QueueConfig::new("ledger").namespace(ctx.ns.clone())),
        )?;
        let items: Vec<(Download, JobOptions)> = (0..1000)
            .map(|i| (download(i), queue.config().defaults.clone().group(format!("user-{}", i % 40))))
            .collect();
        queue.add_bulk_with(items.iter().map(|(data, options)| (data, options.clone())).collect()).await?;
        let spawn = || queue_workers(ctx.servers.url(), &prefix, "ledger", 8, 5000, 2);
        let mut workers = (0..4).map(|_| spawn()).collect::<Result<Vec<_>, _>>()?;
        let finished = until("every grouped job completes", Duration::from_secs(120), || async {
            Ok(queue.counts().await?.completed == 1000)
        })
        .await;
        for worker in &mut workers {
            worker.kill()?;
            worker.wait()?;
        }
        finished?;
        let read = |suffix: &str| {
            let key = Key::from_raw(format!("{prefix}:{suffix}"));
            let backend = Arc::clone(&ctx.backend);
            async move { backend.call(Cmd::new("GET").key(&key)).await }
        };
        let overlaps = read("overlaps").await?;
        assert!(overlaps.is_nil(), "jobs of one group overlapped {overlaps:?} times");
        let peak_key = Key::from_raw(format!("{prefix}:peak"));
        let peak = ctx.backend.call(Cmd::new("ZSCORE").key(&peak_key).arg("jobs")).await?.into_string()?;
        let peak: u32 = peak.parse()?;
        assert!(peak > 1, "jobs of different groups ran at once: at most {peak}");
        println!(
            "1,000 jobs in 40 groups, 8 workers in 4 processes: no overlap within a group, up to {peak} jobs at once"
        );
        Ok(())
    }

    /// A worker process killed with SIGKILL in the middle of 1,000 jobs: a second worker
    /// finishes everything once the dead one's leases run out, and only jobs that were in
    /// flight at the kill run twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_killed_with_sigkill_loses_no_job() -> TestResult {
        let ctx = Ctx::new(redtail_tests::Deployment::Standalone).await;
        let prefix = ctx.ns.prefix().to_owned();
        let queue = Queue::<Download>::new(
            Arc::clone(&ctx.backend),
            keep_all(QueueConfig::new("crash").namespace(ctx.ns.clone())),
        )?;
        queue.add_bulk(&(0..1000).map(download).collect::<Vec<_>>()).await?;
        let concurrency = 20;
        let spawn = || queue_worker(ctx.servers.url(), &prefix, "crash", concurrency);
        let mut doomed = spawn()?;
        until("the first worker is half way", Duration::from_secs(60), || async {
            Ok(queue.counts().await?.completed >= 500)
        })
        .await?;
        doomed.kill()?;
        doomed.wait()?;
        let at_kill = queue.counts().await?;
        assert!(at_kill.active > 0 && at_kill.completed < 1000, "the kill came mid-run: {at_kill:?}");
        let mut survivor = spawn()?;
        let finished = until("every job completes", Duration::from_secs(60), || async {
            Ok(queue.counts().await?.completed == 1000)
        })
        .await;
        survivor.kill()?;
        survivor.wait()?;
        finished?;
        let runs_key = Key::from_raw(format!("{prefix}:runs"));
        let runs = ctx.backend.call(Cmd::new("HVALS").key(&runs_key)).await?.into_array()?;
        assert_eq!(runs.len(), 1000, "every job ran");
        let repeated = runs.iter().filter(|n| n.as_int().unwrap_or(0) > 1).count();
        assert!(repeated <= concurrency, "{repeated} jobs ran twice; at most {concurrency} were in flight");
        assert_eq!(queue.counts().await?.dead, 0);
        println!("SIGKILL at {} completed, {} active: {repeated} jobs ran twice", at_kill.completed, at_kill.active);
        Ok(())
    }

    /// 100 flows of 5 children each: the children run in worker processes, one killed with
    /// SIGKILL in the middle and replaced; the parents (in another queue, run here) each run
    /// exactly once, after all 5 of their children, whatever notices the killed worker left in
    /// its outbox or relayed twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flow_parents_run_once_through_a_sigkill_of_their_childrens_worker() -> TestResult {
        let ctx = Ctx::new(redtail_tests::Deployment::Standalone).await;
        let prefix = ctx.ns.prefix().to_owned();
        let config = |name: &str| keep_all(QueueConfig::new(name).namespace(ctx.ns.clone()));
        let parents = Queue::<serde_json::Value>::new(Arc::clone(&ctx.backend), config("flowparents"))?;
        let kids = Queue::<serde_json::Value>::new(Arc::clone(&ctx.backend), config("flowkids"))?;
        let mut ids = Vec::new();
        for i in 0..100 {
            let mut flow = redtail_queue::FlowJob::new(&parents, &serde_json::json!({ "flow": i }))?;
            for c in 0..5 {
                flow = flow.child(redtail_queue::FlowJob::new(&kids, &serde_json::json!({ "flow": i, "child": c }))?);
            }
            ids.push(flow.add().await?.id);
        }
        let runs = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, (u32, usize)>::new()));
        let seen = Arc::clone(&runs);
        let parent_worker = parents.worker(WorkerOptions::default().concurrency(10), move |job| {
            let seen = Arc::clone(&seen);
            async move {
                let done = job.children().await.map_err(|e| e.to_string())?;
                let completed =
                    done.iter().filter(|c| matches!(c.outcome, redtail_queue::ChildOutcome::Completed(_))).count();
                let mut seen = seen.lock().map_err(|_| "poisoned")?;
                let entry = seen.entry(job.id.to_string()).or_default();
                *entry = (entry.0 + 1, completed);
                Ok::<_, String>(())
            }
        })?;
        let spawn = || queue_worker(ctx.servers.url(), &prefix, "flowkids", 10);
        let mut doomed = spawn()?;
        until("half the children are done", Duration::from_secs(60), || async {
            Ok(kids.counts().await?.completed >= 250)
        })
        .await?;
        doomed.kill()?;
        doomed.wait()?;
        let at_kill = kids.counts().await?;
        assert!(at_kill.completed < 500, "the kill came mid-run: {at_kill:?}");
        let mut survivor = spawn()?;
        let finished = until("every parent completes", Duration::from_secs(90), || async {
            Ok(parents.counts().await?.completed == 100)
        })
        .await;
        survivor.kill()?;
        survivor.wait()?;
        parent_worker.shutdown().await;
        finished?;
        {
            let runs = runs.lock().map_err(|_| "poisoned")?;
            for id in &ids {
                assert_eq!(runs.get(id.as_str()), Some(&(1, 5)), "parent {id} ran once, after its 5 children");
            }
        }
        let counts = parents.counts().await?;
        assert_eq!((counts.waiting_children, counts.waiting, counts.dead), (0, 0, 0), "{counts:?}");
        println!("SIGKILL at {} children completed, {} active", at_kill.completed, at_kill.active);
        Ok(())
    }

    /// A scheduler with 8 workers in 4 processes, one killed with SIGKILL between ticks and
    /// replaced: one job per tick, each tick's job run (twice at most for the one the killed
    /// process held), and the scheduler ends at its limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scheduler_makes_one_job_per_tick_across_processes_through_a_sigkill() -> TestResult {
        let ctx = Ctx::new(redtail_tests::Deployment::Standalone).await;
        let prefix = ctx.ns.prefix().to_owned();
        let queue = Queue::<Download>::new(
            Arc::clone(&ctx.backend),
            keep_all(QueueConfig::new("ticks").namespace(ctx.ns.clone())),
        )?;
        let spawn = || queue_worker(ctx.servers.url(), &prefix, "ticks", 2);
        let mut workers = (0..4).map(|_| spawn()).collect::<Result<Vec<_>, _>>()?;
        let limit = 12;
        queue
            .upsert_scheduler(Scheduler::every("pulse", Duration::from_millis(400))?.limit(limit), &download(1))
            .await?;
        let runs_key = Key::from_raw(format!("{prefix}:runs"));
        let ran = || async {
            Ok::<_, Error>(
                ctx.backend.call(Cmd::new("HLEN").key(&runs_key)).await.map_err(Error::from)?.as_int()? as u64
            )
        };
        until("four ticks have run", Duration::from_secs(30), || async { Ok(ran().await? >= 4) }).await?;
        workers[0].kill()?;
        workers[0].wait()?;
        workers[0] = spawn()?;
        let ended = until("the scheduler reaches its limit", Duration::from_secs(60), || async {
            let info = queue.scheduler("pulse").await?;
            Ok(info.is_some_and(|i| i.next_ms.is_none()) && queue.counts().await?.completed == limit)
        })
        .await;
        for worker in &mut workers {
            worker.kill()?;
            worker.wait()?;
        }
        ended?;
        let runs = ctx.backend.call(Cmd::new("HGETALL").key(&runs_key)).await?.into_array()?;
        let mut per_job = HashMap::new();
        for pair in runs.chunks(2) {
            if let [id, n] = pair {
                per_job.insert(id.clone().into_string()?, n.clone().into_string()?.parse::<u32>()?);
            }
        }
        assert_eq!(per_job.len() as u64, limit, "one job per tick: {per_job:?}");
        assert!(per_job.keys().all(|id| id.starts_with("pulse:")), "{per_job:?}");
        let twice = per_job.values().filter(|&&n| n > 1).count();
        assert!(twice <= 2, "only what the killed process held ran again: {per_job:?}");
        let info = queue.scheduler("pulse").await?.ok_or("the scheduler is gone")?;
        assert_eq!(info.runs, limit);
        println!("SIGKILL between ticks: {} jobs for {limit} ticks, {twice} ran twice", per_job.len());
        Ok(())
    }

    /// A handler that blocks its runtime past the lease cannot renew it: the job runs again on
    /// another worker, and the late completion is refused (or the attempt cancelled).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_blocking_past_its_lease_has_its_completion_refused() -> TestResult {
        let ctx = Ctx::new(redtail_tests::Deployment::Standalone).await;
        let config = QueueConfig::new("lease").namespace(ctx.ns.clone());
        let queue = Queue::<Download>::new(Arc::clone(&ctx.backend), config.clone())?;
        let id = queue.add(&download(1)).await?;
        // The slow worker runs on a runtime of its own with one thread, which its handler blocks.
        let backend = Arc::clone(&ctx.backend);
        let slow = std::thread::spawn(move || -> Result<_, String> {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let queue = Queue::<Download>::new(backend, config).map_err(|e| e.to_string())?;
                let options = fast().lease(Duration::from_millis(300));
                let worker = queue
                    .worker(options, |job| async move {
                        std::thread::sleep(Duration::from_millis(1500));
                        Ok::<_, Error>(format!("slow attempt {}", job.attempt))
                    })
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(3000)).await;
                Ok(worker.shutdown().await)
            })
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other =
            queue.worker(fast(), |job| async move { Ok::<_, Error>(format!("fast attempt {}", job.attempt)) })?;
        until("the job completes", Duration::from_secs(10), || async { Ok(queue.counts().await?.completed == 1) })
            .await?;
        let slow = slow.join().map_err(|_| "slow worker panicked")??;
        let other = other.shutdown().await;
        // Its lane finds the lease lost at its next round trip: the finished attempt's
        // acknowledgement is refused, or the attempt is cancelled if that comes first.
        assert_eq!((slow.completed, slow.refused + slow.lost), (0, 1), "{slow:?}");
        assert_eq!(other.completed, 1);
        let job = queue.get(id.as_str()).await?.ok_or("job gone")?;
        assert_eq!(job.result, Some(serde_json::json!("fast attempt 2")));
        Ok(())
    }

    /// Shutting a worker down in the middle of 2,000 jobs: what it held finishes or goes back,
    /// and a second worker completes the rest; nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn graceful_shutdown_under_load_loses_nothing() -> TestResult {
        let ctx = Ctx::new(redtail_tests::Deployment::Standalone).await;
        let config = keep_all(QueueConfig::new("graceful").namespace(ctx.ns.clone()));
        let queue = Queue::<Download>::new(Arc::clone(&ctx.backend), config)?;
        queue.add_bulk(&(0..2000).map(download).collect::<Vec<_>>()).await?;
        let handler = |job: redtail_queue::Job<Download>| async move {
            // 1 to 40 ms; some jobs outlive the first worker's shutdown deadline.
            let n: u64 = job.data.url.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(1 + n % 40)).await;
            Ok::<_, Error>(())
        };
        let first = queue.worker(fast().concurrency(50).shutdown_deadline(Duration::from_millis(20)), handler)?;
        until("a quarter is done", Duration::from_secs(30), || async { Ok(queue.counts().await?.completed >= 500) })
            .await?;
        let stopped = first.shutdown().await;
        let after_stop = queue.counts().await?;
        assert_eq!(after_stop.active, 0, "a stopped worker holds nothing");
        assert!(stopped.released > 0, "some jobs outlived the deadline and went back: {stopped:?}");
        let second = queue.worker(fast().concurrency(50), handler)?;
        until("every job completes", Duration::from_secs(30), || async { Ok(queue.counts().await?.completed == 2000) })
            .await?;
        let second = second.shutdown().await;
        assert_eq!(stopped.completed + second.completed, 2000, "{stopped:?} {second:?}");
        assert_eq!(stopped.refused + second.refused, 0);
        Ok(())
    }
}
