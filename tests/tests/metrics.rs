//! Every crate's metrics (feature `metrics`) as a service's recorder sees them: names and labels
//! of docs/metrics.md, counted where the crates' own stats count; and the `tracing` span of each
//! Redis command. Each test runs in a process of
//! its own (nextest), so the global recorder holds that test's counts only.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use redtail_cache::{Cache, CacheConfig, EntryOptions, LocalTier};
use redtail_core::{Cmd, Namespace};
use redtail_queue::{Queue, QueueConfig, WorkerOptions};
use redtail_ratelimit::{Algorithm, Policy, RateLimiter};
use redtail_session::{NewSession, SessionConfig, SessionStore};
use redtail_testkit::MemoryBackend;
use redtail_tests::{Ctx, Deployment, TestResult};

/// Counters and histogram sample counts by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct Seen {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
    /// Gauges as `f64` bits (the facade's own `GaugeFn` for `AtomicU64`).
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(value);
    }
}

fn id(key: &Key) -> String {
    let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for &'static Seen {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Counter::from_arc(Arc::clone(counters.entry(id(key)).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        Gauge::from_arc(Arc::clone(gauges.entry(id(key)).or_default()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        Histogram::from_arc(Arc::clone(histograms.entry(id(key)).or_default()))
    }
}

/// The process's recorder, installed once.
fn seen() -> &'static Seen {
    static SEEN: OnceLock<&'static Seen> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen: &'static Seen = Box::leak(Box::default());
        metrics::set_global_recorder(seen).unwrap_or_else(|e| panic!("{e}"));
        seen
    })
}

fn counter(name: &str) -> u64 {
    seen().counters.lock().unwrap_or_else(|p| p.into_inner()).get(name).map_or(0, |c| c.load(Ordering::Relaxed))
}

fn gauge(name: &str) -> Option<f64> {
    let gauges = seen().gauges.lock().unwrap_or_else(|p| p.into_inner());
    gauges.get(name).map(|g| f64::from_bits(g.load(Ordering::Relaxed)))
}

fn samples(name: &str) -> usize {
    seen()
        .histograms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .map_or(0, |h| h.0.lock().map_or(0, |v| v.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_requests_by_tier_and_outcome() -> TestResult {
    seen();
    let cache = Cache::new(
        MemoryBackend::new(),
        CacheConfig::default().with_namespace(Namespace::new("m")?).with_local_tier(LocalTier::default()),
    )
    .await?;
    assert_eq!(cache.get::<u32>("k").await, None);
    cache.set("k", &1u32, &EntryOptions::default()).await?;
    assert_eq!(cache.get::<u32>("k").await, Some(1));
    assert_eq!(cache.get::<u32>("k").await, Some(1));
    let loaded: u32 =
        cache.get_or_compute("l", &EntryOptions::default(), || async { Ok::<_, std::io::Error>(2) }).await?;
    assert_eq!(loaded, 2);
    cache.invalidate_tag("t").await?;
    // The load's lookups count as misses too (before the loader, and again under its lock).
    let misses = counter("redtail_cache_requests_total{cache=m,outcome=miss,tier=redis}");
    assert!(misses >= 2, "{misses} misses");
    assert_eq!(counter("redtail_cache_requests_total{cache=m,outcome=hit,tier=redis}"), 1);
    assert_eq!(counter("redtail_cache_requests_total{cache=m,outcome=hit,tier=local}"), 1);
    assert_eq!(counter("redtail_cache_loads_total{cache=m}"), 1);
    assert_eq!(counter("redtail_cache_invalidations_total{cache=m}"), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.local_hits, stats.misses), (1, 1, misses), "stats() counts the same");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_created_read_and_ended() -> TestResult {
    seen();
    let backend = MemoryBackend::new();
    let store: SessionStore<u32> = SessionStore::new(backend.clone(), SessionConfig::default())?;
    let (token, _) = store.create("u1", 7, NewSession::default()).await?;
    assert!(store.get(token.as_str()).await?.is_some());
    assert!(store.get("not-a-token").await?.is_none());
    assert!(store.invalidate(token.as_str()).await?);
    assert!(store.get(token.as_str()).await?.is_none());
    assert_eq!(counter("redtail_sessions_created_total{}"), 1);
    assert_eq!(counter("redtail_sessions_ended_total{}"), 1);
    assert_eq!(counter("redtail_session_reads_total{outcome=found}"), 1);
    assert_eq!(counter("redtail_session_reads_total{outcome=missing}"), 1);
    assert_eq!(counter("redtail_session_reads_total{outcome=malformed}"), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_decisions_by_policy_and_outcome() -> TestResult {
    seen();
    let limiter = RateLimiter::new(MemoryBackend::new(), Namespace::new("rl")?);
    let policy = Policy::new("api", 2, Duration::from_secs(60)).with_algorithm(Algorithm::FixedWindow);
    for _ in 0..3 {
        limiter.check("u1", std::slice::from_ref(&policy)).await?;
    }
    assert_eq!(counter("redtail_ratelimit_decisions_total{outcome=allowed,policy=api,source=redis}"), 2);
    assert_eq!(counter("redtail_ratelimit_decisions_total{outcome=limited,policy=api,source=redis}"), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_adds_attempts_and_timings() -> TestResult {
    seen();
    let queue = Queue::<u32>::new(MemoryBackend::new(), QueueConfig::new("media"))?;
    queue.add_bulk(&[1, 2, 3]).await?;
    let worker = queue.worker(WorkerOptions::default(), |_job| async { Ok::<_, std::io::Error>(()) })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queue.counts().await?.completed < 3 {
        assert!(std::time::Instant::now() < deadline, "the jobs did not complete");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
    assert_eq!(counter("redtail_queue_adds_total{outcome=added,queue=media}"), 3);
    assert_eq!(counter("redtail_queue_attempts_total{outcome=completed,queue=media}"), 3);
    assert_eq!(samples("redtail_queue_job_run_seconds{queue=media}"), 3);
    assert_eq!(samples("redtail_queue_job_wait_seconds{queue=media}"), 3);
    Ok(())
}

/// Group totals are gauges set when the queue's metrics are read, labelled by state only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_totals_without_group_names() -> TestResult {
    seen();
    let queue = Queue::<u32>::new(MemoryBackend::new(), QueueConfig::new("grouped"))?;
    let options = |group: &str| redtail_queue::JobOptions::default().group(group);
    queue.add_bulk_with(vec![(&1, options("user-1")), (&2, options("user-1")), (&3, options("user-2"))]).await?;
    queue.pause_group("user-2").await?;
    queue.metrics(1).await?;
    assert_eq!(gauge("redtail_queue_groups{queue=grouped,state=waiting}"), Some(2.0));
    assert_eq!(gauge("redtail_queue_groups{queue=grouped,state=paused}"), Some(1.0));
    assert_eq!(gauge("redtail_queue_grouped_jobs{queue=grouped,state=waiting}"), Some(3.0));
    assert_eq!(gauge("redtail_queue_grouped_jobs{queue=grouped,state=active}"), Some(0.0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_by_operation_and_outcome() -> TestResult {
    seen();
    let ctx = Ctx::new(Deployment::Standalone).await;
    let key = ctx.ns.key(["m"]);
    ctx.backend.call(Cmd::new("SET").key(&key).arg("v").arg("EX").arg(60)).await?;
    ctx.backend.call(Cmd::new("GET").key(&key)).await?;
    assert!(ctx.backend.call(Cmd::new("INCR").key(&key)).await.is_err());
    assert_eq!(counter("redtail_redis_commands_total{operation=SET,outcome=ok}"), 1);
    assert_eq!(counter("redtail_redis_commands_total{operation=GET,outcome=ok}"), 1);
    assert_eq!(counter("redtail_redis_commands_total{operation=INCR,outcome=error}"), 1);
    assert_eq!(samples("redtail_redis_command_duration_seconds{operation=GET}"), 1);
    Ok(())
}

/// Pool use: the size of each pool, and the calls under way (one blocked `BLPOP` shows as one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_sizes_and_calls_in_flight() -> TestResult {
    seen();
    let ctx = Ctx::owned(Deployment::Standalone, |config| config.with_pool_size(3)).await;
    for pool in ["commands", "transactions", "blocking"] {
        let size = gauge(&format!("redtail_redis_pool_connections{{pool={pool}}}")).ok_or(pool)?;
        assert!(size >= 1.0, "{pool}: {size}");
    }
    assert_eq!(gauge("redtail_redis_pool_connections{pool=commands}"), Some(3.0));
    let key = ctx.ns.key(["empty"]);
    let backend = Arc::clone(&ctx.backend);
    let blocked = tokio::spawn(async move { backend.blocking(Cmd::new("BLPOP").key(&key).arg(1)).await });
    let start = std::time::Instant::now();
    while gauge("redtail_redis_calls_in_flight{}") != Some(1.0) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "the blocked call never showed: {:?}",
            gauge("redtail_redis_calls_in_flight{}")
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    blocked.await??;
    assert_eq!(gauge("redtail_redis_calls_in_flight{}"), Some(0.0), "none under way once it returned");
    Ok(())
}

/// A span as a subscriber (OpenTelemetry's, say) receives it: id (its place in the order of
/// opening: the registry reuses the ids of closed spans), name, fields, parent.
#[derive(Debug, Clone)]
struct SpanSeen {
    id: usize,
    name: String,
    fields: HashMap<String, String>,
    parent: Option<usize>,
}

/// The spans opened, which span follows from which, and which span holds each registry id now.
#[derive(Default, Clone)]
struct Spans {
    opened: Arc<Mutex<Vec<SpanSeen>>>,
    follows: Arc<Mutex<Vec<(usize, usize)>>>,
    live: Arc<Mutex<HashMap<u64, usize>>>,
}

impl Spans {
    fn holder(&self, id: &tracing::span::Id) -> Option<usize> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(&id.into_u64()).copied()
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = match attrs.parent() {
            Some(parent) => self.holder(parent),
            None if attrs.is_contextual() => ctx.current_span().id().and_then(|p| self.holder(p)),
            None => None,
        };
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let seen = SpanSeen { id: opened.len(), name: attrs.metadata().name().to_owned(), fields, parent };
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(id.into_u64(), seen.id);
        opened.push(seen);
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let (Some(span), Some(follows)) = (self.holder(span), self.holder(follows)) {
            self.follows.lock().unwrap_or_else(|p| p.into_inner()).push((span, follows));
        }
    }
}

/// One span per command, named and described as OpenTelemetry's database conventions say.
#[tokio::test(flavor = "current_thread")]
async fn each_redis_command_has_a_span_with_the_database_conventions() -> TestResult {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let ctx = Ctx::new(Deployment::Standalone).await;
    let key = ctx.ns.key(["span"]);
    ctx.backend.call(Cmd::new("SET").key(&key).arg("v").arg("EX").arg(60)).await?;
    let seen = spans.opened.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let operation = |s: &SpanSeen| s.fields.get("db.operation.name").cloned().unwrap_or_default();
    let set: Vec<_> = seen.iter().filter(|s| operation(s) == "SET").collect();
    assert_eq!(set.len(), 1, "one span for the SET: {seen:?}");
    assert_eq!(set[0].name, "redis");
    assert_eq!(set[0].fields.get("db.system.name").map(String::as_str), Some("redis"));
    assert!(set[0].fields.get("server.address").is_some_and(|a| a.contains("127.0.0.1")), "{set:?}");

    // Concurrent session reads share batched MGETs: each batch's span follows from every
    // caller it served, and the MGET's span is inside the batch's.
    let store: SessionStore<u32> = SessionStore::new(ctx.backend.clone(), SessionConfig::default())?;
    let (token, _) = store.create("u1", 1, NewSession::default()).await?;
    let reads = (0..50).map(|i| {
        let (store, token) = (&store, token.as_str());
        tracing::Instrument::instrument(async move { store.get(token).await }, tracing::debug_span!("caller", i))
    });
    for read in futures_util::future::join_all(reads).await {
        assert!(read?.is_some());
    }
    let seen = spans.opened.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let follows = spans.follows.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let callers: Vec<usize> = seen.iter().filter(|s| s.name == "caller").map(|s| s.id).collect();
    let batches: Vec<&SpanSeen> = seen.iter().filter(|s| s.name == "redtail.batch").collect();
    assert_eq!(callers.len(), 50);
    for caller in &callers {
        assert!(
            follows.iter().any(|(batch, from)| from == caller && batches.iter().any(|b| b.id == *batch)),
            "caller span {caller} is linked from no batch"
        );
    }
    let mgets: Vec<&SpanSeen> = seen.iter().filter(|s| operation(s) == "MGET").collect();
    assert!(!mgets.is_empty(), "no MGET span: {seen:?}");
    for mget in mgets {
        assert!(batches.iter().any(|b| Some(b.id) == mget.parent), "an MGET span outside any batch: {mget:?}");
    }
    Ok(())
}
