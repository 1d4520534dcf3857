//! A worker process for the queue's crash tests: runs jobs until killed, counting every run in
//! Redis (`<prefix>:runs`, a hash of job id to runs) before finishing each.
//!
//! Usage: `queue_worker <redis-url> <prefix> <queue> <concurrency> <lease-ms>`

use std::{sync::Arc, time::Duration};

use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Cmd, Key, Namespace};
use redtail_queue::{JobOptions, Queue, QueueConfig, Retention, WorkerOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, prefix, name, concurrency, lease] = &args[..] else {
        return Err("usage: queue_worker <redis-url> <prefix> <queue> <concurrency> <lease-ms>".into());
    };
    let backend: Arc<dyn Backend> = Arc::new(Redis::connect(Config::from_url(url)?).await?);
    let queue =
        Queue::<serde_json::Value>::new(Arc::clone(&backend), crash_queue(Namespace::new(prefix.as_str())?, name))?;
    let runs = Key::from_raw(format!("{prefix}:runs"));
    let options =
        WorkerOptions::default().concurrency(concurrency.parse()?).lease(Duration::from_millis(lease.parse()?));
    let _worker = queue.worker(options, move |job| {
        let (backend, runs) = (Arc::clone(&backend), runs.clone());
        async move {
            backend.call(Cmd::new("HINCRBY").key(&runs).arg(job.id.as_str()).arg(1)).await?;
            backend.call(Cmd::new("EXPIRE").key(&runs).arg(3600)).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, redtail_core::Error>(())
        }
    })?;
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}

/// The queue of the crash tests: every completed job is kept, so the record can be checked.
fn crash_queue(namespace: Namespace, name: &str) -> QueueConfig {
    let keep = Retention::new(Duration::from_secs(3600), 1_000_000);
    QueueConfig::new(name).namespace(namespace).defaults(JobOptions::default().keep_completed(keep))
}
