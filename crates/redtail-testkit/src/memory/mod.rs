//! `MemoryBackend`: the [`Backend`] kept in process, running the crates' real Lua scripts,
//! with a virtual [`Clock`] so that 90-day TTLs pass in an instant.

mod clock;
mod commands;
mod glob;
mod lua;
mod store;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

pub use clock::Clock;
use redtail_core::{
    Arg, Backend, Bytes, Cmd, Cursor, Error, Feed, Key, Message, Pattern, Result, ScanPage, Script, ServerError,
    Subscription, TRACKING_CHANNEL, Value, async_trait, same_slot,
};
use tokio::sync::Notify;

use self::{
    lua::Scripting,
    store::{Changes, Reply, Store},
};

/// How many changed keys a tracking subscription holds before it reports a gap instead.
const TRACKED_BUFFER: usize = 16_384;

/// An in-memory Redis behind the [`Backend`] trait, for fast tests without a server.
///
/// It supports strings, hashes, lists, sets, sorted sets and streams (the commands the redtail
/// crates use), expiry with Redis's semantics, `SCAN`, pipelines, transactions, publish and
/// subscribe, blocking pops that wake when data arrives, and Lua scripts in a real Lua 5.1 with
/// `redis.call`, `redis.pcall` and `cjson`. An unsupported command is an error that names it.
/// A differential suite in `tests/` checks its replies against a real `redis-server`.
///
/// ```
/// use std::time::Duration;
/// use redtail_core::{Backend, Cmd, Namespace};
/// use redtail_testkit::MemoryBackend;
///
/// # tokio_test();
/// # fn tokio_test() { let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap(); rt.block_on(async {
/// let redis = MemoryBackend::new();
/// let key = Namespace::new("app").unwrap().key(["session", "abc"]);
/// redis.call(Cmd::new("SET").key(&key).arg("data").arg("EX").arg(86_400)).await.unwrap();
/// redis.clock().advance(Duration::from_secs(86_400));
/// assert!(redis.call(Cmd::new("GET").key(&key)).await.unwrap().is_nil());
/// # }) }
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    clock: Clock,
    /// Woken after every write, so blocked pops look again.
    changed: Notify,
    subscribers: Mutex<Subscribers>,
    /// Key tracking subscriptions ([`Backend::track`]): id, prefixes, feed.
    trackers: Mutex<Vec<(u64, Vec<String>, Feed)>>,
    next_id: AtomicU64,
    /// See [`MemoryBackend::auditing_script_keys`].
    audit_script_keys: AtomicBool,
}

/// Senders of each channel's subscriptions, by subscription id.
type Subscribers = HashMap<String, Vec<(u64, Feed)>>;

struct State {
    store: Store,
    scripting: Option<Scripting>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").field("clock", &self.shared.clock).finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty backend on a clock that follows real time (and can still be advanced).
    pub fn new() -> MemoryBackend {
        Self::with_clock(Clock::system())
    }

    /// An empty backend on `clock`, for example [`Clock::manual`].
    pub fn with_clock(clock: Clock) -> MemoryBackend {
        MemoryBackend {
            shared: Arc::new(Shared {
                state: Mutex::new(State { store: Store::default(), scripting: None }),
                clock,
                changed: Notify::new(),
                subscribers: Mutex::default(),
                trackers: Mutex::default(),
                next_id: AtomicU64::new(0),
                audit_script_keys: AtomicBool::new(false),
            }),
        }
    }

    /// A backend that fails every script call touching a key it did not declare in `KEYS` where
    /// Redis Cluster, while that key's slot migrates, could fail it half done: after the
    /// script's first write. Reaching an undeclared key is accepted before the first write (a
    /// script that fails there has changed nothing) and in the slot of a declared
    /// [guard](redtail_core::contract::SLOT_GUARD) missing when the call began (Redis refuses
    /// a call of several keys whole while its slot migrates and one of them is missing). The
    /// error names the script and the key. For tests of scripts meant to run on a cluster.
    #[must_use]
    pub fn auditing_script_keys(self) -> MemoryBackend {
        self.shared.audit_script_keys.store(true, Ordering::Relaxed);
        self
    }

    /// The clock keys expire by; advance it to make time pass.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Tells every subscription that messages may have been missed ([`redtail_core::Event::Gap`]),
    /// as a real backend does after its subscriber connection was lost.
    pub fn interrupt_subscriptions(&self) {
        let subscribers = self.shared.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.values().flatten().for_each(|(_, feed)| feed.gap());
        let trackers = self.shared.trackers.lock().unwrap_or_else(|p| p.into_inner());
        trackers.iter().for_each(|(_, _, feed)| feed.gap());
    }

    /// Locks the state with the store's time set to now; every command runs under this lock, so
    /// each command, transaction and script is atomic.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.store.now = self.shared.clock.now_millis();
        state
    }

    fn run(&self, state: &mut State, cmd: Cmd) -> Reply {
        let args = arguments(cmd);
        if is_named(&args, "PUBLISH") {
            return match &args[..] {
                [_, channel, message] => Reply::Int(self.deliver(&String::from_utf8_lossy(channel), message.clone())),
                _ => Reply::Error("ERR wrong number of arguments for 'publish' command".to_owned()),
            };
        }
        let reply = commands::execute(&mut state.store, &args).unwrap_or_else(Reply::Error);
        self.changed(&mut state.store);
        reply
    }

    /// After each command, transaction or script: wakes blocked commands, and tells key
    /// trackers which keys changed (under the state's lock, so they learn in order).
    fn changed(&self, store: &mut Store) {
        if let Some(changes) = &mut store.changes
            && (changes.flushed || !changes.keys.is_empty())
        {
            let Changes { keys, flushed } = std::mem::take(changes);
            let trackers = self.shared.trackers.lock().unwrap_or_else(|p| p.into_inner());
            for (_, prefixes, feed) in trackers.iter() {
                if flushed {
                    feed.gap();
                }
                for key in keys.iter().filter(|k| prefixes.iter().any(|p| k.starts_with(p.as_bytes()))) {
                    feed.deliver(Message { channel: TRACKING_CHANNEL.to_owned(), payload: key.clone() });
                }
            }
        }
        self.shared.changed.notify_waiters();
    }

    fn deliver(&self, channel: &str, payload: Bytes) -> i64 {
        let subscribers = self.shared.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let mut delivered = 0;
        for (_, feed) in subscribers.get(channel).into_iter().flatten() {
            if feed.deliver(Message { channel: channel.to_owned(), payload: payload.clone() }) {
                delivered += 1;
            }
        }
        delivered
    }

    /// One attempt at a blocking command, without waiting: `None` when it would block.
    fn try_blocking(&self, name: &str, args: &[Bytes]) -> Result<Option<Value>> {
        let mut state = self.lock();
        let store = &mut state.store;
        let reply = match name {
            "BLPOP" | "BRPOP" | "BZPOPMIN" | "BZPOPMAX" => {
                let keys = &args[1..args.len() - 1];
                let pop = match name {
                    "BLPOP" => "LPOP",
                    "BRPOP" => "RPOP",
                    "BZPOPMIN" => "ZPOPMIN",
                    _ => "ZPOPMAX",
                };
                let mut found = None;
                for key in keys {
                    let reply = commands::execute(store, &[Bytes::from_static(pop.as_bytes()), key.clone()]);
                    match reply.map_err(server)? {
                        Reply::Nil => {}
                        Reply::Array(items) if items.is_empty() => {}
                        Reply::Array(mut items) => {
                            items.insert(0, Reply::Bulk(key.clone()));
                            found = Some(Reply::Array(items));
                            break;
                        }
                        value => {
                            found = Some(Reply::Array(vec![Reply::Bulk(key.clone()), value]));
                            break;
                        }
                    }
                }
                found
            }
            "BLMOVE" | "BRPOPLPUSH" => {
                let (from_left, to_left) = if name == "BRPOPLPUSH" {
                    (false, true)
                } else {
                    let side = |a: &Bytes| a.eq_ignore_ascii_case(b"LEFT");
                    (side(&args[3]), side(&args[4]))
                };
                match commands::lmove(store, &args[1], &args[2], from_left, to_left).map_err(server)? {
                    Reply::Nil => None,
                    moved => Some(moved),
                }
            }
            "XREAD" => match commands::xread(store, &args[1..]).map_err(server)? {
                Reply::Nil => None,
                entries => Some(entries),
            },
            other => {
                return Err(Error::InvalidInput(format!(
                    "MemoryBackend does not support the blocking command {other}"
                )));
            }
        };
        if reply.is_some() {
            self.changed(store);
        }
        Ok(reply.map(value))
    }
}

fn arguments(cmd: Cmd) -> Vec<Bytes> {
    let (name, args, _) = cmd.into_parts();
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(Bytes::from_static(name.as_bytes()));
    all.extend(args.into_iter().map(Arg::into_bytes));
    all
}

fn is_named(args: &[Bytes], name: &str) -> bool {
    args.first().is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

fn server(message: String) -> Error {
    Error::Server(ServerError::new(message))
}

/// A core value from an internal reply; error replies stay as values.
fn value(reply: Reply) -> Value {
    match reply {
        Reply::Nil => Value::Nil,
        Reply::Int(i) => Value::Int(i),
        Reply::Bulk(b) => Value::Bytes(b),
        Reply::Status(s) => Value::Bytes(Bytes::from(s)),
        Reply::Array(items) => Value::Array(items.into_iter().map(value).collect()),
        Reply::Error(e) => Value::Error(ServerError::new(e)),
    }
}

/// A top-level reply: an error reply becomes [`Error::Server`].
fn top_level(reply: Reply) -> Result<Value> {
    match reply {
        Reply::Error(e) => Err(server(e)),
        other => Ok(value(other)),
    }
}

/// A `MemoryBackend` where a crate asks for a backend: `SessionStore::new(memory.clone(), config)`.
impl From<MemoryBackend> for Arc<dyn Backend> {
    fn from(memory: MemoryBackend) -> Self {
        Arc::new(memory)
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn call(&self, cmd: Cmd) -> Result<Value> {
        cmd.check_callable()?;
        let mut state = self.lock();
        top_level(self.run(&mut state, cmd))
    }

    async fn pipeline(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        let mut state = self.lock();
        Ok(cmds.into_iter().map(|cmd| value(self.run(&mut state, cmd))).collect())
    }

    async fn transaction(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        same_slot("transaction", cmds.iter().flat_map(Cmd::slots))?;
        let mut state = self.lock();
        // As Redis does while queueing: an unknown command or a wrong arity runs nothing.
        for cmd in &cmds {
            let args = arguments(cmd.clone());
            if !is_named(&args, "PUBLISH") {
                commands::check(&args).map_err(server)?;
            }
        }
        Ok(cmds.into_iter().map(|cmd| value(self.run(&mut state, cmd))).collect())
    }

    async fn eval(&self, script: &Script, keys: &[Key], args: Vec<Arg>) -> Result<Value> {
        script.slot(keys, self.is_cluster())?;
        let keys: Vec<Bytes> = keys.iter().map(Key::to_bytes).collect();
        let args: Vec<Bytes> = args.into_iter().map(Arg::into_bytes).collect();
        let mut state = self.lock();
        let State { store, scripting } = &mut *state;
        if scripting.is_none() {
            *scripting = Some(Scripting::new().map_err(server)?);
        }
        let Some(scripting) = scripting.as_mut() else { return Err(server("ERR Lua is not available".to_owned())) };
        let audit = self.shared.audit_script_keys.load(Ordering::Relaxed);
        let reply = scripting.run(store, script.sha(), script.source(), &keys, &args, audit);
        self.changed(store);
        drop(state);
        top_level(reply.unwrap_or_else(Reply::Error))
    }

    async fn scan(&self, cursor: Cursor, pattern: &Pattern, count: u32) -> Result<ScanPage> {
        if cursor.shard != 0 {
            return Ok(ScanPage { keys: Vec::new(), next: None });
        }
        let state = self.lock();
        let (next, keys) = commands::scan(&state.store, cursor.position, pattern.as_bytes(), count);
        Ok(ScanPage {
            keys: keys.into_iter().map(Key::from_raw).collect(),
            next: (next != 0).then_some(Cursor { shard: 0, position: next }),
        })
    }

    async fn publish(&self, channel: &str, message: Bytes) -> Result<u64> {
        Ok(u64::try_from(self.deliver(channel, message)).unwrap_or(0))
    }

    async fn subscribe(&self, channels: &[&str]) -> Result<Subscription> {
        if channels.is_empty() {
            return Err(Error::InvalidInput("subscribe needs at least one channel".to_owned()));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (feed, subscription) =
            Subscription::channel(1024, Unsubscribe { id, shared: Arc::downgrade(&self.shared) });
        let mut subscribers = self.shared.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        for channel in channels {
            subscribers.entry((*channel).to_owned()).or_default().push((id, feed.clone()));
        }
        Ok(subscription)
    }

    async fn track(&self, prefixes: &[&str]) -> Result<Subscription> {
        if prefixes.is_empty() {
            return Err(Error::InvalidInput("tracking needs at least one key prefix".to_owned()));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (feed, subscription) =
            Subscription::channel(TRACKED_BUFFER, Untrack { id, shared: Arc::downgrade(&self.shared) });
        // Under the state's lock: no command runs between tracking on and this tracker listed.
        let mut state = self.lock();
        state.store.changes.get_or_insert_with(Changes::default);
        let prefixes = prefixes.iter().map(|p| (*p).to_owned()).collect();
        self.shared.trackers.lock().unwrap_or_else(|p| p.into_inner()).push((id, prefixes, feed));
        Ok(subscription)
    }

    async fn blocking(&self, cmd: Cmd) -> Result<Value> {
        let block = cmd.block_duration()?;
        let mut args = arguments(cmd);
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let arity_ok = match name.as_str() {
            "BLPOP" | "BRPOP" | "BZPOPMIN" | "BZPOPMAX" => args.len() >= 3,
            "BLMOVE" => args.len() == 6,
            "BRPOPLPUSH" => args.len() == 4,
            "XREAD" => args.len() >= 6,
            _ => true,
        };
        if !arity_ok {
            return Err(server(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase())));
        }
        if name == "XREAD" {
            resolve_dollar_ids(&mut self.lock().store, &mut args);
        }
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register interest before looking, so a write between the look and the wait wakes us.
            let changed = self.shared.changed.notified();
            if let Some(found) = self.try_blocking(&name, &args)? {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(Value::Nil);
            }
        }
    }

    fn is_cluster(&self) -> bool {
        false
    }
}

/// Replaces `$` ids of a blocking `XREAD` with each stream's last id now, so that only entries
/// added while waiting are returned.
fn resolve_dollar_ids(store: &mut Store, args: &mut [Bytes]) {
    let Some(streams) = args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else { return };
    let rest = args.len() - streams - 1;
    let n_keys = rest / 2;
    for i in 0..n_keys {
        let (key_at, id_at) = (streams + 1 + i, streams + 1 + n_keys + i);
        if args[id_at].as_ref() == b"$" {
            let last = store.stream(&args[key_at]).ok().flatten().map_or((0, 0), |s| s.last_id);
            args[id_at] = Bytes::from(format!("{}-{}", last.0, last.1));
        }
    }
}

/// Removes a subscription's senders when it is dropped.
struct Unsubscribe {
    id: u64,
    shared: std::sync::Weak<Shared>,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut subscribers = shared.subscribers.lock().unwrap_or_else(|p| p.into_inner());
            subscribers.retain(|_, senders| {
                senders.retain(|(id, _)| *id != self.id);
                !senders.is_empty()
            });
        }
    }
}

/// Removes a key tracking subscription when it is dropped; the last one turns tracking off.
struct Untrack {
    id: u64,
    shared: std::sync::Weak<Shared>,
}

impl Drop for Untrack {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let none_left = {
                let mut trackers = shared.trackers.lock().unwrap_or_else(|p| p.into_inner());
                trackers.retain(|(id, _, _)| *id != self.id);
                trackers.is_empty()
            };
            if none_left {
                shared.state.lock().unwrap_or_else(|p| p.into_inner()).store.changes = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use redtail_core::{Backend, Cmd, Namespace, Script};

    use super::*;

    fn key(name: &str) -> Key {
        Namespace::new("t").unwrap_or_else(|e| panic!("{e}")).key([name])
    }

    #[tokio::test]
    async fn advancing_the_clock_expires_keys_and_moves_script_time() -> Result<()> {
        let redis = MemoryBackend::with_clock(Clock::manual(UNIX_EPOCH + Duration::from_secs(1_000)));
        let (short, long) = (key("short"), key("long"));
        redis.call(Cmd::new("SET").key(&short).arg(1).arg("EX").arg(86_400)).await?;
        redis.call(Cmd::new("SET").key(&long).arg(1).arg("EX").arg(90 * 86_400)).await?;
        redis.clock().advance(Duration::from_secs(86_400));
        assert!(redis.call(Cmd::new("GET").key(&short)).await?.is_nil());
        assert_eq!(redis.call(Cmd::new("TTL").key(&long)).await?.as_int()?, 89 * 86_400);
        let time = Script::new("time", "return redis.call('TIME')[1]");
        assert_eq!(redis.eval(&time, &[], vec![]).await?.as_int()?, 1_000 + 86_400);
        Ok(())
    }

    #[tokio::test]
    async fn scripts_follow_redis_conversion_rules() -> Result<()> {
        let redis = MemoryBackend::new();
        let script = Script::new("conv", "return {1, 2.9, 'x', nil, 'after nil'}");
        let reply = redis.eval(&script, &[], vec![]).await?;
        assert_eq!(reply, Value::Array(vec![Value::Int(1), Value::Int(2), Value::from("x")]));
        let status = Script::new("status", "return redis.call('SET', KEYS[1], ARGV[1])");
        assert!(redis.eval(&status, &[key("s")], vec!["v".into()]).await?.is_ok());
        let json = Script::new("json", "return cjson.encode(cjson.decode(ARGV[1]))");
        assert_eq!(redis.eval(&json, &[], vec![r#"{"a":[1,2]}"#.into()]).await?.into_string()?, r#"{"a":[1,2]}"#);
        let global = Script::new("global", "x = 1");
        let refused = redis.eval(&global, &[], vec![]).await;
        assert!(matches!(&refused, Err(e) if e.to_string().contains("create global variable 'x'")), "{refused:?}");
        Ok(())
    }

    #[tokio::test]
    async fn the_key_audit_refuses_undeclared_keys_reached_after_a_write() -> Result<()> {
        let redis = MemoryBackend::new().auditing_script_keys();
        let raw = |k: &str| Key::from_raw(k.as_bytes().to_vec());
        redis.call(Cmd::new("SET").key(&raw("{a}:other")).arg("1")).await?;
        let refused = |reply: &Result<Value>, key: &str| matches!(reply, Err(e) if e.to_string().contains(&format!("touched \"{key}\"")));
        // Written, then an undeclared key read: half done on a migrating slot.
        let late = Script::new("late", "redis.call('SET', KEYS[1], 1) return redis.call('GET', ARGV[1])");
        let reply = redis.eval(&late, &[raw("{a}:declared")], vec!["{a}:other".into()]).await;
        assert!(refused(&reply, "{a}:other"), "{reply:?}");
        // An undeclared key written by the script's first write: a failure there would have
        // changed nothing.
        let first = Script::new("first", "redis.call('DEL', ARGV[1]) return redis.call('SET', KEYS[1], 1)");
        assert!(redis.eval(&first, &[raw("{a}:declared")], vec!["{a}:other".into()]).await?.is_ok());
        // Read before the first write, then written: accepted.
        let read_first = Script::new(
            "read_first",
            "local v = redis.call('GET', ARGV[1]) redis.call('SET', KEYS[1], 1) return redis.call('SET', ARGV[1], 2)",
        );
        assert!(redis.eval(&read_first, &[raw("{a}:declared")], vec!["{a}:other".into()]).await?.is_ok());
        // After a write, in the slot of a declared guard that is missing: accepted; the same with
        // the guard present: refused.
        let guarded = Script::new("guarded", "redis.call('SET', KEYS[1], 1) return redis.call('SET', ARGV[1], 2)");
        let keys = [raw("{a}:declared"), raw("{a}:migrating")];
        assert!(redis.eval(&guarded, &keys, vec!["{a}:late".into()]).await?.is_ok());
        redis.call(Cmd::new("SET").key(&raw("{a}:migrating")).arg("1")).await?;
        let reply = redis.eval(&guarded, &keys, vec!["{a}:later".into()]).await;
        assert!(refused(&reply, "{a}:later"), "{reply:?}");
        // Any other declared key that is missing is not a guard: it may exist in another state
        // of the same code.
        let reads_it = Script::new(
            "reads_it",
            "redis.call('EXISTS', KEYS[2]) redis.call('SET', KEYS[1], 1) return redis.call('SET', ARGV[1], 2)",
        );
        let keys = [raw("{a}:declared"), raw("{a}:maybe")];
        let reply = redis.eval(&reads_it, &keys, vec!["{a}:last".into()]).await;
        assert!(refused(&reply, "{a}:last"), "{reply:?}");
        // Without the audit the same call is served.
        assert!(MemoryBackend::new().eval(&late, &[raw("{a}:declared")], vec!["{a}:other".into()]).await.is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn unsupported_commands_are_named_in_the_error() {
        let redis = MemoryBackend::new();
        let reply = redis.call(Cmd::new("OBJECT").arg("ENCODING").arg("x")).await;
        assert!(matches!(&reply, Err(e) if e.to_string().contains("'OBJECT'")), "{reply:?}");
        let script = Script::new("unsupported", "return redis.call('OBJECT', 'ENCODING', 'x')");
        let reply = redis.eval(&script, &[], vec![]).await;
        assert!(matches!(&reply, Err(e) if e.to_string().contains("'OBJECT'")), "{reply:?}");
    }

    #[tokio::test]
    async fn blocked_pops_wake_when_data_arrives() -> Result<()> {
        let redis = MemoryBackend::new();
        let (from, to) = (key("from"), key("to"));
        let waiter = redis.clone();
        let cmd = Cmd::new("BLMOVE").key(&from).key(&to).arg("LEFT").arg("RIGHT").arg(5);
        let pop = tokio::spawn(async move { waiter.blocking(cmd).await });
        tokio::task::yield_now().await;
        redis.call(Cmd::new("RPUSH").key(&from).arg("job")).await?;
        let moved = pop.await.map_err(|e| Error::Backend { source: e.into() })??;
        assert_eq!(moved, Value::from("job"));
        Ok(())
    }
}
