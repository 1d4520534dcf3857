//! Criterion benchmarks of the cache: one tagged `set` and one tagged `get` (envelope, codec,
//! tag versions) on the in-memory backend and on a real `redis-server` started for the run,
//! and a hit in the in-process tier.
//!
//! `cargo bench -p redtail-cache --bench cache` (needs `redis-server` on the PATH)
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use redtail_cache::{Cache, CacheConfig, EntryOptions, LocalTier};
use redtail_connection::{Config, Redis};
use redtail_core::Backend;
use redtail_testkit::{Deployment, MemoryBackend, TestRedis};
use serde_json::json;

fn cache(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
    let server =
        TestRedis::owned(Deployment::Standalone).expect("redis-server must be installed: apt-get install redis-server");
    let redis: Arc<dyn Backend> =
        Arc::new(runtime.block_on(Redis::connect(Config::from_url(server.url()).expect("url"))).expect("connects"));
    let memory: Arc<dyn Backend> = MemoryBackend::new().into();
    let status = json!({"service": "plex", "status": "up", "latencyMs": 12, "checkedAt": "2026-11-25T00:00:00Z",
                        "details": {"version": "1.40.0", "libraries": 12}});
    let options = EntryOptions::ttl(Duration::from_secs(300)).tag("api-response").tag("ep1");

    let mut group = c.benchmark_group("cache");
    for (name, backend) in [("memory", memory), ("redis", Arc::clone(&redis))] {
        let cache = runtime.block_on(Cache::new(backend, CacheConfig::default())).expect("a cache");
        runtime.block_on(cache.set("api:ep:1", &status, &options)).expect("sets");
        group.bench_function(format!("set_tagged_{name}"), |b| {
            b.to_async(&runtime).iter(|| async { black_box(cache.set("api:ep:1", &status, &options).await) })
        });
        group.bench_function(format!("get_tagged_{name}"), |b| {
            b.to_async(&runtime).iter(|| async {
                black_box(cache.get_with_tags::<serde_json::Value>("api:ep:1", &["api-response", "ep1"]).await)
            })
        });
    }
    let local = runtime
        .block_on(Cache::new(redis, CacheConfig::default().with_local_tier(LocalTier::default())))
        .expect("a cache");
    runtime.block_on(local.get::<serde_json::Value>("api:ep:1"));
    group.bench_function("get_local_tier_hit", |b| {
        b.to_async(&runtime).iter(|| async { black_box(local.get::<serde_json::Value>("api:ep:1").await) })
    });
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
