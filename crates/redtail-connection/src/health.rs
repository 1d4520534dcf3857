//! `Health`: what a health endpoint reports about Redis.

use std::time::{Duration, Instant};

use fred::{interfaces::ClientLike, types::config::Options};
use redtail_core::Backend;
use serde::Serialize;

use crate::{Redis, convert};

/// Whether Redis answers, and the facts an operator wants next to that.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// `true` when a `PING` was answered within the health timeout.
    pub up: bool,
    /// `PING` round-trip time in milliseconds.
    pub latency_ms: Option<f64>,
    /// `redis` or `valkey`, from `INFO` (Valkey adds `server_name` and `valkey_version`).
    pub server: Option<String>,
    /// The server's own version, from `INFO` (`valkey_version` on Valkey, whose
    /// `redis_version` names the Redis it is compatible with).
    pub version: Option<String>,
    /// `master` or `slave`, from `INFO`.
    pub role: Option<String>,
    /// Bytes used by the data set.
    pub used_memory: Option<u64>,
    /// The memory limit, 0 for none.
    pub maxmemory: Option<u64>,
    /// What happens at the memory limit; queues and sessions need `noeviction`.
    pub maxmemory_policy: Option<String>,
    /// Clients connected to the node that answered.
    pub connected_clients: Option<u64>,
    /// Pooled connections in this process.
    pub pool_size: usize,
    /// Pooled connections currently up.
    pub pool_connected: usize,
    /// Why Redis is reported down.
    pub error: Option<String>,
}

impl Redis {
    /// Checks Redis with `PING` and `INFO`, bounded by the health timeout: it never hangs, even
    /// when the server is paused. Health checks fail fast rather than wait for a reconnect.
    pub async fn health(&self) -> Health {
        let (pool_connected, pool_size) = self.pool_state();
        let mut health = Health {
            up: false,
            latency_ms: None,
            server: None,
            version: None,
            role: None,
            used_memory: None,
            maxmemory: None,
            maxmemory_policy: None,
            connected_clients: None,
            pool_size,
            pool_connected,
            error: None,
        };
        let timeout = self.config().health_timeout;
        match tokio::time::timeout(timeout, self.probe(timeout)).await {
            Ok(Ok((latency, info))) => {
                health.up = true;
                health.latency_ms = Some(latency.as_secs_f64() * 1000.0);
                let field = |name: &str| {
                    info.lines()
                        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
                        .map(|v| v.trim().to_owned())
                };
                let number = |name: &str| field(name).and_then(|v| v.parse().ok());
                let valkey = field("valkey_version");
                health.server = Some(if valkey.is_some() { "valkey" } else { "redis" }.to_owned());
                health.version = valkey.or_else(|| field("redis_version"));
                health.role = field("role");
                health.used_memory = number("used_memory");
                health.maxmemory = number("maxmemory");
                health.maxmemory_policy = field("maxmemory_policy");
                health.connected_clients = number("connected_clients");
            }
            Ok(Err(e)) => health.error = Some(e.to_string()),
            Err(_) => health.error = Some(format!("no answer within {timeout:?}")),
        }
        health
    }

    async fn probe(&self, timeout: Duration) -> redtail_core::Result<(Duration, String)> {
        let options = Options { timeout: Some(timeout), fail_fast: true, max_attempts: Some(1), ..Options::default() };
        let client = self.health_client().with_options(&options);
        let started = Instant::now();
        let _: fred::types::Value = client.ping(None).await.map_err(|e| convert::error(e, timeout))?;
        let latency = started.elapsed();
        let info =
            self.call(redtail_core::Cmd::new("INFO").arg("server").arg("replication").arg("memory").arg("clients"));
        let info = info.await?.into_string()?;
        Ok((latency, info))
    }
}
