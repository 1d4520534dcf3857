//! `redtail-queue`'s groups on every backend: order and concurrency within a group, round-robin
//! fairness across groups, a group's rate limit, retries that hold a group's place, pausing a
//! group, and reading, deleting and draining grouped jobs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redtail_queue::{
    Backoff, Error, Groups, JobOptions, JobState, Queue, QueueConfig, Retention, WorkerHandle, WorkerOptions,
};
use redtail_tests::{Env, Target, TestResult, for_each_backend};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    seq: u32,
}

/// What the handlers saw, per group ("" for ungrouped jobs).
#[derive(Default)]
struct Ledger {
    running: HashMap<String, u32>,
    most_at_once: HashMap<String, u32>,
    /// `(seq, attempt, started)` in the order attempts started.
    started: HashMap<String, Vec<(u32, u32, Instant)>>,
    finished: HashMap<String, Vec<Instant>>,
}

type Shared = Arc<Mutex<Ledger>>;

fn queue(env: &Env, name: &str, groups: Groups) -> Result<Queue<Item>, Error> {
    let keep = Retention::new(Duration::from_secs(600), 100_000);
    let defaults = JobOptions::default()
        .keep_completed(keep)
        .backoff(Backoff::Fixed { delay: Duration::from_millis(300), jitter: 0.0 });
    Queue::new(
        Arc::clone(&env.backend),
        QueueConfig::new(name).namespace(env.ns.clone()).defaults(defaults).groups(groups),
    )
}

fn in_group(group: &str) -> JobOptions {
    JobOptions::default()
        .group(group)
        .keep_completed(Retention::new(Duration::from_secs(600), 100_000))
        .backoff(Backoff::Fixed { delay: Duration::from_millis(300), jitter: 0.0 })
}

/// A worker whose handler records every attempt in `ledger`, takes `work`, and fails the first
/// attempt of the jobs whose seq is in `fail_first`.
fn recording(
    queue: &Queue<Item>,
    concurrency: usize,
    ledger: &Shared,
    work: Duration,
    fail_first: &'static [u32],
) -> Result<WorkerHandle, Error> {
    let ledger = Arc::clone(ledger);
    let options = WorkerOptions::default().concurrency(concurrency).idle_poll(Duration::from_millis(50));
    queue.worker(options, move |job| {
        let ledger = Arc::clone(&ledger);
        async move {
            let group = job.group.clone().unwrap_or_default();
            {
                let mut l = ledger.lock().map_err(|_| "poisoned")?;
                let now = l.running.entry(group.clone()).or_default();
                *now += 1;
                let now = *now;
                let most = l.most_at_once.entry(group.clone()).or_default();
                *most = (*most).max(now);
                l.started.entry(group.clone()).or_default().push((job.data.seq, job.attempt, Instant::now()));
            }
            tokio::time::sleep(work).await;
            let mut l = ledger.lock().map_err(|_| "poisoned")?;
            *l.running.entry(group.clone()).or_default() -= 1;
            if job.attempt == 1 && fail_first.contains(&job.data.seq) {
                return Err("the first attempt fails");
            }
            l.finished.entry(group).or_default().push(Instant::now());
            Ok(())
        }
    })
}

async fn until_completed(queue: &Queue<Item>, n: u64, limit: Duration) -> TestResult {
    let start = Instant::now();
    loop {
        let counts = queue.counts().await?;
        if counts.completed >= n {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!("{n} jobs not completed within {limit:?}: {counts:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

for_each_backend!(
    grouped_jobs_run_in_order_one_at_a_time_per_group_beside_ungrouped_ones,
    small_groups_finish_long_before_a_large_groups_backlog,
    a_groups_rate_limit_admits_exactly_its_limit_per_window,
    a_retrying_job_holds_its_groups_place_unless_told_not_to,
    a_paused_group_waits_while_the_others_run,
    grouped_jobs_are_listed_deleted_and_drained,
    bad_groups_and_group_settings_are_refused_naming_them,
    a_grouped_job_handed_back_at_shutdown_runs_first_in_its_group,
    a_grouped_job_whose_worker_lost_redis_runs_again_and_frees_its_group
);

/// A worker whose handler never finishes job 0 (it holds its group), and notes what started.
fn hanging(queue: &Queue<Item>, options: WorkerOptions, started: &Arc<Mutex<Vec<u32>>>) -> Result<WorkerHandle, Error> {
    let started = Arc::clone(started);
    queue.worker(options, move |job| {
        let started = Arc::clone(&started);
        async move {
            started.lock().map_err(|_| "poisoned")?.push(job.data.seq);
            if job.data.seq == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, &str>(())
        }
    })
}

async fn until_started(started: &Arc<Mutex<Vec<u32>>>, seq: u32) -> TestResult {
    let start = Instant::now();
    while !started.lock().map_err(|_| "poisoned")?.contains(&seq) {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("job {seq} did not start").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A grouped job still running at shutdown is handed back to the front of its group, which is
/// free again: the next worker runs the group's jobs in their order.
async fn a_grouped_job_handed_back_at_shutdown_runs_first_in_its_group(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = queue(&env, "handback", Groups::default())?;
    let items: Vec<Item> = (0..3).map(|seq| Item { seq }).collect();
    queue.add_bulk_with(items.iter().map(|item| (item, in_group("g"))).collect()).await?;
    let started = Arc::new(Mutex::new(Vec::new()));
    let options = WorkerOptions::default().concurrency(4).shutdown_deadline(Duration::ZERO);
    let first = hanging(&queue, options, &started)?;
    until_started(&started, 0).await?;
    let g = queue.group("g").await?;
    assert_eq!((g.waiting, g.active), (2, 1), "one running, the others waiting behind it: {g:?}");
    let stats = first.shutdown().await;
    assert_eq!(stats.released, 1, "{stats:?}");
    let g = queue.group("g").await?;
    assert_eq!((g.waiting, g.active), (3, 0), "handed back and free: {g:?}");
    let ledger = Shared::default();
    let second = recording(&queue, 4, &ledger, Duration::ZERO, &[])?;
    until_completed(&queue, 3, Duration::from_secs(30)).await?;
    second.shutdown().await;
    let order: Vec<u32> = ledger.lock().map_err(|_| "poisoned")?.started["g"].iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(order, [0, 1, 2]);
    Ok(())
}

/// A worker that loses Redis while it runs a grouped job cannot renew its lease: once the lease
/// has run out another worker runs the job again, first in its group, and the group's other
/// jobs follow (the group is not left counted as busy).
async fn a_grouped_job_whose_worker_lost_redis_runs_again_and_frees_its_group(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = queue(&env, "lostlease", Groups::default())?;
    let items: Vec<Item> = (0..3).map(|seq| Item { seq }).collect();
    queue.add_bulk_with(items.iter().map(|item| (item, in_group("g"))).collect()).await?;
    let cut = redtail_tests::Counted::new(Arc::clone(&env.backend));
    let config = queue.config().clone();
    let cut_off = Queue::<Item>::new(Arc::clone(&cut) as Arc<dyn redtail_core::Backend>, config)?;
    let started = Arc::new(Mutex::new(Vec::new()));
    let lease = Duration::from_millis(300);
    let doomed = hanging(&cut_off, WorkerOptions::default().concurrency(4).lease(lease), &started)?;
    until_started(&started, 0).await?;
    cut.set_down(true);
    let ledger = Shared::default();
    let survivor = recording(&queue, 4, &ledger, Duration::ZERO, &[])?;
    until_completed(&queue, 3, Duration::from_secs(30)).await?;
    survivor.shutdown().await;
    drop(doomed);
    let order: Vec<u32> = ledger.lock().map_err(|_| "poisoned")?.started["g"].iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(order, [0, 1, 2], "the lost job ran again first, then the others");
    let g = queue.group("g").await?;
    assert_eq!((g.waiting, g.active), (0, 0), "{g:?}");
    Ok(())
}

/// Five groups of 20 jobs added interleaved, and 20 ungrouped: each group's jobs run one at a
/// time (the default concurrency) in the order added, while the ungrouped ones run beside them.
async fn grouped_jobs_run_in_order_one_at_a_time_per_group_beside_ungrouped_ones(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = queue(&env, "order", Groups::default())?;
    let mut items = Vec::new();
    for seq in 0..20 {
        for g in 0..5 {
            items.push((Item { seq }, in_group(&format!("user-{g}"))));
        }
        items.push((Item { seq }, JobOptions::default()));
    }
    let items: Vec<(&Item, JobOptions)> = items.iter().map(|(item, options)| (item, options.clone())).collect();
    queue.add_bulk_with(items).await?;
    let metrics = queue.metrics(1).await?;
    assert_eq!(metrics.counts.waiting, 120, "grouped jobs count as waiting: {metrics:?}");
    assert_eq!((metrics.groups.waiting, metrics.groups.jobs_waiting), (5, 100));
    assert_eq!(queue.group("user-3").await?.waiting, 20);

    let ledger = Shared::default();
    let worker = recording(&queue, 16, &ledger, Duration::from_millis(2), &[])?;
    until_completed(&queue, 120, Duration::from_secs(60)).await?;
    worker.shutdown().await;

    {
        let ledger = ledger.lock().map_err(|_| "poisoned")?;
        for g in 0..5 {
            let group = format!("user-{g}");
            assert_eq!(ledger.most_at_once.get(&group), Some(&1), "{group} ran one job at a time");
            let order: Vec<u32> = ledger.started[&group].iter().map(|(seq, _, _)| *seq).collect();
            assert_eq!(order, (0..20).collect::<Vec<_>>(), "{group} ran in the order added");
        }
        assert_eq!(ledger.started[""].len(), 20, "the ungrouped jobs ran");
        assert!(ledger.most_at_once[""] > 1, "ungrouped jobs are not limited per group");
    }
    let after = queue.metrics(1).await?;
    assert_eq!((after.counts.waiting, after.counts.active), (0, 0));
    assert_eq!((after.groups.waiting, after.groups.running, after.groups.jobs_active), (0, 0, 0), "{after:?}");
    assert!(queue.groups(None, 100).await?.is_empty(), "no group is left with jobs");
    Ok(())
}

/// One group with 10,000 jobs and 100 groups with 10 each, 20 at a time per group and 50 per
/// worker: the workers take groups in turn, so every small group is done while the large
/// group's backlog has barely started. The longest wait per group is printed.
async fn small_groups_finish_long_before_a_large_groups_backlog(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = queue(&env, "fair", Groups::default().concurrency(20))?;
    let large = in_group("large");
    let small: Vec<JobOptions> = (0..100).map(|g| in_group(&format!("small-{g}"))).collect();
    let items: Vec<Item> = (0..10_000).map(|seq| Item { seq }).collect();
    // The large group first, so that its backlog is ahead of every small group's jobs.
    queue.add_bulk_with(items.iter().map(|item| (item, large.clone())).collect()).await?;
    queue
        .add_bulk_with(items[..1000].iter().enumerate().map(|(i, item)| (item, small[i % 100].clone())).collect())
        .await?;
    let ledger = Shared::default();
    let start = Instant::now();
    let worker = recording(&queue, 50, &ledger, Duration::ZERO, &[])?;
    until_completed(&queue, 11_000, Duration::from_secs(240)).await?;
    worker.shutdown().await;

    let ledger = ledger.lock().map_err(|_| "poisoned")?;
    let last = |group: &str| ledger.finished[group].iter().max().copied().unwrap_or(start);
    let small_done = (0..100).map(|g| last(&format!("small-{g}"))).max().ok_or("no small group ran")?;
    let large_done = last("large");
    let large_by_then = ledger.finished["large"].iter().filter(|t| **t <= small_done).count();
    println!(
        "longest wait: small groups {:?}, the large group {:?}; the large group had done {large_by_then} of 10000 when the small groups were done",
        small_done - start,
        large_done - start
    );
    assert!(small_done < large_done, "every small group finished before the large group's backlog");
    assert!(large_by_then < 1000, "the large group took no more than its turns: {large_by_then} done first");
    assert!(ledger.most_at_once["large"] <= 20, "the large group ran at most 20 at once");
    Ok(())
}

/// A group limited to 4 starts per 500 ms starts its 12 jobs 4 per window, while another group
/// runs at once: no 4 starts apart fit in one window.
async fn a_groups_rate_limit_admits_exactly_its_limit_per_window(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let window = Duration::from_millis(500);
    let queue = queue(&env, "rated", Groups::default().concurrency(10).rate_limit(4, window))?;
    let items: Vec<Item> = (0..12).map(|seq| Item { seq }).collect();
    queue.add_bulk_with(items.iter().map(|item| (item, in_group("a"))).collect()).await?;
    queue.add_bulk_with(items[..2].iter().map(|item| (item, in_group("b"))).collect()).await?;
    let ledger = Shared::default();
    let worker = recording(&queue, 10, &ledger, Duration::ZERO, &[])?;
    until_completed(&queue, 14, Duration::from_secs(30)).await?;
    worker.shutdown().await;

    let ledger = ledger.lock().map_err(|_| "poisoned")?;
    let mut a: Vec<Instant> = ledger.started["a"].iter().map(|(_, _, at)| *at).collect();
    a.sort();
    // Each start and the fourth after it are a window apart (less the clocks' few ms of skew).
    for pair in a.windows(5) {
        let apart = pair[4] - pair[0];
        assert!(apart >= window - Duration::from_millis(40), "5 starts within {apart:?}: more than 4 per window");
    }
    let spread = a[11] - a[0];
    assert!(spread >= 2 * window - Duration::from_millis(80), "12 starts at 4 per window span two windows: {spread:?}");
    let b_last = ledger.started["b"].iter().map(|(_, _, at)| *at).max().ok_or("b never ran")?;
    assert!(b_last < a[0] + window, "the other group was not held back by a's limit");
    Ok(())
}

/// A job whose first attempt fails waits out its backoff. Holding its group's place (the
/// default), the group's next job starts only after its retry; not holding, the next job runs
/// meanwhile.
async fn a_retrying_job_holds_its_groups_place_unless_told_not_to(target: Target) -> TestResult {
    let env = Env::new(target).await;
    for hold in [true, false] {
        let queue = queue(&env, if hold { "hold" } else { "nohold" }, Groups::default().hold_on_retry(hold))?;
        let items: Vec<Item> = (0..3).map(|seq| Item { seq }).collect();
        queue.add_bulk_with(items.iter().map(|item| (item, in_group("g"))).collect()).await?;
        let ledger = Shared::default();
        let worker = recording(&queue, 4, &ledger, Duration::ZERO, &[0])?;
        until_completed(&queue, 3, Duration::from_secs(30)).await?;
        worker.shutdown().await;
        let ledger = ledger.lock().map_err(|_| "poisoned")?;
        let order: Vec<(u32, u32)> = ledger.started["g"].iter().map(|(seq, attempt, _)| (*seq, *attempt)).collect();
        let expected = if hold { vec![(0, 1), (0, 2), (1, 1), (2, 1)] } else { vec![(0, 1), (1, 1), (2, 1), (0, 2)] };
        assert_eq!(order, expected, "hold_on_retry {hold}: (seq, attempt) in the order started");
        assert_eq!(ledger.most_at_once["g"], 1);
    }
    Ok(())
}

/// A paused group's jobs wait while another group's run; resumed, they run.
async fn a_paused_group_waits_while_the_others_run(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = queue(&env, "paused", Groups::default().concurrency(5))?;
    queue.pause_group("slow").await?;
    let items: Vec<Item> = (0..3).map(|seq| Item { seq }).collect();
    queue.add_bulk_with(items.iter().map(|item| (item, in_group("slow"))).collect()).await?;
    queue.add_bulk_with(items.iter().map(|item| (item, in_group("fast"))).collect()).await?;
    let ledger = Shared::default();
    let worker = recording(&queue, 4, &ledger, Duration::ZERO, &[])?;
    until_completed(&queue, 3, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slow = queue.group("slow").await?;
    assert!(slow.paused && slow.waiting == 3 && slow.active == 0, "the paused group waited: {slow:?}");
    assert_eq!(queue.counts().await?.completed, 3, "only the other group ran");
    assert_eq!(queue.metrics(1).await?.groups.paused, 1);
    queue.resume_group("slow").await?;
    until_completed(&queue, 6, Duration::from_secs(30)).await?;
    worker.shutdown().await;
    assert!(!queue.group("slow").await?.paused);
    Ok(())
}

/// Grouped jobs are listed by group (in pages), read with their group, deleted one by one and
/// drained; the groups are then empty, and the queue runs newly added grouped jobs as before.
async fn grouped_jobs_are_listed_deleted_and_drained(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = queue(&env, "listed", Groups::default())?;
    let items: Vec<Item> = (0..4).map(|seq| Item { seq }).collect();
    let mut ids = Vec::new();
    for group in ["a", "b", "c"] {
        for added in queue.add_bulk_with(items.iter().map(|item| (item, in_group(group))).collect()).await? {
            ids.push(added.id);
        }
    }
    let delayed = queue.add_with(&items[0], in_group("a").delay(Duration::from_secs(600))).await?;
    let info = queue.get(ids[0].as_str()).await?.ok_or("the first job is gone")?;
    assert_eq!(info.group.as_deref(), Some("a"));
    let listed: Vec<_> = queue.list_group("a", 1, 10).await?.into_iter().map(|job| job.id).collect();
    assert_eq!(listed, ids[1..4], "a group's waiting jobs in order, from the offset");
    assert!(queue.list(JobState::Waiting, 0, 100).await?.is_empty(), "waiting lists the ungrouped jobs");
    let first_page = queue.groups(None, 2).await?;
    let names: Vec<&str> = first_page.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(first_page[0].waiting, 4, "the delayed job is not waiting yet");
    let rest = queue.groups(Some("b"), 2).await?;
    assert_eq!(rest.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["c"]);

    assert!(queue.delete(ids[1].as_str()).await?, "a waiting grouped job is deleted");
    assert_eq!(queue.group("a").await?.waiting, 3);
    assert_eq!(queue.counts().await?.waiting, 11);
    assert_eq!(queue.drain(true).await?, 12, "the waiting grouped jobs and the delayed one");
    assert!(queue.get(delayed.id.as_str()).await?.is_none());
    assert!(queue.groups(None, 10).await?.is_empty());
    let metrics = queue.metrics(1).await?;
    assert_eq!((metrics.counts.waiting, metrics.groups.jobs_waiting), (0, 0), "{metrics:?}");

    queue.add_bulk_with(items.iter().map(|item| (item, in_group("a"))).collect()).await?;
    let ledger = Shared::default();
    let worker = recording(&queue, 4, &ledger, Duration::ZERO, &[])?;
    until_completed(&queue, 4, Duration::from_secs(30)).await?;
    worker.shutdown().await;
    Ok(())
}

/// Group names that Redis could not keep apart or that the key layout would misread, a
/// priority on a grouped job, and group limits that would stop every group, are refused.
async fn bad_groups_and_group_settings_are_refused_naming_them(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let queue = queue(&env, "refusals", Groups::default())?;
    let item = Item { seq: 0 };
    for bad in ["", "two words", "tab\there", "new\nline", &"x".repeat(129)] {
        match queue.add_with(&item, in_group(bad)).await {
            Err(Error::InvalidInput(message)) => assert!(message.contains("group"), "{message}"),
            other => return Err(format!("group {bad:?} was not refused: {other:?}").into()),
        }
        assert!(matches!(queue.pause_group(bad).await, Err(Error::InvalidInput(_))));
    }
    match queue.add_with(&item, in_group("g").priority(5)).await {
        Err(Error::InvalidInput(message)) => assert!(message.contains("priority"), "{message}"),
        other => return Err(format!("a grouped job with a priority was not refused: {other:?}").into()),
    }
    let grouped = queue.add_with(&item, in_group("g")).await?.id;
    match queue.change_priority(grouped.as_str(), 5).await {
        Err(Error::InvalidInput(message)) => assert!(message.contains("grouped"), "{message}"),
        other => return Err(format!("a grouped job's priority change was not refused: {other:?}").into()),
    }
    assert!(queue.delete(grouped.as_str()).await?);
    for (groups, setting) in [
        (Groups::default().concurrency(0), "concurrency"),
        (Groups::default().concurrency(redtail_queue::MAX_GROUP_CONCURRENCY + 1), "concurrency"),
        (Groups::default().concurrency(u32::MAX), "concurrency"),
        (Groups::default().rate_limit(0, Duration::from_secs(1)), "rate limit"),
        (Groups::default().rate_limit(1, Duration::ZERO), "rate limit"),
        (Groups::default().rate_limit(1, Duration::MAX), "rate-limit period"),
    ] {
        match Queue::<Item>::new(Arc::clone(&env.backend), QueueConfig::new("bad").groups(groups)) {
            Err(Error::InvalidInput(message)) => assert!(message.contains(setting), "{message}"),
            other => return Err(format!("{groups:?} was not refused: {other:?}").into()),
        }
    }
    assert_eq!(queue.counts().await?.waiting, 0, "nothing was added");
    Ok(())
}
