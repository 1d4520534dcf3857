//! `Batcher`: requests made at the same time by many tasks, sent to Redis together.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    hash::{BuildHasherDefault, Hasher},
    pin::Pin,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::{Arg, Backend, Bytes, Cmd, Error, Key, Result, Script, ServerError, Value, same_slot};

type Run<Q, A> = dyn Fn(Vec<Q>) -> Pin<Box<dyn Future<Output = Vec<Result<A>>> + Send>> + Send + Sync;

/// Gathers requests made concurrently into batches, so that many callers share one command or
/// script call: the way `session.get` becomes one `MGET` and rate-limit checks one `EVALSHA`
/// under load.
///
/// Requests go in one batch only if they have the same group ([`Batcher::submit`]'s `group`): on
/// a cluster the slot of their keys, elsewhere 0. A request is sent at once when its group has
/// fewer than `in_flight` batches on their way; otherwise it queues, and what has queued leaves
/// together (at most `max` a batch) as soon as one returns. So an idle caller pays no added
/// latency, a busy process pays the command overhead once per batch instead of once per request,
/// and a busy group never holds up another. A batch runs once; it is never retried, so a
/// state-changing batch runs at most once, as a single script call does.
///
/// With a deadline ([`Batcher::with_deadline`]), a caller waits at most that long in all, queueing
/// included: when the server is slow or gone, requests do not queue behind batches that wait out
/// their timeouts, and a request whose caller gave up is never sent. At most
/// [`Batcher::MAX_WAITING`] callers wait at once; more fail at once.
///
/// The batching task is spawned on the Tokio runtime of the first [`submit`](Batcher::submit)
/// (again on the caller's if that runtime has shut down) and ends when the `Batcher` is dropped,
/// after answering what it holds.
pub struct Batcher<Q, A> {
    run: Arc<Run<Q, A>>,
    max: usize,
    in_flight: usize,
    deadline: Option<Duration>,
    /// Callers waiting for an answer now.
    waiting: AtomicUsize,
    // The batching task's queue; replaced when that task is gone with the runtime it ran on.
    sender: RwLock<Option<mpsc::UnboundedSender<Pending<Q, A>>>>,
}

struct Pending<Q, A> {
    group: u16,
    request: Q,
    reply: oneshot::Sender<Result<A>>,
    /// The caller's span, which the batch's span follows from.
    span: tracing::Span,
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// A batcher that runs each batch with `run`, which answers one result per request, in order.
    ///
    /// # Panics
    /// If `max` or `in_flight` is 0.
    pub fn new<F, Fut>(max: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<A>>> + Send + 'static,
    {
        assert!(max > 0 && in_flight > 0, "a batcher needs room for one request and one batch");
        let run: Arc<Run<Q, A>> = Arc::new(move |batch| Box::pin(run(batch)));
        Batcher { run, max, in_flight, deadline: None, waiting: AtomicUsize::new(0), sender: RwLock::new(None) }
    }

    /// Callers waiting at once, beyond which [`Batcher::submit`] fails at once with
    /// [`Error::Overloaded`]: what cannot be sent in time is not kept.
    pub const MAX_WAITING: usize = 100_000;

    /// Callers wait at most `deadline` for an answer, queueing included, then fail with
    /// [`Error::Timeout`]; a request still queued then is never sent. `None` (the default): no
    /// bound but the batch's own.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sends `request` with the next batch of its `group` (see [`batch_group`]) and waits for
    /// its answer, at most the deadline (see [`Batcher::with_deadline`]).
    ///
    /// Dropping the returned future withdraws the request if it is still queued; one already
    /// handed to a batch is sent.
    pub async fn submit(&self, group: u16, request: Q) -> Result<A> {
        let waiting = Waiting::enter(&self.waiting);
        if waiting.count > Self::MAX_WAITING {
            return Err(Error::Overloaded { waiting: waiting.count - 1 });
        }
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { group, request, reply, span: tracing::Span::current() };
        let sent = match &*self.sender.read().unwrap_or_else(PoisonError::into_inner) {
            Some(sender) => sender.send(pending),
            None => Err(mpsc::error::SendError(pending)),
        };
        if let Err(mpsc::error::SendError(unsent)) = sent {
            pending = unsent;
            let mut sender = self.sender.write().unwrap_or_else(PoisonError::into_inner);
            if sender.as_ref().is_none_or(mpsc::UnboundedSender::is_closed) {
                let (start, receiver) = mpsc::unbounded_channel();
                tokio::spawn(drive(receiver, Arc::clone(&self.run), self.max, self.in_flight));
                *sender = Some(start);
            }
            let sender = sender.as_ref().ok_or(Error::ShuttingDown)?;
            sender.send(pending).map_err(|_| Error::ShuttingDown)?;
        }
        // Dropped unanswered only when the runtime running the batches shut down.
        match self.deadline {
            Some(deadline) => match tokio::time::timeout(deadline, answer).await {
                Ok(answer) => answer.unwrap_or(Err(Error::ShuttingDown)),
                Err(_) => Err(Error::Timeout(deadline)),
            },
            None => answer.await.unwrap_or(Err(Error::ShuttingDown)),
        }
    }
}

/// One caller counted in [`Batcher::waiting`] while it waits.
struct Waiting<'a> {
    waiting: &'a AtomicUsize,
    /// How many wait, this one included.
    count: usize,
}

impl<'a> Waiting<'a> {
    fn enter(waiting: &'a AtomicUsize) -> Self {
        let count = waiting.fetch_add(1, Ordering::Relaxed) + 1;
        Waiting { waiting, count }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<Q, A> fmt::Debug for Batcher<Q, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher").field("max", &self.max).field("in_flight", &self.in_flight).finish_non_exhaustive()
    }
}

/// `GET` for many concurrent callers, sent as one `MGET` per batch (per slot on a cluster).
///
/// Under load this is several times faster than a `GET` per caller (docs/benchmarks.md): the
/// client and the server handle one command for many keys. As with `MGET`, a key that holds
/// another type reads as `None`; a caller that must tell "missing" from "foreign" asks again with
/// `GET` when it gets `None`.
#[derive(Debug)]
pub struct BatchedGet {
    // Whether batches are per slot (read once: it never changes).
    cluster: bool,
    batcher: Batcher<Reads, Read>,
}

/// The keys one caller reads; most read one, which then costs no allocation.
enum Reads {
    One(Key),
    Many(Vec<Key>),
}

impl Reads {
    fn keys(&self) -> &[Key] {
        match self {
            Reads::One(key) => std::slice::from_ref(key),
            Reads::Many(keys) => keys,
        }
    }
}

/// What one caller read, in the order of its keys.
enum Read {
    One(Option<Bytes>),
    Many(Vec<Option<Bytes>>),
}

impl BatchedGet {
    /// Most callers in one `MGET`. Larger batches read fewer values a second with values of a
    /// few hundred bytes (a session, a cache entry): the client parses and copies a reply of
    /// tens of kilobytes as it arrives in parts (redtail-bench, 256 → 64: `session.get` and
    /// `cache.get_hit` about 1.2x).
    const MAX: usize = 64;
    /// Batches on their way at once; more requests wait for the next batch. Two keeps the
    /// connection busy while a reply is read; more made smaller batches and fewer reads a
    /// second in redtail-bench.
    const IN_FLIGHT: usize = 2;

    /// Batched reads through `backend`.
    pub fn new(backend: impl Into<Arc<dyn Backend>>) -> Self {
        let backend = backend.into();
        let cluster = backend.is_cluster();
        // No deadline: reads are the hottest path, and a timer per read cost `session.get` about
        // 5 % (alternating pairs); each `MGET` is bounded by the command timeout.
        let batcher = Batcher::new(Self::MAX, Self::IN_FLIGHT, move |requests: Vec<Reads>| {
            let backend = Arc::clone(&backend);
            async move { mget(&*backend, requests).await }
        });
        BatchedGet { cluster, batcher }
    }

    /// The value of the string at `key`, `None` if it is missing or not a string.
    pub async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        match self.batcher.submit(slot_group(self.cluster, key), Reads::One(key.clone())).await? {
            Read::One(value) => Ok(value),
            Read::Many(mut values) => Ok(values.pop().flatten()),
        }
    }

    /// [`BatchedGet::get`] for each of `keys`, in one request per slot group (one request on a
    /// server that is not a cluster).
    pub async fn get_many(&self, keys: Vec<Key>) -> Result<Vec<Option<Bytes>>> {
        if !self.cluster {
            return match self.batcher.submit(0, Reads::Many(keys)).await? {
                Read::Many(values) => Ok(values),
                Read::One(value) => Ok(vec![value]),
            };
        }
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let group = slot_group(self.cluster, key);
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, members)) => members.push(i),
                None => groups.push((group, vec![i])),
            }
        }
        let requests = groups.iter().map(|(group, members)| {
            self.batcher.submit(*group, Reads::Many(members.iter().map(|&i| keys[i].clone()).collect()))
        });
        let answers = futures_util::future::try_join_all(requests).await?;
        let mut values = vec![None; keys.len()];
        for ((_, members), answer) in groups.iter().zip(answers) {
            let answer = match answer {
                Read::One(value) => vec![value],
                Read::Many(values) => values,
            };
            for (&i, value) in members.iter().zip(answer) {
                values[i] = value;
            }
        }
        Ok(values)
    }
}

/// One `MGET` for the keys of every request, answered per request; a key asked for by several
/// requests is sent once (the cache reads the same tag records for most of its entries). A failed
/// call fails every request with the same error.
async fn mget(backend: &dyn Backend, requests: Vec<Reads>) -> Vec<Result<Read>> {
    let n = requests.len();
    let mut unique: Vec<&Key> = Vec::new();
    let mut index: HashMap<BatchKey<'_>, usize, BuildHasherDefault<Mix>> = HashMap::default();
    // Where each request's keys are among the keys sent, all requests one after the other.
    let positions: Vec<usize> = requests
        .iter()
        .flat_map(Reads::keys)
        .map(|key| {
            *index.entry(BatchKey(key)).or_insert_with(|| {
                unique.push(key);
                unique.len() - 1
            })
        })
        .collect();
    let mut cmd = Cmd::new("MGET");
    for key in &unique {
        cmd = cmd.key(key);
    }
    let unique = unique.len();
    let values = match backend.call(cmd).await.and_then(Value::into_array) {
        Ok(values) if values.len() == unique => values.into_iter().map(Value::into_opt_bytes).collect(),
        Ok(values) => {
            let got = format!("{} values for {unique} keys", values.len());
            Err(Error::UnexpectedReply { expected: "one MGET value per key", got })
        }
        Err(e) => Err(e),
    };
    let values: Vec<Option<Bytes>> = match values {
        Ok(values) => values,
        Err(e) => return fail_each(e, n),
    };
    let mut positions = positions.into_iter();
    let mut value = || positions.next().and_then(|i| values.get(i).cloned()).flatten();
    requests
        .iter()
        .map(|request| {
            Ok(match request {
                Reads::One(_) => Read::One(value()),
                Reads::Many(keys) => Read::Many(keys.iter().map(|_| value()).collect()),
            })
        })
        .collect()
}

/// A key of one batch, hashed by its slot, length and last eight bytes (where keys that share
/// a prefix differ) rather than all of it, and compared in full. Keys chosen to collide cost
/// comparisons only: a batch holds a few hundred keys at most.
#[derive(PartialEq, Eq)]
struct BatchKey<'a>(&'a Key);

impl std::hash::Hash for BatchKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let bytes = self.0.as_bytes();
        let mut tail = [0u8; 8];
        let end = &bytes[bytes.len().saturating_sub(8)..];
        tail[..end.len()].copy_from_slice(end);
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        state.write_u64(u64::from_le_bytes(tail) ^ len.rotate_left(48) ^ u64::from(self.0.slot()).rotate_left(32));
    }
}

/// Spreads the one word [`BatchKey`] hashes over all 64 bits (the map uses the top ones).
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

/// A batched script ([`Script::batched`]) run for many concurrent callers as one `EVALSHA` per
/// batch (per slot on a cluster).
///
/// Each caller's part runs as if it were a script call of its own: atomically, at most once (a
/// batch is never sent twice), and failing alone when it fails. The calls of one batch run in
/// one script, so the server pays the script call overhead once for all of them.
#[derive(Debug)]
pub struct BatchedScript {
    cluster: bool,
    batcher: Batcher<(Vec<Key>, Vec<Arg>), Value>,
}

impl BatchedScript {
    /// Most callers in one script call.
    const MAX: usize = 128;
    /// Script calls on their way at once; more callers wait for the next batch.
    const IN_FLIGHT: usize = 2;

    /// Runs `script` (made with [`Script::batched`]) through `backend`.
    pub fn new(backend: impl Into<Arc<dyn Backend>>, script: &'static Script) -> Self {
        let backend = backend.into();
        let cluster = backend.is_cluster();
        let deadline = backend.command_timeout();
        let batcher = Batcher::new(Self::MAX, Self::IN_FLIGHT, move |calls| {
            let backend = Arc::clone(&backend);
            async move { eval_batch(&*backend, script, calls).await }
        })
        .with_deadline(deadline);
        BatchedScript { cluster, batcher }
    }

    /// Runs one caller's part with its `keys` (all in one slot, as for [`Backend::eval`]) and
    /// `args`, and returns its reply; an error raised by that part is [`Error::Server`].
    pub async fn eval(&self, keys: Vec<Key>, args: Vec<Arg>) -> Result<Value> {
        same_slot("script", keys.iter().map(Key::slot))?;
        let group = keys.first().map_or(0, |key| slot_group(self.cluster, key));
        self.batcher.submit(group, (keys, args)).await
    }
}

/// Plain commands of many concurrent callers, sent as the transactions of one
/// [`Backend::transactions`] call per batch (per slot on a cluster; `redtail_connection::Redis`
/// runs a batch as one `MULTI`/`EXEC`): how a rate-limit check runs without a script.
///
/// Each caller's commands run together, with no other client's command between them, and are
/// answered on their own, as by [`Backend::transaction`]: an error reply to one command is a
/// [`Value::Error`] in that caller's replies only. A batch is never sent twice (a transaction written again after a
/// dropped connection could apply twice); each caller waits at most the backend's command
/// timeout in all, queueing included.
#[derive(Debug)]
pub struct BatchedTransaction {
    cluster: bool,
    batcher: Batcher<Vec<Cmd>, Vec<Value>>,
}

impl BatchedTransaction {
    /// Most callers in one transaction.
    const MAX: usize = 128;
    /// Transactions on their way at once; more callers wait for the next batch.
    const IN_FLIGHT: usize = 2;

    /// Batched transactions through `backend`.
    pub fn new(backend: impl Into<Arc<dyn Backend>>) -> Self {
        let backend = backend.into();
        let cluster = backend.is_cluster();
        let deadline = backend.command_timeout();
        let batcher = Batcher::new(Self::MAX, Self::IN_FLIGHT, move |calls: Vec<Vec<Cmd>>| {
            let backend = Arc::clone(&backend);
            async move { transaction_batch(&*backend, calls).await }
        })
        .with_deadline(deadline);
        BatchedTransaction { cluster, batcher }
    }

    /// Runs `cmds` (their keys in one slot, as for [`Backend::transaction`]) with the next batch and
    /// returns one reply per command.
    pub async fn run(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        let slot = same_slot("transaction", cmds.iter().flat_map(Cmd::slots))?;
        let group = if self.cluster { slot.unwrap_or(0) } else { 0 };
        self.batcher.submit(group, cmds).await
    }
}

/// The transactions of `calls` in one exchange, each answered on its own; a failed exchange fails
/// every call with the same error.
async fn transaction_batch(backend: &dyn Backend, calls: Vec<Vec<Cmd>>) -> Vec<Result<Vec<Value>>> {
    let n = calls.len();
    match backend.transactions(calls).await {
        Ok(replies) if replies.len() == n => replies,
        Ok(replies) => {
            let got = format!("{} answers for {n} transactions", replies.len());
            fail_each(Error::UnexpectedReply { expected: "one answer per transaction", got }, n)
        }
        Err(e) => fail_each(e, n),
    }
}

crate::lua_numbers! {
    /// The arguments every batched script (`Script::batched`) takes first, as `lua/batch.lua`
    /// reads them. When the callers' shapes differ, `Keys` is `''` and caller i's key and
    /// argument counts follow at `Keys - 1 + 2i` and `Args - 1 + 2i`, before all the callers'
    /// own arguments; otherwise those start after `Args`.
    BatchArg {
        /// How many callers.
        Callers = 1 => "BATCH_CALLERS",
        /// Each caller's number of keys, when it is the same for all.
        Keys = 2 => "BATCH_KEYS",
        /// Each caller's number of arguments, when it is the same for all.
        Args = 3 => "BATCH_ARGS",
    }
}

/// The constants of `lua/batch.lua`'s prelude.
pub(crate) fn batch_consts() -> impl Iterator<Item = (&'static str, String)> {
    BatchArg::consts()
}

/// The keys and arguments of one script call for `calls`, in the layout `lua/batch.lua` reads.
fn batch_layout(calls: Vec<(Vec<Key>, Vec<Arg>)>) -> (Vec<Key>, Vec<Arg>) {
    let shape = |(keys, args): &(Vec<Key>, Vec<Arg>)| (keys.len(), args.len());
    let uniform = calls.first().map(shape).filter(|first| calls.iter().all(|call| shape(call) == *first));
    let mut args: Vec<Arg> = BatchArg::ALL
        .iter()
        .filter_map(|arg| match (arg, uniform) {
            (BatchArg::Callers, _) => Some(calls.len().into()),
            (BatchArg::Keys, Some((keys, _))) => Some(keys.into()),
            (BatchArg::Args, Some((_, call_args))) => Some(call_args.into()),
            (BatchArg::Keys, None) => Some("".into()),
            (BatchArg::Args, None) => None,
        })
        .collect();
    if uniform.is_none() {
        for call in &calls {
            let (keys, call_args) = shape(call);
            args.extend([keys.into(), call_args.into()]);
        }
    }
    let mut keys = Vec::new();
    for (call_keys, call_args) in calls {
        keys.extend(call_keys);
        args.extend(call_args);
    }
    (keys, args)
}

/// One script call for the parts of `calls`.
async fn eval_batch(backend: &dyn Backend, script: &Script, calls: Vec<(Vec<Key>, Vec<Arg>)>) -> Vec<Result<Value>> {
    let n = calls.len();
    let (keys, args) = batch_layout(calls);
    let replies = match backend.eval(script, &keys, args).await.and_then(Value::into_array) {
        Ok(replies) if replies.len() == 2 * n => replies,
        Ok(replies) => {
            let got = format!("{} values for {n} calls", replies.len());
            return fail_each(Error::UnexpectedReply { expected: "two values per batched call", got }, n);
        }
        Err(e) => return fail_each(e, n),
    };
    let mut replies = replies.into_iter();
    std::iter::from_fn(|| Some(part(replies.next()?, replies.next()?))).collect()
}

/// One caller's part of a batched script's answer: 1 and its reply, or 0 and an error message.
fn part(ok: Value, reply: Value) -> Result<Value> {
    match ok.as_int() {
        Ok(1) => Ok(reply),
        Ok(0) => Err(Error::Server(ServerError::new(reply.into_string()?))),
        _ => Err(Error::UnexpectedReply { expected: "1 or 0 before a batched call's reply", got: ok.describe() }),
    }
}

/// The answers of `n` callers whose shared call failed with `e`.
fn fail_each<T>(e: Error, n: usize) -> Vec<Result<T>> {
    e.fan_out(n).into_iter().map(Err).collect()
}

/// The batch group of a request on `key` for [`Batcher::submit`]: its slot on a cluster, where one
/// call cannot span slots, and 0 elsewhere.
pub fn batch_group(backend: &dyn Backend, key: &Key) -> u16 {
    slot_group(backend.is_cluster(), key)
}

fn slot_group(cluster: bool, key: &Key) -> u16 {
    if cluster { key.slot() } else { 0 }
}

/// The batching task: queues requests by group and keeps up to `in_flight` batches of each
/// group on their way. A group with room sends what it holds at once; a busy one sends it all
/// (in batches of at most `max`) when one of its batches returns. So on a cluster, where each
/// slot is a group, requests for different slots never wait for each other.
async fn drive<Q, A>(
    mut receiver: mpsc::UnboundedReceiver<Pending<Q, A>>,
    run: Arc<Run<Q, A>>,
    max: usize,
    in_flight: usize,
) {
    let mut groups: HashMap<u16, Group<Q, A>> = HashMap::new();
    let mut running = FuturesUnordered::new();
    let mut open = true;
    let launch = |groups: &mut HashMap<u16, Group<Q, A>>, running: &mut FuturesUnordered<_>, group: u16| {
        let Some(state) = groups.get_mut(&group) else { return };
        // Requests whose callers stopped waiting (their deadline passed) are never sent.
        state.queue.retain(|pending| !pending.reply.is_closed());
        while state.busy < in_flight && !state.queue.is_empty() {
            let batch: Vec<_> = state.queue.drain(..state.queue.len().min(max)).collect();
            state.busy += 1;
            let run = Arc::clone(&run);
            running.push(async move {
                answer(batch, run).await;
                group
            });
        }
        if state.busy == 0 {
            groups.remove(&group);
        }
    };
    let mut arrived = Vec::new();
    let arrive = |groups: &mut HashMap<u16, Group<Q, A>>, arrived: &mut Vec<u16>, pending: Pending<Q, A>| {
        if !arrived.contains(&pending.group) {
            arrived.push(pending.group);
        }
        let queue = &mut groups.entry(pending.group).or_default().queue;
        // While a group's batches are stuck (a server gone), drop the requests given up on, so
        // the queue holds no more than the callers still waiting.
        if queue.len() >= 4 * max && queue.len().is_power_of_two() {
            queue.retain(|pending| !pending.reply.is_closed());
        }
        queue.push(pending);
    };
    loop {
        // Everything that has arrived joins its group's queue before any group sends.
        while let Ok(pending) = receiver.try_recv() {
            arrive(&mut groups, &mut arrived, pending);
        }
        for group in arrived.drain(..) {
            launch(&mut groups, &mut running, group);
        }
        tokio::select! {
            biased;
            Some(group) = running.next(), if !running.is_empty() => {
                if let Some(state) = groups.get_mut(&group) {
                    state.busy -= 1;
                }
                launch(&mut groups, &mut running, group);
            }
            pending = receiver.recv(), if open => match pending {
                Some(pending) => arrive(&mut groups, &mut arrived, pending),
                None => open = false,
            },
            else => return,
        }
    }
}

/// The requests of one group waiting for room, and its batches on their way.
struct Group<Q, A> {
    busy: usize,
    queue: Vec<Pending<Q, A>>,
}

impl<Q, A> Default for Group<Q, A> {
    fn default() -> Self {
        Group { busy: 0, queue: Vec::new() }
    }
}

/// Runs one batch and answers each of its requests.
async fn answer<Q, A>(batch: Vec<Pending<Q, A>>, run: Arc<Run<Q, A>>) {
    // The batch runs in a span of its own, linked from each caller's: a trace shows every
    // request the one call served, and the call (the backend's span) inside it.
    let span = tracing::debug_span!("redtail.batch", size = batch.len());
    for pending in &batch {
        span.follows_from(&pending.span);
    }
    let (requests, replies): (Vec<Q>, Vec<_>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let n = requests.len();
    let results = run(requests).instrument(span).await;
    if results.len() != n {
        let got = format!("{} answers for {n} requests", results.len());
        let e = Error::UnexpectedReply { expected: "one answer per batched request", got };
        for (reply, e) in replies.into_iter().zip(e.fan_out(n)) {
            let _ = reply.send(Err(e));
        }
        return;
    }
    for (reply, result) in replies.into_iter().zip(results) {
        // A caller that stopped waiting no longer needs its answer.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_batch_layout_is_what_batch_lua_reads_by_name() {
        let key = |k: &str| Key::from_raw(k.to_owned());
        let text =
            |args: &[Arg]| args.iter().map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned()).collect::<Vec<_>>();
        let (keys, args) = batch_layout(vec![
            (vec![key("a")], vec!["1".into(), "2".into()]),
            (vec![key("b")], vec!["3".into(), "4".into()]),
        ]);
        assert_eq!(keys.len(), 2);
        let args = text(&args);
        assert_eq!(args[BatchArg::Callers.at() - 1], "2");
        assert_eq!((args[BatchArg::Keys.at() - 1].as_str(), args[BatchArg::Args.at() - 1].as_str()), ("1", "2"));
        assert_eq!(args[BatchArg::Args.at()..], ["1", "2", "3", "4"]);
        let (_, args) = batch_layout(vec![(vec![key("a")], vec!["1".into()]), (vec![key("b"), key("c")], vec![])]);
        let args = text(&args);
        assert_eq!(args[BatchArg::Keys.at() - 1], "");
        // Caller i's counts at Keys - 1 + 2i and Args - 1 + 2i, then the arguments.
        let counts =
            |i: usize| (args[BatchArg::Keys.at() - 2 + 2 * i].as_str(), args[BatchArg::Args.at() - 2 + 2 * i].as_str());
        assert_eq!((counts(1), counts(2)), (("1", "1"), ("2", "0")));
        assert_eq!(args[BatchArg::Args.at() - 1 + 2 * 2..], ["1"]);
        let lua = include_str!("../lua/batch.lua");
        assert!(crate::contract::literal_positions(lua).is_empty(), "{:?}", crate::contract::literal_positions(lua));
        let prelude = crate::contract::prelude("tests", batch_consts());
        assert!(crate::contract::undeclared_names(&prelude, lua, &["BATCH_"]).is_empty());
    }
    use std::sync::Mutex;

    use super::*;

    /// With a deadline, a caller stuck behind a batch that never returns fails at the deadline;
    /// beyond `MAX_WAITING` waiting callers, a new one fails at once without being queued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_wait_at_most_the_deadline_and_no_more_than_the_bound_wait() {
        let deadline = Duration::from_millis(50);
        let stuck = |_: Vec<u32>| std::future::pending::<Vec<Result<u32>>>();
        let batcher = Arc::new(Batcher::new(1, 1, stuck).with_deadline(Some(deadline)));
        let started = tokio::time::Instant::now();
        assert!(matches!(batcher.submit(0, 1).await, Err(Error::Timeout(d)) if d == deadline));
        assert!(started.elapsed() >= deadline);

        let unbounded = Arc::new(Batcher::new(1, 1, stuck));
        let waiting: Vec<_> = (0..Batcher::<u32, u32>::MAX_WAITING)
            .map(|i| {
                let batcher = Arc::clone(&unbounded);
                tokio::spawn(async move { batcher.submit(0, u32::try_from(i).unwrap_or(0)).await })
            })
            .collect();
        while unbounded.waiting.load(Ordering::Relaxed) < Batcher::<u32, u32>::MAX_WAITING {
            tokio::task::yield_now().await;
        }
        assert!(matches!(unbounded.submit(0, 0).await, Err(Error::Overloaded { .. })));
        waiting.iter().for_each(tokio::task::JoinHandle::abort);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let batcher = Arc::new(Batcher::new(16, 1, move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move {
                tokio::task::yield_now().await;
                batch.into_iter().map(|n| Ok(n * 2)).collect()
            }
        }));
        let tasks: Vec<_> = (0..200u32)
            .map(|n| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { (n, batcher.submit(0, n).await) })
            })
            .collect();
        for task in tasks {
            let (n, answer) = task.await.unwrap();
            assert_eq!(answer.unwrap(), n * 2);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 200, "every request ran once");
        assert!(sizes.iter().all(|&s| s <= 16), "no batch over the maximum: {sizes:?}");
        assert!(sizes.len() < 200, "some requests shared a batch: {sizes:?}");
    }

    #[tokio::test]
    async fn groups_never_share_a_batch_and_wrong_answer_counts_fail_the_batch() {
        let batcher = Batcher::new(8, 1, |batch: Vec<(u16, u16)>| async move {
            let group = batch[0].0;
            assert!(batch.iter().all(|(g, _)| *g == group), "mixed groups in {batch:?}");
            batch.into_iter().map(|(_, v)| Ok(v)).collect()
        });
        let answers = futures_util::future::join_all((0..40u16).map(|i| batcher.submit(i % 3, (i % 3, i)))).await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap() as usize, i);
        }
        let short = Batcher::new(8, 1, |_batch: Vec<u8>| async { vec![Ok(1u8)] });
        let answers = futures_util::future::join_all((0..2).map(|i| short.submit(0, i))).await;
        assert!(answers.iter().any(|a| matches!(a, Err(Error::UnexpectedReply { .. }))), "{answers:?}");
    }

    #[tokio::test]
    async fn a_busy_group_never_holds_up_another() {
        let release = Arc::new(tokio::sync::Notify::new());
        let held = Arc::clone(&release);
        let batcher = Arc::new(Batcher::new(8, 1, move |batch: Vec<u16>| {
            let held = Arc::clone(&held);
            async move {
                if batch.contains(&0) {
                    held.notified().await;
                }
                batch.into_iter().map(Ok).collect()
            }
        }));
        let blocked = tokio::spawn({
            let batcher = Arc::clone(&batcher);
            async move { batcher.submit(0, 0).await }
        });
        tokio::task::yield_now().await;
        let other = tokio::time::timeout(std::time::Duration::from_secs(1), batcher.submit(1, 1)).await;
        assert_eq!(other.expect("group 1 answered while group 0 was busy").unwrap(), 1);
        release.notify_one();
        assert_eq!(blocked.await.unwrap().unwrap(), 0);
    }

    #[test]
    fn a_batcher_outlives_the_runtime_that_ran_its_batches() {
        let batcher = Batcher::new(8, 2, |batch: Vec<u8>| async move { batch.into_iter().map(Ok).collect() });
        for n in 0..3 {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            assert_eq!(runtime.block_on(batcher.submit(0, n)).unwrap(), n);
        }
    }

    #[tokio::test]
    async fn a_lone_request_is_sent_at_once() {
        let batcher = Batcher::new(64, 4, |batch: Vec<u8>| async move { batch.into_iter().map(Ok).collect() });
        let answer = tokio::time::timeout(std::time::Duration::from_secs(1), batcher.submit(0, 7)).await;
        assert_eq!(answer.unwrap().unwrap(), 7);
    }
}
