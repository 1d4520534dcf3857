//! The `Backend` trait: everything redtail's crates ask of Redis.

use std::{any::Any, fmt, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::{Arg, Cmd, Error, Key, Pattern, Result, Script, Value};

/// A connection to Redis (or something that behaves like it), shared as `Arc<dyn Backend>`.
///
/// Implementations: `redtail_connection::Redis` (standalone, cluster and sentinel through fred)
/// and the in-memory backend of `redtail-testkit`.
///
/// # Timeouts
/// Every method is bounded by the backend's command timeout and then fails with
/// [`Error::Timeout`]. Each method says what a timeout means for the data.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Runs one command and returns its reply; an error reply is [`Error::Server`].
    ///
    /// On a cluster the command goes to the node owning its first key's slot (redirects are
    /// followed); a command without keys goes to any node.
    ///
    /// Timeout: unknown whether the command was applied.
    /// After a dropped connection the command may be sent again, up to the backend's retry limit,
    /// so use it for commands that are safe to repeat or whose repetition the caller tolerates.
    async fn call(&self, cmd: Cmd) -> Result<Value>;

    /// Sends several commands in one round trip per node and returns one reply per command, in
    /// order. An error reply for one command is a [`Value::Error`] in its place; the others still
    /// run. Nothing is atomic: use [`Backend::transaction`] or a script for that.
    ///
    /// Timeout: unknown, per command, which commands were applied.
    async fn pipeline(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>>;

    /// Runs the commands in `MULTI`/`EXEC`: no other client's command runs between them.
    ///
    /// Every key must map to one cluster slot (build them from one [`Tagged`](crate::Tagged)
    /// namespace), or [`Error::CrossSlot`] is returned before anything is sent.
    /// As in Redis, a command that fails at run time (say `WRONGTYPE`) does not roll back the
    /// others: its place holds a [`Value::Error`].
    ///
    /// Timeout: unknown whether the transaction ran, but it ran whole or not at all.
    async fn transaction(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>>;

    /// Several transactions, one per element of `calls` (each [`Backend::transaction`]'s rules:
    /// its keys in one slot), sent together: how a
    /// [`BatchedTransaction`](crate::BatchedTransaction) serves many callers in one write. Each
    /// runs whole or not at all and is answered on its own, in order; an error that fails the
    /// whole exchange (a lost connection) is the outer error. On a cluster, all calls' keys must
    /// map to one slot.
    ///
    /// The default runs them one [`Backend::transaction`] each, concurrently; backends override it
    /// to write them all at once (`redtail_connection::Redis` runs them as one transaction, so a
    /// command the server refuses while queueing, a syntax error, fails them all as the outer
    /// error, and nothing runs).
    ///
    /// Timeout: unknown which transactions ran, but each ran whole or not at all.
    async fn transactions(&self, calls: Vec<Vec<Cmd>>) -> Result<Vec<Result<Vec<Value>>>> {
        Ok(futures_util::future::join_all(calls.into_iter().map(|call| self.transaction(call))).await)
    }

    /// Runs `script` with `EVALSHA`. If the server answers `NOSCRIPT` (a restart, a failover,
    /// `SCRIPT FLUSH`) the script is loaded and run once more: `NOSCRIPT` proves it did not run.
    /// After any other failure, a dropped connection included, the script is never sent again,
    /// so a state-changing script runs at most once per call.
    ///
    /// Every key must be passed in `keys` and map to one slot, or [`Error::CrossSlot`].
    ///
    /// Timeout: unknown whether the script ran (it ran whole or not at all).
    async fn eval(&self, script: &Script, keys: &[Key], args: Vec<Arg>) -> Result<Value>;

    /// One `SCAN` step with `MATCH pattern COUNT count`, starting at `cursor`
    /// ([`Cursor::START`] for a new scan). On a cluster the cursor walks every primary in turn.
    ///
    /// As with `SCAN`, a key may be returned twice and keys written during the scan may be
    /// missed. Timeout: nothing was changed; the step can be repeated with the same cursor.
    async fn scan(&self, cursor: Cursor, pattern: &Pattern, count: u32) -> Result<ScanPage>;

    /// Publishes `message` on `channel`, returning how many subscribers received it
    /// (on a cluster, those connected to the node that took the message).
    ///
    /// Timeout: unknown whether the message was delivered.
    async fn publish(&self, channel: &str, message: Bytes) -> Result<u64>;

    /// Subscribes to `channels`; messages arrive on the returned [`Subscription`] until it is
    /// dropped. Delivery is at most once: messages published while the connection is down are lost,
    /// and the subscription resumes by itself after a reconnect.
    ///
    /// Timeout: the subscription was not made.
    async fn subscribe(&self, channels: &[&str]) -> Result<Subscription>;

    /// Follows every change to keys starting with one of `prefixes`, made by any client, through
    /// Redis's server-assisted client-side caching (`CLIENT TRACKING ON BCAST PREFIX ...`, on
    /// every primary of a cluster). Each [`Event::Message`] names one changed key (its payload;
    /// its channel is [`TRACKING_CHANNEL`]). An [`Event::Gap`] says keys may have changed unseen:
    /// the tracking connection was lost (once at once, and again once tracking is back on every
    /// primary), the subscription fell behind, or the database was flushed.
    ///
    /// Prefixes must not overlap (Redis refuses `a:` with `a:b:`). Delivery is at most once, as
    /// with [`Backend::subscribe`]; changes are reported after they are made, never before.
    ///
    /// The default answers [`Error::InvalidInput`]: a backend without it says so at once.
    /// Timeout: tracking was not started.
    async fn track(&self, prefixes: &[&str]) -> Result<Subscription> {
        let _ = prefixes;
        Err(Error::InvalidInput(format!("{self:?} cannot track keys (CLIENT TRACKING)")))
    }

    /// Runs a blocking command (`BLMOVE`, `BZPOPMIN`, `XREAD BLOCK`, ...) on a connection reserved
    /// for blocking commands, so that it never delays other traffic.
    /// The backend waits for the command's own timeout plus its command timeout.
    ///
    /// Timeout: unknown whether the command took an element; prefer commands that move the
    /// element somewhere recoverable (`BLMOVE` to a processing list) over plain pops.
    async fn blocking(&self, cmd: Cmd) -> Result<Value>;

    /// Whether this is a Redis Cluster, where the keys of one script, transaction or multi-key
    /// command must share a slot. Elsewhere a [`Batcher`](crate::Batcher) may put the keys of
    /// many slots in one call (see [`Script::across_slots`]).
    fn is_cluster(&self) -> bool;

    /// How long a command may take before it fails with [`Error::Timeout`](crate::Error::Timeout),
    /// when the backend has such a bound; `None` otherwise. Batched script calls
    /// ([`BatchedScript`](crate::BatchedScript)) wait at most this long in all, queueing included
    /// (see [`Batcher::with_deadline`](crate::Batcher::with_deadline)).
    fn command_timeout(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The channel named by the messages of [`Backend::track`]: the one Redis itself uses for
/// invalidations.
pub const TRACKING_CHANNEL: &str = "__redis__:invalidate";

/// Where a [`Backend::scan`] continues: the shard (cluster primary) and that shard's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    /// Index of the primary being scanned, in the backend's own stable order.
    pub shard: u32,
    /// The `SCAN` cursor on that primary.
    pub position: u64,
}

impl Cursor {
    /// The cursor that starts a scan.
    pub const START: Cursor = Cursor { shard: 0, position: 0 };
}

/// One step of a [`Backend::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys found in this step; possibly none even when the scan continues.
    pub keys: Vec<Key>,
    /// Where to continue, `None` when the scan is complete.
    pub next: Option<Cursor>,
}

/// A message received on a [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The channel the message was published on.
    pub channel: String,
    /// The message body.
    pub payload: Bytes,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A published message.
    Message(Message),
    /// Messages may have been missed: the subscriber connection was lost and re-established, or
    /// this subscription fell too far behind. Anything kept in sync by messages must be
    /// re-synchronised (a local cache cleared, for example).
    Gap,
}

/// The backend's end of a [`Subscription`]: delivers its messages and reports its gaps.
#[derive(Debug, Clone)]
pub struct Feed {
    messages: mpsc::Sender<Message>,
    gaps: Arc<watch::Sender<u64>>,
}

impl Feed {
    /// Hands `message` to the subscription; when it is full or gone, records a gap instead and
    /// answers `false`.
    pub fn deliver(&self, message: Message) -> bool {
        let delivered = self.messages.try_send(message).is_ok();
        if !delivered {
            self.gap();
        }
        delivered
    }

    /// Tells the subscription that messages may have been missed ([`Event::Gap`]).
    pub fn gap(&self) {
        self.gaps.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves once the subscription is dropped: the backend can stop feeding it.
    pub async fn closed(&self) {
        self.messages.closed().await;
    }
}

/// Messages from [`Backend::subscribe`]; unsubscribes when dropped.
pub struct Subscription {
    messages: mpsc::Receiver<Message>,
    gaps: watch::Receiver<u64>,
    // Dropped with the subscription; the backend unsubscribes in its `Drop`.
    _guard: Box<dyn Any + Send + Sync>,
}

impl Subscription {
    /// A subscription buffering up to `capacity` messages, and the [`Feed`] through which the
    /// backend fills it; `guard` is dropped when the subscription is.
    pub fn channel(capacity: usize, guard: impl Any + Send + Sync) -> (Feed, Subscription) {
        let (messages, receiver) = mpsc::channel(capacity);
        let (gaps, gap_receiver) = watch::channel(0);
        let feed = Feed { messages, gaps: Arc::new(gaps) };
        (feed, Subscription { messages: receiver, gaps: gap_receiver, _guard: Box::new(guard) })
    }

    /// The next event, or `None` once the backend has shut down. A gap is reported before the
    /// messages that follow it.
    pub async fn recv(&mut self) -> Option<Event> {
        tokio::select! {
            biased;
            Ok(()) = self.gaps.changed() => {
                self.gaps.borrow_and_update();
                Some(Event::Gap)
            }
            message = self.messages.recv() => message.map(Event::Message),
        }
    }

    /// The next message, skipping gaps, or `None` once the backend has shut down.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            if let Event::Message(message) = self.recv().await? {
                return Some(message);
            }
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// Checks that every key maps to one slot; `what` names the operation in the error.
pub fn same_slot(what: &'static str, mut slots: impl Iterator<Item = u16>) -> Result<Option<u16>> {
    let Some(first) = slots.next() else { return Ok(None) };
    match slots.find(|&s| s != first) {
        Some(other) => Err(Error::CrossSlot { what, first, other }),
        None => Ok(Some(first)),
    }
}
