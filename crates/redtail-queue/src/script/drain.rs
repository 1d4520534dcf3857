//! `lua/drain.lua`: removes jobs that have not started, 1,000 per call.

use redtail_core::Script;

use super::{QueueScript, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    Script::new("queue_drain", source(&[DrainArg::Delayed.lua()], include_str!("../../lua/drain.lua")))
});

lua_numbers! {
    /// The drain script's argument.
    DrainArg {
        /// `1` to remove delayed jobs too.
        Delayed = 3 => "ARG_DELAYED",
    }
}
