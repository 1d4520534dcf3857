//! Criterion benchmarks of sessions: token generation, parsing and hashing, and one `create` and one `get` (token
//! generation, SHA-256 digest, key building, one script or command) on the in-memory backend
//! and on a real `redis-server` started for the run.
//!
//! `cargo bench -p redtail-session --bench session` (needs `redis-server` on the PATH)
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use redtail_connection::{Config, Redis};
use redtail_core::Backend;
use redtail_session::{NewSession, SessionConfig, SessionStore, Token};
use redtail_testkit::{Deployment, MemoryBackend, TestRedis};

/// Session data as an application keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct UserSession {
    user_id: String,
    role: String,
}

impl UserSession {
    fn new(user_id: &str, role: &str) -> Self {
        UserSession { user_id: user_id.to_owned(), role: role.to_owned() }
    }
}

fn session(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
    let server =
        TestRedis::owned(Deployment::Standalone).expect("redis-server must be installed: apt-get install redis-server");
    let redis: Arc<dyn Backend> =
        Arc::new(runtime.block_on(Redis::connect(Config::from_url(server.url()).expect("url"))).expect("connects"));
    let memory: Arc<dyn Backend> = MemoryBackend::new().into();

    let mut group = c.benchmark_group("session");
    for (name, backend) in [("memory", memory), ("redis", redis)] {
        let store = SessionStore::<UserSession>::new(backend, SessionConfig::default())
            .unwrap_or_else(|e| panic!("the default settings are valid: {e}"));
        let (token, _) = runtime
            .block_on(store.create("u1", UserSession::new("u1", "user"), NewSession::standard()))
            .expect("creates");
        // Spread over 1,000 users, as the bench workload does: one user's index stays small.
        let next = std::sync::atomic::AtomicU64::new(0);
        group.bench_function(format!("create_{name}"), |b| {
            b.to_async(&runtime).iter(|| async {
                let user = format!("u{}", next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000);
                black_box(store.create(&user, UserSession::new(user.as_str(), "user"), NewSession::standard()).await)
            })
        });
        group.bench_function(format!("get_{name}"), |b| {
            b.to_async(&runtime).iter(|| async { black_box(store.get(token.as_str()).await) })
        });
        if name == "memory" {
            group.bench_function("token_parse", |b| b.iter(|| black_box(Token::parse(black_box(token.as_str())))));
            group.bench_function("token_generate", |b| b.iter(|| black_box(Token::generate(black_box("u1")))));
            group.bench_function("token_session_id_sha256", |b| b.iter(|| black_box(black_box(&token).session_id())));
        }
    }
    group.finish();
}

criterion_group!(benches, session);
criterion_main!(benches);
