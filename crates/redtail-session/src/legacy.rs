//! `Legacy`: sessions of the Node service redtail replaces, upgraded once each during a
//! switch-over.
//!
//! That service kept a session under `session:<id>` (its token: 64 hex digits) as JSON
//! `{userId, role, plexId, createdAt, rememberMe}` with a TTL (`SETEX`), and a set of each user's
//! ids under `user:sessions:<userId>` (`SADD` then `EXPIRE`).

use std::{fmt, sync::Arc, time::Duration};

use redtail_core::{Backend, Cmd, Key, Value};
use serde::Deserialize;

use crate::Result;

/// A session as the Node service stored it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LegacySession {
    /// Whose session it is.
    pub user_id: String,
    /// The user's role, if stored.
    #[serde(default)]
    pub role: Option<String>,
    /// The user's Plex id, if stored.
    #[serde(default)]
    pub plex_id: Option<String>,
    /// When it was created, in Unix milliseconds, if stored.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// Whether it was a "remember me" session.
    #[serde(default)]
    pub remember_me: bool,
}

/// Turns a legacy session into the application's session data; `None` refuses the upgrade
/// (the legacy session is then left as it was).
type Convert<T> = Arc<dyn Fn(&LegacySession) -> Option<T> + Send + Sync>;

/// Accepts the Node service's session tokens during a switch-over
/// ([`SessionStore::with_legacy`](crate::SessionStore::with_legacy)): each is exchanged once
/// for a redtail session with the lifetime it had left, and
/// [`SessionStore::invalidate_all`](crate::SessionStore::invalidate_all) ends a user's legacy
/// sessions too. Off unless set.
pub struct Legacy<T> {
    session_prefix: String,
    user_prefix: String,
    convert: Convert<T>,
}

impl<T> Clone for Legacy<T> {
    fn clone(&self) -> Self {
        Legacy {
            session_prefix: self.session_prefix.clone(),
            user_prefix: self.user_prefix.clone(),
            convert: Arc::clone(&self.convert),
        }
    }
}

impl<T> fmt::Debug for Legacy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Legacy")
            .field("session_prefix", &self.session_prefix)
            .field("user_prefix", &self.user_prefix)
            .finish_non_exhaustive()
    }
}

impl<T> Legacy<T> {
    /// Legacy sessions under `session:` and `user:sessions:`, their data made by `convert`.
    pub fn new(convert: impl Fn(&LegacySession) -> Option<T> + Send + Sync + 'static) -> Self {
        Legacy {
            session_prefix: "session:".to_owned(),
            user_prefix: "user:sessions:".to_owned(),
            convert: Arc::new(convert),
        }
    }

    /// Other key prefixes than `session:` and `user:sessions:` (a service that used a
    /// `keyPrefix` in ioredis, say).
    #[must_use]
    pub fn with_prefixes(mut self, session: impl Into<String>, user: impl Into<String>) -> Self {
        self.session_prefix = session.into();
        self.user_prefix = user.into();
        self
    }

    /// Whether `text` has the shape of a legacy token: 64 hex digits.
    pub fn is_token(text: &str) -> bool {
        text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
    }

    pub(crate) fn convert(&self, session: &LegacySession) -> Option<T> {
        (self.convert)(session)
    }

    fn session_key(&self, token: &str) -> Key {
        Key::from_raw(format!("{}{token}", self.session_prefix))
    }

    /// Takes the legacy session of `token` out of Redis, so that only one caller gets it: its
    /// stored bytes and the milliseconds it had left (`None`: no expiry), or `None` when there
    /// is none (never was, expired, or another request took it first).
    pub(crate) async fn claim(
        &self,
        backend: &dyn Backend,
        token: &str,
    ) -> Result<Option<(redtail_core::Bytes, Option<u64>)>> {
        let key = self.session_key(token);
        // One transaction: the time left is read with the value that is taken.
        let replies = backend.transaction(vec![Cmd::new("PTTL").key(&key), Cmd::new("GETDEL").key(&key)]).await?;
        let mut replies = replies.into_iter();
        let (Some(ttl), Some(value)) = (replies.next(), replies.next()) else {
            return Err(
                redtail_core::Error::UnexpectedReply { expected: "two replies", got: "fewer".to_owned() }.into()
            );
        };
        let Some(value) = value.into_opt_bytes()? else { return Ok(None) };
        let left = u64::try_from(ttl.as_int()?).ok();
        Ok(Some((value, left)))
    }

    /// Puts a claimed session back as it was (when its upgrade failed or was refused), unless
    /// something took its key meanwhile.
    pub(crate) async fn restore(
        &self,
        backend: &dyn Backend,
        token: &str,
        value: redtail_core::Bytes,
        left_ms: Option<u64>,
    ) -> Result<()> {
        let mut cmd = Cmd::new("SET").key(&self.session_key(token)).arg(value).arg("NX");
        if let Some(ms) = left_ms {
            cmd = cmd.arg("PX").arg(ms.max(1));
        }
        backend.call(cmd).await?;
        Ok(())
    }

    /// Drops `token` from its user's legacy set (it was upgraded).
    pub(crate) async fn forget(&self, backend: &dyn Backend, user_id: &str, token: &str) -> Result<()> {
        let key = Key::from_raw(format!("{}{user_id}", self.user_prefix));
        backend.call(Cmd::new("SREM").key(&key).arg(token)).await?;
        Ok(())
    }

    /// Ends every legacy session of `user_id`; returns how many were live.
    pub(crate) async fn end_all(&self, backend: &dyn Backend, user_id: &str) -> Result<u64> {
        let index = Key::from_raw(format!("{}{user_id}", self.user_prefix));
        let ids = backend.call(Cmd::new("SMEMBERS").key(&index)).await?.into_array()?;
        let mut dels = Vec::with_capacity(ids.len());
        for id in ids {
            let id = id.into_string()?;
            // Only ids of the legacy shape name keys; anything else in the set is ignored.
            if Self::is_token(&id) {
                dels.push(Cmd::new("DEL").key(&self.session_key(&id)));
            }
        }
        let mut ended = 0;
        if !dels.is_empty() {
            // Each key in its own slot on a cluster: a pipeline, not a transaction.
            for reply in backend.pipeline(dels).await? {
                ended += u64::from(matches!(reply, Value::Int(1)));
            }
        }
        backend.call(Cmd::new("DEL").key(&index)).await?;
        Ok(ended)
    }
}

/// Whatever remains of a legacy session's lifetime, capped: `left_ms` (none: the cap).
pub(crate) fn remaining(left_ms: Option<u64>, cap: Duration) -> Duration {
    left_ms.map_or(cap, |ms| Duration::from_millis(ms).min(cap))
}
