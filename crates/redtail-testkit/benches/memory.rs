//! Criterion benchmarks of `MemoryBackend`: GET, SET, INCR and one script call.
//!
//! `cargo bench -p redtail-testkit --bench memory`
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use redtail_core::{Backend, Cmd, Namespace, Script};
use redtail_testkit::MemoryBackend;

fn memory(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let redis = MemoryBackend::new();
    let ns = Namespace::new("bench").expect("valid prefix");
    let key = ns.key(["k"]);
    let counter = ns.tagged("user").key(["hits"]);
    let script = Script::new(
        "fixed_window",
        "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return n",
    );
    runtime.block_on(redis.call(Cmd::new("SET").key(&key).arg("value"))).expect("seed");

    let mut group = c.benchmark_group("memory");
    group.bench_function("get", |b| {
        b.to_async(&runtime).iter(|| async { black_box(redis.call(Cmd::new("GET").key(&key)).await) })
    });
    group.bench_function("set", |b| {
        b.to_async(&runtime).iter(|| async { black_box(redis.call(Cmd::new("SET").key(&key).arg("value")).await) })
    });
    group.bench_function("incr", |b| {
        b.to_async(&runtime).iter(|| async { black_box(redis.call(Cmd::new("INCR").key(&counter)).await) })
    });
    group.bench_function("script_fixed_window", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(redis.eval(&script, std::slice::from_ref(&counter), vec![60.into()]).await) })
    });
    group.finish();
}

criterion_group!(benches, memory);
criterion_main!(benches);
