//! Slots that move between cluster primaries while redtail runs (`CLUSTER SETSLOT …
//! MIGRATING/IMPORTING`, then `MIGRATE` key by key, as `redis-cli --cluster reshard` does): a
//! call that meets the move fails before it has written anything, and once the slot has moved
//! nothing is lost (docs/compatibility.md, "A slot that migrates").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redtail_core::{Cmd, Key};
use redtail_queue::{JobOptions, Queue, QueueConfig, WorkerHandle, WorkerOptions};
use redtail_testkit::resp::Reply;
use redtail_tests::{Ctx, Deployment, TestResult};

/// Keys of `slot` held by the node on `port`.
fn keys_in_slot(ctx: &Ctx, port: u16, slot: u16) -> Result<i64, String> {
    match ctx.servers.admin(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]) {
        Ok(Reply::Int(n)) => Ok(n),
        other => Err(format!("COUNTKEYSINSLOT answered {other:?}")),
    }
}

/// Waits (bounded) until `done` holds, failing with `what`.
async fn until<F, Fut>(what: &str, limit: Duration, mut done: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("timed out after {limit:?} waiting until {what}").into())
}

/// How many times each job ran, by its data.
type Ledger = Arc<Mutex<HashMap<u32, u32>>>;

/// A worker on `queue` that takes 2 ms a job and counts each job's runs in the ledger.
fn counting_worker(queue: &Queue<u32>, concurrency: usize) -> Result<(Ledger, WorkerHandle), redtail_queue::Error> {
    let runs: Ledger = Arc::default();
    let ledger = Arc::clone(&runs);
    let options = WorkerOptions::default().concurrency(concurrency).idle_poll(Duration::from_millis(50));
    let worker = queue.worker(options, move |job| {
        let ledger = Arc::clone(&ledger);
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            *ledger.lock().map_err(|_| "poisoned")?.entry(job.data).or_default() += 1;
            Ok::<_, &str>(())
        }
    })?;
    Ok((runs, worker))
}

/// The queue's slot starts migrating with the first job to be taken already moved: every
/// queue call (a worker's steps, an add, the counts) fails and changes nothing on either node;
/// once the slot has moved, every job runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_calls_on_a_migrating_slot_fail_before_writing_and_lose_no_job() -> TestResult {
    let ctx = Ctx::owned(Deployment::Cluster, |c| c).await;
    let prefix = ctx.ns.prefix().to_owned();
    let queue = Queue::<u32>::new(Arc::clone(&ctx.backend), QueueConfig::new("mq").namespace(ctx.ns.clone()))?;
    let ids = queue.add_bulk(&(0..20).collect::<Vec<u32>>()).await?;
    let base = format!("{prefix}:{{mq}}:");
    let migration = ctx.servers.begin_slot_migration(&format!("{base}w"))?;
    migration.migrate(&format!("{base}j:{}", ids[0]))?;
    let state = || -> Result<(i64, i64, Reply), String> {
        let waiting = ctx.servers.admin(migration.source, &["LRANGE", &format!("{base}w"), "0", "-1"]);
        Ok((
            keys_in_slot(&ctx, migration.source, migration.slot)?,
            keys_in_slot(&ctx, migration.target, migration.slot)?,
            waiting.map_err(|e| e.to_string())?,
        ))
    };
    let before = state()?;
    assert_eq!(before.1, 1, "one job moved");

    let (runs, worker) = counting_worker(&queue, 4)?;
    let added = queue.add(&100).await;
    assert!(added.is_err(), "an add on a migrating slot fails, got {added:?}");
    assert!(queue.counts().await.is_err(), "so do the counts");
    // Several rounds of the worker's steps fail meanwhile.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(state()?, before, "no failed call changed the slot's keys or the waiting list");
    assert!(runs.lock().map_err(|_| "poisoned")?.is_empty(), "no job ran");

    migration.finish()?;
    let done = until("all 20 jobs have run", Duration::from_secs(30), || async {
        runs.lock().map(|r| r.len() == 20).unwrap_or(false)
    })
    .await;
    worker.shutdown().await;
    done?;
    let runs = runs.lock().map_err(|_| "poisoned")?.clone();
    assert!(runs.values().all(|&n| n == 1), "every job ran once: {runs:?}");
    let counts = queue.counts().await?;
    assert_eq!((counts.waiting, counts.active, counts.completed), (0, 0, 20));
    Ok(())
}

/// A queue script is refused whole on a migrating slot even when every key it declares is on
/// the source (Redis then runs it, and it would fail at the first job key already moved, after
/// its first writes): here a paused queue, whose worker still promotes due delayed jobs, with
/// every other declared key made to exist. The promotion and an add fail and change nothing;
/// after the move every job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_script_is_refused_whole_even_when_every_key_it_declares_is_on_the_source() -> TestResult {
    let ctx = Ctx::owned(Deployment::Cluster, |c| c).await;
    let prefix = ctx.ns.prefix().to_owned();
    let queue = Queue::<u32>::new(Arc::clone(&ctx.backend), QueueConfig::new("pq").namespace(ctx.ns.clone()))?;
    queue.pause().await?;
    queue.add(&0).await?;
    let soon = JobOptions::default().delay(Duration::from_millis(300));
    let mut delayed = Vec::new();
    for i in 1..=5 {
        delayed.push(queue.add_with(&i, soon.clone()).await?.id);
    }
    let base = format!("{prefix}:{{pq}}:");
    // Every key the queue's scripts declare but this queue has not made yet, made harmlessly:
    // a ghost id (no job hash) where a set or list is missing.
    let fill: [&[&str]; 10] = [
        &["ZADD", "p", "1", "ghost"],
        &["ZADD", "leases", "9000000000000", "ghost-lane"],
        &["RPUSH", "c", "ghost"],
        &["ZADD", "x", "9000000000000", "ghost"],
        &["SET", "rl", "0", "PX", "600000"],
        &["HSET", "run", "ghost", "ghost-lane 0 0"],
        &["HSET", "cr", "ghost", "0 0 ghost-lane 1 "],
        &["HSET", "sc", "ghost", "{}"],
        &["HSET", "sn", "ghost", "0 0 -"],
        &["RPUSH", "mk", "1"],
    ];
    for command in fill {
        let mut cmd = Cmd::new(command[0]).key(&Key::from_raw(format!("{base}{}", command[1])));
        for arg in &command[2..] {
            cmd = cmd.arg(*arg);
        }
        ctx.backend.call(cmd).await?;
    }
    let migration = ctx.servers.begin_slot_migration(&format!("{base}w"))?;
    migration.migrate(&format!("{base}j:{}", delayed[0]))?;
    let state = || -> Result<(i64, i64, Reply, Reply), String> {
        let admin = |args: &[&str]| ctx.servers.admin(migration.source, args).map_err(|e| e.to_string());
        Ok((
            keys_in_slot(&ctx, migration.source, migration.slot)?,
            keys_in_slot(&ctx, migration.target, migration.slot)?,
            admin(&["ZRANGE", &format!("{base}d"), "0", "-1"])?,
            admin(&["GET", &format!("{base}id")])?,
        ))
    };
    let before = state()?;

    let (runs, worker) = counting_worker(&queue, 4)?;
    let added = queue.add(&100).await;
    assert!(added.is_err(), "an add on a migrating slot fails, got {added:?}");
    // The delayed jobs fall due while the worker's steps keep failing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(state()?, before, "no failed call changed the slot's keys, the delayed set or the id counter");

    migration.finish()?;
    until("the queue resumes", Duration::from_secs(20), || async { queue.resume().await.is_ok() }).await?;
    let done = until("all 6 jobs have run", Duration::from_secs(30), || async {
        runs.lock().map(|r| r.len() == 6).unwrap_or(false)
    })
    .await;
    worker.shutdown().await;
    done?;
    let runs = runs.lock().map_err(|_| "poisoned")?.clone();
    assert!(runs.values().all(|&n| n == 1), "every job ran once: {runs:?}");
    Ok(())
}

/// Moves every slot that holds one of `prefixes`' keys to another primary, one slot at a time
/// and a few keys at a time (a short pause between batches, as a reshard under load runs),
/// while the caller's load goes on. Returns how many slots and keys moved.
async fn reshard(ctx: &Ctx, keys: &[String]) -> Result<(usize, usize), String> {
    let mut slots = Vec::new();
    for key in keys {
        let slot = match ctx.servers.admin(ctx.servers.data_ports()[0], &["CLUSTER", "KEYSLOT", key]) {
            Ok(Reply::Int(slot)) => slot,
            other => return Err(format!("CLUSTER KEYSLOT answered {other:?}")),
        };
        if !slots.iter().any(|(s, _)| *s == slot) {
            slots.push((slot, key.clone()));
        }
    }
    let mut moved = 0;
    for (_, key) in &slots {
        let migration = ctx.servers.begin_slot_migration(key).map_err(|e| e.to_string())?;
        let (slot, target) = (migration.slot.to_string(), migration.target.to_string());
        tokio::time::sleep(Duration::from_millis(150)).await;
        loop {
            let batch = match ctx.servers.admin(migration.source, &["CLUSTER", "GETKEYSINSLOT", &slot, "5"]) {
                Ok(Reply::Array(Some(keys))) => keys.iter().filter_map(Reply::text).collect::<Vec<_>>(),
                other => return Err(format!("CLUSTER GETKEYSINSLOT answered {other:?}")),
            };
            if batch.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", target.as_str(), "", "0", "5000", "KEYS"];
            args.extend(batch.iter().map(String::as_str));
            match ctx.servers.admin(migration.source, &args) {
                Ok(Reply::Error(e)) => return Err(format!("MIGRATE: {e}")),
                Err(e) => return Err(format!("MIGRATE: {e}")),
                Ok(_) => moved += batch.len(),
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        migration.finish().map_err(|e| e.to_string())?;
    }
    Ok((slots.len(), moved))
}

/// Counts a call's outcomes by operation: successes, failures, failures that may have applied
/// (anything but a refusal: `TRYAGAIN` or a redirection handed back, after which nothing ran), and the
/// first error of each kind, for the report.
#[derive(Default)]
struct Outcomes(Mutex<HashMap<&'static str, Tally>>);

/// Successes, failures, failures that may have applied, and sample errors.
type Tally = (u64, u64, u64, Vec<String>);

impl Outcomes {
    fn note<T, E: std::fmt::Display>(&self, what: &'static str, result: &Result<T, E>) {
        let Ok(mut map) = self.0.lock() else { return };
        let entry = map.entry(what).or_default();
        match result {
            Ok(_) => entry.0 += 1,
            Err(e) => {
                entry.1 += 1;
                let text = e.to_string();
                if !text.contains("TRYAGAIN") && !text.contains("redirections") {
                    entry.2 += 1;
                }
                let head: String = text.chars().take(60).collect();
                if entry.3.len() < 4 && !entry.3.iter().any(|seen| seen.starts_with(&head)) {
                    entry.3.push(text);
                }
            }
        }
    }
}

/// The queue, sessions, rate limits and the cache run under load while every slot holding
/// their keys moves to another primary key by key, including keys their scripts are using.
/// The account after it: every job whose add succeeded ran (more than once only if it was in
/// flight), every session whose create succeeded is there, no policy admitted more than its
/// limit, and the cache holds the last value written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crate_keeps_its_account_while_its_slots_migrate_under_load() -> TestResult {
    use redtail_cache::{Cache, CacheConfig, EntryOptions};
    use redtail_ratelimit::{Algorithm, Policy, RateLimiter};
    use redtail_session::{NewSession, SessionConfig, SessionStore};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

    let ctx = Ctx::owned(Deployment::Cluster, |c| c).await;
    let outcomes = Arc::new(Outcomes::default());
    let stop = Arc::new(AtomicBool::new(false));

    let queue = Queue::<u32>::new(Arc::clone(&ctx.backend), QueueConfig::new("mq").namespace(ctx.ns.clone()))?;
    let concurrency = 8;
    let (runs, worker) = counting_worker(&queue, concurrency)?;
    let store = Arc::new(SessionStore::<media_api::presets::UserSession>::new(
        Arc::clone(&ctx.backend),
        SessionConfig::default().with_namespace(ctx.ns.child("sess")),
    )?);
    let session = || media_api::presets::UserSession::new("mover", "user");
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(store.create("mover", session(), NewSession::standard()).await?.0);
    }
    let limiter = Arc::new(RateLimiter::new(Arc::clone(&ctx.backend), ctx.ns.child("rl")));
    // Reached about half way through the reshard, so that checks run on both sides of it.
    let limit = 100;
    let policies: Vec<Policy> =
        [Algorithm::FixedWindow, Algorithm::SlidingWindow, Algorithm::Gcra, Algorithm::SlidingLog]
            .into_iter()
            .map(|a| Policy::named(format!("{a:?}"), limit, Duration::from_secs(600)).with_algorithm(a))
            .collect();
    let cache = Arc::new(
        Cache::new(Arc::clone(&ctx.backend), CacheConfig::default().with_namespace(ctx.ns.child("cache"))).await?,
    );
    let entry = EntryOptions::ttl(Duration::from_secs(600));
    cache.set("hot", &0u32, &entry).await?;

    // Load, each task bounded by the stop flag and its own count.
    let mut load = tokio::task::JoinSet::new();
    let added: Arc<Mutex<Vec<u32>>> = Arc::default();
    {
        let (queue, added, outcomes, stop) =
            (queue.clone(), Arc::clone(&added), Arc::clone(&outcomes), Arc::clone(&stop));
        load.spawn(async move {
            for n in 0..20_000u32 {
                if stop.load(Relaxed) {
                    break;
                }
                let result = queue.add(&n).await;
                outcomes.note("queue add", &result);
                if result.is_ok() {
                    added.lock().map(|mut a| a.push(n)).ok();
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
    }
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let (store, created, outcomes, stop) =
            (Arc::clone(&store), Arc::clone(&created), Arc::clone(&outcomes), Arc::clone(&stop));
        let tokens = tokens.clone();
        load.spawn(async move {
            for n in 0..20_000usize {
                if stop.load(Relaxed) {
                    break;
                }
                let read = store.get(tokens[n % tokens.len()].as_str()).await;
                outcomes.note("session get", &read);
                if n % 10 == 0 {
                    let made = store.create("mover", session(), NewSession::standard()).await;
                    outcomes.note("session create", &made);
                    if let Ok((token, _)) = made {
                        created.lock().map(|mut c| c.push(token.as_str().to_owned())).ok();
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
    }
    let admitted: Arc<Vec<AtomicU32>> = Arc::new(policies.iter().map(|_| AtomicU32::new(0)).collect());
    for (i, policy) in policies.iter().enumerate() {
        let (limiter, admitted, outcomes, stop, policy) =
            (Arc::clone(&limiter), Arc::clone(&admitted), Arc::clone(&outcomes), Arc::clone(&stop), policy.clone());
        load.spawn(async move {
            for _ in 0..20_000 {
                if stop.load(Relaxed) {
                    break;
                }
                let decision = limiter.check("mover", std::slice::from_ref(&policy)).await;
                outcomes.note("rate-limit check", &decision);
                if let Ok(redtail_ratelimit::Decision::Allowed { degraded: false, .. }) = decision {
                    admitted[i].fetch_add(1, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    let last_set = Arc::new(AtomicU32::new(0));
    {
        let (cache, last_set, outcomes, stop, entry) =
            (Arc::clone(&cache), Arc::clone(&last_set), Arc::clone(&outcomes), Arc::clone(&stop), entry.clone());
        load.spawn(async move {
            for n in 1..20_000u32 {
                if stop.load(Relaxed) {
                    break;
                }
                let written = cache.set("hot", &n, &entry).await;
                outcomes.note("cache set", &written);
                if written.is_ok() {
                    last_set.store(n, Relaxed);
                }
                let _: Option<u32> = cache.get("hot").await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut keys, mut cursor) = (Vec::new(), Some(redtail_core::Cursor::START));
    while let Some(at) = cursor {
        let page = ctx.backend.scan(at, &ctx.ns.pattern(Vec::<&str>::new()), 1_000).await?;
        keys.extend(page.keys.iter().map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned()));
        cursor = page.next;
    }
    let started = Instant::now();
    let resharded = reshard(&ctx, &keys).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    while let Some(done) = load.join_next().await {
        done?;
    }
    let (slots, moved) = resharded?;
    let added = added.lock().map_err(|_| "poisoned")?.clone();
    let settled = until("every job added has run", Duration::from_secs(60), || async {
        runs.lock().map(|r| added.iter().all(|n| r.contains_key(n))).unwrap_or(false)
    })
    .await;
    worker.shutdown().await;
    let report = outcomes.0.lock().map_err(|_| "poisoned")?.clone();
    println!("{slots} slots, {moved} keys moved in {took:?} under load");
    for (what, (ok, failed, unsure, errors)) in report.iter() {
        println!("{what}: {ok} ok, {failed} failed ({unsure} of them perhaps applied) {errors:?}");
    }
    settled?;
    // A reply given to the wrong caller (as fred's own `ASK` handling did) shows as a reply of
    // the wrong shape somewhere.
    let mixed: Vec<&String> = report.values().flat_map(|o| &o.3).filter(|e| e.contains("unexpected reply")).collect();
    assert!(mixed.is_empty(), "replies went to the wrong callers: {mixed:?}");
    let runs = runs.lock().map_err(|_| "poisoned")?.clone();
    let twice = runs.values().filter(|&&n| n > 1).count();
    // A job whose add failed ran only if that add's failure left it unknown whether it applied.
    let unacknowledged = runs.keys().filter(|n| !added.contains(n)).count() as u64;
    let unsure_adds = report.get("queue add").map_or(0, |o| o.2);
    println!(
        "queue: {} added, {} ran, {twice} ran twice, {unacknowledged} ran whose add failed",
        added.len(),
        runs.len()
    );
    assert!(twice <= concurrency, "{twice} jobs ran twice; at most {concurrency} were in flight");
    assert!(unacknowledged <= unsure_adds, "{unacknowledged} jobs ran whose add was refused");
    let created = created.lock().map_err(|_| "poisoned")?.clone();
    for token in tokens.iter().map(|t| t.as_str().to_owned()).chain(created) {
        assert!(store.get(&token).await?.is_some(), "a session created before or during the move is there");
    }
    for (policy, admitted) in policies.iter().zip(admitted.iter()) {
        let admitted = admitted.load(Relaxed);
        println!("{}: {admitted} admitted of {limit}", policy.name);
        assert!(admitted <= limit as u32, "{} admitted {admitted}, over its limit of {limit}", policy.name);
        assert!(admitted > 0, "{} admitted nothing", policy.name);
    }
    assert_eq!(cache.get::<u32>("hot").await, Some(last_set.load(Relaxed)), "the cache holds the last value written");
    Ok(())
}
