//! Criterion benchmarks of the queue: one `add` (one script call) and one `add_bulk` of 1,000
//! jobs, on the in-memory backend and on a real `redis-server` started for the run.
//!
//! `cargo bench -p redtail-queue --bench queue` (needs `redis-server` on the PATH)
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use redtail_connection::{Config, Redis};
use redtail_core::Backend;
use redtail_queue::{Queue, QueueConfig};
use redtail_testkit::{Deployment, MemoryBackend, TestRedis};
use serde_json::json;

fn queue(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
    let server =
        TestRedis::owned(Deployment::Standalone).expect("redis-server must be installed: apt-get install redis-server");
    let redis: Arc<dyn Backend> =
        Arc::new(runtime.block_on(Redis::connect(Config::from_url(server.url()).expect("url"))).expect("connects"));
    let memory: Arc<dyn Backend> = MemoryBackend::new().into();
    let job = json!({"url": "https://example.invalid/v/1", "userId": "u1"});
    let batch: Vec<serde_json::Value> =
        (0..1000).map(|i| json!({"url": format!("https://example.invalid/v/{i}"), "userId": "u1"})).collect();

    let mut group = c.benchmark_group("queue");
    for (name, backend) in [("memory", memory), ("redis", redis)] {
        let queue =
            Queue::<serde_json::Value>::new(backend, QueueConfig::new(format!("bench-{name}"))).expect("a queue");
        group.bench_function(format!("add_{name}"), |b| {
            b.to_async(&runtime).iter(|| async { black_box(queue.add(&job).await) })
        });
        group.bench_function(format!("add_bulk_1000_{name}"), |b| {
            b.to_async(&runtime).iter(|| async { black_box(queue.add_bulk(&batch).await) })
        });
        // Waiting jobs would pile up run after run: leave nothing behind.
        runtime.block_on(queue.obliterate(true)).expect("obliterates");
    }
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
