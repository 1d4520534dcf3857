//! `lua/update.lua`: replaces a running job's data.

use redtail_core::Script;

use super::{QueueScript, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let consts: Vec<_> = UpdateArg::consts().collect();
    Script::new("queue_update", source(&consts, include_str!("../../lua/update.lua")))
});

lua_numbers! {
    /// The update script's arguments.
    UpdateArg {
        /// The job's id.
        Id = 3 => "ARG_ID",
        /// The lane's lease token.
        Token = 4 => "ARG_TOKEN",
        /// The new data (JSON).
        Data = 5 => "ARG_DATA",
    }
}
