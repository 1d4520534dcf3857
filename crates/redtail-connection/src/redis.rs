//! `Redis`: the [`Backend`] on a real server, through fred.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use fred::{
    clients::{Client, ExclusivePool, Pool, SubscriberClient},
    interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface},
    prelude::{Builder, Server},
    types::{
        Value as FredValue,
        config::{ConnectionConfig, Options, PerformanceConfig, ReconnectError, ReconnectPolicy},
    },
};
use futures_util::FutureExt;
use redtail_core::{
    Arg, Backend, Bytes, Cmd, Cursor, Error, Feed, Key, Message, Pattern, Result, ScanPage, Script, Subscription,
    Value, async_trait, metrics, same_slot,
};
use tokio::sync::{Notify, OnceCell};
use tracing::Instrument;

use crate::{Config, ReplicaAcks, convert};

/// A Redis deployment (standalone, cluster or sentinel) behind the [`Backend`] trait.
///
/// Cheap to clone; clones share connections. Build one per process with [`Redis::connect`].
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    pool: Pool,
    blocking: ExclusivePool,
    // Connections held for a whole MULTI/EXEC exchange, or for a write and its `WAIT`.
    exclusive: ExclusivePool,
    pubsub: OnceCell<PubSub>,
    /// Clients whose connection is being probed after a timeout (by fred client id).
    probing: Mutex<std::collections::HashSet<String>>,
    /// Set on shutdown; key tracking clients quit when it is.
    stopping: tokio::sync::watch::Sender<bool>,
    closing: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    builder: Builder,
    /// The metrics of every call (nothing without the `metrics` feature): handles kept per
    /// operation, since a call is too short to look its series up in the recorder each time.
    meters: Meters,
}

/// See [`Inner::meters`].
struct Meters {
    /// By operation and outcome.
    calls: metrics::CounterFamily<(&'static str, &'static str)>,
    /// By operation.
    durations: metrics::HistogramFamily<&'static str>,
    in_flight: metrics::Gauge,
}

impl Meters {
    fn new() -> Meters {
        Meters {
            calls: metrics::CounterFamily::new("redtail_redis_commands_total", |(operation, outcome)| {
                vec![("operation", (*operation).to_owned()), ("outcome", (*outcome).to_owned())]
            }),
            durations: metrics::HistogramFamily::new("redtail_redis_command_duration_seconds", |operation| {
                vec![("operation", (*operation).to_owned())]
            }),
            in_flight: metrics::Gauge::new(IN_FLIGHT, &[]),
        }
    }
}

/// A client to write on: see [`Redis::writer`].
enum Writer<'a> {
    Shared(&'a Client),
    Held(tokio::sync::OwnedMutexGuard<Client>),
}

impl std::ops::Deref for Writer<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        match self {
            Writer::Shared(client) => client,
            Writer::Held(client) => client,
        }
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("target", &self.inner.config.target()).finish_non_exhaustive()
    }
}

impl Redis {
    /// Sends `cmds` in `MULTI`/`EXEC` to the node owning `slot`: one write, one round trip.
    async fn exec(&self, slot: Option<u16>, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        let _guard = self.enter()?;
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        // MULTI/EXEC is sent by hand on a connection held for the whole exchange: nothing else
        // can slip between MULTI and EXEC, and the raw EXEC reply keeps per-command errors,
        // which fred's own transactions turn into one error for the whole call.
        let held = self.inner.exclusive.acquire().await;
        let hash = slot.map_or(fred::types::ClusterHash::Random, fred::types::ClusterHash::Custom);
        // Sent once: a transaction written again after a dropped connection could apply twice.
        let options = Options { max_attempts: Some(1), cluster_hash: Some(hash), ..Options::default() };
        let client = held.with_options(&options);
        let n_cmds = cmds.len();
        // All requests are queued in order before any reply is awaited: one round trip. Each
        // future hands its command to fred's router on its first poll, and join_all polls them
        // in order. The commands between MULTI and EXEC go as `convert::queued` says, so that
        // fred writes them together.
        let exchange = std::iter::once(
            client.custom_raw(convert::bare("MULTI"), Vec::<FredValue>::new()).map(|r| r.map(|_| ())).boxed(),
        )
        .chain(cmds.into_iter().map(|cmd| convert::queued(&client, cmd).map(|r| r.map(|_| ())).boxed()))
        .collect::<Vec<_>>();
        let (queued, exec) = futures_util::future::join(
            futures_util::future::join_all(exchange),
            client.custom_raw(convert::bare("EXEC"), Vec::<FredValue>::new()),
        )
        .await;
        // MULTI's reply, then one QUEUED per command: an error here (a syntax error) means the
        // server discarded the transaction and nothing was applied.
        debug_assert_eq!(queued.len(), n_cmds + 1);
        for reply in queued {
            reply.map_err(|e| self.failed_on(&held, self.error(e)))?;
        }
        match convert::frame(exec.map_err(|e| self.failed_on(&held, self.error(e)))?) {
            Value::Array(replies) => {
                self.confirm(&held, &[slot.unwrap_or(0)]).await?;
                Ok(replies)
            }
            Value::Error(e) => Err(Error::Server(e)),
            other => Err(Error::UnexpectedReply { expected: "the EXEC array", got: other.describe() }),
        }
    }

    /// The client a write goes on: any of the shared pool, or, with replica acknowledgements,
    /// a connection held for the write and its `WAIT`. The server holds a connection's later
    /// commands behind a `WAIT`, so on a shared connection one `WAIT` that waits out its timeout
    /// (the replica is away) would stall every other caller's commands behind it, one timeout
    /// after another.
    async fn writer(&self) -> Writer<'_> {
        match self.inner.config.replica_acks {
            None => Writer::Shared(self.inner.pool.next()),
            Some(_) => Writer::Held(self.inner.exclusive.acquire().await),
        }
    }

    /// After a write on `client` succeeded, when the configuration asks for replica
    /// acknowledgements: `WAIT`s for it on the same connection, on the node of each of `slots`.
    /// `WAIT` counts the replicas holding everything the connection wrote so far, this write
    /// included. It follows the write's reply rather than riding in its round trip, so that a
    /// refused write (`NOREPLICAS` while the replica is away) waits for nothing.
    async fn confirm(&self, client: &Client, slots: &[u16]) -> Result<()> {
        let Some(acks) = self.inner.config.replica_acks else {
            return Ok(());
        };
        let waits = slots.iter().map(|slot| self.wait_replicas(client, *slot, acks));
        futures_util::future::join_all(waits).await.into_iter().collect()
    }

    /// `WAIT` on `client`'s connection to the node of `slot`.
    async fn wait_replicas(&self, client: &Client, slot: u16, acks: ReplicaAcks) -> Result<()> {
        let millis = u64::try_from(acks.timeout.as_millis()).unwrap_or(u64::MAX);
        let options = Options {
            // Sent once: written again on a new connection, `WAIT` would find nothing written
            // there and answer at once (as it does if the connection is replaced in the
            // microseconds between the write's reply and the `WAIT`).
            max_attempts: Some(1),
            timeout: Some(acks.timeout.saturating_add(self.timeout())),
            cluster_hash: Some(fred::types::ClusterHash::Custom(slot)),
            ..Options::default()
        };
        let reply = self.send_on(client, Cmd::new("WAIT").arg(acks.replicas).arg(millis), &options).await?;
        let acked = u64::try_from(reply.as_int()?).unwrap_or(0);
        if acked >= u64::from(acks.replicas) {
            Ok(())
        } else {
            Err(Error::NotReplicated { acked, wanted: acks.replicas, waited: acks.timeout })
        }
    }

    /// Connects and waits until the server answers, within the connect timeout.
    ///
    /// A malformed configuration, a wrong password, or a server that cannot be reached each give
    /// one [`Error::Connect`](crate::Error::Connect) naming the problem; `connect` never retries
    /// past its timeout.
    pub async fn connect(config: Config) -> crate::Result<Redis> {
        let redis = Redis::new(config)?;
        redis.ready().await?;
        Ok(redis)
    }

    /// Builds the client and connects in the background; commands wait for the connection.
    /// Must be called within a Tokio runtime. A setting out of range (see [`Config`]'s methods)
    /// is [`Error::Config`](crate::Error::Config), naming it.
    pub fn new(config: Config) -> crate::Result<Redis> {
        config.check()?;
        let builder = builder(&config);
        let to_config_error = |e: fred::error::Error| crate::Error::Config(format!("cannot build redis client: {e}"));
        let pool = builder.build_pool(config.pool_size).map_err(to_config_error)?;
        let blocking = builder.build_exclusive_pool(config.blocking_connections).map_err(to_config_error)?;
        // With replica acknowledgements every write holds one of these for its `WAIT`.
        let held = if config.replica_acks.is_some() { config.pool_size.max(8) } else { config.pool_size };
        let exclusive = builder.build_exclusive_pool(held).map_err(to_config_error)?;
        for (pool, size) in
            [("commands", config.pool_size), ("transactions", held), ("blocking", config.blocking_connections)]
        {
            metrics::gauge("redtail_redis_pool_connections", || vec![("pool", pool.to_owned())], size as f64);
        }
        // Exported at zero from the start, so that an alert on its rate works before the first.
        metrics::count(REPLACED, Vec::new, 0);
        for client in pool.clients() {
            log_events(client, config.reconnect);
        }
        let mut everyone = pool.clients().to_vec();
        for held in [&blocking, &exclusive] {
            // Fresh pools: nothing holds their clients yet.
            everyone.extend(held.clients().iter().filter_map(|c| c.try_lock().ok().map(|c| c.clone())));
        }
        if config.is_cluster() {
            share_cluster_changes(everyone.clone());
        }
        let stopping = tokio::sync::watch::Sender::new(false);
        for client in everyone {
            supervise(client, config.reconnect, stopping.subscribe());
        }
        Ok(Redis {
            inner: Arc::new(Inner {
                config,
                pool,
                blocking,
                exclusive,
                pubsub: OnceCell::new(),
                probing: Mutex::default(),
                stopping,
                closing: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                builder,
                meters: Meters::new(),
            }),
        })
    }

    /// Waits until every pooled connection is up, or fails with the reason it is not.
    pub async fn ready(&self) -> crate::Result<()> {
        let config = &self.inner.config;
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        for client in self.inner.pool.clients() {
            let mut errors = client.error_rx();
            loop {
                if client.is_connected() {
                    break;
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(crate::Error::Connect {
                        target: config.target().to_owned(),
                        reason: format!(
                            "no connection within {:?}; check that the server runs and the address is right",
                            config.connect_timeout
                        ),
                        source: None,
                    });
                }
                // fred may announce the connection between its state check and our subscription to
                // the announcement, so the state is looked at again every 50 ms.
                let step = (deadline - now).min(Duration::from_millis(50));
                let wait = tokio::time::timeout(step, async {
                    tokio::select! {
                        r = client.wait_for_connect() => r,
                        e = errors.recv() => match e {
                            Ok((e, _)) => Err(e),
                            Err(_) => Ok(()),
                        },
                    }
                });
                if let Ok(Err(e)) = wait.await {
                    return Err(connect_error(config, e));
                }
            }
        }
        // A PING proves the connection is usable (authenticated, not loading).
        self.call(Cmd::new("PING")).await.map_err(|e| crate::Error::Connect {
            target: config.target().to_owned(),
            reason: format!("the server does not answer PING: {e}"),
            source: Some(e),
        })?;
        Ok(())
    }

    /// The configuration this backend was built from.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// How many pooled connections are up, out of how many.
    pub fn pool_state(&self) -> (usize, usize) {
        let clients = self.inner.pool.clients();
        (clients.iter().filter(|c| c.is_connected()).count(), clients.len())
    }

    pub(crate) fn health_client(&self) -> &fred::clients::Client {
        self.inner.pool.next()
    }

    /// Stops taking new commands, waits up to `deadline` for those in flight, then closes every
    /// connection. Commands issued after the call fail with [`Error::ShuttingDown`].
    pub async fn shutdown(&self, deadline: Duration) {
        let inner = &self.inner;
        if inner.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        let drained = tokio::time::timeout(deadline, async {
            loop {
                let idle = inner.idle.notified();
                if inner.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = inner.in_flight.load(Ordering::SeqCst),
                "redis shutdown deadline passed with commands in flight; closing anyway"
            );
        }
        if let Some(pubsub) = inner.pubsub.get() {
            let _ = pubsub.client.quit().await;
        }
        inner.stopping.send_replace(true);
        let _ = inner.pool.quit().await;
        let _ = inner.blocking.quit().await;
        let _ = inner.exclusive.quit().await;
        tracing::info!(target = inner.config.target(), "redis connections closed");
    }

    fn enter(&self) -> Result<InFlight<'_>> {
        let inner = &self.inner;
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.meters.in_flight.set(now as f64);
        let guard = InFlight(inner);
        if inner.closing.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        Ok(guard)
    }

    fn timeout(&self) -> Duration {
        self.inner.config.command_timeout
    }

    fn error(&self, e: fred::error::Error) -> Error {
        convert::error(e, self.timeout())
    }

    async fn send(&self, cmd: Cmd, options: &Options) -> Result<Value> {
        self.send_on(self.inner.pool.next(), cmd, options).await
    }

    /// [`Redis::send`] on one chosen client of the pool.
    async fn send_on(&self, client: &Client, cmd: Cmd, options: &Options) -> Result<Value> {
        let (command, args) = convert::command(cmd, false);
        // Replies come as raw frames (`raw`), converted once to core values.
        // A redirection comes back as an error (see `builder`): the command did not run, so on
        // a cluster it is sent once more, which after a `MOVED` reaches the new owner (fred
        // updated its slot table before handing the redirection back). A second `ASK` fails it.
        let reply = if self.is_cluster() {
            match raw(client, options, command.clone(), args.clone()).await {
                Err(e) if convert::is_redirection(&e) => raw(client, options, command, args).await,
                other => other,
            }
        } else {
            raw(client, options, command, args).await
        };
        match reply.map(convert::frame) {
            Ok(Value::Error(e)) => Err(Error::Server(e)),
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed_on(client, self.error(e))),
        }
    }

    /// `error`, which a request on `client` failed with. A timeout makes the connection
    /// suspect: if a `PING` on it does not come back within the command timeout either, it is
    /// taken for dead and replaced. A half-open connection (a dead route, a dropped NAT entry, a
    /// stalled peer) is otherwise kept until the operating system notices, which takes minutes,
    /// and every request on it times out meanwhile; fred's own unresponsive check misses it as
    /// long as requests keep coming, since each write restarts its clock.
    fn failed_on(&self, client: &Client, error: Error) -> Error {
        if matches!(error, Error::Timeout(_)) {
            self.probe_connection(client);
        }
        error
    }

    /// Runs one backend operation in a `tracing` span named after OpenTelemetry's database
    /// conventions (`db.system.name`, `db.operation.name`: the command or script, `server.address`:
    /// the configured target), and, with the `metrics` feature, counts it by outcome and times
    /// it. Both labels come from bounded sets (command and script names).
    fn measured<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T>>,
    ) -> impl Future<Output = Result<T>> {
        let span = tracing::debug_span!(
            "redis",
            db.system.name = "redis",
            db.operation.name = operation,
            server.address = self.inner.config.target(),
        );
        // Combinators rather than an async fn: the future stays the size of `work` and a span.
        let started = metrics::ENABLED.then(std::time::Instant::now);
        let meters = &self.inner.meters;
        work.instrument(span).map(move |result| {
            if let Some(started) = started {
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(Error::Timeout(_)) => "timeout",
                    Err(e) if e.is_unavailable() => "unavailable",
                    Err(_) => "error",
                };
                meters.calls.add(&(operation, outcome), 1);
                meters.durations.record(&operation, started.elapsed());
            }
            result
        })
    }

    /// Pings `client` once (at most one probe per client at a time); forces a reconnect if the
    /// ping times out too.
    fn probe_connection(&self, client: &Client) {
        let id = client.id().to_owned();
        if !self.inner.probing.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone()) {
            return;
        }
        let (client, inner, timeout) = (client.clone(), Arc::clone(&self.inner), self.timeout());
        tokio::spawn(async move {
            let once = Options { timeout: Some(timeout), max_attempts: Some(1), ..Options::default() };
            let ping: std::result::Result<(), _> = client.with_options(&once).ping(None).await;
            if let Err(e) = ping
                && *e.kind() == fred::error::ErrorKind::Timeout
            {
                tracing::warn!(client = %id, ?timeout, "redis connection answers nothing, not even PING: replacing it");
                metrics::count(REPLACED, Vec::new, 1);
                let _ = client.force_reconnection().await;
            }
            inner.probing.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }

    async fn pubsub(&self) -> Result<&PubSub> {
        self.inner
            .pubsub
            .get_or_try_init(|| async {
                let client = listener(&self.inner.builder).build_subscriber_client().map_err(|e| self.error(e))?;
                log_events(&client, self.inner.config.reconnect);
                client.init().await.map_err(|e| self.error(e))?;
                // PubSub::start resubscribes every tracked channel after a reconnect.
                Ok(PubSub::start(client, self.timeout(), self.inner.stopping.subscribe()))
            })
            .await
    }

    async fn primaries(&self) -> Result<Vec<Option<Server>>> {
        let client = self.inner.pool.next();
        if !client.is_clustered() {
            return Ok(vec![None]);
        }
        let state = match client.cached_cluster_state() {
            Some(state) => state,
            None => {
                client.sync_cluster().await.map_err(|e| self.error(e))?;
                client
                    .cached_cluster_state()
                    .ok_or_else(|| Error::Backend { source: "the cluster routing table is not known yet".into() })?
            }
        };
        let mut nodes = state.unique_primary_nodes();
        nodes.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        Ok(nodes.into_iter().map(Some).collect())
    }
}

/// Counts a command in flight until dropped, so that shutdown can wait for it.
struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let left = self.0.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.meters.in_flight.set(left as f64);
        if left == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

/// fred's future for one command on `client`, boxed: fred's command futures are about 7 KB
/// (`futures_around_fred_stay_small` below), and boxed once here they are not copied again as
/// the futures around them are built.
fn raw<'a>(
    client: &'a Client,
    options: &'a Options,
    command: fred::types::CustomCommand,
    args: Vec<FredValue>,
) -> futures_util::future::BoxFuture<'a, std::result::Result<fred::prelude::Resp3Frame, fred::error::Error>> {
    if *options == Options::default() {
        // The common case skips fred's per-call options wrapper.
        Box::pin(client.custom_raw(command, args))
    } else {
        Box::pin(async move { client.with_options(options).custom_raw(command, args).await })
    }
}

/// The counter of connections found silent and replaced, or whose connection task ended and
/// was started again (see `supervise`).
const REPLACED: &str = "redtail_redis_connections_replaced_total";

/// The gauge of backend calls under way: with `redtail_redis_pool_connections`, how busy the
/// pool is.
const IN_FLIGHT: &str = "redtail_redis_calls_in_flight";

/// A `Redis` where a crate asks for a backend: `SessionStore::new(redis.clone(), config)`.
impl From<Redis> for Arc<dyn Backend> {
    fn from(redis: Redis) -> Self {
        Arc::new(redis)
    }
}

#[async_trait]
impl Backend for Redis {
    async fn call(&self, cmd: Cmd) -> Result<Value> {
        self.measured(cmd.name(), async move {
            cmd.check_callable()?;
            let _guard = self.enter()?;
            if self.inner.config.replica_acks.is_none() || convert::is_read(cmd.name()) {
                return self.send(cmd, &Options::default()).await;
            }
            let client = self.writer().await;
            let slot = cmd.slot().unwrap_or(0);
            let value = self.send_on(&client, cmd, &Options::default()).await?;
            self.confirm(&client, &[slot]).await?;
            Ok(value)
        })
        .await
    }

    async fn pipeline(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        self.measured("PIPELINE", async move {
            let _guard = self.enter()?;
            // With replica acknowledgements: the slot of each write, to wait on if it succeeds.
            let writes: Vec<Option<u16>> = match self.inner.config.replica_acks {
                Some(_) => cmds.iter().map(|c| (!convert::is_read(c.name())).then(|| c.slot().unwrap_or(0))).collect(),
                None => Vec::new(),
            };
            // A pipeline of reads only needs no connection of its own.
            let client = if writes.iter().any(Option::is_some) {
                self.writer().await
            } else {
                Writer::Shared(self.inner.pool.next())
            };
            let pipeline = client.pipeline();
            for cmd in cmds {
                let (command, args) = convert::command(cmd, false);
                let _: () = Box::pin(pipeline.custom(command, args)).await.map_err(|e| self.error(e))?;
            }
            let timeout = self.timeout();
            let replies: Vec<Result<Value>> = Box::pin(pipeline.try_all::<FredValue>())
                .await
                .into_iter()
                .map(|r| convert::reply(r, timeout))
                .collect();
            if replies.iter().any(|r| matches!(r, Err(Error::Timeout(_)))) {
                self.probe_connection(&client);
            }
            let mut landed: Vec<u16> = writes
                .iter()
                .zip(&replies)
                .filter_map(|(slot, reply)| slot.filter(|_| matches!(reply, Ok(v) if !matches!(v, Value::Error(_)))))
                .collect();
            landed.sort_unstable();
            landed.dedup();
            self.confirm(&client, &landed).await?;
            replies.into_iter().collect()
        })
        .await
    }

    async fn transaction(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        self.measured("MULTI", async move {
            let slot = same_slot("transaction", cmds.iter().flat_map(Cmd::slots))?;
            self.exec(slot, cmds).await
        })
        .await
    }

    async fn transactions(&self, calls: Vec<Vec<Cmd>>) -> Result<Vec<Result<Vec<Value>>>> {
        self.measured("MULTI", async move {
            let mut slot = None;
            for call in &calls {
                let call_slot = same_slot("transaction", call.iter().flat_map(Cmd::slots))?;
                if self.is_cluster() {
                    slot = same_slot("transaction", slot.into_iter().chain(call_slot))?;
                }
            }
            // One MULTI/EXEC for all: each call runs whole, with no other client's command between
            // its commands (nor between theirs), and the server pays MULTI and EXEC once.
            let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
            let total = sizes.iter().sum::<usize>();
            let replies = self
                .exec(
                    slot.or_else(|| calls.iter().flatten().find_map(Cmd::slot)),
                    calls.into_iter().flatten().collect(),
                )
                .await?;
            if replies.len() != total {
                let got = format!("{} replies for {total} commands", replies.len());
                return Err(Error::UnexpectedReply { expected: "one EXEC reply per command", got });
            }
            let mut replies = replies.into_iter();
            Ok(sizes.into_iter().map(|size| Ok(replies.by_ref().take(size).collect())).collect())
        })
        .await
    }

    async fn eval(&self, script: &Script, keys: &[Key], args: Vec<Arg>) -> Result<Value> {
        self.measured(script.name(), async move {
            // Keyless scripts still need one node to load into and run on: slot 0.
            let slot = script.slot(keys, self.is_cluster())?.unwrap_or(0);
            let _guard = self.enter()?;
            // Written at most once: if the connection drops after the write, the script may have run,
            // and running it again could count a rate-limit hit twice.
            let once = Options { max_attempts: Some(1), ..Options::default() };
            let evalsha = || {
                let mut cmd = Cmd::new("EVALSHA").arg(script.sha()).arg(keys.len());
                for key in keys {
                    cmd = cmd.key(key);
                }
                cmd.args(args.iter().cloned())
            };
            // One client for the script, its loading and its `WAIT`: the `SCRIPT LOAD` then goes
            // where that client sends the `EVALSHA`. (Two clients can disagree about who owns a
            // slot after a failover, and a keyless `SCRIPT LOAD` is never redirected: loading
            // through another client could load it on the old primary forever.)
            let client = self.writer().await;
            let mut loads = 0;
            let value = loop {
                match self.send_on(&client, evalsha(), &once).await {
                    // Loaded at most twice: a second NOSCRIPT means the slot moved in between.
                    Err(e) if e.is_server_code("NOSCRIPT") && loads < 2 => {
                        tracing::debug!(script = script.name(), "script not cached on the server; loading it");
                        loads += 1;
                        let load = Cmd::new("SCRIPT").arg("LOAD").arg(script.source());
                        let on_slot = Options {
                            cluster_hash: Some(fred::types::ClusterHash::Custom(slot)),
                            ..Options::default()
                        };
                        let loaded = self.send_on(&client, load, &on_slot).await?.into_string()?;
                        if loaded != script.sha() {
                            return Err(Error::UnexpectedReply { expected: "the script's SHA-1", got: loaded });
                        }
                    }
                    other => break other?,
                }
            };
            self.confirm(&client, &[slot]).await?;
            Ok(value)
        })
        .await
    }

    async fn scan(&self, cursor: Cursor, pattern: &Pattern, count: u32) -> Result<ScanPage> {
        self.measured("SCAN", async move {
            let _guard = self.enter()?;
            let primaries = self.primaries().await?;
            let Some(node) = primaries.get(cursor.shard as usize) else {
                return Ok(ScanPage { keys: Vec::new(), next: None });
            };
            let options = Options { cluster_node: node.clone(), ..Options::default() };
            let cmd = Cmd::new("SCAN")
                .arg(cursor.position)
                .arg("MATCH")
                .arg(pattern.as_bytes())
                .arg("COUNT")
                .arg(count.max(1));
            let reply = self.send(cmd, &options).await?.into_array()?;
            let mut reply = reply.into_iter();
            let (Some(position), Some(keys)) = (reply.next(), reply.next()) else {
                return Err(Error::UnexpectedReply { expected: "a SCAN reply", got: "a short array".to_owned() });
            };
            let position: u64 = position
                .into_string()?
                .parse()
                .map_err(|_| Error::UnexpectedReply { expected: "a numeric SCAN cursor", got: "text".to_owned() })?;
            let keys =
                keys.into_array()?.into_iter().map(|k| k.into_bytes().map(Key::from_raw)).collect::<Result<_>>()?;
            let next = if position != 0 {
                Some(Cursor { shard: cursor.shard, position })
            } else if (cursor.shard as usize) + 1 < primaries.len() {
                Some(Cursor { shard: cursor.shard + 1, position: 0 })
            } else {
                None
            };
            Ok(ScanPage { keys, next })
        })
        .await
    }

    async fn publish(&self, channel: &str, message: Bytes) -> Result<u64> {
        self.measured("PUBLISH", async move {
            let _guard = self.enter()?;
            let receivers = self.send(Cmd::new("PUBLISH").arg(channel).arg(message), &Options::default()).await?;
            Ok(u64::try_from(receivers.as_int()?).unwrap_or(0))
        })
        .await
    }

    async fn subscribe(&self, channels: &[&str]) -> Result<Subscription> {
        if channels.is_empty() {
            return Err(Error::InvalidInput("subscribe needs at least one channel".to_owned()));
        }
        let _guard = self.enter()?;
        let pubsub = self.pubsub().await?;
        pubsub.subscribe(channels, self.timeout()).await
    }

    async fn track(&self, prefixes: &[&str]) -> Result<Subscription> {
        let _guard = self.enter()?;
        crate::tracking::track(
            &listener(&self.inner.builder),
            prefixes,
            self.timeout(),
            self.inner.stopping.subscribe(),
        )
        .await
    }

    async fn blocking(&self, cmd: Cmd) -> Result<Value> {
        self.measured(cmd.name(), async move {
            let block = cmd.block_duration()?;
            let _guard = self.enter()?;
            let timeout = block + self.timeout();
            let client = self.inner.blocking.acquire().await;
            let (command, args) = convert::command(cmd, true);
            let options = Options { timeout: Some(timeout), max_attempts: Some(1), ..Options::default() };
            let reply = Box::pin(client.with_options(&options).custom::<FredValue, _>(command, args)).await;
            reply.map(convert::value).map_err(|e| self.failed_on(&client, convert::error(e, timeout)))
        })
        .await
    }

    fn is_cluster(&self) -> bool {
        self.inner.pool.next().is_clustered()
    }

    fn command_timeout(&self) -> Option<Duration> {
        Some(self.timeout())
    }
}

/// The settings of a client that receives messages (pub/sub, key tracking): fred hands them on
/// through a broadcast channel of 32 by default, which a burst of writes overflows, and each
/// overflow is a gap that empties the cache's local tiers (`redtail-bench cache-tiers`, 10 %
/// writes: 0.51 of reads hit a pub/sub tier with 32, 0.94 with 1,024, as a tracked one does).
/// 1,024 can still overflow when the receiving task waits for a core through a burst: one CI
/// run saw a tier emptied by a burst of 2,000 writes on a cluster under the full suite (the
/// cause is not established: an overflow, or a listener's reconnect; this removes the first).
/// The channel's slots are allocated up front, a few hundred bytes each.
const LISTENER_BUFFER: usize = 8_192;

/// Messages a pub/sub subscription holds before its reader takes them (allocated as they come).
const SUBSCRIPTION_BUFFER: usize = 16_384;

/// `builder` for a client that receives messages, with a channel of [`LISTENER_BUFFER`].
fn listener(builder: &Builder) -> Builder {
    let mut listener = builder.clone();
    listener.set_performance_config(PerformanceConfig {
        broadcast_channel_capacity: LISTENER_BUFFER,
        ..builder.get_performance_config().clone()
    });
    listener
}

/// Pings each connection of `client` (every primary of a cluster); one that does not answer
/// within `timeout` makes the client reconnect.
pub(crate) async fn ping_or_reconnect<C: ClientLike>(client: &C, timeout: Duration) {
    let once = Options { timeout: Some(timeout), max_attempts: Some(1), ..Options::default() };
    let servers: Vec<Option<Server>> =
        if client.is_clustered() { client.active_connections().into_iter().map(Some).collect() } else { vec![None] };
    for server in servers {
        let options = Options { cluster_node: server.clone(), ..once.clone() };
        let ping: std::result::Result<FredValue, _> = client.with_options(&options).ping(None).await;
        if let Err(e) = ping
            && *e.kind() == fred::error::ErrorKind::Timeout
        {
            tracing::warn!(?server, ?timeout, "redis listening connection answers no PING: reconnecting");
            let _ = client.force_reconnection().await;
            return;
        }
    }
}

/// fred's client settings from ours.
fn builder(config: &Config) -> Builder {
    let mut builder = Builder::from_config(config.fred.clone());
    builder.set_policy(reconnect_policy(config.reconnect));
    builder.set_performance_config(PerformanceConfig {
        default_command_timeout: config.command_timeout,
        ..PerformanceConfig::default()
    });
    builder.set_connection_config(ConnectionConfig {
        connection_timeout: config.connect_timeout.min(Duration::from_secs(5)),
        internal_command_timeout: config.command_timeout,
        max_command_attempts: config.max_command_attempts,
        // Redirections are handed back rather than followed (`Redis::send_on` sends a redirected
        // command once more). fred 10.1 follows an `ASK` by writing `ASKING` and taking the next
        // reply on that connection as its answer: with other requests in flight there, that
        // reply was one of theirs, and every later reply on the connection went to the wrong
        // caller (a `SCRIPT LOAD` answered `OK`, tests/tests/migration.rs). On `MOVED` fred
        // updates its slot table before handing it back (and every client then updates its own,
        // see `share_cluster_changes`). docs/compatibility.md, "A slot that migrates".
        max_redirections: 0,
        // A primary demoted in a failover answers READONLY: reconnect to find the new one.
        reconnect_errors: vec![
            ReconnectError::ReadOnly,
            ReconnectError::ClusterDown,
            ReconnectError::Loading,
            ReconnectError::MasterDown,
        ],
        ..ConnectionConfig::default()
    });
    builder
}

/// fred's policy for our backoff. fred never reconnects without a policy; 0 attempts means forever.
fn reconnect_policy(backoff: crate::Backoff) -> ReconnectPolicy {
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    ReconnectPolicy::Linear {
        attempts: 0,
        max_attempts: 0,
        max_delay: millis(backoff.max),
        delay: millis(backoff.step),
        jitter: 0,
    }
}

/// Runs `client`'s connection task, and starts it again whenever it ends before the backend
/// stops (`stopping` set, or dropped with the backend). fred 10.1 ends that task for good on an
/// error its router cannot hand to a caller, and every later request on the client then waits
/// out its timeout, forever. Found by `tests/tests/migration.rs`: an `ASK` for a command with no
/// write attempt left (a script call, written at most once) did it, before redirections were
/// handed back (see `builder`); this keeps a client alive whatever else does it.
fn supervise(client: Client, backoff: crate::Backoff, mut stopping: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let ended = client.connect().await;
            // `Redis::shutdown` sets `stopping` before it quits the clients.
            if *stopping.borrow_and_update() || stopping.has_changed().is_err() {
                break;
            }
            // Any other end, even a clean one (fred ends the task without an error on an
            // internal cancellation too), leaves the client without a router: start it again.
            let error = match ended {
                Ok(Ok(())) => "ended without an error".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(client = client.id(), %error, "redis client's connection task ended; starting it again");
            metrics::count(REPLACED, Vec::new, 1);
            tokio::time::sleep(backoff.step).await;
        }
    });
}

/// On a cluster, every client learns a new slot table as soon as one of them does. Each fred
/// client keeps its own table and updates it on its own `MOVED`, which costs that request a
/// second send (`Redis::send_on`); without this, each client held for scripts met its own
/// `MOVED` after a failover or a reshard, one by one as load reached them (before redirections
/// were sent again, each such script call failed: docs/compatibility.md).
fn share_cluster_changes(clients: Vec<Client>) {
    let clients = Arc::new(clients);
    // One round of updates at a time: the updates themselves change the others' tables.
    let updating = Arc::new(AtomicBool::new(false));
    for client in clients.iter() {
        let (clients, updating) = (Arc::clone(&clients), Arc::clone(&updating));
        drop(client.on_cluster_change(move |changes| {
            let (clients, updating) = (Arc::clone(&clients), Arc::clone(&updating));
            async move {
                if !updating.swap(true, Ordering::AcqRel) {
                    tracing::info!(?changes, "cluster slot table changed; updating every client's");
                    for client in clients.iter() {
                        if let Err(e) = client.sync_cluster().await {
                            tracing::debug!(client = client.id(), error = %e, "cannot update a client's slot table");
                        }
                    }
                    updating.store(false, Ordering::Release);
                }
                Ok(())
            }
        }));
    }
}

/// Logs connection events of `client` with `tracing`.
fn log_events<C: EventInterface + ClientLike>(client: &C, backoff: crate::Backoff) {
    let attempts = Arc::new(AtomicU64::new(0));
    let on_error = Arc::clone(&attempts);
    drop(client.on_error(move |(error, server)| {
        let attempt = on_error.fetch_add(1, Ordering::Relaxed) + 1;
        let delay = backoff.delay(u32::try_from(attempt).unwrap_or(u32::MAX));
        let server = server.map(|s| s.to_string()).unwrap_or_default();
        tracing::warn!(%server, %error, attempt, delay_ms = delay.as_millis() as u64, "redis connection error; reconnecting");
        async { Ok(()) }
    }));
    drop(client.on_reconnect(move |server| {
        let attempts = attempts.swap(0, Ordering::Relaxed);
        tracing::info!(%server, after_errors = attempts, "redis connected");
        metrics::count("redtail_redis_reconnects_total", Vec::new, 1);
        async { Ok(()) }
    }));
}

/// The error for a failed first connection, naming the likely cause.
fn connect_error(config: &Config, e: fred::error::Error) -> crate::Error {
    let details = e.details().to_owned();
    let reason = match e.kind() {
        fred::error::ErrorKind::Auth => format!("authentication failed ({details}); check the username and password"),
        fred::error::ErrorKind::IO => format!("{details}; check that the server runs and the address is right"),
        _ => details,
    };
    crate::Error::Connect {
        target: config.target().to_owned(),
        reason,
        source: Some(convert::error(e, config.connect_timeout)),
    }
}

/// The feeds of each channel's subscriptions, by subscription id.
type Routes = Arc<Mutex<HashMap<String, Vec<(u64, Feed)>>>>;

/// The subscriber connection and the routing of its messages to [`Subscription`]s.
struct PubSub {
    client: SubscriberClient,
    routes: Routes,
    next_id: AtomicU64,
}

impl PubSub {
    fn start(client: SubscriberClient, timeout: Duration, mut stopping: tokio::sync::watch::Receiver<bool>) -> PubSub {
        // A subscribed connection sends nothing: one that stalls (half-open) would go unnoticed
        // while messages silently stop. Pinged every second, it is replaced when it does not
        // answer, which reports gaps and subscribes anew.
        let pinged = client.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => ping_or_reconnect(&pinged, timeout).await,
                    _ = async { stopping.wait_for(|stop| *stop).await.is_ok() } => break,
                }
            }
        });
        let routes: Routes = Arc::default();
        // Messages published while the connection was down are lost: every subscription is told
        // at once, and again once the channels are subscribed anew, since what a subscriber
        // did between the two (a cache refilling from Redis) may rest on messages it never got.
        let reconnect_routes = Arc::clone(&routes);
        let resubscriber = client.clone();
        drop(client.on_reconnect(move |_| {
            gap(&reconnect_routes);
            let (routes, client) = (Arc::clone(&reconnect_routes), resubscriber.clone());
            async move {
                if let Err(e) = client.resubscribe_all().await {
                    tracing::warn!(error = %e, "pub/sub: could not subscribe again after a reconnect");
                }
                gap(&routes);
                Ok(())
            }
        }));
        let mut messages = client.message_rx();
        let task_routes = Arc::clone(&routes);
        tokio::spawn(async move {
            loop {
                let message = match messages.recv().await {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Every subscription may have lost messages: each is told.
                        tracing::warn!(lost = n, "pub/sub messages dropped: subscribers are too slow");
                        gap(&task_routes);
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let channel = String::from_utf8_lossy(message.channel.as_bytes()).into_owned();
                let payload = match convert::value(message.value) {
                    Value::Bytes(b) => b,
                    other => Bytes::from(other.describe()),
                };
                let routes = task_routes.lock().unwrap_or_else(|p| p.into_inner());
                for (_, feed) in routes.get(&channel).into_iter().flatten() {
                    let message = Message { channel: channel.clone(), payload: payload.clone() };
                    if !feed.deliver(message) {
                        tracing::warn!(%channel, "pub/sub subscriber is full or gone; message dropped for it");
                    }
                }
            }
        });
        PubSub { client, routes, next_id: AtomicU64::new(0) }
    }

    async fn subscribe(&self, channels: &[&str], timeout: Duration) -> Result<Subscription> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let owned: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
        let guard =
            Unsubscribe { id, channels: owned.clone(), routes: Arc::clone(&self.routes), client: self.client.clone() };
        let (feed, subscription) = Subscription::channel(SUBSCRIPTION_BUFFER, guard);
        {
            let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            for channel in &owned {
                routes.entry(channel.clone()).or_default().push((id, feed.clone()));
            }
        }
        self.client.subscribe(owned).await.map_err(|e| convert::error(e, timeout))?;
        Ok(subscription)
    }
}

/// Tells every subscription that messages may have been lost.
fn gap(routes: &Routes) {
    let routes = routes.lock().unwrap_or_else(|p| p.into_inner());
    routes.values().flatten().for_each(|(_, feed)| feed.gap());
}

/// Removes a subscription's routes on drop, and unsubscribes channels nobody listens to anymore.
struct Unsubscribe {
    id: u64,
    channels: Vec<String>,
    routes: Routes,
    client: SubscriberClient,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut unused = Vec::new();
        {
            let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            for channel in &self.channels {
                if let Some(senders) = routes.get_mut(channel) {
                    senders.retain(|(id, _)| *id != self.id);
                    if senders.is_empty() {
                        routes.remove(channel);
                        unused.push(channel.clone());
                    }
                }
            }
        }
        if !unused.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.unsubscribe(unused).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The futures built around fred's must stay small, or every command copies kilobytes.
    #[tokio::test]
    async fn futures_around_fred_stay_small() {
        let redis = Redis::new(Config::from_url("redis://127.0.0.1:1").unwrap()).unwrap();
        let options = Options::default();
        let send = redis.send(Cmd::new("GET").arg("k"), &options);
        eprintln!("send future: {} bytes", std::mem::size_of_val(&send));
        let (command, args) = convert::command(Cmd::new("GET").arg("k"), false);
        let raw = redis.inner.pool.next().custom::<FredValue, _>(command.clone(), args.clone());
        eprintln!("fred custom future: {} bytes", std::mem::size_of_val(&raw));
        let client = redis.inner.pool.next().with_options(&options);
        let with = client.custom::<FredValue, _>(command, args);
        eprintln!("fred with_options custom future: {} bytes", std::mem::size_of_val(&with));
        let call = redis.call(Cmd::new("GET").arg("k"));
        eprintln!("call future (boxed): {} bytes", std::mem::size_of_val(&*call));
        assert!(std::mem::size_of_val(&send) < 1024 && std::mem::size_of_val(&*call) < 1024);
    }

    #[test]
    fn fred_reconnect_delays_follow_the_backoff() {
        let backoff = crate::Backoff::default();
        let mut policy = reconnect_policy(backoff);
        for attempt in 1..=100 {
            let delay = policy.next_delay().map(Duration::from_millis);
            assert_eq!(delay, Some(backoff.delay(attempt)), "attempt {attempt}");
        }
    }
}
