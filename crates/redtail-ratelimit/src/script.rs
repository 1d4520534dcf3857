//! The rate limiter's scripts and their contracts (see `redtail_core::contract`): keys,
//! arguments, reply positions and algorithm codes by name, handed to each `.lua` file in a
//! generated prelude before `lua/log.lua` (how both scripts write a sliding log).

use std::sync::LazyLock;

use redtail_core::{Script, contract, lua_codes, lua_numbers};

/// A script's source: the prelude of `consts`, `lua/log.lua`, then `body`.
fn source(consts: impl IntoIterator<Item = (&'static str, String)>, body: &str) -> String {
    let prelude = contract::prelude("crates/redtail-ratelimit/src/script.rs", consts);
    format!("{prelude}{}{body}", include_str!("../lua/log.lua"))
}

lua_codes! {
    /// The algorithms, as the scripts receive them.
    AlgorithmCode {
        /// GCRA.
        Gcra => "ALGO_GCRA" = "g",
        /// Sliding log.
        SlidingLog => "ALGO_SLIDING_LOG" = "s",
        /// Fixed window.
        FixedWindow => "ALGO_FIXED_WINDOW" = "f",
        /// Sliding-window counter.
        SlidingWindow => "ALGO_SLIDING_WINDOW" = "w",
    }
}

lua_numbers! {
    /// The check script's keys (one caller's, in a batch): the subject's block, then from
    /// `Policies` each policy's in order: its state (a sliding-window counter: the current
    /// window's counter, then the previous one's), then its block key when it has a block duration.
    CheckKey {
        /// The subject's block.
        Block = 1 => "K_BLOCK",
        /// Where the policies' keys start.
        Policies = 2 => "K_POLICIES",
    }
}

lua_numbers! {
    /// The check script's arguments (one caller's): these, then `POLICY_FIELDS` per policy from
    /// `ClientNow + (i - 1) * POLICY_FIELDS` (see [`PolicyField`]).
    CheckArg {
        /// The cost.
        Cost = 1 => "ARG_COST",
        /// `1` to charge, `0` only to look (shadow checks, peeks).
        Charge = 2 => "ARG_CHARGE",
        /// The client's time in ms, or `''` for the server's.
        ClientNow = 3 => "ARG_CLIENT_NOW",
    }
}

lua_numbers! {
    /// One policy's arguments to the check script, by offset within its group.
    PolicyField {
        /// Its algorithm's code ([`AlgorithmCode`]).
        Algorithm = 1 => "POLICY_ALGORITHM",
        /// Its limit.
        Limit = 2 => "POLICY_LIMIT",
        /// Its period in ms.
        PeriodMs = 3 => "POLICY_PERIOD_MS",
        /// Its burst (GCRA).
        Burst = 4 => "POLICY_BURST",
        /// Its block duration in ms (0: none).
        BlockMs = 5 => "POLICY_BLOCK_MS",
        /// For a fixed window or sliding-window counter: how far into the current window the
        /// caller's clock is, in ms (their windows are named by that clock).
        ElapsedMs = 6 => "POLICY_ELAPSED_MS",
    }
}

lua_numbers! {
    /// The check script's reply: the subject's block, then `DECISION_FIELDS` per policy from
    /// `Blocked + (i - 1) * DECISION_FIELDS` (see [`DecisionField`]).
    CheckReply {
        /// What is left of the subject's block, in ms (0: none).
        Blocked = 1 => "REPLY_BLOCKED",
    }
}

lua_numbers! {
    /// One policy's verdict in the check script's reply, by offset within its group.
    DecisionField {
        /// 1 when it admits the request.
        Allowed = 1 => "DECISION_ALLOWED",
        /// Units left.
        Remaining = 2 => "DECISION_REMAINING",
        /// When a retry can succeed, in ms.
        RetryMs = 3 => "DECISION_RETRY_MS",
        /// When the policy is fully replenished, in ms.
        ResetMs = 4 => "DECISION_RESET_MS",
    }
}

/// The constants every rate-limit script gets.
fn consts() -> impl Iterator<Item = (&'static str, String)> {
    AlgorithmCode::consts()
}

/// `lua/check.lua`: checks and charges several policies of one subject, for many callers.
pub(crate) static CHECK: LazyLock<Script> = LazyLock::new(|| {
    let consts = consts()
        .chain(CheckKey::consts())
        .chain(CheckArg::consts())
        .chain(PolicyField::consts())
        .chain([("POLICY_FIELDS", PolicyField::ALL.len().to_string())])
        .chain(CheckReply::consts())
        .chain(DecisionField::consts())
        .chain([("DECISION_FIELDS", DecisionField::ALL.len().to_string())]);
    Script::batched("ratelimit_check", source(consts, include_str!("../lua/check.lua")))
});

lua_numbers! {
    /// The adjust script's keys.
    AdjustKey {
        /// The policy's state (a sliding-window counter: the current window's counter).
        State = 1 => "K_STATE",
    }
}

lua_numbers! {
    /// The adjust script's arguments.
    AdjustArg {
        /// The algorithm's code ([`AlgorithmCode`]).
        Algorithm = 1 => "ARG_ALGORITHM",
        /// The policy's limit.
        Limit = 2 => "ARG_LIMIT",
        /// The policy's period in ms.
        PeriodMs = 3 => "ARG_PERIOD_MS",
        /// The amount, at most the policy's capacity: positive charges, negative refunds.
        Amount = 4 => "ARG_AMOUNT",
        /// The client's time in ms, or `''` for the server's.
        ClientNow = 5 => "ARG_CLIENT_NOW",
    }
}

/// `lua/adjust.lua`: charges (penalize) or gives back (refund) units of one policy.
pub(crate) static ADJUST: LazyLock<Script> = LazyLock::new(|| {
    let consts = consts().chain(AdjustKey::consts()).chain(AdjustArg::consts());
    Script::new("ratelimit_adjust", source(consts, include_str!("../lua/adjust.lua")))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_names_its_positions_and_declares_every_name_it_uses() {
        let log = include_str!("../lua/log.lua");
        assert!(redtail_core::contract::literal_positions(log).is_empty());
        let prefixes = ["K_", "ARG_", "ALGO_", "POLICY_", "REPLY_", "DECISION_"];
        for (name, file, script) in [
            ("check", include_str!("../lua/check.lua"), &CHECK),
            ("adjust", include_str!("../lua/adjust.lua"), &ADJUST),
        ] {
            assert_eq!(redtail_core::contract::check_script(name, file, script.source(), log, &prefixes), Ok(()));
        }
    }

    /// The lean paths of `lua/check.lua` build a one-policy reply with a table constructor, in
    /// this order.
    #[test]
    fn a_one_policy_reply_is_the_block_then_the_decision_in_order() {
        assert_eq!(CheckReply::Blocked.at(), 1);
        let offsets: Vec<usize> = DecisionField::ALL.iter().map(|f| f.at()).collect();
        assert_eq!(offsets, [1, 2, 3, 4]);
    }
}
