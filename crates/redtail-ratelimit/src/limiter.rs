//! `RateLimiter`: checks, charges, refunds and blocks, each one atomic script or command.

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redtail_core::{Arg, Backend, BatchedScript, Clock, Cmd, Key, Namespace, Script, Tagged};

use crate::{Error, OnFailure, Policy, Result};

/// Entries kept in each in-process map before it is cleared, so memory stays bounded.
const LOCAL_ENTRIES: usize = 100_000;

// Both scripts write sliding logs the one way `lua/log.lua` does.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::batched("ratelimit_check", concat!(include_str!("../lua/log.lua"), include_str!("../lua/check.lua")))
});
static ADJUST: LazyLock<Script> = LazyLock::new(|| {
    Script::new("ratelimit_adjust", concat!(include_str!("../lua/log.lua"), include_str!("../lua/adjust.lua")))
});

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
        /// Decided without Redis, by the policies' [`OnFailure`] modes.
        degraded: bool,
    },
    /// Refused and charged to none.
    Limited {
        /// When a retry can succeed (the latest of the violated policies, or the block).
        retry_after: Duration,
        /// Names of the violated policies (empty when the subject is blocked).
        violated: Vec<&'static str>,
        /// Whether a [`RateLimiter::block`] refused it.
        blocked: bool,
        /// Each policy's state, in the order given (empty when answered from the local cache).
        policies: Vec<PolicyState>,
        /// Decided without Redis, by the policies' [`OnFailure`] modes.
        degraded: bool,
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

/// Counts of the limiter's decisions that did not come straight from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Decisions made by [`OnFailure`] modes while Redis could not be reached.
    pub degraded: u64,
    /// Refusals answered from the local cache of limited subjects, without a round trip.
    pub cached: u64,
    /// Requests shadow policies would have refused.
    pub shadow_would_limit: u64,
}

#[derive(Debug, Default)]
struct Counters {
    degraded: AtomicU64,
    cached: AtomicU64,
    shadow_would_limit: AtomicU64,
    last_degraded_log: Mutex<Option<Instant>>,
}

/// A refusal remembered in process, by subject and policy names: until when, and which policies.
type Refusal = (Instant, Vec<&'static str>);

/// Rate limits on any redtail [`Backend`].
///
/// All keys of one subject (a user id, an API key, a client address) share a hash tag, so
/// several policies are checked in one script call on Redis Cluster too; the script uses the
/// server's clock, so client clocks never matter (unless [`RateLimiter::with_client_clock`]).
///
/// Every decision is a `tracing` event at debug level on target `redtail_ratelimit::decision`
/// with `allowed`, `near_limit` (a policy at 80 % or more), `degraded` and `latency_us`, for
/// metrics pipelines that read tracing events.
///
/// Subjects refused for a second or more are remembered in process until their retry time, so an
/// abusive client costs no round trip. When Redis cannot be reached, each policy decides by its
/// [`OnFailure`] mode, and every such decision is counted in [`RateLimiter::stats`].
#[derive(Debug, Clone)]
pub struct RateLimiter {
    backend: Arc<dyn Backend>,
    // Concurrent checks share one script call.
    checks: Arc<BatchedScript>,
    namespace: Namespace,
    shadow: bool,
    cache_refusals: bool,
    counters: Arc<Counters>,
    limited: Arc<Mutex<HashMap<String, Refusal>>>,
    /// (subject, policy) -> theoretical arrival time of the in-process GCRA, in ms since `epoch`.
    local: Arc<Mutex<HashMap<(String, &'static str), f64>>>,
    epoch: Instant,
    client_clock: Option<Clock>,
}

impl RateLimiter {
    /// A limiter keeping its state under `namespace` (for example `rt:rl`).
    pub fn new(backend: impl Into<Arc<dyn Backend>>, namespace: Namespace) -> Self {
        let backend = backend.into();
        RateLimiter {
            checks: Arc::new(BatchedScript::new(Arc::clone(&backend), &CHECK)),
            backend,
            namespace,
            shadow: false,
            cache_refusals: true,
            counters: Arc::default(),
            limited: Arc::default(),
            local: Arc::default(),
            epoch: Instant::now(),
            client_clock: None,
        }
    }

    /// Uses this process's `clock` ([`Clock::system`], or a test's virtual clock) instead of
    /// the server's `TIME`, for hosts that forbid `TIME` in scripts. Stored time never goes
    /// backwards: a client whose clock is behind the one that last wrote a key is judged at the
    /// later time, so skew can only make the limit stricter, never looser. Prefer the server's
    /// clock (the default) wherever it is allowed.
    #[must_use]
    pub fn with_client_clock(mut self, clock: Clock) -> Self {
        self.client_clock = Some(clock);
        self
    }

    /// The time argument of the scripts: the client's ms, or empty for the server's `TIME`.
    fn time_arg(&self) -> Arg {
        match &self.client_clock {
            Some(clock) => Arg::from(clock.now_ms().to_string()),
            None => Arg::from(""),
        }
    }

    /// Every policy in shadow mode: decide, log and count, never refuse.
    #[must_use]
    pub fn with_shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Whether refusals of a second or more are remembered in process (on by default). The cache
    /// runs on this process's clock: turn it off in tests that move a virtual clock.
    #[must_use]
    pub fn with_refusal_cache(mut self, on: bool) -> Self {
        self.cache_refusals = on;
        self
    }

    /// Counts of degraded, cached and shadow decisions so far.
    pub fn stats(&self) -> Stats {
        Stats {
            degraded: self.counters.degraded.load(Ordering::Relaxed),
            cached: self.counters.cached.load(Ordering::Relaxed),
            shadow_would_limit: self.counters.shadow_would_limit.load(Ordering::Relaxed),
        }
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
        validate(policies, cost)?;
        let (shadow, enforced): (Vec<Policy>, Vec<Policy>) =
            policies.iter().cloned().partition(|p| p.shadow || self.shadow);
        let cache_key = format!("{subject}\0{}", enforced.iter().map(|p| p.name).collect::<Vec<_>>().join(","));
        if let Some(decision) = self.cached(&cache_key) {
            return Ok(decision);
        }
        let started = Instant::now();
        let decision = if enforced.is_empty() {
            Decision::Allowed {
                remaining: u64::MAX,
                reset_after: Duration::ZERO,
                policies: Vec::new(),
                degraded: false,
            }
        } else {
            match self.run(subject, &enforced, cost, true).await {
                Err(Error::Redis(e)) if e.is_unavailable() => self.degrade(subject, &enforced, cost, &e),
                other => other?,
            }
        };
        if !shadow.is_empty() {
            match self.run(subject, &shadow, cost, true).await {
                Ok(Decision::Limited { violated, .. }) => {
                    self.counters.shadow_would_limit.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(subject, ?violated, "shadow rate limit would have refused a request");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "shadow rate limit check failed"),
            }
        }
        trace(subject, &decision, started.elapsed());
        if let Decision::Limited { retry_after, violated, degraded: false, .. } = &decision
            && self.cache_refusals
            && *retry_after >= Duration::from_secs(1)
        {
            let mut limited = self.limited.lock().unwrap_or_else(|p| p.into_inner());
            if limited.len() >= LOCAL_ENTRIES {
                limited.clear();
            }
            limited.insert(cache_key, (Instant::now() + *retry_after, violated.clone()));
        }
        Ok(decision)
    }

    /// A refusal remembered in process, while it lasts.
    fn cached(&self, cache_key: &str) -> Option<Decision> {
        let mut limited = self.limited.lock().unwrap_or_else(|p| p.into_inner());
        let (until, violated) = limited.get(cache_key)?;
        let now = Instant::now();
        if *until <= now {
            limited.remove(cache_key);
            return None;
        }
        self.counters.cached.fetch_add(1, Ordering::Relaxed);
        let decision = Decision::Limited {
            retry_after: *until - now,
            violated: violated.clone(),
            blocked: false,
            policies: Vec::new(),
            degraded: false,
        };
        Some(decision)
    }

    /// Decides without Redis, by each policy's failure mode.
    fn degrade(&self, subject: &str, policies: &[Policy], cost: u64, error: &redtail_core::Error) -> Decision {
        self.counters.degraded.fetch_add(1, Ordering::Relaxed);
        {
            // Logged at most once a second, however many requests degrade.
            let mut last = self.counters.last_degraded_log.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                *last = Some(Instant::now());
                tracing::warn!(%error, degraded = self.counters.degraded.load(Ordering::Relaxed), "redis unavailable; rate limits decided by their failure modes");
            }
        }
        let mut violated = Vec::new();
        let mut retry_after = Duration::ZERO;
        for policy in policies {
            let refused_for = match policy.on_failure {
                OnFailure::Open => None,
                OnFailure::Closed => Some(Duration::from_secs(1)),
                OnFailure::Local { instances } => self.local_gcra(subject, policy, cost, instances),
            };
            if let Some(wait) = refused_for {
                violated.push(policy.name);
                retry_after = retry_after.max(wait);
            }
        }
        if violated.is_empty() {
            Decision::Allowed { remaining: 0, reset_after: Duration::ZERO, policies: Vec::new(), degraded: true }
        } else {
            Decision::Limited { retry_after, violated, blocked: false, policies: Vec::new(), degraded: true }
        }
    }

    /// An in-process GCRA at the policy's rate divided by `instances`; `Some(wait)` when refused.
    fn local_gcra(&self, subject: &str, policy: &Policy, cost: u64, instances: u32) -> Option<Duration> {
        let instances = f64::from(instances.max(1));
        let limit = (policy.limit as f64 / instances).max(1.0);
        let burst = (policy.burst as f64 / instances).max(1.0);
        let interval = policy.period.as_secs_f64() * 1000.0 / limit;
        let now = self.epoch.elapsed().as_secs_f64() * 1000.0;
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.len() >= LOCAL_ENTRIES {
            local.clear();
        }
        let tat = local.entry((subject.to_owned(), policy.name)).or_insert(now);
        let new_tat = tat.max(now) + cost as f64 * interval;
        let allow_at = new_tat - burst * interval;
        if now >= allow_at {
            *tat = new_tat;
            None
        } else {
            Some(Duration::from_secs_f64((allow_at - now) / 1000.0))
        }
    }

    /// Reports what [`RateLimiter::check_cost`] would decide, charging nothing (shadow mode).
    pub async fn peek(&self, subject: &str, policies: &[Policy], cost: u64) -> Result<Decision> {
        validate(policies, cost)?;
        self.run(subject, policies, cost, false).await
    }

    /// One script call: check `policies`, and charge them all when `charge` and all allow.
    async fn run(&self, subject: &str, policies: &[Policy], cost: u64, charge: bool) -> Result<Decision> {
        let tagged = self.subject(subject)?;
        let mut keys = Vec::with_capacity(policies.len() + 1);
        keys.push(tagged.key(["!block"]));
        keys.extend(policies.iter().map(|p| Self::key(&tagged, p)));
        let mut args: Vec<Arg> = vec![cost.into(), if charge { "1" } else { "0" }.into(), self.time_arg()];
        for policy in policies {
            args.push(policy.algorithm.code().into());
            args.push(policy.limit.into());
            args.push(millis(policy.period).into());
            args.push(policy.burst.into());
        }
        let reply = self.checks.eval(keys, args).await?.into_array()?;
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
                degraded: false,
            });
        }
        let tightest = states.iter().min_by_key(|s| s.remaining);
        let (remaining, reset_after) = tightest.map_or((0, Duration::ZERO), |s| (s.remaining, s.reset_after));
        Ok(Decision::Allowed { remaining, reset_after, policies: states, degraded: false })
    }

    /// Gives `cost` back to `policy` (a request that turned out not to count): on a sliding log
    /// the newest entries go. At most the policy's capacity (its burst for GCRA, else its limit)
    /// at once; more is [`Error::CannotFit`].
    pub async fn refund(&self, subject: &str, policy: &Policy, cost: u64) -> Result<()> {
        self.adjust(subject, policy, cost, "-").await
    }

    /// Charges `cost` to `policy` without checking it (a request that turned out to be abusive).
    /// At most the policy's capacity at once; more is [`Error::CannotFit`] (use
    /// [`RateLimiter::block`] to shut a subject out for longer).
    pub async fn penalize(&self, subject: &str, policy: &Policy, cost: u64) -> Result<()> {
        self.adjust(subject, policy, cost, "").await
    }

    /// One `lua/adjust.lua` call: `sign` is `-` to refund, empty to charge.
    async fn adjust(&self, subject: &str, policy: &Policy, cost: u64, sign: &str) -> Result<()> {
        if cost == 0 {
            // Nothing to adjust; the policy is still checked, so a bad one never passes silently.
            return policy.validate().map_err(Error::InvalidInput);
        }
        validate(std::slice::from_ref(policy), cost)?;
        let key = Self::key(&self.subject(subject)?, policy);
        let args = vec![
            policy.algorithm.code().into(),
            policy.limit.into(),
            millis(policy.period).into(),
            format!("{sign}{cost}").into(),
            self.time_arg(),
        ];
        self.backend.eval(&ADJUST, &[key], args).await?;
        Ok(())
    }

    /// Refuses every request of `subject` for `duration` (1 ms to [`Policy::MAX_PERIOD`]),
    /// whatever the policies say.
    pub async fn block(&self, subject: &str, duration: Duration) -> Result<()> {
        if duration > Policy::MAX_PERIOD {
            return Err(Error::InvalidInput(format!("a block lasts at most 10 years, got {duration:?}")));
        }
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

/// Checks the policies and the cost before anything is sent.
fn validate(policies: &[Policy], cost: u64) -> Result<()> {
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
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One decision as a tracing event (see [`RateLimiter`]).
fn trace(subject: &str, decision: &Decision, latency: Duration) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    match decision {
        Decision::Allowed { policies, degraded, .. } => {
            let near_limit = policies.iter().any(|p| p.remaining.saturating_mul(5) <= p.limit);
            tracing::debug!(target: "redtail_ratelimit::decision", subject, allowed = true, near_limit, degraded, latency_us);
        }
        Decision::Limited { violated, degraded, .. } => {
            tracing::debug!(target: "redtail_ratelimit::decision", subject, allowed = false, ?violated, degraded, latency_us);
        }
    }
}
