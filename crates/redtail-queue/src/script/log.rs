//! `lua/log.lua`: appends a line to a job's log.

use redtail_core::Script;

use super::{QueueScript, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let consts: Vec<_> = LogArg::consts().collect();
    Script::new("queue_log", source(&consts, include_str!("../../lua/log.lua")))
});

lua_numbers! {
    /// The log script's arguments.
    LogArg {
        /// The job's id.
        Id = 3 => "ARG_ID",
        /// The line.
        Line = 4 => "ARG_LINE",
        /// How many lines are kept.
        Keep = 5 => "ARG_KEEP",
    }
}
