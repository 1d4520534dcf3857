//! Criterion benchmarks of the pure parts of `redtail-core`: the JSON codec on the cache's
//! status value, and key building with escaping.
//!
//! `cargo bench -p redtail-core --bench core`
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use redtail_core::{Codec, JsonCodec, Namespace};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    service: String,
    status: String,
    latency_ms: u32,
    checked_at: String,
    details: Details,
}

#[derive(Debug, Serialize, Deserialize)]
struct Details {
    version: String,
    libraries: u32,
}

fn codec(c: &mut Criterion) {
    let status = Status {
        service: "plex".into(),
        status: "up".into(),
        latency_ms: 12,
        checked_at: "2026-11-25T00:00:00Z".into(),
        details: Details { version: "1.40.0".into(), libraries: 12 },
    };
    let bytes = JsonCodec.encode(&status).expect("encodes");
    let mut group = c.benchmark_group("codec");
    group.bench_function("json_encode_status", |b| b.iter(|| black_box(JsonCodec.encode(black_box(&status)))));
    group.bench_function("json_decode_status", |b| b.iter(|| black_box(JsonCodec.decode::<Status>(black_box(&bytes)))));
    group.finish();
}

fn keys(c: &mut Criterion) {
    let ns = Namespace::new("rt:sess").expect("valid prefix");
    let tagged = ns.tagged("user:42");
    let mut group = c.benchmark_group("keys");
    group.bench_function("plain_two_parts", |b| b.iter(|| black_box(ns.key(["s", black_box("token-digest")]))));
    group.bench_function("tagged_with_slot", |b| b.iter(|| black_box(tagged.key(["s", black_box("abc")]).slot())));
    group.bench_function("hostile_part_escaped", |b| b.iter(|| black_box(ns.key([black_box("a}b:*{c d\n")]))));
    group.finish();
}

criterion_group!(benches, codec, keys);
criterion_main!(benches);
