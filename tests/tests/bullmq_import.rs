//! `Queue::import_bullmq` against jobs real BullMQ wrote (`tests/fixtures/bullmq`, BullMQ pinned
//! in its lock file; `cargo xtask test` installs it with npm): a dry run lists them and writes
//! nothing, the import keeps ids, data, attempts made, priorities and due times, leaves
//! BullMQ's keys as they were, adds nothing twice when run again, and every job then runs once.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redtail_core::{Cmd, Key};
use redtail_queue::{BullmqState, JobState, Queue, QueueConfig, WorkerOptions};
use redtail_tests::{Ctx, Deployment, TestResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Download {
    url: String,
    #[serde(rename = "userId")]
    user_id: String,
}

/// What the fixture made, by kind, in the order it added them.
#[derive(Debug, Deserialize)]
struct Made {
    waiting: Vec<String>,
    prioritized: Vec<String>,
    delayed: Vec<String>,
    retrying: Vec<String>,
}

/// Runs the fixture: jobs BullMQ writes into `queue` on the server at `url`.
fn bullmq_writes(url: &str, queue: &str) -> Result<Made, Box<dyn std::error::Error + Send + Sync>> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bullmq");
    if !fixture.join("node_modules/bullmq").is_dir() {
        return Err(
            "the BullMQ fixture is not installed: run `npm ci --prefix tests/fixtures/bullmq` (cargo xtask test does)"
                .into(),
        );
    }
    let out = Command::new("node").arg(fixture.join("add-jobs.mjs")).args([url, queue]).output()?;
    if !out.status.success() {
        return Err(format!("the BullMQ fixture failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every BullMQ key of `queue` with its `DUMP`, to show the import left them as they were.
async fn snapshot(
    ctx: &Ctx,
    queue: &str,
    ids: &[&String],
) -> Result<BTreeMap<String, Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
    let mut keys: Vec<String> =
        ["wait", "prioritized", "delayed", "meta", "id"].iter().map(|s| format!("bull:{queue}:{s}")).collect();
    keys.extend(ids.iter().map(|id| format!("bull:{queue}:{id}")));
    let mut dumps = BTreeMap::new();
    for key in keys {
        let dump = ctx.backend.call(Cmd::new("DUMP").key(&Key::from_raw(key.clone()))).await?.into_opt_bytes()?;
        dumps.insert(key, dump.map(|d| d.to_vec()).unwrap_or_default());
    }
    Ok(dumps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_bullmq_wrote_move_to_redtail_and_each_runs_once() -> TestResult {
    let ctx = Ctx::new(Deployment::Standalone).await;
    let name = format!("import-{}", std::process::id());
    let made = bullmq_writes(ctx.servers.url(), &name)?;
    let all: Vec<&String> =
        made.waiting.iter().chain(&made.prioritized).chain(&made.delayed).chain(&made.retrying).collect();
    let before = snapshot(&ctx, &name, &all).await?;

    let queue =
        Queue::<Download>::new(Arc::clone(&ctx.backend), QueueConfig::new("imported").namespace(ctx.ns.clone()))?;
    let dry = queue.import_bullmq("bull", &name, true).await?;
    assert_eq!((dry.jobs.len(), dry.added), (9, 0), "{dry:?}");
    assert_eq!(queue.counts().await?.waiting + queue.counts().await?.delayed, 0, "a dry run writes nothing");
    let listed: Vec<(&str, BullmqState)> = dry.jobs.iter().map(|j| (j.id.as_str(), j.state)).collect();
    let expected_waiting: Vec<(&str, BullmqState)> =
        made.waiting.iter().map(|id| (id.as_str(), BullmqState::Waiting)).collect();
    assert_eq!(&listed[..3], &expected_waiting[..], "waiting jobs, oldest first");

    let imported = queue.import_bullmq("bull", &name, false).await?;
    assert_eq!((imported.added, imported.existing), (9, 0), "{imported:?}");
    assert!(imported.jobs.iter().all(|j| j.refused.is_none()), "{imported:?}");
    let counts = queue.counts().await?;
    assert_eq!((counts.waiting, counts.delayed), (6, 3), "{counts:?}");
    let flaky = queue.get(&made.retrying[0]).await?.ok_or("the retrying job is missing")?;
    assert_eq!(
        (flaky.state, flaky.attempts_started, flaky.max_attempts),
        (JobState::Delayed, 1, 3),
        "attempts made kept"
    );
    let later = queue.get(&made.delayed[0]).await?.ok_or("a delayed job is missing")?;
    assert_eq!((later.state, later.max_attempts), (JobState::Delayed, 2));
    assert_eq!(snapshot(&ctx, &name, &all).await?, before, "BullMQ's keys are untouched");

    let again = queue.import_bullmq("bull", &name, false).await?;
    assert_eq!((again.added, again.existing), (0, 9), "an import run twice adds nothing twice");
    // New jobs get ids after the imported ones (BullMQ's are numbers too).
    let fresh = queue.add(&Download { url: "https://example.invalid/new".into(), user_id: "u1".into() }).await?;
    assert!(fresh.as_str().parse::<u64>()? > 9, "{fresh:?}");

    for id in made.delayed.iter().chain(&made.retrying) {
        assert!(queue.promote(id).await?, "{id} is delayed");
    }
    let runs: Arc<Mutex<Vec<(String, u32, String)>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let worker =
        queue.worker(WorkerOptions::default().concurrency(1).idle_poll(Duration::from_millis(50)), move |job| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().map_err(|_| "poisoned")?.push((
                    job.id.as_str().to_owned(),
                    job.attempt,
                    job.data.url.clone(),
                ));
                Ok::<_, &str>(())
            }
        })?;
    let start = Instant::now();
    while queue.counts().await?.completed < 10 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
    let runs = runs.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(runs.len(), 10, "every job once: {runs:?}");
    let by_id: BTreeMap<&str, (u32, &str)> =
        runs.iter().map(|(id, n, url)| (id.as_str(), (*n, url.as_str()))).collect();
    assert_eq!(by_id.len(), 10, "no job ran twice: {runs:?}");
    assert_eq!(by_id[made.retrying[0].as_str()], (2, "https://example.invalid/flaky"), "its second attempt");
    // BullMQ's priority 1 is the highest; the prioritized jobs ran first, in priority order.
    let first: Vec<&str> = runs.iter().take(3).map(|(_, _, url)| url.as_str()).collect();
    assert_eq!(first, ["https://example.invalid/p/1", "https://example.invalid/p/2", "https://example.invalid/p/3"]);

    queue.obliterate(false).await?;
    let bull_keys: Vec<String> =
        before.keys().cloned().chain(["events", "marker", "pc"].iter().map(|s| format!("bull:{name}:{s}"))).collect();
    ctx.backend.call(bull_keys.iter().fold(Cmd::new("DEL"), |cmd, key| cmd.key(&Key::from_raw(key.clone())))).await?;
    Ok(())
}
