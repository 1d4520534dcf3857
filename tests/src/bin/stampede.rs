//! One process of the cross-process stampede tests: at a given time, runs `calls` concurrent
//! `get_or_compute` on one cold key (mode `yes`: with the load lock, `no`: without), or
//! `get_or_spawn` with eager refresh at half the TTL on a key written a while before (mode
//! `eager`: every call must be answered at once with the value it had), and prints how many
//! times its loader ran.
//!
//! Usage: `stampede <redis-url> <prefix> <key> <calls> <start-at-unix-ms> <yes|no|eager>`

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redtail_cache::{Cache, CacheConfig, EntryOptions, Namespace};
use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Cmd, Key};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, prefix, key, calls, start_at, lock] = &args[..] else {
        return Err("usage: stampede <redis-url> <prefix> <key> <calls> <start-at-unix-ms> <yes|no|eager>".into());
    };
    if lock == "eager" {
        return eager(url, prefix, key, calls.parse()?, start_at.parse()?).await;
    }
    let backend: Arc<dyn Backend> = Arc::new(Redis::connect(Config::from_url(url)?).await?);
    let cache =
        Cache::new(Arc::clone(&backend), CacheConfig::default().with_namespace(Namespace::new(prefix.clone())?))
            .await?;
    let lock_wait = (lock == "yes").then_some(Duration::from_secs(5));
    let options = EntryOptions::ttl(Duration::from_secs(60)).lock_wait(lock_wait);
    let runs = Arc::new(AtomicU32::new(0));
    let total = Key::from_raw(format!("{prefix}:loader-runs"));
    let start_at = UNIX_EPOCH + Duration::from_millis(start_at.parse()?);
    tokio::time::sleep(start_at.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let tasks: Vec<_> = (0..calls.parse::<u32>()?)
        .map(|_| {
            let (cache, options, runs, backend, total, key) =
                (cache.clone(), options.clone(), Arc::clone(&runs), Arc::clone(&backend), total.clone(), key.clone());
            tokio::spawn(async move {
                cache
                    .get_or_compute(&key, &options, || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        backend.call(Cmd::new("INCR").key(&total)).await?;
                        backend.call(Cmd::new("EXPIRE").key(&total).arg(600)).await?;
                        // A slow source: every caller arrives while it loads.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok::<_, redtail_core::Error>("loaded".to_owned())
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        let value = task.await??;
        if value != "loaded" {
            return Err(format!("unexpected value {value:?}").into());
        }
    }
    println!("{}", runs.load(Ordering::SeqCst));
    Ok(())
}

/// Eager refresh: `calls` concurrent reads past half the TTL, each answered at once with the
/// value written before (`"old"`), and the loader's runs once the refresh had time to end.
async fn eager(
    url: &str,
    prefix: &str,
    key: &str,
    calls: u32,
    start_at: u64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let backend: Arc<dyn Backend> = Arc::new(Redis::connect(Config::from_url(url)?).await?);
    let cache =
        Cache::new(Arc::clone(&backend), CacheConfig::default().with_namespace(Namespace::new(prefix)?)).await?;
    let options = EntryOptions::ttl(Duration::from_secs(4)).eager_refresh(0.5);
    let runs = Arc::new(AtomicU32::new(0));
    tokio::time::sleep(
        (UNIX_EPOCH + Duration::from_millis(start_at)).duration_since(SystemTime::now()).unwrap_or_default(),
    )
    .await;
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let (cache, options, runs, key) = (cache.clone(), options.clone(), Arc::clone(&runs), key.to_owned());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let value = cache
                    .get_or_spawn(&key, &options, move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok::<_, redtail_core::Error>("new".to_owned())
                    })
                    .await?;
                Ok::<_, redtail_cache::Error>((value, started.elapsed()))
            })
        })
        .collect();
    for task in tasks {
        let (value, took) = task.await??;
        if value != "old" || took >= Duration::from_millis(300) {
            return Err(format!("a caller got {value:?} after {took:?}: it waited for the refresh").into());
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    println!("{}", runs.load(Ordering::SeqCst));
    Ok(())
}
