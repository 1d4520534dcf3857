//! `SessionStore`: create, read, update, extend, rotate and end sessions.

use std::{
    collections::HashSet,
    marker::PhantomData,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redtail_core::{Arg, Backend, BatchedGet, BatchedScript, Cmd, Codec, JsonCodec, Key, Value, metrics::Counter};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    Error, Legacy, LegacySession, Result, SessionConfig, header, legacy,
    script::{
        CREATE, CreateArg, CreateReply, EXTEND, ExtendArg, INVALIDATE, INVALIDATE_ALL, InvalidateArg, LIST, ROTATE,
        RotateArg, RotateKey, SessionKey, UPDATE, UpdateArg, UserArg,
    },
    token::{self, Location, Token, user_tag_text},
};

/// The last part of an index's key; it cannot be a session id, which is 16 characters long.
const INDEX: &str = "i";

/// The longest user id accepted, in bytes.
const MAX_USER_ID: usize = 1024;

/// Where and how a client is connected, shown to users in their session list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Device {
    /// The client's IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The client's `User-Agent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Device {
    /// A device seen at `ip` with `user_agent`.
    pub fn new(ip: Option<String>, user_agent: Option<String>) -> Self {
        Device { ip, user_agent }
    }
}

/// A live session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Session<T> {
    /// Opaque id of the session (a digest of its token), safe to show and log.
    pub id: String,
    /// Whose session it is.
    pub user_id: String,
    /// The application's data.
    pub data: T,
    /// When it was created (server clock).
    pub created_at: SystemTime,
    /// When it was last extended.
    pub last_seen: SystemTime,
    /// When it expires unless extended.
    pub expires_at: SystemTime,
    /// The time no extension can pass, if capped.
    pub absolute_deadline: Option<SystemTime>,
    /// Whether it is a long-lived "remember me" session.
    pub remember_me: bool,
    /// Device information given at creation.
    pub device: Option<Device>,
}

/// Options for [`SessionStore::create`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NewSession {
    /// A long-lived session.
    pub remember_me: bool,
    /// Device information shown in session lists.
    pub device: Option<Device>,
}

impl NewSession {
    /// A standard session.
    pub fn standard() -> Self {
        NewSession::default()
    }

    /// A "remember me" session.
    pub fn remember_me() -> Self {
        NewSession { remember_me: true, device: None }
    }

    /// With device information.
    #[must_use]
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }
}

/// Session storage on any redtail [`Backend`], generic over the session data type.
///
/// Every change that touches several keys is one Lua script, and all keys of one user share a
/// hash tag, so it is atomic and exact on Redis Cluster too. See the crate documentation.
pub struct SessionStore<T, C: Codec = JsonCodec> {
    backend: Arc<dyn Backend>,
    // Concurrent `get`s share one MGET, concurrent `create`s one script call.
    reads: BatchedGet,
    creates: BatchedScript,
    config: SessionConfig,
    codec: C,
    counts: Counts,
    logged_corrupt: Mutex<HashSet<String>>,
    legacy: Option<Legacy<T>>,
    _data: PhantomData<fn() -> T>,
}

impl<T, C: Codec> std::fmt::Debug for SessionStore<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore").field("backend", &self.backend).field("config", &self.config).finish()
    }
}

impl<T: Serialize + DeserializeOwned> SessionStore<T> {
    /// A store with JSON-encoded data. A lifetime out of range (1 s to ten years) is
    /// [`Error::InvalidInput`], naming it, and nothing is built.
    pub fn new(backend: impl Into<Arc<dyn Backend>>, config: SessionConfig) -> Result<Self> {
        Self::with_codec(backend, config, JsonCodec)
    }
}

impl<T: Serialize + DeserializeOwned, C: Codec> SessionStore<T, C> {
    /// A store with data encoded by `codec`; its settings are checked as by [`SessionStore::new`].
    pub fn with_codec(backend: impl Into<Arc<dyn Backend>>, config: SessionConfig, codec: C) -> Result<Self> {
        config.check().map_err(Error::InvalidInput)?;
        let backend = backend.into();
        Ok(SessionStore {
            reads: BatchedGet::new(Arc::clone(&backend)),
            creates: BatchedScript::new(Arc::clone(&backend), &CREATE),
            backend,
            config,
            codec,
            counts: Counts::new(),
            logged_corrupt: Mutex::default(),
            legacy: None,
            _data: PhantomData,
        })
    }

    /// Also accepts the Node service's session tokens, each once: see
    /// [`SessionStore::upgrade_legacy`]. [`SessionStore::invalidate_all`] then ends a user's
    /// legacy sessions too.
    #[must_use]
    pub fn with_legacy(mut self, legacy: Legacy<T>) -> Self {
        self.legacy = Some(legacy);
        self
    }

    /// Whether `text` is a token of the Node service this store upgrades
    /// ([`SessionStore::with_legacy`] set, and the token's shape).
    pub fn accepts_legacy(&self, text: &str) -> bool {
        self.legacy.is_some() && Legacy::<T>::is_token(text)
    }

    /// Exchanges a token of the Node service for a redtail session, once: the legacy session is
    /// taken out of Redis (`GETDEL`, so of concurrent requests with it exactly one gets the new
    /// session), its data converted by the [`Legacy`] function, and a session created for its
    /// user with the lifetime it had left (never more than this store's own). `None` when there
    /// is nothing to upgrade: upgrades are off, the token is not a legacy one, its session is
    /// gone or was taken by another request, or the conversion refused it (it is then put
    /// back). If the new session cannot be created, the legacy one is put back too.
    pub async fn upgrade_legacy(&self, text: &str) -> Result<Option<(Token, Session<T>)>> {
        let Some(legacy) = self.legacy.as_ref().filter(|_| Legacy::<T>::is_token(text)) else { return Ok(None) };
        let Some((value, left_ms)) = legacy.claim(self.backend.as_ref(), text).await? else { return Ok(None) };
        let upgraded = match serde_json::from_slice::<LegacySession>(&value) {
            Ok(old) => match legacy.convert(&old) {
                Some(data) => {
                    let (idle, absolute) = self.config.lifetimes(old.remember_me);
                    let lifetime = legacy::remaining(left_ms, idle);
                    // The absolute deadline counts from the legacy session's creation.
                    let age = old.created_at.map_or(Duration::ZERO, |ms| {
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                        now.saturating_sub(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
                    });
                    let absolute = absolute.map(|a| a.saturating_sub(age).max(Duration::from_secs(1)));
                    let options = NewSession { remember_me: old.remember_me, device: None };
                    match self.create_with(&old.user_id, data, options, Some(lifetime), absolute).await {
                        Ok(created) => Ok(Some((old.user_id, created))),
                        Err(e) => Err(e),
                    }
                }
                None => Ok(None),
            },
            Err(e) => {
                tracing::warn!(error = %e, "a legacy session is not the Node service's JSON; leaving it");
                Ok(None)
            }
        };
        match upgraded {
            Ok(Some((user_id, created))) => {
                if let Err(e) = legacy.forget(self.backend.as_ref(), &user_id, text).await {
                    tracing::warn!(error = %e, "could not drop an upgraded legacy session from its user's set");
                }
                Ok(Some(created))
            }
            refused_or_failed => {
                if let Err(e) = legacy.restore(self.backend.as_ref(), text, value, left_ms).await {
                    tracing::error!(error = %e, "could not put back a legacy session whose upgrade failed");
                }
                refused_or_failed.map(|_| None)
            }
        }
    }

    /// How many reads found data that was not a session (corrupt or foreign) and treated it as none.
    pub fn corrupt_reads(&self) -> u64 {
        self.counts.corrupt.get()
    }

    /// The key of the session at `at`.
    fn session_key(&self, at: &Location) -> Key {
        self.config.namespace.tagged_key(at.tag(), [at.id()])
    }

    /// The keys of the session at `at` and of its tag's index, in [`SessionKey`] order.
    fn keys_of(&self, at: &Location) -> [Key; 2] {
        std::array::from_fn(|i| match SessionKey::ALL[i] {
            SessionKey::Session => self.session_key(at),
            SessionKey::Index => self.index(at.tag()),
        })
    }

    /// The arguments of a script on the sessions of `user_id`, whose routing tag is `tag`.
    fn user_args(&self, tag: &str, user_id: &str) -> Vec<Arg> {
        UserArg::ALL
            .iter()
            .map(|arg| match arg {
                UserArg::Prefix => Arg::from(self.session_prefix(tag.as_bytes())),
                UserArg::User => Arg::from(user_id),
            })
            .collect()
    }

    /// The index of the sessions under a routing tag.
    fn index(&self, tag: &[u8]) -> Key {
        self.config.namespace.tagged_key(tag, [INDEX])
    }

    /// What the keys of the sessions under a routing tag start with (a session key is this and
    /// the session's id), for the scripts that read the index.
    fn session_prefix(&self, tag: &[u8]) -> String {
        self.config.namespace.tagged_key(tag, [""]).to_string()
    }

    fn encode(&self, data: &T) -> Result<Vec<u8>> {
        let bytes = self.codec.encode(data)?;
        if bytes.len() > self.config.max_data_bytes {
            return Err(Error::TooLarge { size: bytes.len(), limit: self.config.max_data_bytes });
        }
        Ok(bytes)
    }

    /// Creates a session for `user_id` and returns its token (give it to the client) and the session.
    pub async fn create(&self, user_id: &str, data: T, options: NewSession) -> Result<(Token, Session<T>)> {
        self.create_with(user_id, data, options, None, None).await
    }

    /// [`SessionStore::create`], its first lifetime and its absolute lifetime no longer than
    /// `lifetime` and `absolute` when given.
    async fn create_with(
        &self,
        user_id: &str,
        data: T,
        options: NewSession,
        lifetime: Option<Duration>,
        absolute: Option<Duration>,
    ) -> Result<(Token, Session<T>)> {
        check_user_id(user_id)?;
        let encoded = self.encode(&data)?;
        let token = Token::generate(user_id)?;
        let at = token.locate();
        let (idle, configured) = self.config.lifetimes(options.remember_me);
        let absolute = match (configured, absolute) {
            (Some(configured), Some(cap)) => Some(configured.min(cap)),
            (configured, _) => configured,
        };
        let lifetime = absolute.map_or(idle, |absolute| idle.min(absolute)).min(lifetime.unwrap_or(Duration::MAX));
        let times = header::Times {
            last_seen: 0,
            absolute: absolute.map(|a| i64::try_from(secs(a)).unwrap_or(i64::MAX)),
            expires: i64::try_from(secs(lifetime)).unwrap_or(i64::MAX),
            remember_me: options.remember_me.then_some(1),
            device: options.device.as_ref(),
        };
        let (before_now, after_now) = header::around_created(user_id, &times, &encoded)
            .map_err(|e| Error::InvalidInput(format!("cannot encode the session header: {e}")))?;
        let args: Vec<Arg> = CreateArg::ALL
            .iter()
            .map(|arg| match arg {
                CreateArg::Head => Arg::from(before_now.as_str()),
                CreateArg::Tail => Arg::from(after_now.as_slice()),
                CreateArg::LifetimeS => Arg::from(secs(lifetime)),
                CreateArg::Id => Arg::from(at.id()),
                // The token carries the user's tag.
                CreateArg::Prefix => Arg::from(self.session_prefix(at.tag())),
                CreateArg::Cap => Arg::from(self.config.max_sessions_per_user.unwrap_or(0)),
                CreateArg::User => Arg::from(user_id),
            })
            .collect();
        let reply = self.creates.eval(self.keys_of(&at).into(), args).await?.into_array()?;
        let time = |at: CreateReply| reply.get(at.at() - 1).map(Value::as_int).transpose().map(|t| t.unwrap_or(0));
        let (now, expires) = (time(CreateReply::Now)?, time(CreateReply::Expires)?);
        let deadline = absolute.map(|a| now.saturating_add(i64::try_from(secs(a)).unwrap_or(i64::MAX)));
        let session = Session {
            id: at.id().to_owned(),
            user_id: user_id.to_owned(),
            data,
            created_at: at_secs(now),
            last_seen: at_secs(now),
            expires_at: at_secs(expires),
            absolute_deadline: deadline.map(at_secs),
            remember_me: options.remember_me,
            device: options.device,
        };
        self.counts.created.bump();
        Ok((token, session))
    }

    /// The session of `token`, or `None` when the token is malformed, unknown or expired, or the
    /// data under it is not a session (counted in [`SessionStore::corrupt_reads`]). One round trip,
    /// shared with concurrent reads (one `MGET`); a second one (`GET`) when nothing is found, to
    /// tell a missing session from foreign data.
    pub async fn get(&self, token: &str) -> Result<Option<Session<T>>> {
        let Some(at) = token::locate(token) else {
            self.counts.malformed.bump();
            return Ok(None);
        };
        let key = self.session_key(&at);
        let id = at.id();
        let value = match self.reads.get(&key).await? {
            Some(value) => value,
            // Missing, or another type under the key (MGET reads both as nil): GET tells which.
            None => match self.backend.call(Cmd::new("GET").key(&key)).await {
                Err(e) if e.is_server_code("WRONGTYPE") => return Ok(self.corrupt(id, "not a string")),
                other => match other?.into_opt_bytes()? {
                    Some(value) => value,
                    None => {
                        self.counts.missing.bump();
                        return Ok(None);
                    }
                },
            },
        };
        match self.decode(id.to_owned(), &value) {
            Ok(session) => {
                self.counts.found.bump();
                Ok(Some(session))
            }
            Err(reason) => Ok(self.corrupt(id, &reason)),
        }
    }

    fn corrupt(&self, id: &str, reason: &str) -> Option<Session<T>> {
        self.counts.corrupt.bump();
        let mut logged = self.logged_corrupt.lock().unwrap_or_else(|p| p.into_inner());
        // Each bad key is logged once (by its digest, never a token); the memory of them is bounded.
        if logged.len() < 1024 && logged.insert(id.to_owned()) {
            tracing::warn!(session = id, reason, "data under a session key is not a session; treating it as none");
        }
        None
    }

    /// A stored session: a JSON header, a newline, then the data as the codec wrote it.
    fn decode(&self, id: String, value: &[u8]) -> std::result::Result<Session<T>, String> {
        let (header, data) = header::split(value)?;
        let data = self.codec.decode(data).map_err(|e| e.to_string())?;
        let after = |offset: i64| at_secs(header.created.saturating_add(offset));
        Ok(Session {
            id,
            user_id: header.user_id,
            data,
            created_at: at_secs(header.created),
            last_seen: after(header.last_seen),
            expires_at: after(header.expires),
            absolute_deadline: header.absolute.map(after),
            remember_me: header.remember_me == Some(1),
            device: header.device,
        })
    }

    /// Replaces the data of an existing session. Returns `false`, writing nothing, when the
    /// session has ended: a request that finishes after logout never brings it back.
    pub async fn update(&self, token: &str, data: &T) -> Result<bool> {
        let encoded = self.encode(data)?;
        let Some(at) = token::locate(token) else { return Ok(false) };
        let args = UpdateArg::ALL.iter().map(|arg| match arg {
            UpdateArg::Data => Arg::from(encoded.clone()),
        });
        let updated = self.backend.eval(&UPDATE, &[self.session_key(&at)], args.collect()).await?;
        Ok(updated.as_int()? == 1)
    }

    /// Slides the session's expiry forward (never past its absolute deadline), writing only when
    /// it would move by more than the configured fraction of its idle lifetime. Returns the expiry
    /// now in force, or `None` when the session has ended.
    pub async fn extend(&self, token: &str) -> Result<Option<SystemTime>> {
        let Some(at) = token::locate(token) else { return Ok(None) };
        let args = ExtendArg::ALL
            .iter()
            .map(|arg| match arg {
                ExtendArg::Id => Arg::from(at.id()),
                ExtendArg::Fraction => Arg::from(self.config.extend_fraction),
                ExtendArg::IdleS => Arg::from(secs(self.config.idle)),
                ExtendArg::RememberIdleS => Arg::from(secs(self.config.remember_idle)),
            })
            .collect();
        let reply = self.backend.eval(&EXTEND, &self.keys_of(&at), args).await?;
        Ok(reply.as_opt_int()?.map(at_secs))
    }

    /// Whether [`SessionStore::extend`] would move `session`'s expiry now: the script's own
    /// decision, taken from what the read returned and this process's clock. Calling `extend`
    /// only then keeps most reads of a sliding session to one round trip. A clock ahead of the
    /// server's only makes `extend` run without writing; one behind delays the slide by as much.
    pub fn extension_due(&self, session: &Session<T>) -> bool {
        let idle = secs(self.config.lifetimes(session.remember_me).0);
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut wanted = unix(SystemTime::now()).saturating_add(idle);
        if let Some(deadline) = session.absolute_deadline {
            wanted = wanted.min(unix(deadline));
        }
        let moved = wanted.saturating_sub(unix(session.expires_at));
        moved as f64 > self.config.extend_fraction * idle as f64
    }

    /// The session of `token`, slid forward when [`SessionStore::extension_due`] says so: one
    /// round trip when no slide is due, two when one is. The flag tells whether it was extended
    /// (a cookie carrying the expiry is then due for renewal). A slide that fails (Redis
    /// refusing writes, say, during a failover) is logged and the session served as read: it
    /// is still valid, only not extended this time.
    pub async fn get_and_extend(&self, token: &str) -> Result<Option<(Session<T>, bool)>> {
        let Some(mut session) = self.get(token).await? else { return Ok(None) };
        if !self.extension_due(&session) {
            return Ok(Some((session, false)));
        }
        match self.extend(token).await {
            Ok(Some(expires_at)) => {
                let moved = expires_at != session.expires_at;
                if moved {
                    session.expires_at = expires_at;
                    session.last_seen = SystemTime::now();
                }
                Ok(Some((session, moved)))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, session = %session.id, "sliding a session failed; serving it unextended");
                Ok(Some((session, false)))
            }
        }
    }

    /// Gives the session a new token and kills the old one at once; call it at login and on
    /// privilege changes. `None` when the session has ended.
    pub async fn rotate(&self, token: &str) -> Result<Option<Token>> {
        let Some(old) = Token::parse(token) else { return Ok(None) };
        let new = old.sibling()?;
        let (old_at, new_at) = (old.locate(), new.locate());
        let [old_key, index] = self.keys_of(&old_at);
        let new_key = self.session_key(&new_at);
        let keys: Vec<Key> = RotateKey::ALL
            .iter()
            .map(|key| match key {
                RotateKey::Old => old_key.clone(),
                RotateKey::New => new_key.clone(),
                RotateKey::Index => index.clone(),
            })
            .collect();
        let args = RotateArg::ALL
            .iter()
            .map(|arg| match arg {
                RotateArg::OldId => Arg::from(old_at.id()),
                RotateArg::NewId => Arg::from(new_at.id()),
            })
            .collect();
        let rotated = self.backend.eval(&ROTATE, &keys, args).await?;
        Ok((rotated.as_int()? == 1).then_some(new))
    }

    /// Ends one session. Returns whether it was live.
    pub async fn invalidate(&self, token: &str) -> Result<bool> {
        let Some(at) = token::locate(token) else { return Ok(false) };
        let ended = self.backend.eval(&INVALIDATE, &self.keys_of(&at), invalidate_args(&at)).await?.as_int()? == 1;
        self.counts.ended.add(u64::from(ended));
        Ok(ended)
    }

    /// Ends one session of `user_id` by its id ([`Session::id`], as [`SessionStore::list`]
    /// shows it), without its token: for an admin, or a "your devices" page. Returns whether a
    /// live session of that user ended; an id of another user's session ends nothing.
    pub async fn end(&self, user_id: &str, session_id: &str) -> Result<bool> {
        check_user_id(user_id)?;
        let Some(at) = token::locate_by_user(user_id, session_id) else { return Ok(false) };
        let keys = self.keys_of(&at);
        // A session's user never changes, so reading it first and then ending it is safe.
        let stored = match self.backend.call(Cmd::new("GET").key(&keys[0])).await {
            Err(e) if e.is_server_code("WRONGTYPE") => return Ok(false),
            other => other?.into_opt_bytes()?,
        };
        let owned = stored.is_some_and(|value| header::split(&value).is_ok_and(|(h, _)| h.user_id == user_id));
        if !owned {
            return Ok(false);
        }
        let ended = self.backend.eval(&INVALIDATE, &keys, invalidate_args(&at)).await?.as_int()? == 1;
        self.counts.ended.add(u64::from(ended));
        Ok(ended)
    }

    /// Ends every session of `user_id` ("log out everywhere"), the Node service's too when
    /// [`SessionStore::with_legacy`] is set; returns how many were live.
    pub async fn invalidate_all(&self, user_id: &str) -> Result<u64> {
        check_user_id(user_id)?;
        let tag = user_tag_text(user_id);
        let args = self.user_args(&tag, user_id);
        let ended = self.backend.eval(&INVALIDATE_ALL, &[self.index(tag.as_bytes())], args).await?.as_int()?;
        let legacy = match &self.legacy {
            Some(legacy) => legacy.end_all(self.backend.as_ref(), user_id).await?,
            None => 0,
        };
        let ended = u64::try_from(ended).unwrap_or(0) + legacy;
        self.counts.ended.add(ended);
        Ok(ended)
    }

    /// The live sessions of `user_id`, oldest expiry first; unreadable ones are skipped and counted.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Session<T>>> {
        check_user_id(user_id)?;
        let tag = user_tag_text(user_id);
        let args = self.user_args(&tag, user_id);
        let reply = self.backend.eval(&LIST, &[self.index(tag.as_bytes())], args).await?.into_array()?;
        let mut sessions = Vec::with_capacity(reply.len());
        for entry in reply {
            let mut parts = entry.into_array()?.into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else { continue };
            let id = id.into_string()?;
            match self.decode(id.clone(), &fields.into_bytes()?) {
                Ok(session) => sessions.push(session),
                Err(reason) => {
                    self.corrupt(&id, &reason);
                }
            }
        }
        Ok(sessions)
    }
}

fn check_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty() {
        return Err(Error::InvalidInput("user id must not be empty".to_owned()));
    }
    if user_id.len() > MAX_USER_ID {
        return Err(Error::InvalidInput(format!(
            "user id is {} bytes, over the limit of {MAX_USER_ID}",
            user_id.len()
        )));
    }
    Ok(())
}

/// A lifetime in whole seconds, at least one: sessions are timed to the second.
fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

fn at_secs(unix_secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_secs).unwrap_or(0))
}

/// What a store counts, also reported through the `metrics` facade (feature `metrics`).
#[derive(Debug)]
struct Counts {
    created: Counter,
    ended: Counter,
    found: Counter,
    missing: Counter,
    malformed: Counter,
    corrupt: Counter,
}

impl Counts {
    fn new() -> Counts {
        let read = |outcome: &str| Counter::new("redtail_session_reads_total", &[("outcome", outcome.to_owned())]);
        Counts {
            created: Counter::new("redtail_sessions_created_total", &[]),
            ended: Counter::new("redtail_sessions_ended_total", &[]),
            found: read("found"),
            missing: read("missing"),
            malformed: read("malformed"),
            corrupt: read("corrupt"),
        }
    }
}

/// The invalidate script's arguments for the session at `at`.
fn invalidate_args(at: &Location) -> Vec<Arg> {
    InvalidateArg::ALL
        .iter()
        .map(|arg| match arg {
            InvalidateArg::Id => Arg::from(at.id()),
        })
        .collect()
}
