//! `JwtDenylist`: revoke JWTs by `jti` until they would have expired anyway.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use redtail_core::{Backend, Cmd, Namespace};

use crate::{Error, Result};

/// Revoked JWT ids, each kept exactly until its token's `exp`, so the list never outgrows the
/// tokens still in circulation. Checking a token is one `EXISTS`.
#[derive(Debug, Clone)]
pub struct JwtDenylist {
    backend: Arc<dyn Backend>,
    namespace: Namespace,
}

impl JwtDenylist {
    /// A denylist with keys under `namespace` (for example `rt:jwt`).
    pub fn new(backend: impl Into<Arc<dyn Backend>>, namespace: Namespace) -> Self {
        let backend = backend.into();
        JwtDenylist { backend, namespace }
    }

    /// Revokes the token `jti` until `expires_at` (its `exp` claim). Returns `false` when the token
    /// has already expired, so there is nothing to remember. An expiry more than ten years away
    /// ([`redtail_core::MAX_TTL`]) is [`Error::InvalidInput`]: remembering it would keep the key
    /// for good, and forgetting it sooner would let the token back in.
    pub async fn revoke(&self, jti: &str, expires_at: SystemTime) -> Result<bool> {
        check_jti(jti)?;
        let Ok(until) = expires_at.duration_since(UNIX_EPOCH) else { return Ok(false) };
        let Ok(left) = expires_at.duration_since(SystemTime::now()) else { return Ok(false) };
        if left.is_zero() {
            return Ok(false);
        }
        redtail_core::check_ttl("a revoked JWT's time left until its expiry", left).map_err(Error::InvalidInput)?;
        let until = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
        let key = self.namespace.key([jti]);
        self.backend.call(Cmd::new("SET").key(&key).arg("1").arg("PXAT").arg(until)).await?;
        Ok(true)
    }

    /// Whether `jti` has been revoked (and its token not yet expired).
    pub async fn is_revoked(&self, jti: &str) -> Result<bool> {
        check_jti(jti)?;
        let key = self.namespace.key([jti]);
        Ok(self.backend.call(Cmd::new("EXISTS").key(&key)).await?.as_int()? == 1)
    }
}

fn check_jti(jti: &str) -> Result<()> {
    if jti.is_empty() || jti.len() > 512 {
        return Err(Error::InvalidInput(format!("a JWT id must be 1 to 512 bytes, got {}", jti.len())));
    }
    Ok(())
}
