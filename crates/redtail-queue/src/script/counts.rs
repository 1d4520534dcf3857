//! `lua/counts.lua`: counts by state and per minute (read only).

use std::time::Duration;

use redtail_core::{Script, Value};

use super::{QueueScript, lua_numbers, source};
use crate::{Counts, Error, GroupTotals, Metrics, Minute, Result};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts = vec![CountsArg::Minutes.lua()];
    consts.extend(CountsReply::consts());
    consts.extend(MinuteField::consts());
    consts.push(("MINUTE_FIELDS", MinuteField::ALL.len().to_string()));
    Script::new("queue_counts", source(&consts, include_str!("../../lua/counts.lua")))
});

lua_numbers! {
    /// The counts script's argument.
    CountsArg {
        /// How many minutes of counts to return (at most 60 are kept).
        Minutes = 3 => "ARG_MINUTES",
    }
}

lua_numbers! {
    /// Positions in the reply; each minute's [`MinuteField`]s follow, newest first.
    CountsReply {
        /// Waiting, prioritized and grouped jobs.
        Waiting = 1 => "REPLY_WAITING",
        /// Delayed jobs.
        Delayed = 2 => "REPLY_DELAYED",
        /// Running jobs.
        Active = 3 => "REPLY_ACTIVE",
        /// Completed jobs kept.
        Completed = 4 => "REPLY_COMPLETED",
        /// Dead jobs kept.
        Dead = 5 => "REPLY_DEAD",
        /// 1 when paused.
        Paused = 6 => "REPLY_PAUSED",
        /// The oldest waiting job's creation ms, or -1.
        Oldest = 7 => "REPLY_OLDEST",
        /// The server's time in ms.
        Now = 8 => "REPLY_NOW",
        /// Groups with jobs waiting.
        GroupsWaiting = 9 => "REPLY_GROUPS_WAITING",
        /// Groups with jobs running.
        GroupsRunning = 10 => "REPLY_GROUPS_RUNNING",
        /// Groups paused.
        GroupsPaused = 11 => "REPLY_GROUPS_PAUSED",
        /// Grouped jobs waiting (counted in `REPLY_WAITING` too).
        GroupedWaiting = 12 => "REPLY_GROUPED_WAITING",
        /// Grouped jobs running or holding their group's place through a backoff.
        GroupedActive = 13 => "REPLY_GROUPED_ACTIVE",
        /// Flow parents waiting for their children.
        WaitingChildren = 14 => "REPLY_WAITING_CHILDREN",
    }
}

lua_numbers! {
    /// One minute's counts in the reply, as offsets from its first.
    MinuteField {
        /// Jobs completed (hash field `c`).
        Completed = 0 => "MINUTE_COMPLETED",
        /// Attempts failed (`f`).
        Failed = 1 => "MINUTE_FAILED",
        /// Adds deduplicated against an existing job (`dd`).
        Deduplicated = 2 => "MINUTE_DEDUPLICATED",
    }
}

/// Reads the reply.
pub(crate) fn decode(reply: Value) -> Result<Metrics> {
    let reply = reply.into_array()?;
    let int = |i: usize| -> Result<i64> {
        let value =
            reply.get(i).ok_or_else(|| Error::Reply(format!("{} values from counts, expected more", reply.len())))?;
        Ok(value.as_int()?)
    };
    let at = |field: CountsReply| int(field.at() - 1);
    let count = |field: CountsReply| Ok::<_, Error>(u64::try_from(at(field)?).unwrap_or(0));
    let counts = Counts {
        waiting: count(CountsReply::Waiting)?,
        delayed: count(CountsReply::Delayed)?,
        active: count(CountsReply::Active)?,
        completed: count(CountsReply::Completed)?,
        dead: count(CountsReply::Dead)?,
        waiting_children: count(CountsReply::WaitingChildren)?,
    };
    let (oldest, now) = (at(CountsReply::Oldest)?, count(CountsReply::Now)?);
    let minute_start = now / 60_000 * 60_000;
    let minutes = (CountsReply::ALL.len()..reply.len())
        .step_by(MinuteField::ALL.len())
        .enumerate()
        .map(|(i, first)| {
            let field = |f: MinuteField| Ok::<_, Error>(u64::try_from(int(first + f.at())?).unwrap_or(0));
            Ok(Minute {
                start_ms: minute_start.saturating_sub(i as u64 * 60_000),
                completed: field(MinuteField::Completed)?,
                failed: field(MinuteField::Failed)?,
                deduplicated: field(MinuteField::Deduplicated)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Metrics {
        counts,
        paused: at(CountsReply::Paused)? == 1,
        oldest_waiting: u64::try_from(oldest).ok().map(|t| Duration::from_millis(now.saturating_sub(t))),
        minutes,
        groups: GroupTotals {
            waiting: count(CountsReply::GroupsWaiting)?,
            running: count(CountsReply::GroupsRunning)?,
            paused: count(CountsReply::GroupsPaused)?,
            jobs_waiting: count(CountsReply::GroupedWaiting)?,
            jobs_active: count(CountsReply::GroupedActive)?,
        },
    })
}
