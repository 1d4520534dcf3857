//! `TowerSessionStore`: redtail as a `tower_sessions` store, for axum and tower apps.

use std::sync::Arc;

use redtail_core::{Backend, Cmd, Key, Namespace};
use tower_sessions_core::{
    SessionStore,
    session::{Id, Record},
    session_store::{Error as StoreError, Result as StoreResult},
};

use crate::token::id_of;

/// A [`tower_sessions_core::SessionStore`] on any redtail backend.
///
/// Records are JSON under `<namespace>:<digest>`, where the digest is SHA-256 of the session id:
/// a dump of Redis yields no usable cookie. `create` never overwrites (`SET NX`, with a new id on
/// collision) and `save` never resurrects a deleted session (`SET XX`). Each record expires with
/// the session (`PXAT`).
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

    /// Writes the record with `NX` or `XX`; returns whether Redis accepted the write.
    async fn write(&self, record: &Record, condition: &'static str) -> StoreResult<bool> {
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Encode(e.to_string()))?;
        let expires_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
        if expires_ms <= 0 {
            return Err(StoreError::Encode("the session expiry is before 1970".to_owned()));
        }
        let cmd =
            Cmd::new("SET").key(&self.key(&record.id)).arg(json).arg("PXAT").arg(expires_ms.to_string()).arg(condition);
        let reply = self.backend.call(cmd).await.map_err(backend_error)?;
        Ok(reply.is_ok())
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
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(record) => Ok(Some(record)),
            Err(e) => {
                // Foreign or corrupt data is no session, not an error page.
                tracing::warn!(error = %e, "data under a tower session key is not a record; treating it as none");
                Ok(None)
            }
        }
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        self.backend.call(Cmd::new("DEL").key(&self.key(id))).await.map_err(backend_error).map(drop)
    }
}
