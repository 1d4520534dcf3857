//! `lua/add.lua`: adds jobs, many per call.

use redtail_core::{Arg, Script, Value};

use super::{QueueScript, listed_apart, lua_codes, lua_numbers, source};
use crate::{Added, Error, JobId, Result};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts = vec![AddArg::Count.lua(), ("JOB_FIELDS", JobField::ALL.len().to_string())];
    consts.extend(JobField::consts());
    consts.extend(DedupCode::consts());
    Script::new("queue_add", source(&consts, include_str!("../../lua/add.lua")))
});

lua_numbers! {
    /// The add script's own argument; the jobs' fields follow it, then the groups of the grouped
    /// ones, listed apart so that ungrouped jobs carry nothing: `<job number, from 0> <group>`
    /// pairs separated by spaces, or empty.
    AddArg {
        /// How many jobs follow, [`JobField`]s each.
        Count = 3 => "ARG_COUNT",
    }
}

lua_numbers! {
    /// One job's fields, as offsets from the position after [`AddArg::Count`] plus `i * JOB_FIELDS`.
    JobField {
        /// A custom id, or empty for the next number.
        Id = 0 => "JOB_ID",
        /// The job's data (JSON).
        Data = 1 => "JOB_DATA",
        /// Ms before it may run.
        DelayMs = 2 => "JOB_DELAY_MS",
        /// Its priority (0: none).
        Priority = 3 => "JOB_PRIORITY",
        /// Attempts allowed.
        Attempts = 4 => "JOB_ATTEMPTS",
        /// Its own options (JSON), or empty for the queue's.
        Options = 5 => "JOB_OPTIONS",
        /// Its deduplication id, or empty for none.
        DedupId = 6 => "JOB_DEDUP_ID",
        /// A [`DedupCode`] (empty without deduplication).
        DedupMode = 7 => "JOB_DEDUP_MODE",
        /// How long the deduplication id counts, ms.
        DedupTtlMs = 8 => "JOB_DEDUP_TTL_MS",
        /// Attempts already made elsewhere (`0` but for jobs imported from BullMQ).
        AttemptsMade = 9 => "JOB_ATTEMPTS_MADE",
    }
}

lua_codes! {
    /// How a second add with the same deduplication id is treated.
    DedupCode {
        /// Ignored while the first job has not finished.
        Simple => "DEDUP_SIMPLE" = "s",
        /// Ignored for the whole ttl.
        Throttle => "DEDUP_THROTTLE" = "t",
        /// Replaces the first job's data and delay while it is delayed.
        Debounce => "DEDUP_DEBOUNCE" = "d",
    }
}

impl DedupCode {
    /// The code of `mode`.
    pub(crate) fn of(mode: crate::DedupMode) -> DedupCode {
        match mode {
            crate::DedupMode::Simple => DedupCode::Simple,
            crate::DedupMode::Throttle => DedupCode::Throttle,
            crate::DedupMode::Debounce => DedupCode::Debounce,
        }
    }
}

/// One job: its fields in [`JobField`] order, and its group.
#[derive(Debug, Clone)]
pub(crate) struct EncodedJob {
    pub(crate) fields: [Arg; JobField::ALL.len()],
    pub(crate) group: Option<String>,
}

/// The script's arguments for `jobs`, and for a flow's, its JSON (see `lua/add.lua` and `flow.rs`).
pub(crate) fn args(jobs: &[EncodedJob], flow: Option<String>) -> Vec<Arg> {
    let mut args = Vec::with_capacity(3 + jobs.len() * JobField::ALL.len());
    args.push(Arg::from(jobs.len()));
    args.extend(jobs.iter().flat_map(|job| job.fields.iter().cloned()));
    args.push(Arg::from(listed_apart(jobs.iter().map(|job| job.group.as_deref()))));
    args.push(Arg::from(flow.unwrap_or_default()));
    args
}

/// Reads the reply: per job, its id and whether it was added.
pub(crate) fn decode(reply: Value) -> Result<Vec<Added>> {
    reply
        .into_array()?
        .chunks(2)
        .map(|pair| match pair {
            [id, created] => Ok(Added { id: JobId(id.clone().into_string()?), created: created.as_int()? == 1 }),
            _ => Err(Error::Reply("the add script returned an odd number of values".to_owned())),
        })
        .collect()
}
