//! `lua/counts.lua`: counts by state and per minute (read only).

use std::time::Duration;

use redtail_core::{Script, Value};

use super::{QueueScript, lua_numbers, source};
use crate::{Counts, Error, Metrics, Minute, Result};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts = vec![CountsArg::Minutes.lua()];
    consts.extend(CountsReply::ALL.iter().map(|r| r.lua()));
    Script::new("queue_counts", source(&consts, include_str!("../../lua/counts.lua")))
});

lua_numbers! {
    /// The counts script's argument.
    CountsArg {
        /// How many minutes of completed and failed counts to return (at most 60 are kept).
        Minutes = 3 => "ARG_MINUTES",
    }
}

lua_numbers! {
    /// Positions in the reply; pairs of completed and failed counts per minute follow, newest first.
    CountsReply {
        /// Waiting and prioritized jobs.
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
    };
    let (oldest, now) = (at(CountsReply::Oldest)?, count(CountsReply::Now)?);
    let minute_start = now / 60_000 * 60_000;
    let minutes = (CountsReply::ALL.len()..reply.len())
        .step_by(2)
        .enumerate()
        .map(|(i, position)| {
            Ok(Minute {
                start_ms: minute_start.saturating_sub(i as u64 * 60_000),
                completed: u64::try_from(int(position)?).unwrap_or(0),
                failed: u64::try_from(int(position + 1)?).unwrap_or(0),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Metrics {
        counts,
        paused: at(CountsReply::Paused)? == 1,
        oldest_waiting: u64::try_from(oldest).ok().map(|t| Duration::from_millis(now.saturating_sub(t))),
        minutes,
    })
}
