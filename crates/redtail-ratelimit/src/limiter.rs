//! `RateLimiter`: checks, charges, refunds and blocks, each one atomic script or command.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use redtail_core::{Arg, Backend, Cmd, Key, Namespace, Script, Tagged};

use crate::{Error, Policy, Result};

static CHECK: LazyLock<Script> = LazyLock::new(|| Script::new("ratelimit_check", include_str!("../lua/check.lua")));
static ADJUST: LazyLock<Script> = LazyLock::new(|| Script::new("ratelimit_adjust", include_str!("../lua/adjust.lua")));

/// The outcome of a check. Being limited is an expected outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Admitted and charged to every policy.
    Allowed {
        /// Units left in the tightest policy.
        remaining: u64,
        /// Until the tightest policy is fully replenished.
        reset_after: Duration,
        /// Each policy's state, in the order given.
        policies: Vec<PolicyState>,
    },
    /// Refused and charged to none.
    Limited {
        /// When a retry can succeed (the latest of the violated policies, or the block).
        retry_after: Duration,
        /// Names of the violated policies (empty when the subject is blocked).
        violated: Vec<&'static str>,
        /// Whether a [`RateLimiter::block`] refused it.
        blocked: bool,
        /// Each policy's state, in the order given.
        policies: Vec<PolicyState>,
    },
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// One policy's state after a check, for `RateLimit` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyState {
    /// The policy's name.
    pub name: &'static str,
    /// Its limit.
    pub limit: u64,
    /// Its window.
    pub period: Duration,
    /// Units left now.
    pub remaining: u64,
    /// Until a request of the same cost would pass (zero when it passes now).
    pub retry_after: Duration,
    /// Until the policy is fully replenished.
    pub reset_after: Duration,
}

/// Rate limits on any redtail [`Backend`].
///
/// All keys of one subject (a user id, an API key, a client address) share a hash tag, so
/// several policies are checked in one script call on Redis Cluster too; the script uses the
/// server's clock, so client clocks never matter.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    backend: Arc<dyn Backend>,
    namespace: Namespace,
}

impl RateLimiter {
    /// A limiter keeping its state under `namespace` (for example `rt:rl`).
    pub fn new(backend: Arc<dyn Backend>, namespace: Namespace) -> Self {
        RateLimiter { backend, namespace }
    }

    fn subject(&self, subject: &str) -> Result<Tagged> {
        if subject.is_empty() || subject.len() > 512 {
            return Err(Error::InvalidInput(format!("a subject must be 1 to 512 bytes, got {}", subject.len())));
        }
        Ok(self.namespace.tagged(subject))
    }

    fn key(tagged: &Tagged, policy: &Policy) -> Key {
        tagged.key([policy.name])
    }

    /// Checks `policies` for `subject` at a cost of 1.
    pub async fn check(&self, subject: &str, policies: &[Policy]) -> Result<Decision> {
        self.check_cost(subject, policies, 1).await
    }

    /// Checks `policies` for `subject` and charges `cost` to every one of them, or to none when
    /// any would be exceeded. One script call. A cost no policy could ever admit is
    /// [`Error::CannotFit`], distinct from being limited.
    pub async fn check_cost(&self, subject: &str, policies: &[Policy], cost: u64) -> Result<Decision> {
        self.run(subject, policies, cost, true).await
    }

    /// Reports what [`RateLimiter::check_cost`] would decide, charging nothing (shadow mode).
    pub async fn peek(&self, subject: &str, policies: &[Policy], cost: u64) -> Result<Decision> {
        self.run(subject, policies, cost, false).await
    }

    async fn run(&self, subject: &str, policies: &[Policy], cost: u64, charge: bool) -> Result<Decision> {
        if policies.is_empty() {
            return Err(Error::InvalidInput("at least one policy is needed".to_owned()));
        }
        if cost == 0 {
            return Err(Error::InvalidInput("the cost must be at least 1".to_owned()));
        }
        for policy in policies {
            policy.validate().map_err(Error::InvalidInput)?;
            if cost > policy.capacity() {
                return Err(Error::CannotFit { policy: policy.name, cost, capacity: policy.capacity() });
            }
        }
        let tagged = self.subject(subject)?;
        let mut keys = Vec::with_capacity(policies.len() + 1);
        keys.push(tagged.key(["!block"]));
        keys.extend(policies.iter().map(|p| Self::key(&tagged, p)));
        let mut args: Vec<Arg> = vec![cost.into(), if charge { "1" } else { "0" }.into()];
        for policy in policies {
            args.push(policy.algorithm.code().into());
            args.push(policy.limit.into());
            args.push(millis(policy.period).into());
            args.push(policy.burst.into());
        }
        let reply = self.backend.eval(&CHECK, &keys, args).await?.into_array()?;
        let number = |i: usize| -> Result<u64> {
            let value =
                reply.get(i).ok_or_else(|| Error::Reply(format!("the script returned {} values", reply.len())))?;
            Ok(u64::try_from(value.as_int()?).unwrap_or(0))
        };
        let blocked = Duration::from_millis(number(0)?);
        let mut states = Vec::with_capacity(policies.len());
        let mut violated = Vec::new();
        for (i, policy) in policies.iter().enumerate() {
            let base = 1 + i * 4;
            if number(base)? == 0 {
                violated.push(policy.name);
            }
            states.push(PolicyState {
                name: policy.name,
                limit: policy.limit,
                period: policy.period,
                remaining: number(base + 1)?,
                retry_after: Duration::from_millis(number(base + 2)?),
                reset_after: Duration::from_millis(number(base + 3)?),
            });
        }
        if blocked > Duration::ZERO || !violated.is_empty() {
            let retry_after = states.iter().map(|s| s.retry_after).max().unwrap_or_default().max(blocked);
            return Ok(Decision::Limited {
                retry_after,
                violated,
                blocked: blocked > Duration::ZERO,
                policies: states,
            });
        }
        let tightest = states.iter().min_by_key(|s| s.remaining);
        let (remaining, reset_after) = tightest.map_or((0, Duration::ZERO), |s| (s.remaining, s.reset_after));
        Ok(Decision::Allowed { remaining, reset_after, policies: states })
    }

    /// Gives `cost` back to `policy` (a request that turned out not to count).
    pub async fn refund(&self, subject: &str, policy: &Policy, cost: u64) -> Result<()> {
        self.adjust(subject, policy, -i64::try_from(cost).unwrap_or(i64::MAX)).await
    }

    /// Charges `cost` to `policy` without checking it (a request that turned out to be abusive).
    pub async fn penalize(&self, subject: &str, policy: &Policy, cost: u64) -> Result<()> {
        self.adjust(subject, policy, i64::try_from(cost).unwrap_or(i64::MAX)).await
    }

    async fn adjust(&self, subject: &str, policy: &Policy, amount: i64) -> Result<()> {
        policy.validate().map_err(Error::InvalidInput)?;
        let key = Self::key(&self.subject(subject)?, policy);
        let args =
            vec![policy.algorithm.code().into(), policy.limit.into(), millis(policy.period).into(), amount.into()];
        self.backend.eval(&ADJUST, &[key], args).await?;
        Ok(())
    }

    /// Refuses every request of `subject` for `duration`, whatever the policies say.
    pub async fn block(&self, subject: &str, duration: Duration) -> Result<()> {
        let key = self.subject(subject)?.key(["!block"]);
        let ms = millis(duration).max(1);
        self.backend.call(Cmd::new("SET").key(&key).arg("1").arg("PX").arg(ms)).await?;
        Ok(())
    }

    /// Forgets `subject`'s usage of `policy` (and any block when `policy` is `None`).
    pub async fn reset(&self, subject: &str, policy: Option<&Policy>) -> Result<()> {
        let tagged = self.subject(subject)?;
        let key = match policy {
            Some(policy) => Self::key(&tagged, policy),
            None => tagged.key(["!block"]),
        };
        self.backend.call(Cmd::new("DEL").key(&key)).await?;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
