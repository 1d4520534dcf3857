//! Queue configuration and job options.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use redtail_core::{Clock, Namespace};

use crate::{Error, Result};

/// The longest delay, timeout, backoff, retention or rate-limit window a queue accepts: ten
/// years ([`redtail_core::MAX_TTL`]); longer ones are refused with an error naming the setting.
pub const MAX_DURATION: Duration = redtail_core::MAX_TTL;

/// The most jobs of one group that may run at once ([`Groups::concurrency`]): a million.
pub const MAX_GROUP_CONCURRENCY: u32 = 1_000_000;

/// Fails with an error naming `setting` when `value` is longer than [`MAX_DURATION`].
pub(crate) fn at_most_max(setting: &str, value: Duration) -> Result<()> {
    redtail_core::check_ttl(setting, value).map_err(Error::InvalidInput)
}

/// How long to wait before attempt `n + 1` after attempt `n` failed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Backoff {
    /// The same delay every time.
    Fixed {
        /// The delay.
        #[serde(with = "millis")]
        delay: Duration,
        /// A fraction in `0.0..=1.0`: each delay is shortened by a random part of up to this much,
        /// so jobs that failed together do not retry together.
        jitter: f64,
    },
    /// `base × 2^(n−1)` after attempt `n`, at most `max`.
    Exponential {
        /// The first delay.
        #[serde(with = "millis")]
        base: Duration,
        /// The longest delay.
        #[serde(with = "millis")]
        max: Duration,
        /// As for [`Backoff::Fixed`].
        jitter: f64,
    },
}

impl Backoff {
    /// Exponential from `base`, at most an hour, with 20% jitter.
    pub fn exponential(base: Duration) -> Self {
        Backoff::Exponential { base, max: Duration::from_secs(3600), jitter: 0.2 }
    }

    /// The delay after attempt `attempt` (1-based) failed, with `random` in `0.0..1.0`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let (delay, jitter) = match *self {
            Backoff::Fixed { delay, jitter } => (delay, jitter),
            Backoff::Exponential { base, max, jitter } => {
                let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
                (base.saturating_mul(factor).min(max), jitter)
            }
        };
        delay.mul_f64(1.0 - jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0))
    }

    fn validate(&self) -> Result<()> {
        let jitter = match *self {
            Backoff::Fixed { jitter, .. } | Backoff::Exponential { jitter, .. } => jitter,
        };
        if !(0.0..=1.0).contains(&jitter) {
            return Err(Error::InvalidInput(format!("backoff jitter {jitter} is not between 0 and 1")));
        }
        match *self {
            Backoff::Fixed { delay, .. } => at_most_max("the backoff delay", delay),
            Backoff::Exponential { base, max, .. } => {
                at_most_max("the backoff base", base)?;
                at_most_max("the backoff max", max)
            }
        }
    }
}

/// How long and how many finished jobs (completed, or dead-lettered) are kept for inspection.
/// Every finished job has an expiry, so a queue's memory is bounded without any cleaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Kept this long after finishing.
    #[serde(with = "millis")]
    pub age: Duration,
    /// At most this many are kept; the oldest go first.
    pub count: u64,
}

impl Retention {
    /// Kept for `age`, at most `count` of them.
    pub const fn new(age: Duration, count: u64) -> Self {
        Retention { age, count }
    }

    /// Deleted as soon as they finish.
    pub const fn none() -> Self {
        Retention { age: Duration::ZERO, count: 0 }
    }
}

/// Options of one job; [`QueueConfig::defaults`] holds a queue's.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobOptions {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// Runs no earlier than this after being added.
    pub delay: Duration,
    /// `0` for none; `1..=1_048_576` runs before every job without one, higher first, and in the
    /// order added within one priority.
    pub priority: u32,
    /// A custom id: adding a job whose id exists (waiting, running or still retained) adds
    /// nothing and returns the existing id, so `add` can be retried safely. Not all digits
    /// (those are the queue's own ids), at most 128 bytes, no whitespace or control characters.
    pub id: Option<String>,
    /// An attempt running longer is cancelled and counts as failed.
    pub timeout: Option<Duration>,
    /// How completed jobs are kept.
    pub keep_completed: Retention,
    /// How dead-lettered jobs are kept.
    pub keep_failed: Retention,
    /// Deduplication by an id of the caller's: see [`Dedup`].
    pub dedup: Option<Dedup>,
    /// A group (a user's id, say): the queue's workers take grouped jobs round-robin across
    /// groups, each group's in the order added, within [`QueueConfig::groups`]' limits per group.
    /// 1 to 128 bytes without whitespace or control characters; a grouped job takes no priority.
    pub group: Option<String>,
}

/// Deduplication of adds (BullMQ's `deduplication`): jobs added with the same id within `ttl`
/// make one job, how depends on the mode. The add reports it: [`Added::created`](crate::Added)
/// is `false` and [`Added::id`](crate::Added) names the job it was deduplicated against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// The id that makes two adds the same (1 to 128 bytes, no whitespace or control
    /// characters).
    pub id: String,
    /// How long an add counts for deduplication at most.
    pub ttl: Duration,
    /// What a second add does.
    pub mode: DedupMode,
}

/// What an add with the id of an earlier one does, within the [`Dedup::ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupMode {
    /// Nothing, while the first job has not finished (waiting, delayed or running); once it
    /// has, a new job is added.
    Simple,
    /// Nothing, for the whole `ttl` after the first add, whatever became of its job.
    Throttle,
    /// While the first job is still delayed, its data is replaced by the new add's and its
    /// delay starts again from now; once it runs, a new job is added.
    Debounce,
}

impl Dedup {
    /// [`DedupMode::Simple`].
    pub fn simple(id: impl Into<String>, ttl: Duration) -> Dedup {
        Dedup { id: id.into(), ttl, mode: DedupMode::Simple }
    }

    /// [`DedupMode::Throttle`].
    pub fn throttle(id: impl Into<String>, ttl: Duration) -> Dedup {
        Dedup { id: id.into(), ttl, mode: DedupMode::Throttle }
    }

    /// [`DedupMode::Debounce`]: give the job a delay, the quiet time it waits for.
    pub fn debounce(id: impl Into<String>, ttl: Duration) -> Dedup {
        Dedup { id: id.into(), ttl, mode: DedupMode::Debounce }
    }
}

impl Default for JobOptions {
    /// 3 attempts, exponential backoff from 2 s, no timeout, completed jobs kept an hour (the
    /// last 1,000), dead jobs kept a week (the last 100,000).
    fn default() -> Self {
        JobOptions {
            attempts: 3,
            backoff: Backoff::exponential(Duration::from_secs(2)),
            delay: Duration::ZERO,
            priority: 0,
            id: None,
            timeout: None,
            keep_completed: Retention::new(Duration::from_secs(3600), 1000),
            keep_failed: Retention::new(Duration::from_secs(7 * 24 * 3600), 100_000),
            dedup: None,
            group: None,
        }
    }
}

impl JobOptions {
    /// Sets [`JobOptions::attempts`].
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }
    /// Sets [`JobOptions::backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Sets [`JobOptions::delay`].
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// Sets [`JobOptions::priority`].
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }
    /// Sets [`JobOptions::id`].
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets [`JobOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Sets [`JobOptions::keep_completed`].
    pub fn keep_completed(mut self, retention: Retention) -> Self {
        self.keep_completed = retention;
        self
    }
    /// Sets [`JobOptions::keep_failed`].
    pub fn keep_failed(mut self, retention: Retention) -> Self {
        self.keep_failed = retention;
        self
    }
    /// Sets [`JobOptions::dedup`].
    pub fn dedup(mut self, dedup: Dedup) -> Self {
        self.dedup = Some(dedup);
        self
    }
    /// Sets [`JobOptions::group`].
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.attempts == 0 {
            return Err(Error::InvalidInput("a job needs at least 1 attempt".to_owned()));
        }
        if self.priority > crate::MAX_PRIORITY {
            return Err(Error::InvalidInput(format!(
                "priority {} is above the maximum {}",
                self.priority,
                crate::MAX_PRIORITY
            )));
        }
        if let Some(group) = &self.group {
            validate_name("a group", group)?;
            if self.priority > 0 {
                return Err(Error::InvalidInput(format!(
                    "a grouped job runs in its group's order and takes no priority, got priority {} for group {group:?}",
                    self.priority
                )));
            }
        }
        if let Some(dedup) = &self.dedup {
            validate_name("a deduplication id", &dedup.id)?;
            if dedup.ttl < Duration::from_millis(1) || dedup.ttl > redtail_core::MAX_TTL {
                return Err(Error::InvalidInput(format!(
                    "the deduplication ttl must be 1 ms to 10 years, got {:?}",
                    dedup.ttl
                )));
            }
        }
        if let Some(id) = &self.id {
            validate_id(id)?;
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::InvalidInput("a job timeout must be longer than zero".to_owned()));
        }
        at_most_max("a job's timeout", self.timeout.unwrap_or_default())?;
        at_most_max("a job's delay", self.delay)?;
        at_most_max("keep_completed's age", self.keep_completed.age)?;
        at_most_max("keep_failed's age", self.keep_failed.age)?;
        self.backoff.validate()
    }

    /// What a worker needs that the job hash does not hold on its own, when it differs from
    /// the queue's defaults (most jobs store nothing).
    pub(crate) fn stored(&self, defaults: &JobOptions) -> Option<Stored> {
        let own = Stored::of(self);
        (own != Stored::of(defaults)).then_some(own)
    }
}

/// The options kept at the end of a job's `m` field (see `lua/lib.lua`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stored {
    #[serde(rename = "b")]
    pub backoff: Backoff,
    #[serde(rename = "t")]
    pub timeout: Option<u64>,
    #[serde(rename = "kc")]
    pub keep_completed: Retention,
    #[serde(rename = "kf")]
    pub keep_failed: Retention,
    /// The tick a scheduler's job stands for.
    #[serde(rename = "sc", default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<crate::scheduler::Tick>,
    /// A flow's child: its parent, `<queue>:<id>` (see `flow.rs`).
    #[serde(rename = "fp", default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// A flow's parent: it waited for children, whose outcomes its hash keeps.
    #[serde(rename = "fc", default, skip_serializing_if = "std::ops::Not::not")]
    pub has_children: bool,
}

impl Stored {
    /// Whether the job is part of a flow: its hash is then kept when it completes (no record,
    /// see `record::Record`), since a parent's holds its children's outcomes and a child's
    /// result goes to its parent.
    pub(crate) fn in_flow(&self) -> bool {
        self.parent.is_some() || self.has_children
    }

    pub(crate) fn of(options: &JobOptions) -> Stored {
        Stored {
            backoff: options.backoff,
            timeout: options.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            keep_completed: options.keep_completed,
            keep_failed: options.keep_failed,
            tick: None,
            parent: None,
            has_children: false,
        }
    }
}

/// Checks a group, a deduplication id or a job id: 1 to 128 bytes, no whitespace or control
/// characters. A name of the wrong length is reported by its length, so that a hostile
/// megabyte is not copied into the error.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::InvalidInput(format!("{what} must be 1 to 128 bytes, not {}", name.len())));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidInput(format!("{what} {name:?} holds whitespace or a control character")));
    }
    Ok(())
}

/// Checks a custom job id.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    if id.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty() {
        return Err(Error::InvalidInput(format!("custom job id {id:?} is all digits, like the queue's own ids")));
    }
    validate_import_id(id)
}

/// Checks the id of a job imported from BullMQ, which may be all digits (the add script then
/// moves the queue's id counter past it).
pub(crate) fn validate_import_id(id: &str) -> Result<()> {
    validate_name("a job id", id)
}

/// At most `max` jobs start per `period`, across every worker of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Jobs per period.
    pub max: u32,
    /// The window.
    pub period: Duration,
}

/// Limits on each group of a queue's jobs ([`JobOptions::group`]), the same for every group.
/// Workers pass them on each round trip, so every worker of a queue must be given the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Groups {
    /// Jobs of one group running at once, across all workers (1 to [`MAX_GROUP_CONCURRENCY`]).
    pub concurrency: u32,
    /// Jobs of one group started per window, across all workers.
    pub rate_limit: Option<RateLimit>,
    /// Whether a job waiting out a retry's backoff holds its group's place: it counts against
    /// the group's concurrency and runs first in the group when due, so the group's jobs keep
    /// their order (on by default). Off, it frees its place at once and goes behind the group's
    /// waiting jobs when due.
    pub hold_on_retry: bool,
}

impl Default for Groups {
    /// One job at a time per group, no rate limit, retries hold their group's place.
    fn default() -> Self {
        Groups { concurrency: 1, rate_limit: None, hold_on_retry: true }
    }
}

impl Groups {
    /// Sets [`Groups::concurrency`].
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }
    /// Sets [`Groups::rate_limit`]: `max` starts per `period` in each group.
    pub fn rate_limit(mut self, max: u32, period: Duration) -> Self {
        self.rate_limit = Some(RateLimit { max, period });
        self
    }
    /// Sets [`Groups::hold_on_retry`].
    pub fn hold_on_retry(mut self, hold: bool) -> Self {
        self.hold_on_retry = hold;
        self
    }
}

/// A queue's configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueConfig {
    /// The queue's name: 1 to 64 of `A-Z a-z 0-9 - _ .`. Every key of the queue carries it as
    /// its hash tag, so the whole queue lives in one cluster slot.
    pub name: String,
    /// Where the queue's keys go: `<namespace>:{<name>}:...`; `rt:q` by default.
    pub namespace: Namespace,
    /// Options of jobs added without their own.
    pub defaults: JobOptions,
    /// Encoded job data larger than this is refused at `add` (512 KiB by default).
    pub max_payload_bytes: usize,
    /// Events kept in the queue's event stream (about; trimmed in whole blocks). 0 turns events off.
    pub events_cap: u32,
    /// Lines kept in each job's log.
    pub max_log_lines: u32,
    /// A limit on jobs started, across all workers.
    pub rate_limit: Option<RateLimit>,
    /// Limits on each group of grouped jobs ([`JobOptions::group`]).
    pub groups: Groups,
    /// This process's clock, which hides completed records past their retention when they are
    /// read (every time in scripts is the server's). Default: the system clock.
    pub clock: Clock,
}

impl QueueConfig {
    /// A queue named `name` with default settings.
    pub fn new(name: impl Into<String>) -> Self {
        QueueConfig {
            name: name.into(),
            namespace: Namespace::new("rt:q").unwrap_or_else(|_| unreachable!("a valid literal prefix")),
            defaults: JobOptions::default(),
            max_payload_bytes: 512 * 1024,
            events_cap: 10_000,
            max_log_lines: 100,
            rate_limit: None,
            groups: Groups::default(),
            clock: Clock::system(),
        }
    }

    /// Sets [`QueueConfig::defaults`].
    pub fn defaults(mut self, defaults: JobOptions) -> Self {
        self.defaults = defaults;
        self
    }

    /// Sets [`QueueConfig::namespace`].
    pub fn namespace(mut self, namespace: Namespace) -> Self {
        self.namespace = namespace;
        self
    }

    /// Sets [`QueueConfig::rate_limit`].
    pub fn rate_limit(mut self, max: u32, period: Duration) -> Self {
        self.rate_limit = Some(RateLimit { max, period });
        self
    }

    /// Sets [`QueueConfig::groups`].
    pub fn groups(mut self, groups: Groups) -> Self {
        self.groups = groups;
        self
    }

    /// Sets [`QueueConfig::max_payload_bytes`].
    pub fn max_payload_bytes(mut self, max: usize) -> Self {
        self.max_payload_bytes = max;
        self
    }

    /// Sets [`QueueConfig::clock`] (a test's virtual clock, say).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets [`QueueConfig::events_cap`].
    pub fn events_cap(mut self, cap: u32) -> Self {
        self.events_cap = cap;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(Error::InvalidInput(format!(
                "queue name {:?} must be 1 to 64 of A-Z a-z 0-9 - _ .",
                self.name
            )));
        }
        let limits = [("queue", self.rate_limit), ("group", self.groups.rate_limit)];
        for (which, limit) in limits {
            let Some(limit) = limit else { continue };
            if limit.max == 0 || limit.period.as_millis() == 0 {
                return Err(Error::InvalidInput(format!(
                    "a {which} rate limit needs max > 0 and a period of 1 ms or more"
                )));
            }
            at_most_max(&format!("the {which}'s rate-limit period"), limit.period)?;
        }
        if !(1..=MAX_GROUP_CONCURRENCY).contains(&self.groups.concurrency) {
            return Err(Error::InvalidInput(format!(
                "a group's concurrency must be 1 to {MAX_GROUP_CONCURRENCY}, not {}",
                self.groups.concurrency
            )));
        }
        if self.max_log_lines == 0 {
            return Err(Error::InvalidInput("max_log_lines must be at least 1".to_owned()));
        }
        self.defaults.validate()
    }
}

/// Durations as whole milliseconds in stored options.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
