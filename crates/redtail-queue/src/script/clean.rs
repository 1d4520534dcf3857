//! `lua/clean.lua`: removes finished jobs older than a time.

use redtail_core::Script;

use super::{QueueScript, lua_codes, lua_numbers, source};
use crate::Finished;

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts: Vec<_> = CleanArg::consts().collect();
    consts.extend(SetCode::consts());
    Script::new("queue_clean", source(&consts, include_str!("../../lua/clean.lua")))
});

lua_numbers! {
    /// The clean script's arguments.
    CleanArg {
        /// Which set: a [`SetCode`].
        Set = 3 => "ARG_SET",
        /// Only jobs finished more than this many ms ago.
        OlderThanMs = 4 => "ARG_OLDER_THAN_MS",
        /// At most this many jobs.
        Limit = 5 => "ARG_LIMIT",
    }
}

lua_codes! {
    /// Which finished jobs.
    SetCode {
        /// Completed jobs.
        Completed => "SET_COMPLETED" = "c",
        /// Dead-lettered jobs.
        Dead => "SET_DEAD" = "x",
    }
}

impl From<Finished> for SetCode {
    fn from(which: Finished) -> Self {
        match which {
            Finished::Completed => SetCode::Completed,
            Finished::Dead => SetCode::Dead,
        }
    }
}
