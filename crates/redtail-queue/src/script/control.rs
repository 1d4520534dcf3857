//! `lua/control.lua`: pauses and resumes delivery, or one group's.

use redtail_core::Script;

use super::{QueueScript, lua_codes, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts: Vec<_> = ControlArg::consts().collect();
    consts.extend(ControlOp::consts());
    Script::new("queue_control", source(&consts, include_str!("../../lua/control.lua")))
});

lua_numbers! {
    /// The control script's arguments.
    ControlArg {
        /// A [`ControlOp`].
        Op = 3 => "ARG_OP",
        /// The group, for [`ControlOp::PauseGroup`] and [`ControlOp::ResumeGroup`] (else empty).
        Group = 4 => "ARG_GROUP",
    }
}

lua_codes! {
    /// What to do.
    ControlOp {
        /// Stop delivery.
        Pause => "OP_PAUSE" = "pause",
        /// Restart it.
        Resume => "OP_RESUME" = "resume",
        /// Stop starting one group's jobs.
        PauseGroup => "OP_PAUSE_GROUP" = "pause-group",
        /// Start them again.
        ResumeGroup => "OP_RESUME_GROUP" = "resume-group",
    }
}
