//! `lua/progress.lua`: records a running job's progress.

use redtail_core::Script;

use super::{QueueScript, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let consts: Vec<_> = ProgressArg::consts().collect();
    Script::new("queue_progress", source(&consts, include_str!("../../lua/progress.lua")))
});

lua_numbers! {
    /// The progress script's arguments.
    ProgressArg {
        /// The job's id.
        Id = 3 => "ARG_ID",
        /// The lane's lease token.
        Token = 4 => "ARG_TOKEN",
        /// The progress (JSON).
        Progress = 5 => "ARG_PROGRESS",
    }
}
