//! `lua/control.lua`: pauses and resumes delivery.

use redtail_core::Script;

use super::{QueueScript, lua_codes, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts = vec![ControlArg::Op.lua()];
    consts.extend(ControlOp::consts());
    Script::new("queue_control", source(&consts, include_str!("../../lua/control.lua")))
});

lua_numbers! {
    /// The control script's argument.
    ControlArg {
        /// A [`ControlOp`].
        Op = 3 => "ARG_OP",
    }
}

lua_codes! {
    /// What to do.
    ControlOp {
        /// Stop delivery.
        Pause => "OP_PAUSE" = "pause",
        /// Restart it.
        Resume => "OP_RESUME" = "resume",
    }
}
