//! A worker process for the queue's crash tests: runs jobs until killed, counting every run in
//! Redis (`<prefix>:runs`, a hash of job id to runs) before finishing each. A grouped job is also
//! entered in a ledger of overlaps: `<prefix>:in:<group>` counts its group's jobs running now
//! across every process, and `<prefix>:overlaps` counts the starts that found one running
//! already; `<prefix>:peak` keeps the most jobs seen running at once.
//!
//! Usage: `queue_worker <redis-url> <prefix> <queue> <concurrency> <lease-ms> [<workers>]`

use std::{sync::Arc, time::Duration};

use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Cmd, Key, Namespace};
use redtail_queue::{JobOptions, Queue, QueueConfig, Retention, WorkerOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let (url, prefix, name, concurrency, lease, workers) = match &args[..] {
        [_, url, prefix, name, concurrency, lease] => (url, prefix, name, concurrency, lease, 1),
        [_, url, prefix, name, concurrency, lease, workers] => {
            (url, prefix, name, concurrency, lease, workers.parse()?)
        }
        _ => return Err("usage: queue_worker <redis-url> <prefix> <queue> <concurrency> <lease-ms> [<workers>]".into()),
    };
    let backend: Arc<dyn Backend> = Arc::new(Redis::connect(Config::from_url(url)?).await?);
    let queue =
        Queue::<serde_json::Value>::new(Arc::clone(&backend), crash_queue(Namespace::new(prefix.as_str())?, name))?;
    let prefix: Arc<str> = Arc::from(prefix.as_str());
    let options =
        WorkerOptions::default().concurrency(concurrency.parse()?).lease(Duration::from_millis(lease.parse()?));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (backend, prefix) = (Arc::clone(&backend), Arc::clone(&prefix));
        handles.push(queue.worker(options.clone(), move |job| {
            let (backend, prefix) = (Arc::clone(&backend), Arc::clone(&prefix));
            async move {
                let runs = Key::from_raw(format!("{prefix}:runs"));
                backend.call(Cmd::new("HINCRBY").key(&runs).arg(job.id.as_str()).arg(1)).await?;
                backend.call(Cmd::new("EXPIRE").key(&runs).arg(3600)).await?;
                match &job.group {
                    Some(group) => in_ledger(&*backend, &prefix, group).await?,
                    None => tokio::time::sleep(Duration::from_millis(10)).await,
                }
                Ok::<_, redtail_core::Error>(())
            }
        })?);
    }
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}

/// Runs a grouped job for 10 ms, entered in the ledger of overlaps (see the top of this file).
async fn in_ledger(backend: &dyn Backend, prefix: &str, group: &str) -> Result<(), redtail_core::Error> {
    let (running, peak) = (Key::from_raw(format!("{prefix}:running")), Key::from_raw(format!("{prefix}:peak")));
    let (inside, overlaps) =
        (Key::from_raw(format!("{prefix}:in:{group}")), Key::from_raw(format!("{prefix}:overlaps")));
    if backend.call(Cmd::new("INCR").key(&inside)).await?.as_int()? > 1 {
        backend.call(Cmd::new("INCR").key(&overlaps)).await?;
    }
    let now = backend.call(Cmd::new("INCR").key(&running)).await?.as_int()?;
    backend.call(Cmd::new("ZADD").key(&peak).arg("GT").arg(now).arg("jobs")).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    backend.call(Cmd::new("DECR").key(&running)).await?;
    backend.call(Cmd::new("DECR").key(&inside)).await?;
    for key in [&inside, &overlaps, &running, &peak] {
        backend.call(Cmd::new("EXPIRE").key(key).arg(3600)).await?;
    }
    Ok(())
}

/// The queue of the crash tests: every completed job is kept, so the record can be checked.
fn crash_queue(namespace: Namespace, name: &str) -> QueueConfig {
    let keep = Retention::new(Duration::from_secs(3600), 1_000_000);
    QueueConfig::new(name).namespace(namespace).defaults(JobOptions::default().keep_completed(keep))
}
