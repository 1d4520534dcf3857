//! `redtail-queue`'s flows on every backend: trees of jobs in one queue and across two (on the
//! cluster, two slots: the outbox relay), results passed up, each failure policy, reading and
//! removing a flow, a notice delivered twice and applied once, and refusals.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redtail_core::Cmd;
use redtail_queue::{
    ChildFailure, ChildOutcome, Error, FlowJob, JobOptions, JobState, Queue, QueueConfig, Retention, WorkerHandle,
    WorkerOptions,
};
use redtail_tests::{Env, Target, TestResult, for_each_backend};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    name: String,
    /// Added to the children's results.
    value: u64,
    /// Fails every attempt.
    fail: bool,
}

fn step(name: &str, value: u64) -> Step {
    Step { name: name.to_owned(), value, fail: false }
}

fn failing(name: &str) -> Step {
    Step { name: name.to_owned(), value: 0, fail: true }
}

fn queue(env: &Env, name: &str) -> Result<Queue<Step>, Error> {
    let keep = Retention::new(Duration::from_secs(600), 10_000);
    let defaults = JobOptions::default().keep_completed(keep).keep_failed(keep);
    Queue::new(Arc::clone(&env.backend), QueueConfig::new(name).namespace(env.ns.clone()).defaults(defaults))
}

/// What the handlers saw: each job's runs by name, when each finished, and the children each
/// parent read.
#[derive(Default)]
struct Ledger {
    runs: HashMap<String, u32>,
    started: HashMap<String, Instant>,
    finished: HashMap<String, Instant>,
    children: HashMap<String, Vec<ChildOutcome>>,
}

type Shared = Arc<Mutex<Ledger>>;

/// A worker whose handler returns its value plus its completed children's results, records
/// itself in `ledger`, and fails when its step says so.
fn worker(queue: &Queue<Step>, ledger: &Shared) -> Result<WorkerHandle, Error> {
    let ledger = Arc::clone(ledger);
    let options = WorkerOptions::default().concurrency(8).idle_poll(Duration::from_millis(50));
    queue.worker(options, move |job| {
        let ledger = Arc::clone(&ledger);
        async move {
            let children = job.children().await.map_err(|e| e.to_string())?;
            let mut sum = job.data.value;
            for child in &children {
                sum += child.result::<u64>().map_err(|e| e.to_string())?.unwrap_or(0);
            }
            {
                let mut l = ledger.lock().map_err(|_| "poisoned")?;
                *l.runs.entry(job.data.name.clone()).or_default() += 1;
                l.started.insert(job.data.name.clone(), Instant::now());
                l.children.insert(job.data.name.clone(), children.into_iter().map(|c| c.outcome).collect());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            if job.data.fail {
                return Err(format!("{} fails", job.data.name));
            }
            ledger.lock().map_err(|_| "poisoned")?.finished.insert(job.data.name.clone(), Instant::now());
            Ok(sum)
        }
    })
}

async fn until_state(queue: &Queue<Step>, id: &str, state: JobState, limit: Duration) -> TestResult {
    let start = Instant::now();
    while start.elapsed() < limit {
        if queue.get(id).await?.is_some_and(|job| job.state == state) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("job {id} did not reach {state:?} within {limit:?}: {:#?}", queue.flow(id).await?).into())
}

/// A three-level tree: root <- (a <- (a1, a2), b). `across` puts the middle level in a second
/// queue (another slot on a cluster), so every completion goes through an outbox relay.
fn three_levels(top: &Queue<Step>, middle: &Queue<Step>) -> Result<FlowJob, Error> {
    Ok(FlowJob::new(top, &step("root", 1000))?
        .child(
            FlowJob::new(middle, &step("a", 100))?
                .child(FlowJob::new(top, &step("a1", 10))?)
                .child(FlowJob::new(top, &step("a2", 20))?),
        )
        .child(FlowJob::new(middle, &step("b", 1))?))
}

async fn a_three_level_tree_completes_in_order_with_results_passed_up(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let (top, middle) = (queue(&env, "top")?, queue(&env, "middle")?);
    // Two slots: on the cluster every notice between them goes through an outbox relay.
    assert_ne!(env.ns.tagged("top").key(["w"]).slot(), env.ns.tagged("middle").key(["w"]).slot());
    for across in [false, true] {
        let ledger = Shared::default();
        let flow = if across { three_levels(&top, &middle)? } else { three_levels(&top, &top)? };
        let added = flow.add().await?;
        assert_eq!(added.children.len(), 2);
        assert_eq!(added.children[0].children.len(), 2);
        assert_eq!(added.children[0].queue, if across { "middle" } else { "top" });
        assert_eq!(top.get(added.id.as_str()).await?.map(|j| j.state), Some(JobState::WaitingChildren));
        let workers = [worker(&top, &ledger)?, worker(&middle, &ledger)?];
        until_state(&top, added.id.as_str(), JobState::Completed, Duration::from_secs(30)).await?;
        for w in workers {
            w.shutdown().await;
        }
        let root = top.get(added.id.as_str()).await?.ok_or("the root is gone")?;
        assert_eq!(root.result, Some(serde_json::json!(1131)), "1000 + (100 + 10 + 20) + 1");
        {
            let l = ledger.lock().map_err(|_| "poisoned")?;
            for (parent, children) in [("root", &["a", "b"][..]), ("a", &["a1", "a2"][..])] {
                assert_eq!(l.runs[parent], 1, "{parent} ran once");
                for child in children {
                    assert!(l.finished[*child] <= l.started[parent], "{child} finished before {parent} started");
                }
            }
            assert_eq!(l.runs.len(), 5);
        }
        let tree = top.flow(added.id.as_str()).await?.ok_or("no tree")?;
        assert_eq!(tree.children.len(), 2);
        let a = tree.children.iter().find(|(_, t)| t.id == added.children[0].id).ok_or("a is not in the tree")?;
        assert_eq!(a.0, ChildOutcome::Completed(serde_json::json!(130)));
        assert_eq!(a.1.children.len(), 2);
        assert!(a.1.children.iter().all(|(_, t)| t.job.as_ref().is_some_and(|j| j.state == JobState::Completed)));
    }
    assert_eq!(top.counts().await?.waiting_children, 0);
    Ok(())
}

async fn each_failure_policy_does_what_it_says(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let (parents, children) = (queue(&env, "parents")?, queue(&env, "kids")?);
    let ledger = Shared::default();
    let workers = [worker(&parents, &ledger)?, worker(&children, &ledger)?];
    // Ignore and remove: the parent runs, sees the ignored error, and not the removed child.
    let lenient = FlowJob::new(&parents, &step("lenient", 1))?
        .child(FlowJob::new(&children, &step("ok", 5))?)
        .child(FlowJob::new(&children, &failing("ignored"))?.on_failure(ChildFailure::Ignore))
        .child(FlowJob::new(&children, &failing("removed"))?.on_failure(ChildFailure::Remove))
        .add()
        .await?;
    until_state(&parents, lenient.id.as_str(), JobState::Completed, Duration::from_secs(30)).await?;
    let seen = ledger.lock().map_err(|_| "poisoned")?.children["lenient"].clone();
    assert_eq!(seen.len(), 2, "the removed child is not listed: {seen:?}");
    assert!(seen.contains(&ChildOutcome::Completed(serde_json::json!(5))), "{seen:?}");
    assert!(seen.contains(&ChildOutcome::Ignored("ignored fails".to_owned())), "{seen:?}");
    let result = parents.get(lenient.id.as_str()).await?.and_then(|j| j.result);
    assert_eq!(result, Some(serde_json::json!(6)));
    // Fail (the default): the parent is dead-lettered without running, naming the child.
    let strict = FlowJob::new(&parents, &step("strict", 1))?
        .child(FlowJob::new(&children, &failing("fatal"))?)
        .child(FlowJob::new(&children, &step("sibling", 1))?)
        .add()
        .await?;
    until_state(&parents, strict.id.as_str(), JobState::Dead, Duration::from_secs(30)).await?;
    let dead = parents.get(strict.id.as_str()).await?.ok_or("the parent is gone")?;
    let fatal = &strict.children[0].id;
    assert!(
        dead.errors.iter().any(|(_, e)| e.contains(&format!("child kids:{fatal} failed: fatal fails"))),
        "{:?}",
        dead.errors
    );
    until_state(&children, strict.children[1].id.as_str(), JobState::Completed, Duration::from_secs(30)).await?;
    for w in workers {
        w.shutdown().await;
    }
    assert!(!ledger.lock().map_err(|_| "poisoned")?.runs.contains_key("strict"), "the failed parent never ran");
    assert_eq!(parents.counts().await?.waiting_children, 0);
    Ok(())
}

/// A flow added with no worker running reads as a tree, counts and lists its parent as waiting
/// for children; deleting a child lets the parent run without it; removing the flow removes
/// its unfinished jobs.
async fn a_flow_is_read_listed_and_removed(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let q = queue(&env, "tree")?;
    let flow = || -> Result<FlowJob, Error> {
        Ok(FlowJob::new(&q, &step("root", 1))?
            .child(FlowJob::new(&q, &step("c1", 2))?.child(FlowJob::new(&q, &step("c11", 3))?))
            .child(FlowJob::new(&q, &step("c2", 4))?))
    };
    let added = flow()?.add().await?;
    let counts = q.counts().await?;
    assert_eq!((counts.waiting_children, counts.waiting), (2, 2), "{counts:?}");
    let listed = q.list(JobState::WaitingChildren, 0, 10).await?;
    assert_eq!(listed.len(), 2);
    let tree = q.flow(added.id.as_str()).await?.ok_or("no tree")?;
    assert_eq!(tree.job.as_ref().map(|j| j.state), Some(JobState::WaitingChildren));
    assert!(tree.children.iter().all(|(outcome, _)| *outcome == ChildOutcome::Pending));
    assert_eq!(q.remove_flow(added.id.as_str()).await?, 4);
    let counts = q.counts().await?;
    assert_eq!((counts.waiting_children, counts.waiting), (0, 0), "{counts:?}");
    assert!(q.flow(added.id.as_str()).await?.is_none());

    let again = flow()?.add().await?;
    assert!(q.delete(again.children[1].id.as_str()).await?, "c2 deleted");
    let ledger = Shared::default();
    let w = worker(&q, &ledger)?;
    until_state(&q, again.id.as_str(), JobState::Completed, Duration::from_secs(30)).await?;
    w.shutdown().await;
    let result = q.get(again.id.as_str()).await?.and_then(|j| j.result);
    assert_eq!(result, Some(serde_json::json!(6)), "1 + (2 + 3): the deleted child is not counted");
    Ok(())
}

/// A notice relayed twice (a relay that stopped between applying it and removing it from the
/// outbox) changes nothing the second time: the parent ran once, and keeps the first result.
async fn a_notice_delivered_twice_is_applied_once(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let (parents, children) = (queue(&env, "once")?, queue(&env, "oncekids")?);
    let ledger = Shared::default();
    let workers = [worker(&parents, &ledger)?, worker(&children, &ledger)?];
    let added = FlowJob::new(&parents, &step("parent", 0))?
        .child(FlowJob::new(&children, &step("child", 7))?)
        .child(FlowJob::new(&children, &failing("failing"))?.on_failure(ChildFailure::Ignore))
        .add()
        .await?;
    until_state(&parents, added.id.as_str(), JobState::Completed, Duration::from_secs(30)).await?;
    let outbox = env.ns.tagged("oncekids").key(["ob"]);
    for (child, outcome) in [(&added.children[0].id, "c\n999"), (&added.children[1].id, "f\nagain")] {
        let notice = format!("once:{} {child} {outcome}", added.id);
        env.backend.call(Cmd::new("RPUSH").key(&outbox).arg(notice)).await?;
    }
    // Notices no relay can apply are dropped rather than block the outbox.
    for garbage in ["garbage", "no!queue:1 2 c\n1", "once:1 2 z\n1"] {
        env.backend.call(Cmd::new("RPUSH").key(&outbox).arg(garbage)).await?;
    }
    let start = Instant::now();
    while env.backend.call(Cmd::new("LLEN").key(&outbox)).await?.as_int()? > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the duplicates were not relayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in workers {
        w.shutdown().await;
    }
    assert_eq!(ledger.lock().map_err(|_| "poisoned")?.runs["parent"], 1);
    let tree = parents.flow(added.id.as_str()).await?.ok_or("no tree")?;
    let outcomes: Vec<&ChildOutcome> = tree.children.iter().map(|(o, _)| o).collect();
    assert!(outcomes.contains(&&ChildOutcome::Completed(serde_json::json!(7))), "{outcomes:?}");
    assert!(outcomes.contains(&&ChildOutcome::Ignored("failing fails".to_owned())), "{outcomes:?}");
    assert_eq!(parents.counts().await?.waiting, 0, "the parent was not released again");
    Ok(())
}

async fn bad_flows_are_refused_and_add_nothing(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let q = queue(&env, "refused")?;
    let leaf = || FlowJob::new(&q, &step("leaf", 1));
    let refused = |result: Result<redtail_queue::FlowNode, Error>, what: &str| match result {
        Err(Error::InvalidInput(message)) => {
            assert!(message.contains(what), "{message} does not say {what}");
            Ok(())
        }
        other => Err(format!("not refused ({what}): {other:?}")),
    };
    let dedup = JobOptions::default().dedup(redtail_queue::Dedup::simple("d", Duration::from_secs(1)));
    refused(leaf()?.child(leaf()?.options(dedup)).add().await, "deduplication")?;
    let delayed = JobOptions::default().delay(Duration::from_secs(5));
    refused(leaf()?.options(delayed).child(leaf()?).add().await, "delay")?;
    let twice = JobOptions::default().id("same");
    refused(leaf()?.options(twice.clone()).child(leaf()?.options(twice)).add().await, "twice")?;
    let mut deep = leaf()?;
    for _ in 0..redtail_queue::MAX_FLOW_DEPTH {
        deep = leaf()?.child(deep);
    }
    refused(deep.add().await, "levels")?;
    let mut wide = leaf()?;
    for _ in 0..redtail_queue::MAX_FLOW_JOBS {
        wide = wide.child(leaf()?);
    }
    refused(wide.add().await, "jobs")?;
    let other = Queue::<Step>::new(
        Arc::clone(&env.backend),
        QueueConfig::new("other").namespace(redtail_queue::Namespace::new("elsewhere")?),
    )?;
    refused(leaf()?.child(FlowJob::new(&other, &step("x", 1))?).add().await, "namespace")?;
    // An existing id: nothing of the flow is added.
    q.add_with(&step("taken", 1), JobOptions::default().id("taken")).await?;
    let clash = leaf()?.child(leaf()?).child(leaf()?.options(JobOptions::default().id("taken")));
    refused(clash.add().await, "exists")?;
    let counts = q.counts().await?;
    assert_eq!((counts.waiting, counts.waiting_children), (1, 0), "only the first job: {counts:?}");
    Ok(())
}

for_each_backend!(
    a_three_level_tree_completes_in_order_with_results_passed_up,
    each_failure_policy_does_what_it_says,
    a_flow_is_read_listed_and_removed,
    a_notice_delivered_twice_is_applied_once,
    bad_flows_are_refused_and_add_nothing,
);
