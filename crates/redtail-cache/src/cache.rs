//! `Cache`: typed reads and writes, loads with stampede protection, and invalidation.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redtail_core::{
    Arg, Backend, BatchedGet, Batcher, Bytes, Cmd, Codec, Cursor, JsonCodec, Key, Namespace, Value, batch_group,
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{OnceCell, oneshot};

use crate::{
    CacheConfig, EntryOptions, Error, Invalidation, Result,
    envelope::{Envelope, TagVersion},
    local::{self, Local, Source},
    script::{RELEASE, ReleaseArg, WRITE, WriteArg},
    stats::{CacheStats, Counters},
};

/// Most writes in one batch ([`write_batch`]), and batches on their way at once.
const WRITES_PER_BATCH: usize = 256;
const WRITE_BATCHES_IN_FLIGHT: usize = 4;
/// Most tag record keys remembered ([`Inner::tag_keys`]).
const TAG_KEYS: usize = 1024;

/// Keys removed per round trip by pattern invalidation.
const UNLINK_BATCH: u32 = 500;
/// At most one warning about failed reads per this many milliseconds.
const WARN_EVERY_MS: u64 = 10_000;

/// A typed cache on Redis, with an optional in-process first tier.
///
/// Cheap to clone; clones share connections, counters and in-flight loads.
#[derive(Clone)]
pub struct Cache<C: Codec = JsonCodec> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    backend: Arc<dyn Backend>,
    // Concurrent reads of entries and tag records share one MGET; concurrent writes share
    // their round trips (`write_batch`).
    reads: BatchedGet,
    writes: Batcher<Write, ()>,
    codec: C,
    config: CacheConfig,
    entries: Namespace,
    tags: Namespace,
    /// The keys of the tag records read so far (at most [`TAG_KEYS`]): a read names its tags on
    /// every call, and most caches use a few dozen.
    tag_keys: RwLock<HashMap<Box<str>, Key>>,
    locks: Namespace,
    channel: String,
    /// Identifies this instance's invalidation messages.
    id: [u8; 8],
    flights: Mutex<HashMap<Bytes, Arc<Flight>>>,
    local: Option<Local>,
    counters: Counters,
    rng: AtomicU64,
    last_warning_ms: AtomicU64,
    // Dropping it ends the task that follows invalidation messages.
    _stop_following: Option<oneshot::Sender<()>>,
}

/// The shared outcome of one load: the encoded value, or why it failed.
type Outcome = Result<Loaded>;

/// What a load produced.
enum Loaded {
    /// The encoded value.
    Value(Bytes),
    /// Another process holds the load lock, and the callers have a stale value to serve.
    Elsewhere,
}

/// One load in progress for a key; callers in this process share it, as long as they arrived
/// knowing what it knew: the same tag versions, and no invalidation by this instance since it
/// started.
struct Flight {
    /// The versions of the key's tags the load started under.
    versions: Versions,
    /// This instance's invalidations when it started (see [`Cache::invalidations`]).
    invalidations: u64,
    outcome: OnceCell<Outcome>,
}

/// What a lookup found.
enum Found {
    Fresh(Arc<Envelope>),
    Stale(Arc<Envelope>),
    Missing,
}

impl Cache<JsonCodec> {
    /// A cache storing JSON.
    pub async fn new(backend: impl Into<Arc<dyn Backend>>, config: CacheConfig) -> Result<Self> {
        Cache::with_codec(backend, config, JsonCodec).await
    }
}

impl<C: Codec> Cache<C> {
    /// A cache storing values with `codec`. With a local tier, it subscribes to the invalidation
    /// channel first, so it misses nothing another instance sends after this returns.
    pub async fn with_codec(backend: impl Into<Arc<dyn Backend>>, config: CacheConfig, codec: C) -> Result<Self> {
        config.check()?;
        let backend = backend.into();
        let root = config.namespace.clone();
        let mut id = [0; 8];
        let mut seed = [0; 8];
        getrandom::fill(&mut id)
            .and_then(|()| getrandom::fill(&mut seed))
            .map_err(|e| Error::InvalidInput(format!("the OS random generator failed: {e}")))?;
        let channel = format!("{}:inv", root.prefix());
        let (entries, tags) = (root.child("e"), root.child("t"));
        let (local, stop) = match config.local {
            Some(tier) => {
                let local = Local::new(tier);
                // Subscribed before anything is read, so nothing sent after this returns is missed.
                let (source, subscription) = match tier.invalidation {
                    Invalidation::PubSub => (Source::Messages { own_id: id }, backend.subscribe(&[&channel]).await?),
                    Invalidation::Tracking => {
                        let (entries, tags) = (format!("{}:", entries.prefix()), format!("{}:", tags.prefix()));
                        let subscription = backend.track(&[&entries, &tags]).await?;
                        (Source::Tracking { tags: Bytes::from(tags) }, subscription)
                    }
                };
                let (stop, stopped) = oneshot::channel();
                local.clone().follow(source, subscription, stopped);
                (Some(local), Some(stop))
            }
            None => (None, None),
        };
        let writes = {
            let (backend, tags, clock) = (Arc::clone(&backend), tags.clone(), config.clock.clone());
            Batcher::new(WRITES_PER_BATCH, WRITE_BATCHES_IN_FLIGHT, move |writes| {
                let (backend, tags, now_ms) = (Arc::clone(&backend), tags.clone(), clock.now_ms());
                async move { write_batch(&*backend, &tags, now_ms, writes).await }
            })
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                entries,
                tags,
                tag_keys: RwLock::default(),
                locks: root.child("l"),
                channel,
                id,
                reads: BatchedGet::new(Arc::clone(&backend)),
                writes,
                backend,
                codec,
                counters: Counters::new(root.prefix()),
                config,
                flights: Mutex::default(),
                local,
                rng: AtomicU64::new(u64::from_le_bytes(seed)),
                last_warning_ms: AtomicU64::new(0),
                _stop_following: stop,
            }),
        })
    }

    /// The fresh value of `key`, or `None`: missing, expired, invalidated, undecodable (then
    /// deleted), or Redis failed (counted and logged, at most once every 10 s).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.get_with_tags(key, &[]).await
    }

    /// [`Cache::get`] in one round trip when the entry's tags are among `tags`; other tags cost
    /// a second round trip.
    pub async fn get_with_tags<T: DeserializeOwned>(&self, key: &str, tags: &[&str]) -> Option<T> {
        let key = self.inner.entries.key([key]);
        match self.lookup(&key, tags, None).await {
            Ok((Found::Fresh(entry), _)) => self.decode(&key, &entry),
            Ok(_) => None,
            Err(e) => {
                self.read_failed(&e);
                None
            }
        }
    }

    /// [`Cache::get`] of several keys at once, in their order. The reads go together with any
    /// other caller's into the batched reads (one `MGET` per slot group, not one per key).
    pub async fn get_many<T: DeserializeOwned>(&self, keys: &[&str]) -> Vec<Option<T>> {
        futures_util::future::join_all(keys.iter().map(|key| self.get(key))).await
    }

    /// [`Cache::set`] of several entries at once, all with `options` (their tags included);
    /// the writes go together into the batched write script. One result per entry, in order:
    /// an entry that cannot be stored fails alone.
    pub async fn set_many<T: Serialize>(&self, entries: &[(&str, T)], options: &EntryOptions) -> Vec<Result<()>> {
        futures_util::future::join_all(entries.iter().map(|(key, value)| self.set(key, value, options))).await
    }

    /// Stores `value` under `key`.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T, options: &EntryOptions) -> Result<()> {
        options.check()?;
        let value = self.encode(key, value)?;
        let key = self.inner.entries.key([key]);
        self.store(&key, value, options, Duration::ZERO, Vec::new()).await
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let key = self.inner.entries.key([key]);
        let removed = self.inner.backend.call(Cmd::new("UNLINK").key(&key)).await?.as_int()? > 0;
        self.broadcast(local::KEY, key.as_bytes()).await;
        self.inner.counters.invalidations.bump();
        Ok(removed)
    }

    /// The value of `key`, loaded with `loader` when missing.
    ///
    /// Concurrent calls for one key in this process run one loader; with
    /// [`EntryOptions::lock_wait`], one across all processes. A stale value (within
    /// [`EntryOptions::stale_for`]) is served to every caller but the one refreshing it, and to
    /// that one too when its loader fails.
    ///
    /// A value loaded while one of its tags is invalidated is stored already invalid: a load
    /// that started before an invalidation never serves after it.
    pub async fn get_or_compute<T, F, Fut, E>(&self, key: &str, options: &EntryOptions, loader: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        options.check()?;
        if options.soft_timeout.is_some() {
            return Err(Error::InvalidInput(
                "soft_timeout needs Cache::get_or_spawn: a loader borrowed by this call cannot go on after it returns"
                    .to_owned(),
            ));
        }
        // Read before the lookup: a load started before an invalidation returned is not joined.
        let invalidations = self.invalidations();
        let user_key = key;
        let key = self.inner.entries.key([key]);
        let tags: Vec<&str> = options.tags.iter().map(String::as_str).collect();
        // Tag records are created now if missing, so that an invalidation during the load
        // finds them and the value is stored already invalid.
        let (stale, versions) = match self.lookup(&key, &tags, Some(self.hard_ms(options.ttl, options))).await {
            Ok((Found::Fresh(entry), versions)) => {
                if !self.refresh_early(&entry, options)
                    && let Some(value) = self.decode(&key, &entry)
                {
                    return Ok(value);
                }
                (Some(entry), versions)
            }
            Ok((Found::Stale(entry), versions)) => (Some(entry), versions),
            Ok((Found::Missing, versions)) => (None, versions),
            Err(e) => {
                self.read_failed(&e);
                (None, Vec::new())
            }
        };
        let member = self.join(&key, &versions, invalidations);
        // Someone in this process is refreshing already: serve the stale value meanwhile.
        if member.others()
            && let Some(value) = stale.as_ref().and_then(|s| self.serve_stale(&key, s))
        {
            return Ok(value);
        }
        let mut loaded = None;
        let outcome = member
            .flight
            .outcome
            .get_or_init(|| self.load(&key, user_key, options, versions, stale.is_some(), loader, &mut loaded))
            .await;
        if let Some(value) = loaded {
            return Ok(value);
        }
        let from_stale = || stale.as_ref().and_then(|s| self.serve_stale(&key, s));
        match outcome {
            Ok(Loaded::Value(bytes)) => self
                .inner
                .codec
                .decode(bytes)
                .map_err(|e| Error::Encode { key: user_key.to_owned(), source: Arc::new(e) }),
            Ok(Loaded::Elsewhere) => from_stale().ok_or_else(|| Error::Busy { key: user_key.to_owned() }),
            Err(e) => from_stale().ok_or_else(|| e.clone()),
        }
    }

    /// [`Cache::get_or_compute`] with the load on a task of its own, so that it can outlive
    /// the call: with [`EntryOptions::soft_timeout`], a caller whose refresh takes longer is
    /// served the stale value at the soft timeout, and the load finishes in the background and
    /// stores its value for the next read (FusionCache's and BentoCache's soft timeout). The
    /// load also finishes when the caller is dropped. A caller without a stale value waits for
    /// the load (up to [`EntryOptions::hard_timeout`]).
    pub async fn get_or_spawn<T, F, Fut, E>(&self, key: &str, options: &EntryOptions, loader: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        options.check()?;
        let tags: Vec<&str> = options.tags.iter().map(String::as_str).collect();
        let entry = self.inner.entries.key([key]);
        if let Some(fraction) = options.eager_refresh
            && let Ok((Found::Fresh(fresh), _)) = self.lookup(&entry, &tags, None).await
            && let Some(value) = self.decode(&entry, &fresh)
        {
            let left = options.ttl.mul_f64(1.0 - fraction);
            let due_ms = fresh.fresh_until_ms.saturating_sub(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
            if self.now_ms() >= due_ms {
                let (cache, key, options) = (self.clone(), key.to_owned(), options.clone());
                tokio::spawn(async move { cache.refresh_eagerly(&key, &options, fresh.fresh_until_ms, loader).await });
            }
            return Ok(value);
        }
        let soft = options.soft_timeout;
        let task_options = EntryOptions { soft_timeout: None, ..options.clone() };
        let (cache, task_key) = (self.clone(), key.to_owned());
        let mut task = tokio::spawn(async move { cache.get_or_compute(&task_key, &task_options, loader).await });
        if let Some(soft) = soft {
            match tokio::time::timeout(soft, &mut task).await {
                Ok(joined) => return joined.map_err(|e| self.task_failed(key, e))?,
                Err(_) => {
                    if let Ok((Found::Stale(stale) | Found::Fresh(stale), _)) = self.lookup(&entry, &tags, None).await
                        && let Some(value) = self.serve_stale(&entry, &stale)
                    {
                        return Ok(value);
                    }
                }
            }
        }
        task.await.map_err(|e| self.task_failed(key, e))?
    }

    /// Reloads `key` in the background ([`EntryOptions::eager_refresh`]), once across
    /// processes: only under its load lock, and only if the entry is still the one seen (its
    /// freshness ends at `seen_fresh_until`), so that a process that saw it before another one
    /// refreshed it does not refresh it again.
    async fn refresh_eagerly<T, F, Fut, E>(&self, key: &str, options: &EntryOptions, seen_fresh_until: u64, loader: F)
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let entry = self.inner.entries.key([key]);
        let Ok(Some(token)) = self.lock(&entry).await else { return };
        let tags: Vec<&str> = options.tags.iter().map(String::as_str).collect();
        let current = self.lookup(&entry, &tags, Some(self.hard_ms(options.ttl, options))).await;
        if let Ok((Found::Fresh(fresh), versions)) = current
            && fresh.fresh_until_ms == seen_fresh_until
        {
            // The lock is held here: the load takes no other.
            let unlocked = EntryOptions { lock_wait: None, ..options.clone() };
            let mut loaded = None;
            if let Err(e) = self.load(&entry, key, &unlocked, versions, true, loader, &mut loaded).await {
                tracing::warn!(error = %e, "an eager refresh failed; the entry is served until it expires");
            }
        }
        self.unlock(&entry, token).await;
    }

    /// A load task that panicked or was cancelled (its runtime shutting down).
    fn task_failed(&self, key: &str, e: tokio::task::JoinError) -> Error {
        self.inner.counters.loader_errors.bump();
        Error::Loader {
            key: key.to_owned(),
            source: Arc::new(std::io::Error::other(format!("the load task failed: {e}"))),
        }
    }

    /// Invalidates every entry tagged `tag`, in every process, with one write: the tag's version
    /// changes, and entries carrying the old one are never served again.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        EntryOptions::default().tag(tag).check()?;
        let version = self.new_version();
        let key = self.inner.tags.key([tag]);
        // A tag without a record has no valid entries: nothing to invalidate, nothing to create.
        let cmd = Cmd::new("SET").key(&key).arg(version.to_vec()).arg("XX").arg("KEEPTTL");
        self.inner.backend.call(cmd).await?;
        if let Some(local) = &self.inner.local {
            local.remove_tag(tag);
        }
        self.broadcast(local::TAG, tag.as_bytes()).await;
        self.inner.counters.invalidations.bump();
        Ok(())
    }

    /// Deletes every entry whose key matches `glob` (`*` matches any run of characters), with
    /// `SCAN` and `UNLINK` in batches on every primary; never `KEYS`. Returns how many were
    /// deleted. Entries written while it runs may survive.
    pub async fn invalidate_pattern(&self, glob: &str) -> Result<u64> {
        let pattern = self.inner.entries.glob(glob);
        let mut cursor = Some(Cursor::START);
        let mut removed = 0;
        while let Some(at) = cursor {
            let page = self.inner.backend.scan(at, &pattern, UNLINK_BATCH).await?;
            cursor = page.next;
            if page.keys.is_empty() {
                continue;
            }
            // One UNLINK per key: keys of a cluster live in different slots.
            let unlinks = page.keys.iter().map(|k| Cmd::new("UNLINK").key(k)).collect();
            for reply in self.inner.backend.pipeline(unlinks).await? {
                removed += u64::try_from(reply.as_int()?).unwrap_or(0);
            }
        }
        if let Some(local) = &self.inner.local {
            local.clear();
        }
        self.broadcast(local::ALL, b"").await;
        self.inner.counters.invalidations.bump();
        Ok(removed)
    }

    /// Empties this instance's in-process tier.
    pub fn clear_local(&self) {
        if let Some(local) = &self.inner.local {
            local.clear();
        }
    }

    /// What the cache did since it was created.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    /// Looks `key` up, reading the versions of `hint` tags in the same round trip (creating
    /// missing tag records with a TTL of `create_ms` when given); returns what was found and the
    /// versions of the `hint` tags, in their order.
    async fn lookup(
        &self,
        key: &Key,
        hint: &[&str],
        create_ms: Option<u64>,
    ) -> redtail_core::Result<(Found, Versions)> {
        let now = self.now_ms();
        if let Some(local) = &self.inner.local
            && let Some(entry) = local.get(key.as_bytes())
            && entry.fresh_until_ms > now
        {
            self.inner.counters.local_hits.bump();
            return Ok((Found::Fresh(entry), Vec::new()));
        }
        // Taken before the read: what it finds is kept locally only if nothing was invalidated
        // meanwhile.
        let generation = self.inner.local.as_ref().map_or(0, Local::generation);
        let mut keys = Vec::with_capacity(1 + hint.len());
        keys.push(key.clone());
        keys.extend(hint.iter().map(|t| self.tag_key(t)));
        // With `create_ms`, versions are proposed for tags without a record.
        let (replies, proposals) = match create_ms {
            // Plain reads: the entry and the tag records, batched with other callers' reads.
            None => (self.inner.reads.get_many(keys).await?, Vec::new()),
            Some(ttl_ms) => {
                let proposals: Vec<TagVersion> = hint.iter().map(|_| self.new_version()).collect();
                let mut cmds = Vec::with_capacity(keys.len());
                cmds.push(Cmd::new("GET").key(key));
                cmds.extend(
                    keys.iter().skip(1).zip(&proposals).map(|(tag, proposal)| get_or_create_tag(tag, proposal, ttl_ms)),
                );
                let replies = self.inner.backend.pipeline(cmds).await?;
                (replies.into_iter().map(Value::into_opt_bytes).collect::<redtail_core::Result<_>>()?, proposals)
            }
        };
        let mut replies = replies.into_iter();
        let stored = replies.next().flatten();
        // One proposal per tag, in order (none for plain reads); nil where a proposal was made
        // means the proposal became the version.
        let mut proposals = proposals.into_iter();
        let versions: Versions = replies
            .map(|reply| {
                let proposal = proposals.next();
                version_of(reply).or(proposal)
            })
            .collect();
        let Some(stored) = stored else { return Ok(self.missing(versions)) };
        let Some(entry) = Envelope::decode(stored) else {
            self.corrupt(key).await;
            return Ok(self.missing(versions));
        };
        if entry.format != self.inner.codec.format() {
            return Ok(self.missing(versions));
        }
        // A lost tag record invalidates: its entries carry a version nothing matches.
        let mut unknown = Vec::new();
        for (tag, version) in &entry.tags {
            match hint.iter().position(|t| t.as_bytes() == &tag[..]) {
                Some(i) if versions.get(i) == Some(&Some(*version)) => {}
                Some(_) => return Ok(self.missing(versions)),
                None => unknown.push((self.inner.tags.key([tag]), *version)),
            }
        }
        if !unknown.is_empty() {
            let (keys, expected): (Vec<Key>, Vec<TagVersion>) = unknown.into_iter().unzip();
            let read = self.inner.reads.get_many(keys).await?;
            if read.into_iter().zip(&expected).any(|(reply, version)| version_of(reply) != Some(*version)) {
                return Ok(self.missing(versions));
            }
        }
        let entry = Arc::new(entry);
        if entry.fresh_until_ms <= now {
            return Ok((Found::Stale(entry), versions));
        }
        if let Some(local) = &self.inner.local {
            local.insert(key.to_bytes(), Arc::clone(&entry), generation);
        }
        self.inner.counters.hits.bump();
        Ok((Found::Fresh(entry), versions))
    }

    /// The key of `tag`'s record.
    fn tag_key(&self, tag: &str) -> Key {
        if let Some(key) = self.inner.tag_keys.read().unwrap_or_else(PoisonError::into_inner).get(tag) {
            return key.clone();
        }
        let key = self.inner.tags.key([tag]);
        let mut known = self.inner.tag_keys.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() < TAG_KEYS {
            known.insert(tag.into(), key.clone());
        }
        key
    }

    fn missing(&self, versions: Versions) -> (Found, Versions) {
        self.inner.counters.misses.bump();
        (Found::Missing, versions)
    }

    /// Runs `loader` for `key` under the distributed lock when asked, and stores its value.
    /// The caller's own value is left in `loaded`, so it is not decoded again.
    #[allow(clippy::too_many_arguments)]
    async fn load<T, F, Fut, E>(
        &self,
        key: &Key,
        user_key: &str,
        options: &EntryOptions,
        versions: Versions,
        has_stale: bool,
        loader: F,
        loaded: &mut Option<T>,
    ) -> Outcome
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut lock = None;
        if let Some(wait) = options.lock_wait {
            match self.lock(key).await {
                Ok(Some(token)) => {
                    // Another process may have stored the missing value just before we locked.
                    if !has_stale && let Ok((Found::Fresh(entry), _)) = self.lookup(key, &[], None).await {
                        self.unlock(key, token).await;
                        return Ok(Loaded::Value(entry.value.clone()));
                    }
                    lock = Some(token);
                }
                Ok(None) => {
                    if has_stale {
                        return Ok(Loaded::Elsewhere);
                    }
                    if let Some(value) = self.wait_for_other(key, wait).await {
                        return Ok(Loaded::Value(value));
                    }
                }
                Err(e) => self.read_failed(&e),
            }
        }
        self.inner.counters.loader_runs.bump();
        let started = Instant::now();
        let result = match options.hard_timeout {
            None => loader().await.map_err(Some),
            Some(after) => tokio::time::timeout(after, loader()).await.map_or(Err(None), |r| r.map_err(Some)),
        };
        let load_time = started.elapsed();
        let outcome = match result {
            Ok(value) => match self.encode(user_key, &value) {
                Ok(bytes) => {
                    if let Err(e) = self.store(key, bytes.clone(), options, load_time, versions).await {
                        tracing::warn!(error = %e, "a loaded value could not be cached");
                        self.inner.counters.redis_errors.bump();
                    }
                    *loaded = Some(value);
                    Ok(Loaded::Value(bytes))
                }
                Err(e) => Err(e),
            },
            Err(Some(e)) => {
                self.inner.counters.loader_errors.bump();
                Err(Error::Loader { key: user_key.to_owned(), source: Arc::from(e.into()) })
            }
            Err(None) => {
                self.inner.counters.loader_errors.bump();
                Err(Error::LoadTimeout { key: user_key.to_owned(), after: options.hard_timeout.unwrap_or_default() })
            }
        };
        if let Some(token) = lock {
            self.unlock(key, token).await;
        }
        outcome
    }

    /// Polls for the value another process is loading, for up to `wait`.
    async fn wait_for_other(&self, key: &Key, wait: Duration) -> Option<Bytes> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(5);
        while Instant::now() < deadline {
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            if let Ok((Found::Fresh(entry), _)) = self.lookup(key, &[], None).await {
                return Some(entry.value.clone());
            }
            // The other load has ended without a value this caller may serve (it failed, or an
            // invalidation made it invalid): load here now rather than wait out the rest.
            let lock_held = self.inner.backend.call(Cmd::new("EXISTS").key(&self.lock_key(key))).await;
            if matches!(lock_held.and_then(|held| held.as_int()), Ok(0)) {
                break;
            }
        }
        tracing::debug!("waited for another process's load in vain; loading here");
        None
    }

    /// Writes `value` under `key` with the tags of `options`; `known` holds the versions of
    /// those tags read before the value was computed (in their order), which it must carry.
    async fn store(
        &self,
        key: &Key,
        value: Bytes,
        options: &EntryOptions,
        load_time: Duration,
        known: Versions,
    ) -> Result<()> {
        let size = value.len();
        if size > self.inner.config.max_value_bytes {
            return Err(Error::TooLarge {
                key: String::from_utf8_lossy(key.as_bytes()).into_owned(),
                size,
                limit: self.inner.config.max_value_bytes,
            });
        }
        let ttl = options.ttl.mul_f64(1.0 + options.jitter * self.random_fraction());
        let entry = Envelope {
            format: self.inner.codec.format(),
            fresh_until_ms: self.now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            load_ms: u32::try_from(load_time.as_millis()).unwrap_or(u32::MAX),
            tags: Vec::with_capacity(options.tags.len()),
            value,
        };
        let tags = options
            .tags
            .iter()
            .enumerate()
            .map(|(i, tag)| {
                let version = match known.get(i) {
                    Some(Some(version)) => WriteTag::Known(*version),
                    _ => WriteTag::Propose(self.new_version()),
                };
                (tag.clone(), version)
            })
            .collect();
        let write = Write { key: key.clone(), entry, tags, hard_ms: self.hard_ms(ttl, options) };
        self.inner.writes.submit(batch_group(&*self.inner.backend, key), write).await.map_err(Arc::new)?;
        if let Some(local) = &self.inner.local {
            local.remove(key.as_bytes());
        }
        self.broadcast(local::KEY, key.as_bytes()).await;
        Ok(())
    }

    /// How long an entry fresh for `ttl` is kept in Redis, in ms: its TTL and its stale window.
    fn hard_ms(&self, ttl: Duration, options: &EntryOptions) -> u64 {
        u64::try_from((ttl + options.stale_for).as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Takes the load lock of `key`; its token, or `None` when another caller holds it.
    async fn lock(&self, key: &Key) -> redtail_core::Result<Option<Vec<u8>>> {
        let mut token = vec![0; 16];
        getrandom::fill(&mut token).map_err(|e| redtail_core::Error::Backend { source: e.to_string().into() })?;
        let ttl_ms = u64::try_from(self.inner.config.lock_ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let lock = self.lock_key(key);
        let cmd = Cmd::new("SET").key(&lock).arg(token.clone()).arg("NX").arg("PX").arg(ttl_ms);
        Ok(self.inner.backend.call(cmd).await?.is_ok().then_some(token))
    }

    async fn unlock(&self, key: &Key, token: Vec<u8>) {
        let lock = self.lock_key(key);
        let args = ReleaseArg::ALL.iter().map(|arg| match arg {
            ReleaseArg::Token => Arg::from(token.clone()),
        });
        if let Err(e) = self.inner.backend.eval(&RELEASE, &[lock], args.collect()).await {
            // The lock expires on its own.
            tracing::debug!(error = %e, "cache load lock not released");
        }
    }

    fn lock_key(&self, key: &Key) -> Key {
        let entry = key.as_bytes().get(self.inner.entries.prefix().len() + 1..).unwrap_or_default();
        let mut raw = Vec::with_capacity(self.inner.locks.prefix().len() + 1 + entry.len());
        raw.extend_from_slice(self.inner.locks.prefix().as_bytes());
        raw.push(b':');
        raw.extend_from_slice(entry);
        Key::from_raw(raw)
    }

    /// Joins the load of `key` in this process, starting one if none runs, or if the one running
    /// started under other tag versions or before an invalidation this caller knows of (its value
    /// may be invalid already: it stays for the callers that joined it); leaves it on drop.
    fn join(&self, key: &Key, versions: &Versions, invalidations: u64) -> Membership<'_> {
        let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
        let current =
            flights.get(key.as_bytes()).filter(|f| f.invalidations == invalidations && &f.versions == versions);
        let flight = match current {
            Some(flight) => Arc::clone(flight),
            None => {
                let flight = Arc::new(Flight { versions: versions.clone(), invalidations, outcome: OnceCell::new() });
                flights.insert(key.to_bytes(), Arc::clone(&flight));
                flight
            }
        };
        Membership { flights: &self.inner.flights, key: key.to_bytes(), flight }
    }

    /// How many invalidations (of tags, patterns or keys) this instance has made; a load that
    /// started before one is not joined by callers who arrive after it.
    fn invalidations(&self) -> u64 {
        self.inner.counters.invalidations.get()
    }

    /// XFetch: whether this caller refreshes a fresh value early.
    fn refresh_early(&self, entry: &Envelope, options: &EntryOptions) -> bool {
        let Some(beta) = options.early_refresh else { return false };
        // -ln(u) for u in (0, 1] is exponentially distributed: mostly small, sometimes large.
        let u = 1.0 - self.random_fraction();
        let head_start = f64::from(entry.load_ms) * beta * -u.ln();
        self.now_ms() as f64 + head_start >= entry.fresh_until_ms as f64
    }

    fn serve_stale<T: DeserializeOwned>(&self, key: &Key, entry: &Envelope) -> Option<T> {
        let value = self.decode(key, entry)?;
        self.inner.counters.stale_served.bump();
        Some(value)
    }

    fn decode<T: DeserializeOwned>(&self, key: &Key, entry: &Envelope) -> Option<T> {
        match self.inner.codec.decode(&entry.value) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(key.as_bytes()), error = %e, "cached value does not decode; deleted");
                self.inner.counters.decode_errors.bump();
                if let Some(local) = &self.inner.local {
                    local.remove(key.as_bytes());
                }
                let backend = Arc::clone(&self.inner.backend);
                let cmd = Cmd::new("UNLINK").key(key);
                // Deleted in the background: the caller already has its answer (a miss).
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { backend.call(cmd).await });
                }
                None
            }
        }
    }

    fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Bytes> {
        match self.inner.codec.encode(value) {
            Ok(bytes) => Ok(bytes.into()),
            Err(e) => Err(Error::Encode { key: key.to_owned(), source: Arc::new(e) }),
        }
    }

    /// A stored value this layout cannot read: deleted, counted as a decode error.
    async fn corrupt(&self, key: &Key) {
        self.inner.counters.decode_errors.bump();
        tracing::warn!(key = %String::from_utf8_lossy(key.as_bytes()), "cached value is not in redtail's format; deleted");
        if let Err(e) = self.inner.backend.call(Cmd::new("UNLINK").key(key)).await {
            self.read_failed(&e);
        }
    }

    /// Tells the other instances' in-process tiers (with key tracking, Redis tells them).
    async fn broadcast(&self, kind: u8, body: &[u8]) {
        if self.inner.config.local.is_none_or(|tier| tier.invalidation != Invalidation::PubSub) {
            return;
        }
        let message = local::message(kind, &self.inner.id, body);
        if let Err(e) = self.inner.backend.publish(&self.inner.channel, message).await {
            // Other instances may keep the old value until their tier's TTL ends.
            tracing::warn!(error = %e, "cache invalidation not broadcast");
            self.inner.counters.redis_errors.bump();
        }
    }

    /// Counts a failed read and logs it, at most once every 10 s.
    fn read_failed(&self, error: &redtail_core::Error) {
        self.inner.counters.redis_errors.bump();
        let now = self.now_ms();
        let last = self.inner.last_warning_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self.inner.last_warning_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(%error, failures = self.inner.counters.redis_errors.get(), "cache read failed; answering a miss");
        }
    }

    fn new_version(&self) -> TagVersion {
        self.random_u64().to_le_bytes()
    }

    /// Uniform in [0, 1).
    fn random_fraction(&self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// SplitMix64 over a counter seeded by the OS: fast, and distinct across instances.
    fn random_u64(&self) -> u64 {
        let mut z =
            self.inner.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn now_ms(&self) -> u64 {
        self.inner.config.clock.now_ms()
    }
}

/// A caller's part in a [`Flight`]; the last one out removes it.
struct Membership<'a> {
    flights: &'a Mutex<HashMap<Bytes, Arc<Flight>>>,
    key: Bytes,
    flight: Arc<Flight>,
}

impl Membership<'_> {
    /// Whether other callers are in the flight.
    fn others(&self) -> bool {
        // Held by the map and by each member; members join and leave under the map's lock.
        let _flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        Arc::strong_count(&self.flight) > 2
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = flights.get(&self.key)
            && Arc::ptr_eq(current, &self.flight)
            && Arc::strong_count(&self.flight) <= 2
        {
            flights.remove(&self.key);
        }
    }
}

/// Reads the version in the tag record `tag`, making `proposal` its version (kept `ttl_ms`) if
/// it has none.
fn get_or_create_tag(tag: &Key, proposal: &TagVersion, ttl_ms: u64) -> Cmd {
    Cmd::new("SET").key(tag).arg(proposal.to_vec()).arg("NX").arg("GET").arg("PX").arg(ttl_ms)
}

/// A write waiting for its batch: the entry, its tags' versions, and its life in Redis.
struct Write {
    key: Key,
    entry: Envelope,
    tags: Vec<(String, WriteTag)>,
    hard_ms: u64,
}

/// The version a write carries for one of its tags.
enum WriteTag {
    /// Read before the value was computed: the entry must carry this one.
    Known(TagVersion),
    /// To be read with the batch; this proposal becomes the version of a tag without a record.
    Propose(TagVersion),
}

/// Writes a batch in two round trips, however many writes it holds: first each tag once (its
/// version read or created, its record extended to the longest life asked for, since tag
/// records live as long as the entries that use them), then every entry.
///
/// An invalidation between the two leaves the entries written under the old versions, so they
/// are invalid, as they must be; so does a tag record that expires between them.
async fn write_batch(
    backend: &dyn Backend,
    tags: &Namespace,
    now_ms: u64,
    writes: Vec<Write>,
) -> Vec<redtail_core::Result<()>> {
    let n = writes.len();
    // Each tag once: the longest life asked for, and a proposal if writes need its version (how
    // many, so that a failed read can fail each of them).
    let mut unique: Vec<(&str, u64, Option<TagVersion>, usize)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for write in &writes {
        for (tag, version) in &write.tags {
            let i = *index.entry(tag).or_insert_with(|| {
                unique.push((tag, 0, None, 0));
                unique.len() - 1
            });
            let (_, ttl, proposal, readers) = &mut unique[i];
            *ttl = (*ttl).max(write.hard_ms);
            if let WriteTag::Propose(p) = version {
                proposal.get_or_insert(*p);
                *readers += 1;
            }
        }
    }
    let mut cmds = Vec::with_capacity(2 * unique.len());
    for (tag, ttl, proposal, _) in &unique {
        let record = tags.key([tag]);
        if let Some(proposal) = proposal {
            cmds.push(get_or_create_tag(&record, proposal, *ttl));
        }
        cmds.push(Cmd::new("PEXPIREAT").key(&record).arg(tag_deadline(now_ms, *ttl)).arg("GT"));
    }
    let mut replies = match backend.pipeline(cmds).await {
        Ok(replies) => replies.into_iter(),
        Err(e) => return e.fan_out(n).into_iter().map(Err).collect(),
    };
    // The version each tag has now (nil: the proposal became it), or its error for each reader.
    let mut read: HashMap<String, std::result::Result<TagVersion, Vec<redtail_core::Error>>> = HashMap::new();
    for (tag, _, proposal, readers) in &unique {
        if let Some(proposal) = proposal {
            let version = replies.next().unwrap_or(Value::Nil).into_opt_bytes().map(version_of);
            read.insert((*tag).to_owned(), version.map(|v| v.unwrap_or(*proposal)).map_err(|e| e.fan_out(*readers)));
        }
        replies.next();
    }
    let mut results: Vec<Option<redtail_core::Result<()>>> = Vec::with_capacity(n);
    let (mut keys, mut args) = (Vec::with_capacity(n), Vec::with_capacity(2 * n));
    for Write { key, mut entry, tags, hard_ms } in writes {
        let versions: redtail_core::Result<Vec<(Bytes, TagVersion)>> = tags
            .into_iter()
            .map(|(tag, version)| {
                let version = match version {
                    WriteTag::Known(known) => known,
                    WriteTag::Propose(_) => match read.get_mut(&tag) {
                        Some(Ok(v)) => *v,
                        Some(Err(errors)) => return Err(errors.pop().unwrap_or(redtail_core::Error::ShuttingDown)),
                        None => {
                            let got = format!("no version read for tag {tag:?}");
                            return Err(redtail_core::Error::UnexpectedReply { expected: "a tag version", got });
                        }
                    },
                };
                Ok((Bytes::from(tag), version))
            })
            .collect();
        match versions {
            Ok(versions) => {
                entry.tags = versions;
                keys.push(key);
                args.extend(WriteArg::ALL.iter().map(|arg| match arg {
                    WriteArg::Value => Arg::from(entry.encode()),
                    WriteArg::LifeMs => Arg::from(hard_ms),
                }));
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    // Every entry in one script call (they share a slot on a cluster: the batch's group).
    let mut failed = if keys.is_empty() {
        Vec::new()
    } else {
        backend.eval(&WRITE, &keys, args).await.err().map_or_else(Vec::new, |e| e.fan_out(keys.len()))
    };
    results.into_iter().map(|result| result.unwrap_or_else(|| failed.pop().map_or(Ok(()), Err))).collect()
}

/// When a tag record whose entries live `ttl_ms` from `now_ms` expires: past them by one to two
/// steps of half that life (at least 1 s), rounded to a step. The writes of one tag within a step
/// all ask for the same time, so `PEXPIREAT ... GT` changes the record once a step rather than
/// once a write: with key tracking, each change clears the tag from every local tier. A clock
/// behind the server's by more than a step makes the record expire before its entries, which
/// are then missed (never served stale).
fn tag_deadline(now_ms: u64, ttl_ms: u64) -> u64 {
    let step = (ttl_ms / 2).max(1000);
    (now_ms.saturating_add(ttl_ms) / step).saturating_add(2).saturating_mul(step)
}

/// Reads a tag record: `None` when there is none; a record of another shape is a version that
/// matches nothing.
fn version_of(record: Option<Bytes>) -> Option<TagVersion> {
    record.map(|b| b.as_ref().try_into().unwrap_or([0xFF; 8]))
}

/// The versions of a list of tags, in its order (`None`: the tag has no record). Entries carry
/// few tags, so a list searched in order beats a map.
type Versions = Vec<Option<TagVersion>>;

impl<C: Codec> std::fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.config.namespace.prefix())
            .field("codec", &self.inner.codec)
            .field("local_tier", &self.inner.local.is_some())
            .finish_non_exhaustive()
    }
}
