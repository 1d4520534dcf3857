//! Job schedulers (BullMQ's `upsertJobScheduler`): a job made on every tick of a cron
//! expression in a time zone, or of a fixed interval, from a template.
//!
//! Where the next tick is computed, and why exactly one job is made per tick: the job of tick N
//! is due in Redis (a delayed job whose id is `<scheduler>:<tick ms>`), so no process's timer
//! holds it. The worker that runs tick N computes tick N+1 (Lua cannot evaluate a cron
//! expression in a time zone) and sends it with the attempt's acknowledgement; the step script
//! that applies the acknowledgement makes tick N+1's job only if the scheduler still waits for
//! tick N, in the same script, so acknowledgements sent twice, attempts run twice and many
//! workers make one job per tick. A worker that dies before acknowledging leaves tick N's job
//! to run again when its lease runs out, and that run makes tick N+1.
//!
//! Missed ticks (every worker down while ticks pass): the overdue tick's job runs once, and the
//! next tick is the first after that run's acknowledgement; the missed ones are skipped. For
//! the same reason a scheduler's runs never overlap: a tick that passes while the previous
//! job runs is skipped.

use std::{
    str::FromStr,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Offset as _, TimeZone as _};
use redtail_core::{Arg, Bytes, Cmd, Value, unix_ms};
use serde::{Deserialize, Serialize};

use crate::{
    Error, JobId, JobOptions, Queue, Result,
    config::Stored,
    record,
    script::{
        QueueKey,
        schedule::{self, ScheduleArg, ScheduleOp},
    },
};

/// When a scheduler's ticks come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Repeat {
    /// A cron expression (5 fields, or 6 with seconds first; croner's syntax, with `L`, `W` and
    /// `#`) evaluated in an IANA time zone. A time skipped by a daylight-saving change runs at
    /// the first time after the change; a time that happens twice runs once.
    Cron {
        /// The expression, such as `0 30 3 * * *` (03:30:00 every day).
        pattern: String,
        /// The zone's IANA name, such as `Europe/Paris` or `UTC`.
        time_zone: String,
    },
    /// Every this many milliseconds from the first tick.
    Every {
        /// The interval in ms.
        ms: u64,
    },
}

impl Repeat {
    /// Checks the repeat, so that a bad one is refused when the scheduler is made.
    fn validate(&self) -> Result<()> {
        match self {
            Repeat::Cron { pattern, time_zone } => {
                parse_cron(pattern)?;
                parse_zone(time_zone)?;
            }
            Repeat::Every { ms } if *ms == 0 || *ms > crate::MAX_DURATION.as_millis() as u64 => {
                return Err(Error::InvalidInput(format!(
                    "a scheduler's interval must be 1 ms to {} days, not {ms} ms",
                    crate::MAX_DURATION.as_secs() / 86_400
                )));
            }
            Repeat::Every { .. } => {}
        }
        Ok(())
    }

    /// The first tick strictly after `after` (ms since the epoch); for an interval, counted from
    /// `from`, a tick of it.
    fn next(&self, from: u64, after: u64) -> Result<Option<u64>> {
        match self {
            Repeat::Every { ms } => {
                let steps = after.saturating_sub(from) / ms + 1;
                Ok(steps.checked_mul(*ms).and_then(|d| from.checked_add(d)))
            }
            Repeat::Cron { pattern, time_zone } => {
                let (cron, zone) = (parse_cron(pattern)?, parse_zone(time_zone)?);
                // Cron is to the second: from the second `after` falls in (ticks are whole seconds).
                let Some(after_s) = i64::try_from(after / 1000).ok() else { return Ok(None) };
                let local = |s: i64| DateTime::from_timestamp(s, 0).map(|t| zone.from_utc_datetime(&t.naive_utc()));
                let next_from = |s: i64| local(s).and_then(|from| cron.find_next_occurrence(&from, false).ok());
                // No tick ever again (a date that never comes) ends the schedule.
                let Some(next) = next_from(after_s) else { return Ok(None) };
                let mut next_s = next.timestamp();
                let crosses = local(after_s).is_some_and(|from| from.offset().fix() != next.offset().fix());
                if cron.determine_job_type() == croner::JobType::IntervalWildcard && (crosses || next_s <= after_s) {
                    // croner steps through wall-clock times: across the hour that happens twice
                    // when clocks go back, an interval job would skip it (or step back into it).
                    // There the seconds are checked one by one (a few hours, twice a year).
                    let until = if next_s > after_s { next_s } else { after_s + 6 * 3600 };
                    let matching = |s: &i64| local(*s).is_some_and(|t| cron.is_time_matching(&t).unwrap_or(false));
                    if let Some(s) = (after_s + 1..until).find(matching) {
                        next_s = s;
                    }
                } else if next_s <= after_s {
                    // A fixed time in the repeated hour ran at its first occurrence: the next
                    // is after the hour.
                    next_s = next_from(after_s + 3600).map_or(after_s, |t| t.timestamp());
                }
                if next_s <= after_s {
                    return Ok(None);
                }
                Ok(u64::try_from(next_s).ok().and_then(|s| s.checked_mul(1000)))
            }
        }
    }
}

fn parse_cron(pattern: &str) -> Result<croner::Cron> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(pattern)
        .map_err(|e| Error::InvalidInput(format!("cron expression {pattern:?}: {e}")))
}

fn parse_zone(name: &str) -> Result<chrono_tz::Tz> {
    chrono_tz::Tz::from_str(name)
        .map_err(|_| Error::InvalidInput(format!("unknown time zone {name:?} (an IANA name such as Europe/Paris)")))
}

/// A job scheduler: its id, its repeat, when it starts and ends, how many jobs it may make, and
/// the options of the jobs it makes (their data is given to
/// [`Queue::upsert_scheduler`](crate::Queue::upsert_scheduler)).
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub(crate) id: String,
    pub(crate) repeat: Repeat,
    pub(crate) start: Option<SystemTime>,
    pub(crate) end: Option<SystemTime>,
    pub(crate) limit: Option<u64>,
    pub(crate) options: Option<JobOptions>,
}

/// The longest scheduler id, in bytes.
const MAX_ID: usize = 100;

impl Scheduler {
    /// A scheduler `id` (1 to 100 letters, digits, `.`, `_` and `-`) ticking on the cron
    /// expression `pattern` in the IANA time zone `time_zone`.
    pub fn cron(id: impl Into<String>, pattern: impl Into<String>, time_zone: impl Into<String>) -> Result<Scheduler> {
        Scheduler::new(id.into(), Repeat::Cron { pattern: pattern.into(), time_zone: time_zone.into() })
    }

    /// A scheduler `id` ticking every `interval` (1 ms to ten years), the first tick at once
    /// (or at its start time).
    pub fn every(id: impl Into<String>, interval: Duration) -> Result<Scheduler> {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Scheduler::new(id.into(), Repeat::Every { ms })
    }

    fn new(id: String, repeat: Repeat) -> Result<Scheduler> {
        if id.is_empty() || id.len() > MAX_ID || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(Error::InvalidInput(format!(
                "a scheduler id is 1 to {MAX_ID} letters, digits, '.', '_' and '-', not {id:?}"
            )));
        }
        repeat.validate()?;
        Ok(Scheduler { id, repeat, start: None, end: None, limit: None, options: None })
    }

    /// No tick before `start`.
    pub fn starting_at(mut self, start: SystemTime) -> Self {
        self.start = Some(start);
        self
    }

    /// No tick after `end`.
    pub fn ending_at(mut self, end: SystemTime) -> Self {
        self.end = Some(end);
        self
    }

    /// At most `runs` jobs in all.
    pub fn limit(mut self, runs: u64) -> Self {
        self.limit = Some(runs);
        self
    }

    /// The options of the jobs it makes (the queue's defaults otherwise). Their delay, custom id
    /// and deduplication are the scheduler's own and refused here.
    pub fn job_options(mut self, options: JobOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// The definition as stored: two upserts of the same definition are one.
    pub(crate) fn definition(&self, data: &serde_json::Value, options: &JobOptions) -> Definition {
        Definition {
            repeat: self.repeat.clone(),
            start_ms: self.start.map(unix_ms),
            end_ms: self.end.map(unix_ms),
            limit: self.limit,
            data: data.clone(),
            attempts: options.attempts,
            priority: options.priority,
            options: Some(Stored::of(options)),
        }
    }
}

/// What is stored of a scheduler, and shown by [`Queue::schedulers`](crate::Queue::schedulers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// When it ticks.
    pub repeat: Repeat,
    /// No tick before this time (ms since the epoch).
    pub start_ms: Option<u64>,
    /// No tick after this time.
    pub end_ms: Option<u64>,
    /// At most this many jobs.
    pub limit: Option<u64>,
    /// The data of every job it makes.
    pub data: serde_json::Value,
    /// Their attempts.
    pub attempts: u32,
    /// Their priority.
    pub priority: u32,
    /// The rest of their options (backoff, timeout, retention), so that changing them is a new
    /// definition too.
    #[serde(default)]
    pub(crate) options: Option<Stored>,
}

/// A scheduler as [`Queue::scheduler`](crate::Queue::scheduler) reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerInfo {
    /// Its id.
    pub id: String,
    /// What it was upserted with.
    pub definition: Definition,
    /// When its pending job is due (ms since the epoch); `None` once it has ended (its end
    /// time or its limit reached).
    pub next_ms: Option<u64>,
    /// Jobs it has made since it was last upserted with another definition.
    pub runs: u64,
    /// The last job it made.
    pub last_job: Option<JobId>,
}

/// The tick a scheduler's job stands for, kept in the job's options, so that the worker that
/// runs it can compute the next one without reading the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tick {
    /// The scheduler's id.
    #[serde(rename = "i")]
    pub(crate) id: String,
    /// This tick's time, ms.
    #[serde(rename = "t")]
    pub(crate) at: u64,
    /// Its number, from 1.
    #[serde(rename = "n")]
    pub(crate) n: u64,
    #[serde(rename = "r")]
    pub(crate) repeat: Repeat,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub(crate) end_ms: Option<u64>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<u64>,
    /// The attempts and priority of its jobs.
    #[serde(rename = "a")]
    pub(crate) attempts: u32,
    #[serde(rename = "p")]
    pub(crate) priority: u32,
}

impl Tick {
    /// The first tick of `definition` at or after `now`, or `None` when there is none (its end
    /// passed, or its limit is 0).
    pub(crate) fn first(id: &str, definition: &Definition, now: u64) -> Result<Option<Tick>> {
        let not_before = definition.start_ms.map_or(now, |start| start.max(now));
        let at = match &definition.repeat {
            Repeat::Every { .. } => Some(not_before),
            cron => cron.next(0, not_before.saturating_sub(1))?,
        };
        let tick = at.map(|at| Tick {
            id: id.to_owned(),
            at,
            n: 1,
            repeat: definition.repeat.clone(),
            end_ms: definition.end_ms,
            limit: definition.limit,
            attempts: definition.attempts,
            priority: definition.priority,
        });
        Ok(tick.filter(|t| t.allowed()))
    }

    /// The tick after this one, the first after `now` (missed ticks are skipped), or `None`
    /// when the schedule has ended.
    pub(crate) fn following(&self, now: u64) -> Result<Option<Tick>> {
        let at = self.repeat.next(self.at, self.at.max(now))?;
        let next = at.map(|at| Tick { at, n: self.n + 1, ..self.clone() });
        Ok(next.filter(|t| t.allowed()))
    }

    fn allowed(&self) -> bool {
        self.end_ms.is_none_or(|end| self.at <= end) && self.limit.is_none_or(|limit| self.n <= limit)
    }

    /// The acknowledgement's tick field for this tick's job (`lua/step.lua` reads it),
    /// acknowledged at `now` (server ms); `stored` are the job's options, which the next job
    /// takes with the next tick.
    pub(crate) fn advance(&self, stored: &crate::config::Stored, now: u64) -> String {
        let next = self.following(now).unwrap_or_else(|e| {
            tracing::warn!(scheduler = %self.id, error = %e, "queue: a scheduler's next tick cannot be computed; it ends");
            None
        });
        match next {
            Some(next) => {
                let options = crate::config::Stored { tick: Some(next.clone()), ..stored.clone() };
                let json = serde_json::to_string(&options).unwrap_or_default();
                format!("{} {} {} {} {} {json}", self.at, next.at, self.attempts, self.priority, self.id)
            }
            None => format!("{} 0 0 0 {} ", self.at, self.id),
        }
    }
}

impl<T: Serialize> Queue<T> {
    /// Creates the job scheduler `scheduler` (BullMQ's `upsertJobScheduler`), or replaces the
    /// one with its id: its first tick's job is due in Redis at once, with `data`. Upserting the
    /// same definition again (as a service does each time it starts) changes nothing; another
    /// definition replaces the pending job and counts its runs from 1. Returns the scheduler as
    /// stored.
    pub async fn upsert_scheduler(&self, scheduler: Scheduler, data: &T) -> Result<SchedulerInfo> {
        let inner = &self.inner;
        let options = scheduler.options.clone().unwrap_or_else(|| inner.config.defaults.clone());
        if options.id.is_some() || options.dedup.is_some() || !options.delay.is_zero() || options.group.is_some() {
            return Err(Error::InvalidInput(
                "a scheduler's job options take no delay, custom id, deduplication or group: the scheduler sets them"
                    .to_owned(),
            ));
        }
        options.validate()?;
        let data = serde_json::to_value(data).map_err(Error::Encode)?;
        let bytes = serde_json::to_vec(&data).map_err(Error::Encode)?;
        if bytes.len() > inner.config.max_payload_bytes {
            return Err(Error::TooLarge { size: bytes.len(), max: inner.config.max_payload_bytes });
        }
        let definition = scheduler.definition(&data, &options);
        let now = inner.config.clock.now_ms();
        let first = Tick::first(&scheduler.id, &definition, now)?;
        // As for a delayed job: a first run further away than the longest delay is refused.
        if let Some(tick) = &first {
            let setting = format!("scheduler {}'s first run (its start)", scheduler.id);
            crate::config::at_most_max(&setting, Duration::from_millis(tick.at.saturating_sub(now)))?;
        }
        let stored = Stored { tick: first.clone(), ..Stored::of(&options) };
        let definition = serde_json::to_string(&definition).map_err(Error::Encode)?;
        let stored = serde_json::to_string(&stored).map_err(Error::Encode)?;
        let args = ScheduleArg::ALL.iter().map(|arg| match arg {
            ScheduleArg::Op => Arg::from(ScheduleOp::Upsert.code()),
            ScheduleArg::Id => Arg::from(scheduler.id.as_str()),
            ScheduleArg::Definition => Arg::from(definition.as_str()),
            ScheduleArg::First => Arg::from(first.as_ref().map_or(0, |t| t.at)),
            ScheduleArg::Data => Arg::from(bytes.clone()),
            ScheduleArg::Attempts => Arg::from(options.attempts),
            ScheduleArg::Priority => Arg::from(options.priority),
            ScheduleArg::Options => Arg::from(stored.as_str()),
        });
        schedule::SCRIPT.run(inner, args).await?;
        self.scheduler(&scheduler.id)
            .await?
            .ok_or_else(|| Error::Reply(format!("scheduler {} is gone right after its upsert", scheduler.id)))
    }

    /// Removes the job scheduler `id` and its pending job (unless it has started). Returns
    /// whether there was one.
    pub async fn remove_scheduler(&self, id: &str) -> Result<bool> {
        let args = ScheduleArg::ALL.iter().map(|arg| match arg {
            ScheduleArg::Op => Arg::from(ScheduleOp::Remove.code()),
            ScheduleArg::Id => Arg::from(id),
            _ => Arg::from(""),
        });
        Ok(schedule::SCRIPT.run(&self.inner, args).await?.as_int()? == 1)
    }

    /// The job scheduler `id`, if there is one.
    pub async fn scheduler(&self, id: &str) -> Result<Option<SchedulerInfo>> {
        let read = |key| Cmd::new("HGET").key(self.inner.key(key)).arg(id);
        let mut replies =
            self.inner.backend.pipeline(vec![read(QueueKey::Schedulers), read(QueueKey::Ticks)]).await?.into_iter();
        let (Some(definition), Some(state)) = (replies.next(), replies.next()) else {
            return Err(Error::Reply("a short reply to reading a scheduler".to_owned()));
        };
        match (definition.into_opt_bytes()?, state.into_opt_bytes()?) {
            (Some(definition), Some(state)) => Ok(Some(SchedulerInfo::decode(id.to_owned(), &definition, &state)?)),
            _ => Ok(None),
        }
    }

    /// Every job scheduler of the queue, by id.
    pub async fn schedulers(&self) -> Result<Vec<SchedulerInfo>> {
        let read = |key| Cmd::new("HGETALL").key(self.inner.key(key));
        let mut replies =
            self.inner.backend.pipeline(vec![read(QueueKey::Schedulers), read(QueueKey::Ticks)]).await?.into_iter();
        let (Some(definitions), Some(states)) = (replies.next(), replies.next()) else {
            return Err(Error::Reply("a short reply to reading the schedulers".to_owned()));
        };
        // Schedulers by id, each field as bytes: the id, the value.
        let by_id = |reply: Value| -> Result<std::collections::BTreeMap<String, Bytes>> {
            record::pairs(reply)?.into_iter().map(|(k, v)| Ok((k.into_string()?, v.into_bytes()?))).collect()
        };
        let states = by_id(states)?;
        let mut out = Vec::new();
        for (id, definition) in by_id(definitions)? {
            if let Some(state) = states.get(&id) {
                out.push(SchedulerInfo::decode(id, &definition, state)?);
            }
        }
        Ok(out)
    }
}

impl SchedulerInfo {
    /// A scheduler from its definition and its progress (`lua/schedule.lua` says their forms).
    fn decode(id: String, definition: &[u8], state: &[u8]) -> Result<SchedulerInfo> {
        let bad = |what: &str| Error::Reply(format!("scheduler {id}: unreadable {what}"));
        let definition: Definition = serde_json::from_slice(definition).map_err(|_| bad("definition"))?;
        let state = std::str::from_utf8(state).map_err(|_| bad("progress"))?;
        let mut parts = state.split(' ');
        let (Some(next), Some(runs), Some(last)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("progress"));
        };
        let next: u64 = next.parse().map_err(|_| bad("next tick"))?;
        Ok(SchedulerInfo {
            definition,
            next_ms: (next != 0).then_some(next),
            runs: runs.parse().map_err(|_| bad("runs"))?,
            last_job: (last != "-").then(|| JobId(last.to_owned())),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn utc(text: &str) -> u64 {
        DateTime::parse_from_rfc3339(text).map_or(0, |t| t.timestamp_millis() as u64)
    }

    fn ticks(repeat: Repeat, from: &str, n: usize) -> Vec<u64> {
        let definition = Definition {
            repeat,
            start_ms: None,
            end_ms: None,
            limit: None,
            data: serde_json::Value::Null,
            attempts: 1,
            priority: 0,
            options: None,
        };
        let mut tick = Tick::first("s", &definition, utc(from)).ok().flatten();
        let mut out = Vec::new();
        while let Some(t) = tick.filter(|_| out.len() < n) {
            out.push(t.at);
            tick = t.following(t.at).ok().flatten();
        }
        out
    }

    #[test]
    fn cron_in_a_time_zone_across_both_daylight_saving_changes() {
        let paris = |pattern: &str| Repeat::Cron { pattern: pattern.to_owned(), time_zone: "Europe/Paris".to_owned() };
        // 02:30 does not exist on 2026-03-29 in Paris (02:00 -> 03:00): it runs at 03:00 local.
        let spring = ticks(paris("0 30 2 * * *"), "2026-03-28T00:00:00Z", 3);
        assert_eq!(spring, [utc("2026-03-28T01:30:00Z"), utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")]);
        // 02:30 happens twice on 2026-10-25 (03:00 -> 02:00): it runs once, at the first.
        let autumn = ticks(paris("0 30 2 * * *"), "2026-10-24T00:00:00Z", 3);
        assert_eq!(autumn, [utc("2026-10-24T00:30:00Z"), utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]);
        // Every 30 minutes through the autumn change: both 02:00 and 02:30 hours run.
        let half_hours = ticks(paris("*/30 * * * *"), "2026-10-24T23:45:00Z", 6);
        assert_eq!(half_hours.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(), [30 * MINUTE; 5]);
    }

    #[test]
    fn intervals_limits_and_ends() {
        let every = Repeat::Every { ms: MINUTE };
        assert_eq!(
            ticks(every.clone(), "2026-01-01T00:00:00Z", 3),
            [0, MINUTE, 2 * MINUTE].map(|m| utc("2026-01-01T00:00:00Z") + m)
        );
        let definition = Definition {
            repeat: every,
            start_ms: Some(utc("2026-01-01T00:10:00Z")),
            end_ms: Some(utc("2026-01-01T00:13:00Z")),
            limit: Some(3),
            data: serde_json::Value::Null,
            attempts: 1,
            priority: 0,
            options: None,
        };
        let first = Tick::first("s", &definition, utc("2026-01-01T00:00:00Z")).ok().flatten();
        assert_eq!(first.as_ref().map(|t| t.at), Some(utc("2026-01-01T00:10:00Z")), "waits for its start");
        let mut tick = first;
        let mut seen = 0;
        while let Some(t) = tick {
            seen += 1;
            tick = t.following(t.at).ok().flatten();
        }
        assert_eq!(seen, 3, "the limit of 3 ends it before the end time would");
        // Missed ticks are skipped: the next tick after a run at 00:30 is 00:31.
        let late = Tick {
            id: "s".into(),
            at: utc("2026-01-01T00:10:00Z"),
            n: 1,
            repeat: Repeat::Every { ms: MINUTE },
            end_ms: None,
            limit: None,
            attempts: 1,
            priority: 0,
        };
        assert_eq!(
            late.following(utc("2026-01-01T00:30:05Z")).ok().flatten().map(|t| t.at),
            Some(utc("2026-01-01T00:31:00Z"))
        );
    }

    #[test]
    fn bad_definitions_are_refused_with_the_reason() {
        for (made, says) in [
            (Scheduler::cron("x", "61 * * * *", "UTC"), "cron expression"),
            (Scheduler::cron("x", "* * * * *", "Mars/Olympus"), "time zone"),
            (Scheduler::cron("bad id", "* * * * *", "UTC"), "scheduler id"),
            (Scheduler::every("x", Duration::ZERO), "interval"),
            (Scheduler::every("x", Duration::MAX), "interval"),
        ] {
            assert!(matches!(&made, Err(Error::InvalidInput(m)) if m.contains(says)), "{made:?}");
        }
    }
}
