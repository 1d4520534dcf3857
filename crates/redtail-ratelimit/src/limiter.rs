//! `RateLimiter`: checks, charges, refunds and blocks, each one atomic script, transaction or
//! command.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redtail_core::{
    Arg, Backend, BatchedGet, BatchedScript, BatchedTransaction, Clock, Cmd, Key, Namespace, Tagged, Value, metrics,
};

use crate::{
    Algorithm, Error, OnFailure, Policy, Result,
    script::{ADJUST, AdjustArg, CHECK, CheckArg, CheckReply, DecisionField, PolicyField},
};

/// Entries kept in each in-process map before it is cleared, so memory stays bounded.
const LOCAL_ENTRIES: usize = 100_000;

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
        violated: Vec<Cow<'static, str>>,
        /// Whether a [`RateLimiter::block`] refused it.
        blocked: bool,
        /// Each policy's state, in the order given (empty when decided without Redis).
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
    pub name: Cow<'static, str>,
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

/// A refusal remembered in process, under its subject: the names of the policies checked, when
/// it was decided, until when it lasts, which policies refused, and their states then (for the
/// headers of later answers).
#[derive(Debug)]
struct Refusal {
    checked: String,
    at: Instant,
    until: Instant,
    violated: Vec<Cow<'static, str>>,
    blocked: bool,
    policies: Vec<PolicyState>,
}

/// Rate limits on any redtail [`Backend`].
///
/// All keys of one subject (a user id, an API key, a client address) share a hash tag, so
/// several policies are checked in one script call on Redis Cluster too; the script uses the
/// server's clock, so client clocks never matter (unless [`RateLimiter::with_client_clock`]).
///
/// # Without a script
/// A check of one [`Algorithm::FixedWindow`] or [`Algorithm::SlidingWindow`] policy runs no
/// script: its `INCRBY` and `PEXPIRE … NX` go in one `MULTI`/`EXEC` shared by the concurrent
/// checks of a batch, so no counter is ever left without a TTL, even when a client dies
/// mid-check, and its reads (blocks, the previous window) in one `MGET` shared the same way. On
/// that path a refused request counts toward the window, as Envoy's do: a client that keeps
/// sending while limited stays limited until its window has passed. Several policies checked
/// together run the script, all or nothing, and a refused request is charged to none of them.
/// Counters name their windows by time: this process's clock corrected by the server's `TIME`
/// (read at first use and once a minute), or the client clock when one is set; processes then
/// agree on window edges within a round trip.
///
/// Every decision is a `tracing` event at debug level on target `redtail_ratelimit::decision`
/// with `allowed`, `near_limit` (a policy at 80 % or more), `degraded` and `latency_us`, for
/// metrics pipelines that read tracing events.
///
/// Subjects refused for a second or more are remembered in process until their retry time, so an
/// abusive client costs no round trip; those answers carry the policies' states as they were
/// then, aged by the time since. When Redis cannot be reached, each policy decides by its
/// [`OnFailure`] mode, and every such decision is counted in [`RateLimiter::stats`].
#[derive(Debug, Clone)]
pub struct RateLimiter {
    backend: Arc<dyn Backend>,
    // Concurrent checks share one script call, or one transaction on the script-free path.
    checks: Arc<BatchedScript>,
    counts: Arc<BatchedTransaction>,
    // The script-free path's reads (blocks, a previous window), one `MGET` for many checks.
    reads: Arc<BatchedGet>,
    namespace: Namespace,
    shadow: bool,
    cache_refusals: bool,
    scripted_counters: bool,
    counters: Arc<Counters>,
    /// Refusals remembered in process: by subject, then by the names of the policies checked.
    limited: Arc<Mutex<HashMap<String, Vec<Refusal>>>>,
    /// (subject, policy) -> theoretical arrival time of the in-process GCRA, in ms since `epoch`.
    local: Arc<Mutex<HashMap<(String, String), f64>>>,
    epoch: Instant,
    client_clock: Option<Clock>,
    server_clock: Arc<ServerClock>,
}

/// This process's clock corrected by the server's `TIME`, for what the limiter names or stamps by
/// time itself (counters' windows, when a block ends): processes on several hosts then agree
/// within a round trip.
#[derive(Debug, Default)]
struct ServerClock {
    /// Server time minus system time, in ms.
    offset_ms: AtomicI64,
    /// When the offset was last measured (or a measurement started).
    measured: Mutex<Option<Instant>>,
}

impl ServerClock {
    /// Measured again after this long.
    const EVERY: Duration = Duration::from_secs(60);

    /// The server's time now, in ms: measured at first use (one `TIME`) and once a minute after
    /// (by the check that finds it due; the others go on with the last offset).
    async fn now_ms(&self, backend: &dyn Backend) -> Result<u64> {
        let due = {
            let mut measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
            match *measured {
                Some(at) if at.elapsed() < Self::EVERY => None,
                // Claimed, so one check measures while the others go on.
                Some(_) => {
                    *measured = Some(Instant::now());
                    Some(false)
                }
                None => Some(true),
            }
        };
        if let Some(first) = due {
            match self.measure(backend).await {
                Ok(()) => *self.measured.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now()),
                // Without a first measurement there is no time to name a window by.
                Err(e) if first => return Err(e),
                Err(e) => tracing::debug!(error = %e, "reading the server's clock failed; keeping the last offset"),
            }
        }
        let local = i64::try_from(Clock::system().now_ms()).unwrap_or(i64::MAX);
        Ok(u64::try_from(local.saturating_add(self.offset_ms.load(Ordering::Relaxed))).unwrap_or(0))
    }

    async fn measure(&self, backend: &dyn Backend) -> Result<()> {
        let sent = Instant::now();
        let time = backend.call(Cmd::new("TIME")).await?.into_array()?;
        let half_trip = i64::try_from(sent.elapsed().as_millis() / 2).unwrap_or(0);
        let part = |i: usize| -> Result<i64> {
            let value = time.get(i).ok_or_else(|| Error::Reply(format!("TIME returned {} values", time.len())))?;
            Ok(value.as_int()?)
        };
        let server = part(0)?.saturating_mul(1000).saturating_add(part(1)? / 1000);
        let local = i64::try_from(Clock::system().now_ms()).unwrap_or(i64::MAX);
        self.offset_ms.store(server.saturating_add(half_trip).saturating_sub(local), Ordering::Relaxed);
        Ok(())
    }
}

/// What one check asks of Redis: whether it charges, and the time its windows are named by.
#[derive(Debug, Clone, Copy)]
struct Run {
    cost: u64,
    charge: bool,
    /// ms, for the windows of counters (`None` when no policy counts per window).
    now: Option<u64>,
}

impl RateLimiter {
    /// A limiter keeping its state under `namespace` (for example `rt:rl`).
    pub fn new(backend: impl Into<Arc<dyn Backend>>, namespace: Namespace) -> Self {
        let backend = backend.into();
        RateLimiter {
            checks: Arc::new(BatchedScript::new(Arc::clone(&backend), &CHECK)),
            counts: Arc::new(BatchedTransaction::new(Arc::clone(&backend))),
            reads: Arc::new(BatchedGet::new(Arc::clone(&backend))),
            backend,
            namespace,
            shadow: false,
            cache_refusals: true,
            scripted_counters: false,
            counters: Arc::default(),
            limited: Arc::default(),
            local: Arc::default(),
            epoch: Instant::now(),
            client_clock: None,
            server_clock: Arc::default(),
        }
    }

    /// Uses this process's `clock` ([`Clock::system`], or a test's virtual clock) instead of
    /// the server's `TIME`, for hosts that forbid `TIME` in scripts. Stored time never goes
    /// backwards: a client whose clock is behind the one that last wrote a key is judged at the
    /// later time, so skew can only make the limit stricter, never looser (except for a
    /// sliding-window counter, whose windows are named by the clock: processes whose clocks
    /// differ by `s` see window edges `s` apart). Prefer the server's clock (the default)
    /// wherever it is allowed.
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

    /// The time counters' windows are named by, when a policy needs it.
    async fn window_now(&self, policies: &[Policy]) -> Result<Option<u64>> {
        if !policies.iter().any(|p| p.algorithm.is_counter()) {
            return Ok(None);
        }
        self.now_ms().await.map(Some)
    }

    /// The time now in ms: the client clock when one is set, else this process's clock corrected
    /// by the server's.
    async fn now_ms(&self) -> Result<u64> {
        match &self.client_clock {
            Some(clock) => Ok(clock.now_ms()),
            None => self.server_clock.now_ms(&*self.backend).await,
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

    /// Checks a lone fixed-window or sliding-window-counter policy in the batched script, as
    /// several policies are, instead of with plain commands (off by default). The trade, measured
    /// in docs/benchmarks.md: the script costs this process less per check (one command for a
    /// whole batch rather than two per check) and the server more (its Lua), so one client
    /// process makes about 1.6x the checks a second while each costs Redis about 1.8x the CPU.
    /// Choose it where this process's CPU is what runs out; keep the default where Redis's is (a
    /// fleet of services sharing one Redis). With it a refused request is charged nothing, as
    /// with several policies; without it a refused request counts toward its window.
    #[must_use]
    pub fn with_scripted_counters(mut self, on: bool) -> Self {
        self.scripted_counters = on;
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

    /// The policy's state: a GCRA's arrival time, a sliding log, or a counter's current window
    /// (its window number from `now`). The algorithm is
    /// part of the key, so a policy whose algorithm changes (in a deploy, say) starts afresh
    /// rather than meeting state it cannot read.
    fn key(tagged: &Tagged, policy: &Policy, now: Option<u64>) -> Key {
        match now {
            Some(now) if policy.algorithm.is_counter() => Self::window_key(tagged, policy, window(policy, now).0),
            _ => tagged.key([&*policy.name, policy.algorithm.code()]),
        }
    }

    /// The counter of a fixed window or a sliding-window counter's window `number`.
    fn window_key(tagged: &Tagged, policy: &Policy, number: u64) -> Key {
        tagged.key([policy.name.as_bytes(), policy.algorithm.code().as_bytes(), number.to_string().as_bytes()])
    }

    /// Where a policy's block duration is kept while it lasts.
    fn block_key(tagged: &Tagged, policy: &Policy) -> Key {
        tagged.key([format!("{}!block", policy.name)])
    }

    /// Checks `policies` for `subject` at a cost of 1.
    pub async fn check(&self, subject: &str, policies: &[Policy]) -> Result<Decision> {
        self.check_cost(subject, policies, 1).await
    }

    /// Checks `policies` for `subject` and charges `cost` to every one of them, or to none when
    /// any would be exceeded (a single fixed-window or sliding-window policy counts refused
    /// requests too: see [`RateLimiter`]). One script call, or one transaction without a script.
    /// A cost no policy could ever admit is [`Error::CannotFit`], distinct from being limited.
    pub async fn check_cost(&self, subject: &str, policies: &[Policy], cost: u64) -> Result<Decision> {
        validate(policies, cost)?;
        self.decide(subject, policies, cost).await
    }

    /// [`RateLimiter::check_cost`] for policies and a cost checked already (a layer's, checked
    /// once when it was built).
    pub(crate) async fn decide(&self, subject: &str, policies: &[Policy], cost: u64) -> Result<Decision> {
        let (shadow, enforced): (Vec<Policy>, Vec<Policy>) =
            policies.iter().cloned().partition(|p| p.shadow || self.shadow);
        let names = enforced.iter().map(|p| &*p.name).collect::<Vec<_>>().join(",");
        if let Some(decision) = self.cached(subject, &names) {
            count(&enforced, &decision, "cached");
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
                    if metrics::ENABLED {
                        for policy in &violated {
                            DECISIONS.add(&(policy.clone(), "shadow", "redis"), 1);
                        }
                    }
                    tracing::info!(subject, ?violated, "shadow rate limit would have refused a request");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "shadow rate limit check failed"),
            }
        }
        trace(subject, &decision, started.elapsed());
        count(&enforced, &decision, "redis");
        if let Decision::Limited { retry_after, violated, blocked, policies, degraded: false } = &decision
            && self.cache_refusals
            && *retry_after >= Duration::from_secs(1)
        {
            let mut limited = self.limited.lock().unwrap_or_else(|p| p.into_inner());
            if limited.len() >= LOCAL_ENTRIES {
                limited.clear();
            }
            let now = Instant::now();
            let refusal = Refusal {
                checked: names,
                at: now,
                until: now + *retry_after,
                violated: violated.clone(),
                blocked: *blocked,
                policies: policies.clone(),
            };
            let refusals = limited.entry(subject.to_owned()).or_default();
            refusals.retain(|r| r.checked != refusal.checked);
            refusals.push(refusal);
        }
        Ok(decision)
    }

    /// Forgets the refusals of `subject` this process remembers, once its usage has changed
    /// (a refund, a reset); other processes keep theirs until their retry time.
    fn forget_refusals(&self, subject: &str) {
        self.limited.lock().unwrap_or_else(|p| p.into_inner()).remove(subject);
    }

    /// A refusal remembered in process, while it lasts, with its policies' states aged by the
    /// time since it was decided.
    fn cached(&self, subject: &str, names: &str) -> Option<Decision> {
        let mut limited = self.limited.lock().unwrap_or_else(|p| p.into_inner());
        let refusals = limited.get_mut(subject)?;
        let now = Instant::now();
        refusals.retain(|refusal| refusal.until > now);
        if refusals.is_empty() {
            limited.remove(subject);
            return None;
        }
        let refusal = refusals.iter().find(|refusal| refusal.checked == names)?;
        self.counters.cached.fetch_add(1, Ordering::Relaxed);
        let aged = now - refusal.at;
        let policies = refusal
            .policies
            .iter()
            .map(|state| PolicyState {
                retry_after: state.retry_after.saturating_sub(aged),
                reset_after: state.reset_after.saturating_sub(aged),
                ..state.clone()
            })
            .collect();
        Some(Decision::Limited {
            retry_after: refusal.until - now,
            violated: refusal.violated.clone(),
            blocked: refusal.blocked,
            policies,
            degraded: false,
        })
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
                violated.push(policy.name.clone());
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
        let tat = local.entry((subject.to_owned(), policy.name.to_string())).or_insert(now);
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

    /// Checks `policies`, and charges them all when `charge` and all allow: one transaction for
    /// a single counter policy, else one script call.
    async fn run(&self, subject: &str, policies: &[Policy], cost: u64, charge: bool) -> Result<Decision> {
        let tagged = self.subject(subject)?;
        let run = Run { cost, charge, now: self.window_now(policies).await? };
        let (blocked, states) = match policies {
            [policy] if charge && policy.algorithm.is_counter() && !self.scripted_counters => {
                let (blocked, state) = self.count(&tagged, policy, run).await?;
                (blocked, vec![state])
            }
            _ => self.script(&tagged, policies, run).await?,
        };
        let violated: Vec<_> = states.iter().filter(|(allowed, _)| !allowed).map(|(_, s)| s.name.clone()).collect();
        let states: Vec<PolicyState> = states.into_iter().map(|(_, state)| state).collect();
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

    /// One `lua/check.lua` call: the subject's block, and each policy's verdict and state.
    async fn script(
        &self,
        tagged: &Tagged,
        policies: &[Policy],
        run: Run,
    ) -> Result<(Duration, Vec<(bool, PolicyState)>)> {
        let mut keys = Vec::with_capacity(2 * policies.len() + 1);
        // The subject's block, then each policy's keys (CheckKey).
        keys.push(tagged.key(["!block"]));
        let mut args: Vec<Arg> = Vec::with_capacity(CheckArg::ALL.len() + PolicyField::ALL.len() * policies.len());
        args.extend(CheckArg::ALL.iter().map(|arg| match arg {
            CheckArg::Cost => Arg::from(run.cost),
            CheckArg::Charge => Arg::from(if run.charge { "1" } else { "0" }),
            CheckArg::ClientNow => self.time_arg(),
        }));
        for policy in policies {
            keys.push(Self::key(tagged, policy, run.now));
            let mut elapsed = 0;
            if let Some(now) = run.now.filter(|_| policy.algorithm.is_counter()) {
                let (number, into) = window(policy, now);
                if policy.algorithm == Algorithm::SlidingWindow {
                    keys.push(Self::window_key(tagged, policy, number.wrapping_sub(1)));
                }
                elapsed = into;
            }
            if policy.block_for.is_some() {
                keys.push(Self::block_key(tagged, policy));
            }
            args.extend(PolicyField::ALL.iter().map(|field| match field {
                PolicyField::Algorithm => Arg::from(policy.algorithm.code()),
                PolicyField::Limit => Arg::from(policy.limit),
                PolicyField::PeriodMs => Arg::from(millis(policy.period)),
                PolicyField::Burst => Arg::from(policy.burst),
                PolicyField::BlockMs => Arg::from(policy.block_for.map_or(0, millis)),
                PolicyField::ElapsedMs => Arg::from(elapsed),
            }));
        }
        let reply = self.checks.eval(keys, args).await?.into_array()?;
        let number = |i: usize| -> Result<u64> {
            let value =
                reply.get(i).ok_or_else(|| Error::Reply(format!("the script returned {} values", reply.len())))?;
            Ok(u64::try_from(value.as_int()?).unwrap_or(0))
        };
        let blocked = Duration::from_millis(number(CheckReply::Blocked.at() - 1)?);
        let mut states = Vec::with_capacity(policies.len());
        for (i, policy) in policies.iter().enumerate() {
            // Policy i's verdict, from 0: 1 + i * DECISION_FIELDS + field, from 1 in Lua.
            let field = |f: DecisionField| number(CheckReply::Blocked.at() + i * DecisionField::ALL.len() + f.at() - 1);
            let state = PolicyState {
                name: policy.name.clone(),
                limit: policy.limit,
                period: policy.period,
                remaining: field(DecisionField::Remaining)?,
                retry_after: Duration::from_millis(field(DecisionField::RetryMs)?),
                reset_after: Duration::from_millis(field(DecisionField::ResetMs)?),
            };
            states.push((field(DecisionField::Allowed)? == 1, state));
        }
        Ok((blocked, states))
    }

    /// A fixed window or a sliding-window counter checked without a script: `INCRBY` and
    /// `PEXPIRE … NX` in the next shared transaction, and the reads the decision needs (the
    /// subject's block, the policy's block, the previous window) in the next shared `MGET`, at
    /// once. The refused request counts (see [`RateLimiter`]); a policy with a block duration that
    /// refuses starts its block with one more command.
    async fn count(&self, tagged: &Tagged, policy: &Policy, run: Run) -> Result<(Duration, (bool, PolicyState))> {
        let now = run.now.unwrap_or(0);
        let (number, elapsed) = window(policy, now);
        let key = Self::window_key(tagged, policy, number);
        let period = millis(policy.period);
        let sliding = policy.algorithm == Algorithm::SlidingWindow;
        // A sliding window's counter is also the next window's previous one: it lives two periods.
        let ttl = if sliding { period.saturating_mul(2) } else { period };
        let cmds = vec![Cmd::new("INCRBY").key(&key).arg(run.cost), Cmd::new("PEXPIRE").key(&key).arg(ttl).arg("NX")];
        let mut reads = vec![tagged.key(["!block"])];
        if sliding {
            reads.push(Self::window_key(tagged, policy, number.wrapping_sub(1)));
        }
        let block_key = policy.block_for.map(|_| Self::block_key(tagged, policy));
        reads.extend(block_key.clone());
        // The read needs no atomicity with the count: a block set meanwhile may or may not be seen,
        // as with any concurrent check; a previous window no longer changes.
        let (counted, read) = futures_util::future::try_join(self.counts.run(cmds), self.reads.get_many(reads)).await?;
        let used = counted.first().map(Value::as_int).transpose()?.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        let number_at =
            |i: usize| read.get(i).cloned().flatten().and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok());
        let blocked = read.first().cloned().flatten().map_or(Duration::ZERO, |_| block_left(number_at(0), now));
        let (mut allowed, remaining, mut retry, reset) = if sliding {
            sliding_window(policy.limit, period, elapsed, number_at(1).unwrap_or(0), used, run.cost)
        } else {
            let reset = period - elapsed;
            let allowed = used <= policy.limit;
            (allowed, policy.limit.saturating_sub(used), if allowed { 0 } else { reset }, reset)
        };
        if let (Some(block_key), Some(block)) = (&block_key, policy.block_for) {
            let at = read.len() - 1;
            if read.get(at).cloned().flatten().is_some() {
                allowed = false;
                retry = retry.max(millis(block_left(number_at(at), now)));
            } else if !allowed {
                // No block yet: this refusal starts one.
                let until = now.saturating_add(millis(block));
                let cmd = Cmd::new("SET").key(block_key).arg(until).arg("PX").arg(millis(block).max(1)).arg("NX");
                self.backend.call(cmd).await?;
                retry = retry.max(millis(block));
            }
        }
        let state = PolicyState {
            name: policy.name.clone(),
            limit: policy.limit,
            period: policy.period,
            remaining,
            retry_after: Duration::from_millis(retry),
            reset_after: Duration::from_millis(reset),
        };
        Ok((blocked, (allowed, state)))
    }

    /// Gives `cost` back to `policy` (a request that turned out not to count): on a sliding log
    /// the newest entries go. At most the policy's capacity (its burst for GCRA, else its limit)
    /// at once; more is [`Error::CannotFit`]. This process forgets the subject's remembered
    /// refusals, so its next check asks Redis.
    pub async fn refund(&self, subject: &str, policy: &Policy, cost: u64) -> Result<()> {
        validate_adjustment(policy, cost)?;
        self.give_back(subject, policy, cost).await
    }

    /// [`RateLimiter::refund`] for a policy and a cost checked already.
    pub(crate) async fn give_back(&self, subject: &str, policy: &Policy, cost: u64) -> Result<()> {
        self.adjust(subject, policy, cost, "-").await?;
        self.forget_refusals(subject);
        Ok(())
    }

    /// Charges `cost` to `policy` without checking it (a request that turned out to be abusive).
    /// At most the policy's capacity at once; more is [`Error::CannotFit`] (use
    /// [`RateLimiter::block`] to shut a subject out for longer).
    pub async fn penalize(&self, subject: &str, policy: &Policy, cost: u64) -> Result<()> {
        validate_adjustment(policy, cost)?;
        self.adjust(subject, policy, cost, "").await
    }

    /// One `lua/adjust.lua` call (none for a cost of 0): `sign` is `-` to refund, empty to charge.
    async fn adjust(&self, subject: &str, policy: &Policy, cost: u64, sign: &str) -> Result<()> {
        if cost == 0 {
            return Ok(());
        }
        let now = self.window_now(std::slice::from_ref(policy)).await?;
        let key = Self::key(&self.subject(subject)?, policy, now);
        let args = AdjustArg::ALL
            .iter()
            .map(|arg| match arg {
                AdjustArg::Algorithm => Arg::from(policy.algorithm.code()),
                AdjustArg::Limit => Arg::from(policy.limit),
                AdjustArg::PeriodMs => Arg::from(millis(policy.period)),
                AdjustArg::Amount => Arg::from(format!("{sign}{cost}")),
                AdjustArg::ClientNow => self.time_arg(),
            })
            .collect();
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
        // The value is when the block ends, which a check without a script reads for its retry.
        let until = self.now_ms().await?.saturating_add(ms);
        self.backend.call(Cmd::new("SET").key(&key).arg(until).arg("PX").arg(ms)).await?;
        Ok(())
    }

    /// Forgets `subject`'s usage of `policy` and its block duration (or the subject's
    /// [`RateLimiter::block`] when `policy` is `None`), and this process's remembered refusals
    /// of the subject (other processes keep theirs until their retry time).
    pub async fn reset(&self, subject: &str, policy: Option<&Policy>) -> Result<()> {
        let tagged = self.subject(subject)?;
        let mut cmd = Cmd::new("DEL");
        match policy {
            Some(policy) => {
                cmd = cmd.key(&Self::block_key(&tagged, policy));
                if policy.algorithm.is_counter() {
                    let (number, _) = window(policy, self.now_ms().await?);
                    for n in [number, number.wrapping_sub(1)] {
                        cmd = cmd.key(&Self::window_key(&tagged, policy, n));
                    }
                } else {
                    cmd = cmd.key(&Self::key(&tagged, policy, None));
                }
            }
            None => cmd = cmd.key(&tagged.key(["!block"])),
        }
        self.backend.call(cmd).await?;
        self.forget_refusals(subject);
        Ok(())
    }
}

/// What is left of a block ending at `until` (ms; `None` when the block's value is not a time,
/// as an older version wrote it: then a second) at `now`; at least a millisecond while it lasts.
fn block_left(until: Option<u64>, now: u64) -> Duration {
    Duration::from_millis(until.map_or(1_000, |until| until.saturating_sub(now).max(1)))
}

/// The number of the window of `policy` that `now` (ms) falls in, and how far into it `now` is.
fn window(policy: &Policy, now: u64) -> (u64, u64) {
    let period = millis(policy.period).max(1);
    (now / period, now % period)
}

/// A sliding-window counter's verdict, as `lua/check.lua` computes it, for a request of `cost`
/// already counted in `used` (the script-free path counts before it reads): allowed, remaining,
/// retry after and reset after (ms).
fn sliding_window(limit: u64, period: u64, elapsed: u64, prev: u64, used: u64, cost: u64) -> (bool, u64, u64, u64) {
    let (limit, period, elapsed, prev, used, cost) = (
        u128::from(limit),
        u128::from(period),
        u128::from(elapsed),
        u128::from(prev),
        u128::from(used),
        u128::from(cost),
    );
    // Rounded up, so the estimate never admits more than its bound.
    let weighted = (prev * (period - elapsed)).div_ceil(period);
    let allowed = weighted + used <= limit;
    let remaining = limit.saturating_sub(weighted + used);
    let retry = if allowed {
        0
    } else if used + cost <= limit {
        // Later in this window, once the previous one weighs little enough.
        (period - (limit - used - cost) * period / prev).saturating_sub(elapsed).max(1)
    } else {
        // In the next window, once this one weighs little enough.
        (period - elapsed) + period.saturating_sub((limit - cost) * period / used)
    };
    let reset = if used > 0 {
        2 * period - elapsed
    } else if prev > 0 {
        period - elapsed
    } else {
        0
    };
    let narrow = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
    (allowed, narrow(remaining), narrow(retry), narrow(reset))
}

/// Checks a refund's or a penalty's policy and cost before anything is sent: a cost of 0
/// adjusts nothing, but the policy is still checked, so a bad one never passes silently.
fn validate_adjustment(policy: &Policy, cost: u64) -> Result<()> {
    if cost == 0 {
        return policy.validate().map_err(Error::InvalidInput);
    }
    validate(std::slice::from_ref(policy), cost)
}

/// Checks the policies and the cost before anything is sent.
pub(crate) fn validate(policies: &[Policy], cost: u64) -> Result<()> {
    if policies.is_empty() {
        return Err(Error::InvalidInput("at least one policy is needed".to_owned()));
    }
    if cost == 0 {
        return Err(Error::InvalidInput("the cost must be at least 1".to_owned()));
    }
    for policy in policies {
        policy.validate().map_err(Error::InvalidInput)?;
        if cost > policy.capacity() {
            return Err(Error::CannotFit { policy: policy.name.to_string(), cost, capacity: policy.capacity() });
        }
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The decisions counter (feature `metrics`) by policy, outcome and source; its series are
/// registered once each (the recorder is process-wide, and so is this).
static DECISIONS: std::sync::LazyLock<metrics::CounterFamily<(Cow<'static, str>, &'static str, &'static str)>> =
    std::sync::LazyLock::new(|| {
        metrics::CounterFamily::new("redtail_ratelimit_decisions_total", |(policy, outcome, source)| {
            vec![("policy", policy.to_string()), ("outcome", (*outcome).to_owned()), ("source", (*source).to_owned())]
        })
    });

/// Counts a decision (feature `metrics`) by policy and outcome: `allowed` for each policy of an
/// admitted check, `limited` for each policy that refused one (every policy when the subject
/// was blocked), `degraded` for each policy of a check decided without Redis; `source` says
/// whether Redis or the in-process cache of refusals decided.
fn count(enforced: &[Policy], decision: &Decision, source: &'static str) {
    if !metrics::ENABLED {
        return;
    }
    let (outcome, only): (&'static str, &[Cow<'static, str>]) = match decision {
        Decision::Allowed { degraded: true, .. } | Decision::Limited { degraded: true, .. } => ("degraded", &[]),
        Decision::Allowed { .. } => ("allowed", &[]),
        Decision::Limited { blocked: true, .. } => ("limited", &[]),
        Decision::Limited { violated, .. } => ("limited", violated),
    };
    for policy in enforced.iter().filter(|p| only.is_empty() || only.contains(&p.name)) {
        DECISIONS.add(&(policy.name.clone(), outcome, source), 1);
    }
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
