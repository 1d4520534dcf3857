//! The benchmark workloads of `../shared/BENCHMARKS.md`, against the Redis in `REDIS_URL`.
//! Prints one JSON object a line. Run through `cargo xtask bench`, which builds it in release
//! mode and gives it a server of its own.
//!
//! `redtail-bench [raw] [ratelimit] [session] [cache] [queue] [queue-grouped] [queue-soak] [queue-depth] [scheduler] [cache-tiers] [--n N] [--c C] [--jobs J] [--qc C] [--depth D] [--pool CONNECTIONS]`
//!
//! `queue-grouped` is the `queue` workload with its jobs spread round-robin over 1,000 groups
//! (`--groups G`), one job at a time per group. `queue-depth` measures the curve (0, 10,000,
//! 100,000 and 1,000,000 waiting), each depth at once and again once the server has finished
//! rehashing its keyspace; `--depth D` measures one depth of it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use media_api::presets::UserSession;
use redtail_cache::{Cache, CacheConfig, EntryOptions, Invalidation, LocalTier};
use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Cmd, Cursor, Key, Namespace};
use redtail_queue::{Backoff, Groups, JobOptions, Queue, QueueConfig, Retention, WorkerHandle, WorkerOptions};
use redtail_session::{NewSession, SessionConfig, SessionStore, Token};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (n, concurrency) = (number("--n", 100_000), number("--c", 256));
    let all = !args.iter().any(|a| !a.starts_with("--") && a.parse::<usize>().is_err());
    let wants = |name: &str| all || args.iter().any(|a| a == name);

    // With the metrics feature, the demo service's recorder, drained every second (nothing
    // scrapes it).
    #[cfg(feature = "metrics")]
    media_api::spawn_upkeep(
        media_api::prometheus().ok_or("cannot install the Prometheus recorder")?,
        Duration::from_secs(1),
    );
    let mut config = Config::from_env()?;
    if let Some(pool) =
        args.iter().position(|a| a == "--pool").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
    {
        config = config.with_pool_size(pool);
    }
    let redis = Redis::connect(config).await?;
    let backend: Arc<dyn Backend> = redis.clone().into();
    if wants("raw") {
        raw(&backend, 2 * n, concurrency).await?;
    }
    if wants("ratelimit") {
        ratelimit(&backend, 2 * n, concurrency).await?;
        ratelimit_outage().await?;
    }
    if wants("session") {
        session(&backend, n, concurrency).await?;
    }
    if wants("cache") {
        cache(&backend, n, concurrency).await?;
    }
    if wants("queue") {
        queue(&backend, number("--jobs", 20_000), number("--qc", 50), 0).await?;
    }
    if args.iter().any(|a| a == "queue-grouped") {
        queue(&backend, number("--jobs", 20_000), number("--qc", 50), number("--groups", 1_000)).await?;
    }
    // Not part of a plain run: a million jobs take a minute.
    if args.iter().any(|a| a == "queue-soak") {
        queue_soak(&backend, number("--jobs", 1_000_000)).await?;
    }
    // Not part of a plain run: how processing holds up with a deep queue (up to a million
    // waiting), and what a scheduler's job costs the server.
    if args.iter().any(|a| a == "queue-depth") {
        let curve = [0, 10_000, 100_000, 1_000_000];
        let one = args.iter().any(|a| a == "--depth").then(|| number("--depth", 0));
        for depth in one.map_or(curve.to_vec(), |d| vec![d]) {
            queue_depth(&backend, depth, number("--jobs", 20_000), number("--qc", 50)).await?;
        }
    }
    if args.iter().any(|a| a == "scheduler") {
        scheduler(&backend, number("--jobs", 2_000)).await?;
    }
    // Not part of a plain run: the local tier's two invalidation modes side by side.
    if args.iter().any(|a| a == "cache-tiers") {
        for mode in [Invalidation::PubSub, Invalidation::Tracking] {
            cache_tiers(&backend, mode, n / 5, concurrency).await?;
        }
    }
    redis.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// What one workload measured: its time, its sorted latencies, and the server CPU it used.
struct Measured {
    elapsed: Duration,
    latencies: Vec<Duration>,
    server_usec: Option<ServerUsec>,
    /// CPU time this process spent, in ns (`None` where Linux's `/proc` is not there).
    client_cpu_ns: Option<u64>,
}

/// CPU time this process's threads have run so far, in ns: the sum of each thread's
/// `/proc/self/task/<id>/schedstat`. Unlike throughput it leaves out the time the machine gave
/// to others, so it compares two builds more steadily on a shared machine.
fn client_cpu_ns() -> Option<u64> {
    let mut sum = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        sum += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// Server CPU in µs, by the two meters: the sum of `INFO commandstats` (which counts commands run
/// inside scripts twice and leaves out socket I/O: a breakdown), and `INFO cpu`'s user + system
/// time (the meter `../shared/BENCHMARKS.md` compares, `server_cpu_us_per_op`).
#[derive(Clone, Copy)]
struct ServerUsec {
    commands: u64,
    cpu: u64,
}

impl ServerUsec {
    fn since(self, before: ServerUsec) -> ServerUsec {
        ServerUsec { commands: self.commands.saturating_sub(before.commands), cpu: self.cpu.saturating_sub(before.cpu) }
    }
}

/// Runs `op(i)` for i in 0..n from `concurrency` tasks against `backend`'s server.
async fn drive<F, Fut>(backend: &Arc<dyn Backend>, n: usize, concurrency: usize, op: F) -> Result<Measured, Error>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let server_before = server_usec(backend).await?;
    let client_before = client_cpu_ns();
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next) = (Arc::clone(&op), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n / concurrency + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, Error>(latencies);
                    }
                    let t = Instant::now();
                    op(i).await?;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let client_cpu_ns = client_cpu_ns().zip(client_before).map(|(after, before)| after.saturating_sub(before));
    latencies.sort_unstable();
    let server_usec = server_usec_since(backend, server_before).await?;
    Ok(Measured { elapsed, latencies, server_usec, client_cpu_ns })
}

fn report(bench: &str, n: usize, concurrency: usize, measured: Measured) {
    report_with(bench, n, concurrency, measured, serde_json::Map::new());
}

fn report_with(
    bench: &str,
    n: usize,
    concurrency: usize,
    Measured { elapsed, latencies, server_usec, client_cpu_ns }: Measured,
    extra: serde_json::Map<String, serde_json::Value>,
) {
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mut line = json!({
        "bench": bench, "impl": "redtail", "ops": n, "concurrency": concurrency,
        "per_sec": (n as f64 / elapsed.as_secs_f64()).round(),
        "p50_ms": (pct(0.50) * 1000.0).round() / 1000.0, "p99_ms": (pct(0.99) * 1000.0).round() / 1000.0,
        "server_us_per_op": server_usec.map(|usec| per_op(usec.commands, n)),
        "server_cpu_us_per_op": server_usec.map(|usec| per_op(usec.cpu, n)),
        "client_cpu_us_per_op": client_cpu_ns.map(|ns| per_op(ns / 1000, n)),
    });
    if let Some(fields) = line.as_object_mut() {
        fields.extend(extra);
    }
    println!("{line}");
}

/// `GET`/`SET` of 3-byte values through the `Backend` trait, as the `rust-fred-raw` peer does
/// on fred directly: the cost of redtail's layer over fred.
async fn raw(backend: &Arc<dyn Backend>, n: usize, concurrency: usize) -> Result<(), Error> {
    let ns = Namespace::new("b:raw")?;
    let keys: Arc<Vec<redtail_core::Key>> = Arc::new((0..10_000).map(|i| ns.key([i.to_string()])).collect());
    let (b, k) = (Arc::clone(backend), Arc::clone(&keys));
    let set = drive(backend, n, concurrency, move |i| {
        let (backend, keys) = (Arc::clone(&b), Arc::clone(&k));
        async move {
            backend.call(Cmd::new("SET").key(&keys[i % keys.len()]).arg("abc")).await?;
            Ok(())
        }
    })
    .await?;
    report("raw.set", n, concurrency, set);
    let (b, k) = (Arc::clone(backend), Arc::clone(&keys));
    let get = drive(backend, n, concurrency, move |i| {
        let (backend, keys) = (Arc::clone(&b), Arc::clone(&k));
        async move {
            backend.call(Cmd::new("GET").key(&keys[i % keys.len()])).await?.into_opt_bytes()?.ok_or("missing")?;
            Ok(())
        }
    })
    .await?;
    report("raw.get", n, concurrency, get);
    // The same reads through `BatchedGet`, as the session and cache crates make them.
    let reads = Arc::new(redtail_core::BatchedGet::new(Arc::clone(backend)));
    let k = Arc::clone(&keys);
    let get = drive(backend, n, concurrency, move |i| {
        let (reads, keys) = (Arc::clone(&reads), Arc::clone(&k));
        async move {
            reads.get(&keys[i % keys.len()]).await?.ok_or("missing")?;
            Ok(())
        }
    })
    .await?;
    report("raw.get_batched", n, concurrency, get);
    let cleanup: Vec<Cmd> = keys.iter().map(|k| Cmd::new("UNLINK").key(k)).collect();
    for chunk in cleanup.chunks(1_000) {
        backend.pipeline(chunk.to_vec()).await?;
    }
    Ok(())
}

/// The `ratelimit` workload: one 100-per-60 s limit for `user{i % 10000}`, with the original
/// design's fixed window, the sliding-window counter (each also in the script:
/// `fixed_window_scripted`, `sliding_window_scripted`), GCRA and the sliding log (or the ones
/// named by `REDTAIL_BENCH_ALGORITHMS`, comma-separated); then bytes per limiter key for each.
async fn ratelimit(backend: &Arc<dyn Backend>, n: usize, concurrency: usize) -> Result<(), Error> {
    use redtail_ratelimit::{Algorithm, Policy, RateLimiter};
    let all = [
        (Algorithm::FixedWindow, false),
        (Algorithm::FixedWindow, true),
        (Algorithm::SlidingWindow, false),
        (Algorithm::SlidingWindow, true),
        (Algorithm::Gcra, false),
        (Algorithm::SlidingLog, false),
    ];
    let label = |(algorithm, scripted): (Algorithm, bool)| {
        format!("{}{}", algorithm_name(algorithm), if scripted { "_scripted" } else { "" })
    };
    let chosen = std::env::var("REDTAIL_BENCH_ALGORITHMS").unwrap_or_default();
    for (algorithm, scripted) in
        all.into_iter().filter(|&run| chosen.is_empty() || chosen.split(',').any(|c| c == label(run)))
    {
        let name = label((algorithm, scripted));
        let ns = Namespace::new(format!("b:rl:{name}"))?;
        let limiter = Arc::new(RateLimiter::new(Arc::clone(backend), ns.clone()).with_scripted_counters(scripted));
        let policy = Policy::new("api", 100, Duration::from_secs(60)).with_algorithm(algorithm);
        let limited = Arc::new(AtomicUsize::new(0));
        let (l, p, lim) = (Arc::clone(&limiter), policy.clone(), Arc::clone(&limited));
        let measured = drive(backend, n, concurrency, move |i| {
            let (limiter, policy, limited) = (Arc::clone(&l), p.clone(), Arc::clone(&lim));
            async move {
                if !limiter.check(&format!("user{}", i % 10_000), std::slice::from_ref(&policy)).await?.is_allowed() {
                    limited.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        })
        .await?;
        let mut extra = serde_json::Map::new();
        extra.insert("algorithm".into(), json!(name));
        extra.insert("limited".into(), json!(limited.load(Ordering::Relaxed)));
        report_with("ratelimit", n, concurrency, measured, extra);
        let page = backend.scan(Cursor::START, &ns.pattern(Vec::<&str>::new()), 1_000).await?;
        let mut bytes = Vec::new();
        for key in page.keys.iter().take(100) {
            bytes.push(backend.call(Cmd::new("MEMORY").arg("USAGE").key(key)).await?.as_opt_int()?.unwrap_or(0));
        }
        let average = if bytes.is_empty() { 0 } else { bytes.iter().sum::<i64>() / bytes.len() as i64 };
        let line = json!({"bench": "memory.limiter_key", "impl": "redtail", "algorithm": name, "bytes": average, "sampled": bytes.len()});
        println!("{line}");
    }
    Ok(())
}

/// Decisions in an outage: a server of its own (`redtail-testkit`) paused with SIGSTOP while
/// 1,000 checks a second arrive for 2 s, half through the script (GCRA) and half without (a fixed
/// window), with a 300 ms command timeout; reports the slowest decision beside the timeout
/// (the target: within the timeout plus 50 ms).
async fn ratelimit_outage() -> Result<(), Error> {
    use redtail_ratelimit::{Algorithm, OnFailure, Policy, RateLimiter};
    let timeout = Duration::from_millis(300);
    let servers = redtail_testkit::TestRedis::owned(redtail_testkit::Deployment::Standalone)?;
    let redis = Redis::connect(Config::from_url(servers.url())?.with_command_timeout(timeout)).await?;
    let limiter = Arc::new(RateLimiter::new(redis.clone(), Namespace::new("b:outage")?).with_refusal_cache(false));
    let gcra = Policy::new("api", 100, Duration::from_secs(60)).with_on_failure(OnFailure::Open);
    let fixed = gcra.clone().with_algorithm(Algorithm::FixedWindow);
    for policy in [&gcra, &fixed] {
        limiter.check("warm", std::slice::from_ref(policy)).await?;
    }
    servers.pause()?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut tasks = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        tick.tick().await;
        let (limiter, policy) = (Arc::clone(&limiter), if i % 2 == 0 { gcra.clone() } else { fixed.clone() });
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let decision = limiter.check(&format!("u{}", i % 50), &[policy]).await;
            (started.elapsed(), decision.map(|d| d.is_allowed()))
        }));
    }
    let mut slowest = Duration::ZERO;
    let mut decided = 0;
    for task in tasks {
        let (took, decision) = task.await?;
        slowest = slowest.max(took);
        decided += usize::from(decision.is_ok());
    }
    servers.resume()?;
    redis.shutdown(Duration::from_secs(1)).await;
    let line = json!({
        "bench": "ratelimit.outage", "impl": "redtail", "checks": 2_000, "decided": decided,
        "timeout_ms": timeout.as_millis() as u64, "slowest_ms": slowest.as_secs_f64() * 1000.0,
        "degraded": limiter.stats().degraded,
    });
    println!("{line}");
    Ok(())
}

/// Microseconds of server CPU so far, by both meters, to report the server's cost per operation
/// beside the throughput.
async fn server_usec(backend: &Arc<dyn Backend>) -> Result<Option<ServerUsec>, Error> {
    // On a cluster INFO answers for one node only; there is no server-wide figure.
    if backend.is_cluster() {
        return Ok(None);
    }
    let info = backend.call(Cmd::new("INFO").arg("commandstats")).await?.into_string()?;
    let commands = info
        .lines()
        .filter_map(|line| line.split("usec=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum();
    let info = backend.call(Cmd::new("INFO").arg("cpu")).await?.into_string()?;
    let seconds =
        |field: &str| info.lines().find_map(|line| line.strip_prefix(field)?.trim().parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = ((seconds("used_cpu_user:") + seconds("used_cpu_sys:")) * 1e6).round() as u64;
    Ok(Some(ServerUsec { commands, cpu }))
}

/// Server CPU used since `before` (a reading of [`server_usec`]).
async fn server_usec_since(
    backend: &Arc<dyn Backend>,
    before: Option<ServerUsec>,
) -> Result<Option<ServerUsec>, Error> {
    Ok(server_usec(backend).await?.zip(before).map(|(after, before)| after.since(before)))
}

fn per_op(usec: u64, n: usize) -> f64 {
    (usec as f64 / n as f64 * 100.0).round() / 100.0
}

fn algorithm_name(algorithm: redtail_ratelimit::Algorithm) -> &'static str {
    match algorithm {
        redtail_ratelimit::Algorithm::Gcra => "gcra",
        redtail_ratelimit::Algorithm::SlidingLog => "sliding_log",
        redtail_ratelimit::Algorithm::SlidingWindow => "sliding_window",
        _ => "fixed_window",
    }
}

async fn session(backend: &Arc<dyn Backend>, n: usize, concurrency: usize) -> Result<(), Error> {
    let store = Arc::new(SessionStore::<UserSession>::new(
        Arc::clone(backend),
        SessionConfig::default().with_namespace(Namespace::new("b:s")?),
    )?);
    let tokens: Arc<Vec<std::sync::OnceLock<Token>>> = Arc::new((0..n).map(|_| std::sync::OnceLock::new()).collect());
    let (s, t) = (Arc::clone(&store), Arc::clone(&tokens));
    let created = drive(backend, n, concurrency, move |i| {
        let (store, tokens) = (Arc::clone(&s), Arc::clone(&t));
        async move {
            let user = format!("u{}", i % 1000);
            let mut data = UserSession::new(user.clone(), "user");
            data.plex_id = Some(format!("p{i}"));
            data.remember_me = i % 10 == 0;
            let options = if data.remember_me { NewSession::remember_me() } else { NewSession::standard() };
            let (token, _) = store.create(&user, data, options).await?;
            let _ = tokens[i].set(token);
            Ok(())
        }
    })
    .await?;
    report("session.create", n, concurrency, created);

    let (s, t) = (Arc::clone(&store), Arc::clone(&tokens));
    let read = drive(backend, n, concurrency, move |i| {
        let (store, tokens) = (Arc::clone(&s), Arc::clone(&t));
        async move {
            let token = tokens[i].get().ok_or("no token")?;
            store.get(token.as_str()).await?.ok_or("session missing")?;
            Ok(())
        }
    })
    .await?;
    report("session.get", n, concurrency, read);

    // Bytes in Redis: one session hash, and the index's share per session.
    let ns = Namespace::new("b:s")?;
    let mut cursor = Some(Cursor::START);
    let (mut session_bytes, mut sessions, mut index_bytes, mut indexes) = (0i64, 0i64, 0i64, 0i64);
    while let Some(at) = cursor {
        let page = backend.scan(at, &ns.pattern(Vec::<&str>::new()), 1000).await?;
        for key in page.keys.iter().take(2_000) {
            let bytes = backend.call(Cmd::new("MEMORY").arg("USAGE").key(key)).await?.as_opt_int()?.unwrap_or(0);
            if key.to_string().ends_with(":i") {
                index_bytes += bytes;
                indexes += 1;
            } else {
                session_bytes += bytes;
                sessions += 1;
            }
        }
        cursor = page.next;
        if sessions >= 1_000 && indexes >= 100 {
            break;
        }
    }
    let per = |total: i64, count: i64| if count == 0 { 0 } else { total / count };
    println!(
        "{}",
        json!({"bench": "memory.session", "impl": "redtail", "bytes": per(session_bytes, sessions), "sampled": sessions})
    );
    // Each index holds the sessions of its users: n / 1000 sessions per user in this workload.
    let per_user = (n / 1000).max(1) as i64;
    println!(
        "{}",
        json!({"bench": "memory.session_index", "impl": "redtail", "bytes_per_session": per(index_bytes, indexes) / per_user, "sampled": indexes})
    );
    Ok(())
}

/// The cached value of the cache workloads, as a Rust service reads it back from a typed cache.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // decoded, as the workload asks, and never read
struct ServiceStatus {
    service: String,
    status: String,
    latency_ms: u32,
    checked_at: String,
    details: ServiceDetails,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)] // decoded, as the workload asks, and never read
struct ServiceDetails {
    version: String,
    libraries: u32,
}

/// `cache.set_tagged` and `cache.get_hit` as in BENCHMARKS.md, then the same reads from the
/// in-process tier (`cache.get_local_hit`).
async fn cache(backend: &Arc<dyn Backend>, n: usize, concurrency: usize) -> Result<(), Error> {
    let status = |i: usize| {
        json!({"service": "plex", "status": "up", "latencyMs": 12, "checkedAt": format!("2026-11-25T00:00:{:02}Z", i % 60),
               "details": {"version": "1.40.0", "libraries": 12}})
    };
    // The 20 endpoint tags, formatted once as a service holds its tag names.
    static ENDPOINTS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..20).map(|e| format!("ep{e}")).collect());
    let tags = |i: usize| ["api-response", ENDPOINTS[i % 20].as_str()];
    let cache = Cache::new(Arc::clone(backend), CacheConfig::default().with_namespace(Namespace::new("b:c")?)).await?;
    let c = cache.clone();
    let set = drive(backend, n, concurrency, move |i| {
        let c = c.clone();
        async move {
            let [a, b] = tags(i);
            let options = EntryOptions::ttl(Duration::from_secs(300)).tag(a).tag(b);
            c.set(&format!("api:ep:{i}"), &status(i), &options).await?;
            Ok(())
        }
    })
    .await?;
    report("cache.set_tagged", n, concurrency, set);
    let c = cache.clone();
    let get = drive(backend, n, concurrency, move |i| {
        let c = c.clone();
        async move {
            let [a, b] = tags(i);
            c.get_with_tags::<ServiceStatus>(&format!("api:ep:{i}"), &[a, b]).await.ok_or("cache miss")?;
            Ok(())
        }
    })
    .await?;
    report("cache.get_hit", n, concurrency, get);
    // The same reads decoded into an untyped JSON tree, as the Node stack's `JSON.parse` does.
    let c = cache.clone();
    let get = drive(backend, n, concurrency, move |i| {
        let c = c.clone();
        async move {
            let [a, b] = tags(i);
            c.get_with_tags::<serde_json::Value>(&format!("api:ep:{i}"), &[a, b]).await.ok_or("cache miss")?;
            Ok(())
        }
    })
    .await?;
    report("cache.get_hit_untyped", n, concurrency, get);
    let local = Cache::new(
        Arc::clone(backend),
        CacheConfig::default()
            .with_namespace(Namespace::new("b:c")?)
            .with_local_tier(LocalTier::new(n as u64, Duration::from_secs(300))),
    )
    .await?;
    for i in 0..n {
        local.get::<serde_json::Value>(&format!("api:ep:{i}")).await.ok_or("cache miss")?;
    }
    let c = local.clone();
    let hits = drive(backend, n, concurrency, move |i| {
        let c = c.clone();
        async move {
            c.get::<serde_json::Value>(&format!("api:ep:{i}")).await.ok_or("cache miss")?;
            Ok(())
        }
    })
    .await?;
    report("cache.get_local_hit", n, concurrency, hits);
    if local.stats().local_hits < n as u64 {
        return Err(format!("only {} of {n} reads hit the local tier", local.stats().local_hits).into());
    }
    Ok(())
}

/// Two instances with local tiers, invalidated by `mode`: `cache.tier_write` (writer alone, with the
/// reader's tier following; its server CPU per write), `cache.tier_mixed` (90 % reads on the
/// reader over 1,000 keys, 10 % writes on the writer; the reader's local hit rate), and
/// `cache.tier_staleness` (from a write's return to the reader serving the new value, 200 times).
async fn cache_tiers(
    backend: &Arc<dyn Backend>,
    mode: Invalidation,
    n: usize,
    concurrency: usize,
) -> Result<(), Error> {
    let name = if mode == Invalidation::Tracking { "tracking" } else { "pubsub" };
    let mut tier = LocalTier::new(10_000, Duration::from_secs(30));
    tier.invalidation = mode;
    let config = CacheConfig::default().with_namespace(Namespace::new(format!("b:t:{name}"))?).with_local_tier(tier);
    let writer = Cache::new(Arc::clone(backend), config.clone()).await?;
    let reader = Cache::new(Arc::clone(backend), config).await?;
    let options = EntryOptions::ttl(Duration::from_secs(300)).tag("api-response");
    let key = |i: usize| format!("api:ep:{}", i % 1000);
    let w = writer.clone();
    let writes = drive(backend, n, concurrency, move |i| {
        let (w, options) = (w.clone(), options.clone());
        async move { Ok(w.set(&key(i), &i, &options).await?) }
    })
    .await?;
    let extra = |fields: serde_json::Value| fields.as_object().cloned().unwrap_or_default();
    report_with("cache.tier_write", n, concurrency, writes, extra(json!({"mode": name})));
    let options = EntryOptions::ttl(Duration::from_secs(300)).tag("api-response");
    let (w, r) = (writer.clone(), reader.clone());
    let before = reader.stats();
    let mixed = drive(backend, n, concurrency, move |i| {
        let (w, r, options) = (w.clone(), r.clone(), options.clone());
        // Spread over the keys so that reads and writes meet.
        let k = (i * 7919) % 1000;
        async move {
            if i % 10 == 0 {
                w.set(&key(k), &i, &options).await?;
            } else {
                let _ = r.get::<usize>(&key(k)).await;
            }
            Ok(())
        }
    })
    .await?;
    let after = reader.stats();
    let reads = (n - n.div_ceil(10)) as f64;
    let hit_rate = (after.local_hits - before.local_hits) as f64 / reads;
    report_with(
        "cache.tier_mixed",
        n,
        concurrency,
        mixed,
        extra(json!({"mode": name, "local_hit_rate": (hit_rate * 1000.0).round() / 1000.0})),
    );
    let options = EntryOptions::ttl(Duration::from_secs(300)).tag("api-response");
    let mut windows = Vec::with_capacity(200);
    for round in 0..200usize {
        let k = format!("stale:{round}");
        writer.set(&k, &0usize, &options).await?;
        // Held in the reader's tier before the write that makes it stale.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let hits = reader.stats().local_hits;
            if reader.get::<usize>(&k).await == Some(0) && reader.stats().local_hits > hits {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{name}: {k} never reached the reader's tier").into());
            }
        }
        writer.set(&k, &1usize, &options).await?;
        let written = Instant::now();
        while reader.get::<usize>(&k).await != Some(1) {
            if written.elapsed() > Duration::from_secs(2) {
                return Err(format!("{name}: the reader served the old {k} for 2 s").into());
            }
            tokio::task::yield_now().await;
        }
        windows.push(written.elapsed());
    }
    windows.sort_unstable();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1000.0;
    let line = json!({"bench": "cache.tier_staleness", "impl": "redtail", "mode": name, "ops": windows.len(),
        "p50_ms": ms(windows[windows.len() / 2]), "p99_ms": ms(windows[windows.len() * 99 / 100]), "max_ms": ms(windows[windows.len() - 1])});
    println!("{line}");
    Ok(())
}

/// The data of job `i` in the queue workloads: a download of the original design.
fn job_data(i: usize) -> serde_json::Value {
    json!({"url": format!("https://example.invalid/v/{i}"), "userId": format!("u{}", i % 100)})
}

/// Waits until `worker` has completed `jobs` jobs (`what` names them in the error after 300 s).
async fn until_completed(worker: &WorkerHandle, jobs: usize, what: &str) -> Result<(), Error> {
    let started = Instant::now();
    while worker.stats().completed < jobs as u64 {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("only {} of {jobs} {what} in 300 s", worker.stats().completed).into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// The `queue` workload: `jobs` added in batches of 1,000, then one worker with `concurrency`
/// runs a no-op handler on all of them; BullMQ's options (3 attempts, exponential backoff from
/// 2 s, the last 100 completed kept for an hour, failed kept a day). With `groups` above 0
/// (`queue.grouped`), job `i` is in group `i % groups`, each group running one job at a time.
async fn queue(backend: &Arc<dyn Backend>, jobs: usize, concurrency: usize, groups: usize) -> Result<(), Error> {
    let name = format!("bench-{}", std::process::id());
    let defaults = JobOptions::default()
        .attempts(3)
        .backoff(Backoff::exponential(Duration::from_secs(2)))
        .keep_completed(Retention::new(Duration::from_secs(3600), 100))
        .keep_failed(Retention::new(Duration::from_secs(86_400), 100_000));
    let config = QueueConfig::new(name.as_str()).defaults(defaults.clone()).groups(Groups::default().concurrency(1));
    let queue = Queue::<serde_json::Value>::new(Arc::clone(backend), config)?;
    let items: Vec<serde_json::Value> = (0..jobs).map(job_data).collect();
    let started = Instant::now();
    let ids = if groups == 0 {
        queue.add_bulk(&items).await?
    } else {
        let grouped =
            items.iter().enumerate().map(|(i, item)| (item, defaults.clone().group(format!("g{}", i % groups))));
        queue.add_bulk_with(grouped.collect()).await?.into_iter().map(|added| added.id).collect()
    };
    let added = started.elapsed();

    // Bytes per waiting job: its hash, plus its share of the waiting list.
    let sample = ids.iter().step_by((jobs / 200).max(1));
    let mut job_bytes = Vec::new();
    for id in sample {
        let key = Key::from_raw(format!("rt:q:{{{name}}}:j:{id}"));
        job_bytes.push(backend.call(Cmd::new("MEMORY").arg("USAGE").key(&key)).await?.as_opt_int()?.unwrap_or(0));
    }
    let list = Key::from_raw(format!("rt:q:{{{name}}}:w"));
    let list_bytes = backend.call(Cmd::new("MEMORY").arg("USAGE").key(&list)).await?.as_opt_int()?.unwrap_or(0);
    let per_job = job_bytes.iter().sum::<i64>() / job_bytes.len().max(1) as i64 + list_bytes / jobs.max(1) as i64;

    let server_before = server_usec(backend).await?;
    let started = Instant::now();
    let worker = queue.worker(WorkerOptions::default().concurrency(concurrency), |job| async move {
        let len = job.data.get("url").and_then(|u| u.as_str()).map_or(0, str::len);
        Ok::<_, redtail_queue::Error>(json!({"ok": len}))
    })?;
    until_completed(&worker, jobs, "jobs completed").await?;
    let processed = started.elapsed();
    let stats = worker.shutdown().await;
    let server = server_usec_since(backend, server_before).await?;
    let per_sec = |d: Duration| (jobs as f64 / d.as_secs_f64()).round();
    println!(
        "{}",
        json!({"bench": if groups == 0 { "queue" } else { "queue.grouped" }, "impl": "redtail", "jobs": jobs,
               "groups": groups, "add_per_sec": per_sec(added),
               "process_per_sec": per_sec(processed), "worker_concurrency": concurrency, "redis_errors": stats.redis_errors,
               "process_server_us_per_job": server.map(|usec| per_op(usec.commands, jobs)),
               "process_server_cpu_us_per_job": server.map(|usec| per_op(usec.cpu, jobs))})
    );
    if groups == 0 {
        println!("{}", json!({"bench": "memory.job", "impl": "redtail", "bytes": per_job, "sampled": job_bytes.len()}));
    }
    queue.obliterate(true).await?;
    Ok(())
}

/// Processing `jobs` jobs with `depth` more waiting behind them and a tenth as many delayed (an
/// hour away): the rate must not fall with the depth. The measured jobs are added first, so
/// they are the ones taken.
async fn queue_depth(backend: &Arc<dyn Backend>, depth: usize, jobs: usize, concurrency: usize) -> Result<(), Error> {
    let name = format!("depth-{}-{depth}", std::process::id());
    let queue = Queue::<serde_json::Value>::new(Arc::clone(backend), QueueConfig::new(name.as_str()))?;
    // Jobs `range` with `options`, 10,000 per call.
    let add = |range: std::ops::Range<usize>, options: JobOptions| {
        let queue = queue.clone();
        async move {
            for from in range.clone().step_by(10_000) {
                let chunk: Vec<serde_json::Value> = (from..(from + 10_000).min(range.end)).map(job_data).collect();
                queue.add_bulk_with(chunk.iter().map(|d| (d, options.clone())).collect()).await?;
            }
            Ok::<_, Error>(())
        }
    };
    let now = queue.config().defaults.clone();
    add(0..jobs + depth, now.clone()).await?;
    add(0..depth / 10, JobOptions::default().delay(Duration::from_secs(3600))).await?;
    // Twice: at once, while the server may still be rehashing a keyspace the adds grew past a
    // power of two (Redis moves its entries to the larger table over the next seconds, a step
    // per command); then once that is over, with as many jobs added again so that as many wait
    // behind. The second is the queue's steady rate at that depth.
    let (fresh_rate, fresh_cpu) = process_jobs(backend, &queue, jobs, concurrency).await?;
    let waited = settle(backend).await?;
    add(jobs + depth..2 * jobs + depth, now).await?;
    let (rate, cpu) = process_jobs(backend, &queue, jobs, concurrency).await?;
    println!(
        "{}",
        json!({"bench": "queue.depth", "impl": "redtail", "waiting_behind": depth, "delayed": depth / 10, "jobs": jobs,
               "process_per_sec": rate, "process_server_cpu_us_per_job": cpu,
               "fresh_process_per_sec": fresh_rate, "fresh_process_server_cpu_us_per_job": fresh_cpu,
               "settle_ms": waited.as_millis() as u64})
    );
    queue.obliterate(true).await?;
    Ok(())
}

/// Runs one worker until it has completed `jobs` jobs: its rate, and the server's CPU µs a job.
async fn process_jobs(
    backend: &Arc<dyn Backend>,
    queue: &Queue<serde_json::Value>,
    jobs: usize,
    concurrency: usize,
) -> Result<(f64, Option<f64>), Error> {
    let server_before = server_usec(backend).await?;
    let started = Instant::now();
    let worker = queue.worker(WorkerOptions::default().concurrency(concurrency), |job| async move {
        Ok::<_, redtail_queue::Error>(job.data.get("url").and_then(|u| u.as_str()).map_or(0, str::len))
    })?;
    until_completed(&worker, jobs, "jobs completed").await?;
    let processed = started.elapsed();
    let done = worker.shutdown().await.completed as usize;
    let server = server_usec_since(backend, server_before).await?;
    Ok(((jobs as f64 / processed.as_secs_f64()).round(), server.map(|usec| per_op(usec.cpu, done))))
}

/// Waits until the server's keyspace is not rehashing (`DEBUG HTSTATS 0` names no rehashing
/// target), at most 120 s; where `DEBUG` is refused (servers allow it only when started with
/// `--enable-debug-command`), waits 30 s, which a keyspace of a million keys needed here.
async fn settle(backend: &Arc<dyn Backend>) -> Result<Duration, Error> {
    let started = Instant::now();
    if backend.is_cluster() {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return Ok(started.elapsed());
    }
    loop {
        match backend.call(Cmd::new("DEBUG").arg("HTSTATS").arg("0")).await.map(|v| v.into_string()) {
            Ok(Ok(stats)) if !stats.contains("rehashing") => return Ok(started.elapsed()),
            Ok(Ok(_)) if started.elapsed() < Duration::from_secs(120) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(Ok(_)) => return Err("the keyspace was still rehashing after 120 s".into()),
            _ => {
                eprintln!("redtail-bench: DEBUG HTSTATS refused, so waiting 30 s for the keyspace to settle");
                tokio::time::sleep(Duration::from_secs(30)).await;
                return Ok(started.elapsed());
            }
        }
    }
}

/// A scheduler ticking every millisecond until it has made `jobs` jobs: what each scheduled job
/// costs the server (the next tick is made inside the acknowledging step, so no call of its own).
async fn scheduler(backend: &Arc<dyn Backend>, jobs: usize) -> Result<(), Error> {
    let name = format!("sched-{}", std::process::id());
    let queue = Queue::<serde_json::Value>::new(Arc::clone(backend), QueueConfig::new(name.as_str()))?;
    let server_before = server_usec(backend).await?;
    let started = Instant::now();
    let every = redtail_queue::Scheduler::every("tick", Duration::from_millis(1))?.limit(jobs as u64);
    queue.upsert_scheduler(every, &json!({"scan": "all"})).await?;
    let worker = queue
        .worker(WorkerOptions::default().concurrency(4).idle_poll(Duration::from_millis(10)), |_| async {
            Ok::<_, redtail_queue::Error>(())
        })?;
    until_completed(&worker, jobs, "scheduled jobs ran").await?;
    let elapsed = started.elapsed();
    let stats = worker.shutdown().await;
    let server = server_usec_since(backend, server_before).await?;
    println!(
        "{}",
        json!({"bench": "queue.scheduler", "impl": "redtail", "jobs": stats.completed,
               "jobs_per_sec": (stats.completed as f64 / elapsed.as_secs_f64()).round(),
               "server_cpu_us_per_job": server.map(|usec| per_op(usec.cpu, jobs)),
               "server_commands_us_per_job": server.map(|usec| per_op(usec.commands, jobs))})
    );
    queue.obliterate(true).await?;
    Ok(())
}

/// `jobs` jobs through one worker (concurrency 50) while a producer keeps about 20,000 waiting;
/// prints this process's resident memory at every tenth, which must stay flat.
async fn queue_soak(backend: &Arc<dyn Backend>, jobs: usize) -> Result<(), Error> {
    let name = format!("soak-{}", std::process::id());
    let config = QueueConfig::new(name.as_str());
    let queue = Queue::<serde_json::Value>::new(Arc::clone(backend), config)?;
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut added = 0;
            while added < jobs {
                if queue.counts().await?.waiting > 20_000 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let batch: Vec<serde_json::Value> = (added..(added + 1000).min(jobs)).map(job_data).collect();
                added += queue.add_bulk(&batch).await?.len();
            }
            Ok::<_, redtail_queue::Error>(())
        })
    };
    let started = Instant::now();
    let worker = queue.worker(WorkerOptions::default().concurrency(50), |job| async move {
        Ok::<_, redtail_queue::Error>(job.data.get("url").and_then(|u| u.as_str()).map_or(0, str::len))
    })?;
    let mut rss_mb = Vec::new();
    let mut next_sample = 0;
    loop {
        let done = worker.stats().completed as usize;
        if done >= next_sample {
            rss_mb.push((resident_bytes() as f64 / 1_048_576.0 * 10.0).round() / 10.0);
            next_sample += jobs / 10;
        }
        if done >= jobs {
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            return Err(format!("only {done} of {jobs} jobs completed in 900 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    producer.await??;
    let stats = worker.shutdown().await;
    println!(
        "{}",
        json!({"bench": "queue.soak", "impl": "redtail", "jobs": jobs, "process_per_sec": (jobs as f64 / elapsed.as_secs_f64()).round(),
               "rss_mb_each_tenth": rss_mb, "completed": stats.completed, "redis_errors": stats.redis_errors})
    );
    queue.obliterate(true).await?;
    Ok(())
}

/// This process's resident set size, from `/proc/self/statm` (0 where there is none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}
