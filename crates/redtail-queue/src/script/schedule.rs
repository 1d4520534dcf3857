//! `lua/schedule.lua`: upserts or removes a job scheduler (see `crate::scheduler`).

use redtail_core::Script;

use super::{QueueScript, lua_codes, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts: Vec<_> = ScheduleArg::consts().collect();
    consts.extend(ScheduleOp::consts());
    Script::new("queue_schedule", source(&consts, include_str!("../../lua/schedule.lua")))
});

lua_numbers! {
    /// The schedule script's arguments.
    ScheduleArg {
        /// A [`ScheduleOp`].
        Op = 3 => "ARG_OP",
        /// The scheduler's id.
        Id = 4 => "ARG_ID",
        /// Its definition (JSON); empty for [`ScheduleOp::Remove`].
        Definition = 5 => "ARG_DEFINITION",
        /// Its first tick's time in ms, `0` when it has none.
        First = 6 => "ARG_FIRST",
        /// The first job's data.
        Data = 7 => "ARG_DATA",
        /// Its attempts.
        Attempts = 8 => "ARG_ATTEMPTS",
        /// Its priority.
        Priority = 9 => "ARG_PRIORITY",
        /// Its options (JSON, with its tick).
        Options = 10 => "ARG_OPTIONS",
    }
}

lua_codes! {
    /// What to do.
    ScheduleOp {
        /// Create or replace a scheduler (the same definition again changes nothing).
        Upsert => "OP_UPSERT" = "upsert",
        /// Remove a scheduler and its pending job.
        Remove => "OP_REMOVE" = "remove",
    }
}
