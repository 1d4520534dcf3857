//! `lua/renew.lua`: renews leases.

use redtail_core::Script;

use super::{QueueScript, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let consts: Vec<_> = RenewArg::consts().collect();
    Script::new("queue_renew", source(&consts, include_str!("../../lua/renew.lua")))
});

lua_numbers! {
    /// The renew script's arguments.
    RenewArg {
        /// The lease's length in ms.
        LeaseMs = 3 => "ARG_LEASE_MS",
        /// The first lease token; the others follow.
        Tokens = 4 => "ARG_TOKENS",
    }
}
