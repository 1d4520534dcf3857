//! `TowerSessionStore`: redtail as a `tower_sessions` store, for axum and tower apps.

use std::{collections::HashMap, sync::Arc};

use redtail_core::{Backend, Cmd, Key, Namespace};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions_core::{
    SessionStore,
    session::{Id, Record},
    session_store::{Error as StoreError, Result as StoreResult},
};

use crate::token::id_of;

/// A [`tower_sessions_core::SessionStore`] on any redtail backend.
///
/// A session is kept under `<namespace>:<digest>`, where the digest is SHA-256 of the session id,
/// as JSON of its data and expiry only: the record is rebuilt from the id the request presents,
/// so a dump of Redis holds no usable cookie. `create` never overwrites (`SET NX`, with a new id
/// on collision) and `save` never resurrects a deleted session (`SET XX`). Each session expires
/// with its record (`PXAT`).
///
/// What it carries of [`SessionStore`](crate::SessionStore)'s guarantees: digests at rest, no
/// resurrection after logout, an expiry on every key, and hostile ids that cannot reach another
/// key. What it does not: the per-user index ("log out everywhere", a cap per user), sliding
/// and absolute lifetimes (tower-sessions decides the expiry), and rotation that kills the old
/// token inside Redis (tower-sessions' `cycle_id` deletes and creates).
#[derive(Debug, Clone)]
pub struct TowerSessionStore {
    backend: Arc<dyn Backend>,
    namespace: Namespace,
}

impl TowerSessionStore {
    /// A store keeping records under `namespace` (for example `rt:tower`).
    pub fn new(backend: impl Into<Arc<dyn Backend>>, namespace: Namespace) -> Self {
        let backend = backend.into();
        TowerSessionStore { backend, namespace }
    }

    fn key(&self, id: &Id) -> Key {
        self.namespace.key([id_of(&id.0.to_le_bytes())])
    }

    /// Writes the record's data and expiry with `NX` or `XX`; returns whether Redis accepted the
    /// write.
    async fn write(&self, record: &Record, condition: &'static str) -> StoreResult<bool> {
        let expires_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
        let expires_ms = i64::try_from(expires_ms).ok().filter(|ms| *ms > 0).ok_or_else(|| {
            StoreError::Encode(format!("the session expiry {} is not a time Redis can keep", record.expiry_date))
        })?;
        let stored = Stored { data: &record.data, expires_ms };
        let json = serde_json::to_vec(&stored).map_err(|e| StoreError::Encode(e.to_string()))?;
        let cmd =
            Cmd::new("SET").key(&self.key(&record.id)).arg(json).arg("PXAT").arg(expires_ms.to_string()).arg(condition);
        let reply = self.backend.call(cmd).await.map_err(backend_error)?;
        Ok(reply.is_ok())
    }
}

/// What is stored of a session: its data and expiry, never its id.
#[derive(Serialize)]
struct Stored<'a> {
    #[serde(rename = "d")]
    data: &'a HashMap<String, serde_json::Value>,
    #[serde(rename = "x")]
    expires_ms: i64,
}

/// [`Stored`] read back.
#[derive(Deserialize)]
struct Loaded {
    #[serde(rename = "d")]
    data: HashMap<String, serde_json::Value>,
    #[serde(rename = "x")]
    expires_ms: i64,
}

impl Loaded {
    /// The session as tower-sessions knows it, for the id the request presented.
    fn into_record(self, id: Id) -> Option<Record> {
        let expiry_date = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.expires_ms) * 1_000_000).ok()?;
        Some(Record { id, data: self.data, expiry_date })
    }
}

fn backend_error(e: redtail_core::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[async_trait::async_trait]
impl SessionStore for TowerSessionStore {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        // 128-bit ids collide essentially never, but a collision must not take over a session.
        for _ in 0..8 {
            if self.write(record, "NX").await? {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(StoreError::Backend("could not find a free session id in 8 attempts".to_owned()))
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        // A save after the session was deleted (a slow request finishing after logout) writes nothing.
        self.write(record, "XX").await.map(drop)
    }

    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        let reply = self.backend.call(Cmd::new("GET").key(&self.key(id))).await.map_err(backend_error)?;
        let Some(bytes) = reply.into_opt_bytes().map_err(backend_error)? else { return Ok(None) };
        match serde_json::from_slice::<Loaded>(&bytes).map(|loaded| loaded.into_record(*id)) {
            Ok(Some(record)) => Ok(Some(record)),
            Ok(None) => Ok(None),
            Err(e) => {
                // Foreign or corrupt data is no session, not an error page.
                tracing::warn!(error = %e, "data under a tower session key is not a session; treating it as none");
                Ok(None)
            }
        }
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        self.backend.call(Cmd::new("DEL").key(&self.key(id))).await.map_err(backend_error).map(drop)
    }
}
