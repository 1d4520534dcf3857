//! Criterion benchmarks of one rate-limit check (one script call) per algorithm, on the
//! in-memory backend and on a real `redis-server` started for the run.
//!
//! `cargo bench -p redtail-ratelimit --bench ratelimit` (needs `redis-server` on the PATH)
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Namespace};
use redtail_ratelimit::{Algorithm, Policy, RateLimiter};
use redtail_testkit::{Deployment, MemoryBackend, TestRedis};

fn ratelimit(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
    let server =
        TestRedis::owned(Deployment::Standalone).expect("redis-server must be installed: apt-get install redis-server");
    let redis: Arc<dyn Backend> =
        Arc::new(runtime.block_on(Redis::connect(Config::from_url(server.url()).expect("url"))).expect("connects"));
    let memory: Arc<dyn Backend> = MemoryBackend::new().into();
    // A limit no benchmark run reaches, so every check does the full work of an admission.
    let policy = |algorithm| Policy::new("bench", 1_000_000_000, Duration::from_secs(60)).with_algorithm(algorithm);

    let mut group = c.benchmark_group("ratelimit");
    for (name, backend) in [("memory", memory), ("redis", redis)] {
        let limiter = RateLimiter::new(backend, Namespace::new("bench").expect("valid prefix"));
        for (algorithm, label) in [(Algorithm::Gcra, "gcra"), (Algorithm::FixedWindow, "fixed_window")] {
            let policies = [policy(algorithm)];
            group.bench_function(format!("check_{label}_{name}"), |b| {
                b.to_async(&runtime).iter(|| async { black_box(limiter.check("user1", &policies).await) })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, ratelimit);
criterion_main!(benches);
