//! How a service that depends on redtail tests its own code: `MemoryBackend` instead of a
//! server, and the virtual clock instead of waiting. README.md shows this file.

use std::{sync::Arc, time::Duration};

use redtail_core::{Backend, Cmd, Namespace, Result};
use redtail_testkit::MemoryBackend;

/// The service's own code: a one-time login code that lives for 15 minutes.
struct LoginCodes {
    redis: Arc<dyn Backend>,
    ns: Namespace,
}

impl LoginCodes {
    async fn issue(&self, email: &str, code: &str) -> Result<()> {
        let key = self.ns.key([email]);
        self.redis.call(Cmd::new("SET").key(&key).arg(code).arg("EX").arg(15 * 60)).await.map(drop)
    }

    /// Consumes the code: right once, then never again.
    async fn redeem(&self, email: &str, code: &str) -> Result<bool> {
        let stored = self.redis.call(Cmd::new("GETDEL").key(&self.ns.key([email]))).await?.into_opt_bytes()?;
        Ok(stored.is_some_and(|s| s.as_ref() == code.as_bytes()))
    }
}

#[tokio::test]
async fn login_code_expires_after_fifteen_minutes() -> Result<()> {
    let redis = MemoryBackend::new();
    let codes = LoginCodes { redis: redis.clone().into(), ns: Namespace::new("login")? };

    codes.issue("ada@example.com", "123456").await?;
    redis.clock().advance(Duration::from_secs(15 * 60 + 1));
    assert!(!codes.redeem("ada@example.com", "123456").await?, "an expired code must not work");

    codes.issue("ada@example.com", "654321").await?;
    redis.clock().advance(Duration::from_secs(14 * 60));
    assert!(codes.redeem("ada@example.com", "654321").await?);
    assert!(!codes.redeem("ada@example.com", "654321").await?, "a code works once");
    Ok(())
}
