//! One process of the cross-process rate-limit test: at a given time, runs `calls` concurrent
//! checks of a 100-per-minute limit for one subject, and prints how many were allowed.
//!
//! Usage: `ratelimit_burst <redis-url> <prefix> <subject> <calls> <start-at-unix-ms> <algorithm>`
//! (`gcra`, `fixed_window` or `sliding_window`).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Namespace};
use redtail_ratelimit::{Algorithm, Policy, RateLimiter};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, prefix, subject, calls, start_at, algorithm] = &args[..] else {
        return Err(
            "usage: ratelimit_burst <redis-url> <prefix> <subject> <calls> <start-at-unix-ms> <algorithm>".into()
        );
    };
    let algorithm = match algorithm.as_str() {
        "gcra" => Algorithm::Gcra,
        "fixed_window" => Algorithm::FixedWindow,
        "sliding_window" => Algorithm::SlidingWindow,
        other => return Err(format!("unknown algorithm {other}").into()),
    };
    let backend: Arc<dyn Backend> = Arc::new(Redis::connect(Config::from_url(url)?).await?);
    let limiter = Arc::new(RateLimiter::new(backend, Namespace::new(prefix.as_str())?.child("rl")));
    let policy = [Policy::new("burst", 100, Duration::from_secs(60)).with_algorithm(algorithm)];
    let start_at = UNIX_EPOCH + Duration::from_millis(start_at.parse()?);
    tokio::time::sleep(start_at.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let tasks: Vec<_> = (0..calls.parse::<u32>()?)
        .map(|_| {
            let (limiter, subject, policy) = (Arc::clone(&limiter), subject.clone(), policy.clone());
            tokio::spawn(async move { limiter.check(&subject, &policy).await })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += u32::from(task.await??.is_allowed());
    }
    println!("{allowed}");
    Ok(())
}
