//! Shared setup for redtail's suites: each suite is written once and run against every backend
//! (standalone, cluster, sentinel, in-memory) with [`for_each_backend!`], or against the real
//! deployments only with [`for_each_server!`].

use std::{sync::Arc, time::Duration};

use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Namespace};
pub use redtail_testkit::{Deployment, FaultProxy, MemoryBackend, TestRedis};

/// The error type of test bodies, so they can use `?`.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Where a suite runs: a real deployment, or the in-memory backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A real deployment of this kind.
    Server(Deployment),
    /// [`MemoryBackend`].
    Memory,
}

/// What a suite that runs on every backend works with: the backend and a namespace of its own.
#[derive(Debug)]
pub struct Env {
    /// The backend under test.
    pub backend: Arc<dyn Backend>,
    /// Keys of this test only.
    pub ns: Namespace,
    // Keeps the servers and the client alive for the test's duration.
    _servers: Option<Ctx>,
}

impl Env {
    /// A backend of `target`, with servers shared through the environment when set.
    pub async fn new(target: Target) -> Env {
        match target {
            Target::Server(kind) => {
                let ctx = Ctx::new(kind).await;
                Env { backend: Arc::clone(&ctx.backend), ns: ctx.ns.clone(), _servers: Some(ctx) }
            }
            Target::Memory => Env {
                // Every script run here is audited for keys it did not declare.
                backend: MemoryBackend::new().auditing_script_keys().into(),
                ns: Namespace::new("mem").unwrap_or_else(|e| panic!("{e}")),
                _servers: None,
            },
        }
    }
}

/// What one test works with: servers, a connected client, and a namespace of its own.
#[derive(Debug)]
pub struct Ctx {
    /// The servers; kept alive for the test's duration.
    pub servers: TestRedis,
    /// The client under test.
    pub redis: Redis,
    /// The same client behind the trait, as feature crates see it.
    pub backend: Arc<dyn Backend>,
    /// Keys of this test only.
    pub ns: Namespace,
}

impl Ctx {
    /// Servers of `kind` (shared through the environment when set) and a connected client.
    pub async fn new(kind: Deployment) -> Ctx {
        Self::with(TestRedis::shared_or_owned(kind), |c| c).await
    }

    /// Servers of `kind` owned by this test, so faults can be injected, and a client whose
    /// configuration `tune` adjusts.
    pub async fn owned(kind: Deployment, tune: impl FnOnce(Config) -> Config) -> Ctx {
        Self::with(TestRedis::owned(kind), tune).await
    }

    /// A persistent standalone server of its own (append-only file, fsync always), so that a
    /// restart keeps every acknowledged write, and a connected client.
    pub async fn persistent(tune: impl FnOnce(Config) -> Config) -> Ctx {
        Self::with(TestRedis::standalone_persistent(), tune).await
    }

    async fn with(servers: redtail_testkit::Result<TestRedis>, tune: impl FnOnce(Config) -> Config) -> Ctx {
        let servers = servers.unwrap_or_else(|e| panic!("cannot get test servers: {e}"));
        let config = Config::from_url(servers.url()).unwrap_or_else(|e| panic!("bad test URL {}: {e}", servers.url()));
        let config = tune(config.with_command_timeout(Duration::from_secs(2)));
        let redis = Redis::connect(config).await.unwrap_or_else(|e| panic!("cannot connect to {}: {e}", servers.url()));
        let ns = servers.namespace();
        Ctx { backend: redis.clone().into(), redis, ns, servers }
    }
}

/// A standalone server of its own (one named by `REDIS_URL` has no port of its own to proxy)
/// behind a [`FaultProxy`], and a client configuration that reaches it through the proxy.
pub async fn behind_proxy() -> (TestRedis, FaultProxy, Config) {
    let servers = TestRedis::owned(Deployment::Standalone).unwrap_or_else(|e| panic!("cannot get test servers: {e}"));
    let upstream = ([127, 0, 0, 1], servers.data_ports()[0]).into();
    let proxy = FaultProxy::start(upstream).await.unwrap_or_else(|e| panic!("cannot start the fault proxy: {e}"));
    let url = format!("redis://{}", proxy.addr());
    let config = Config::from_url(&url).unwrap_or_else(|e| panic!("bad proxy URL {url}: {e}"));
    (servers, proxy, config)
}

/// Runs each named `async fn(Target) -> TestResult` as a test on the standalone, cluster,
/// sentinel and in-memory backends.
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        $crate::for_each_backend!(@mod standalone $crate::Target::Server($crate::Deployment::Standalone), $($name),*);
        $crate::for_each_backend!(@mod cluster $crate::Target::Server($crate::Deployment::Cluster), $($name),*);
        $crate::for_each_backend!(@mod sentinel $crate::Target::Server($crate::Deployment::Sentinel), $($name),*);
        $crate::for_each_backend!(@mod memory $crate::Target::Memory, $($name),*);
    };
    (@mod $module:ident $target:expr, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> $crate::TestResult {
                    super::$name($target).await
                }
            )*
        }
    };
}

/// Runs each named `async fn(Deployment) -> TestResult` as a test on standalone, cluster and
/// sentinel deployments.
#[macro_export]
macro_rules! for_each_server {
    ($($name:ident),* $(,)?) => {
        $crate::for_each_server!(@mod standalone Standalone $($name),*);
        $crate::for_each_server!(@mod cluster Cluster $($name),*);
        $crate::for_each_server!(@mod sentinel Sentinel $($name),*);
    };
    (@mod $module:ident $kind:ident $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> $crate::TestResult {
                    super::$name($crate::Deployment::$kind).await
                }
            )*
        }
    };
}

/// A backend that counts the round trips made through it (one per method call: a pipeline or
/// a transaction is one), and that can be switched off to answer every call with a timeout, as
/// an unreachable Redis would.
#[derive(Debug)]
pub struct Counted {
    inner: Arc<dyn Backend>,
    calls: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
    scripts_down: std::sync::atomic::AtomicBool,
}

impl Counted {
    /// Counts the calls made to `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Counted> {
        Arc::new(Counted {
            inner,
            calls: Default::default(),
            down: Default::default(),
            scripts_down: Default::default(),
        })
    }

    /// Round trips so far.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// While `down`, every call fails with a timeout and reaches nothing.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// While `down`, scripts fail with a timeout and reach nothing; other calls go through.
    pub fn set_scripts_down(&self, down: bool) {
        self.scripts_down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn enter(&self) -> redtail_core::Result<()> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(redtail_core::Error::Timeout(Duration::ZERO));
        }
        Ok(())
    }
}

#[redtail_core::async_trait]
impl Backend for Counted {
    async fn call(&self, cmd: redtail_core::Cmd) -> redtail_core::Result<redtail_core::Value> {
        self.enter()?;
        self.inner.call(cmd).await
    }

    async fn pipeline(&self, cmds: Vec<redtail_core::Cmd>) -> redtail_core::Result<Vec<redtail_core::Value>> {
        self.enter()?;
        self.inner.pipeline(cmds).await
    }

    async fn transaction(&self, cmds: Vec<redtail_core::Cmd>) -> redtail_core::Result<Vec<redtail_core::Value>> {
        self.enter()?;
        self.inner.transaction(cmds).await
    }

    async fn transactions(
        &self,
        calls: Vec<Vec<redtail_core::Cmd>>,
    ) -> redtail_core::Result<Vec<redtail_core::Result<Vec<redtail_core::Value>>>> {
        self.enter()?;
        self.inner.transactions(calls).await
    }

    async fn eval(
        &self,
        script: &redtail_core::Script,
        keys: &[redtail_core::Key],
        args: Vec<redtail_core::Arg>,
    ) -> redtail_core::Result<redtail_core::Value> {
        self.enter()?;
        if self.scripts_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(redtail_core::Error::Timeout(Duration::ZERO));
        }
        self.inner.eval(script, keys, args).await
    }

    async fn scan(
        &self,
        cursor: redtail_core::Cursor,
        pattern: &redtail_core::Pattern,
        count: u32,
    ) -> redtail_core::Result<redtail_core::ScanPage> {
        self.enter()?;
        self.inner.scan(cursor, pattern, count).await
    }

    async fn publish(&self, channel: &str, message: bytes::Bytes) -> redtail_core::Result<u64> {
        self.enter()?;
        self.inner.publish(channel, message).await
    }

    async fn subscribe(&self, channels: &[&str]) -> redtail_core::Result<redtail_core::Subscription> {
        self.enter()?;
        self.inner.subscribe(channels).await
    }

    async fn track(&self, prefixes: &[&str]) -> redtail_core::Result<redtail_core::Subscription> {
        self.enter()?;
        self.inner.track(prefixes).await
    }

    async fn blocking(&self, cmd: redtail_core::Cmd) -> redtail_core::Result<redtail_core::Value> {
        self.enter()?;
        self.inner.blocking(cmd).await
    }

    fn is_cluster(&self) -> bool {
        self.inner.is_cluster()
    }

    fn command_timeout(&self) -> Option<Duration> {
        self.inner.command_timeout()
    }
}
