//! media-api: the media-server backend of the original design (Plex users, YouTube downloads,
//! media requests), built on every redtail crate: sessions in a cookie, rate limits with IETF
//! headers, a cached status route, job queues with a worker, and an admin dashboard at `/admin`.
//!
//! `cargo xtask demo` runs it with a Redis of its own; `media-api --help` lists the settings.

mod app;
mod auth;
mod config;
mod error;
mod jobs;

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use redtail_cache::{Cache, CacheConfig};
use redtail_connection::Redis;
use redtail_core::{Backend, Namespace};
use redtail_ratelimit::RateLimiter;
use redtail_session::{SessionConfig, SessionStore};
use redtail_testkit::MemoryBackend;

use crate::{
    app::AppState,
    config::{Config, Role, Store},
    jobs::{Ledger, Queues},
};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("media-api: {message}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("media-api: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    // redtail's warnings (a failing worker step, a lost lease, a degraded rate limit) on stderr.
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).with_max_level(config.log).init();
    if let Some(recorder) = media_api::prometheus() {
        media_api::spawn_upkeep(recorder, Duration::from_secs(5));
    }
    let (backend, redis): (Arc<dyn Backend>, Option<Redis>) = match &config.store {
        Store::Redis(url) => {
            let mut redis_config = redtail_connection::Config::from_url(url).map_err(|e| format!("REDIS_URL: {e}"))?;
            if config.replica_acks > 0 {
                redis_config = redis_config.with_replica_acks(config.replica_acks, Duration::from_millis(250));
            }
            let redis = Redis::connect(redis_config).await.map_err(|e| format!("cannot reach Redis: {e}"))?;
            (redis.clone().into(), Some(redis))
        }
        Store::Memory => {
            eprintln!("media-api: running on the in-memory backend; nothing survives a restart");
            (MemoryBackend::new().into(), None)
        }
    };
    let queues = Queues::new(&backend, config.keep_completed).map_err(|e| e.to_string())?;
    let workers = if config.role == Role::Api {
        Vec::new()
    } else {
        let ledger = Ledger::open(config.job_ledger.as_deref())
            .map_err(|e| format!("cannot open MEDIA_API_JOB_LEDGER for appending: {e}"))?;
        queues.start_workers(config.download_step, &ledger).map_err(|e| e.to_string())?
    };
    if config.role == Role::Worker {
        eprintln!("media-api: worker running; Ctrl-C stops it");
        shutdown_signal().await;
    } else {
        let state = AppState {
            sessions: Arc::new(
                SessionStore::new(Arc::clone(&backend), SessionConfig::default()).map_err(|e| e.to_string())?,
            ),
            limiter: RateLimiter::new(Arc::clone(&backend), Namespace::new("rt:rl").map_err(|e| e.to_string())?),
            cache: Cache::new(Arc::clone(&backend), CacheConfig::default()).await.map_err(|e| e.to_string())?,
            queues,
            redis: redis.clone(),
            config: Arc::new(config.clone()),
        };
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| format!("cannot listen on {} (MEDIA_API_ADDR): {e}", config.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // One line a script can wait for.
        println!("media-api listening on http://{addr}");
        let app = app::router(state)?.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.map_err(|e| e.to_string())?;
    }
    eprintln!("media-api: stopping");
    for worker in workers {
        let stats = worker.shutdown().await;
        eprintln!(
            "media-api: worker stopped: {} completed, {} retried, {} dead-lettered",
            stats.completed, stats.retried, stats.dead
        );
    }
    if let Some(redis) = redis {
        redis.shutdown(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one.
async fn shutdown_signal() {
    let terminate = async {
        #[cfg(unix)]
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
