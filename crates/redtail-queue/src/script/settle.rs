//! `lua/settle.lua`: applies a flow child's outcome to its parent, once.

use redtail_core::Script;

use super::{QueueScript, lua_codes, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let consts: Vec<_> = SettleArg::consts().chain(PolicyCode::consts()).chain(Settled::consts()).collect();
    Script::new("queue_settle", source(&consts, include_str!("../../lua/settle.lua")))
});

lua_numbers! {
    /// The settle script's arguments.
    SettleArg {
        /// The parent's id, in the queue the script runs on.
        Parent = 3 => "ARG_PARENT",
        /// The child, `<queue>:<id>`.
        Child = 4 => "ARG_CHILD",
        /// An [`OutcomeCode`](super::OutcomeCode).
        Outcome = 5 => "ARG_OUTCOME",
        /// The child's result (JSON) or error.
        Payload = 6 => "ARG_PAYLOAD",
    }
}

lua_codes! {
    /// What a child's failure does to its parent, as the parent's entry for it keeps it.
    PolicyCode {
        /// The parent fails.
        Fail => "POLICY_FAIL" = "f",
        /// The parent runs anyway, and sees the failure.
        Ignore => "POLICY_IGNORE" = "i",
        /// The dependency is removed: the parent runs without it.
        Remove => "POLICY_REMOVE" = "r",
    }
}

impl PolicyCode {
    /// The code of `policy`.
    pub(crate) fn of(policy: crate::ChildFailure) -> PolicyCode {
        match policy {
            crate::ChildFailure::FailParent => PolicyCode::Fail,
            crate::ChildFailure::Ignore => PolicyCode::Ignore,
            crate::ChildFailure::Remove => PolicyCode::Remove,
        }
    }
}

lua_numbers! {
    /// What the settle script answers.
    Settled {
        /// Nothing applied: no such parent or dependency, or applied before.
        Ignored = 0 => "SETTLED_IGNORED",
        /// Applied; the parent still waits (or no longer waited).
        Applied = 1 => "SETTLED_APPLIED",
        /// Applied, and it was the last: the parent waits to run.
        Released = 2 => "SETTLED_RELEASED",
        /// Applied, and the parent failed.
        Failed = 3 => "SETTLED_FAILED",
    }
}
