//! The contract between the queue's Rust and its Lua scripts, one module per script: the keys by
//! name, argument positions, operation codes, and a typed encoder and decoder for each script.
//!
//! Positions and codes exist once, here: every script's source is a Lua prelude generated from
//! these declarations (`local K_WAIT, ARG_TOKEN, KIND_FAILED = KEYS[2], 3, 'f'`), then
//! `lua/lib.lua`, then the script's own file, which refers to them by name only. The tests at the
//! end check that no Lua file uses a literal position and that every name it uses is declared.

use std::sync::LazyLock;

use redtail_core::{Arg, Script, Value};

use crate::{Result, queue::Inner};

pub(crate) mod add;
pub(crate) mod clean;
pub(crate) mod control;
pub(crate) mod counts;
pub(crate) mod drain;
pub(crate) mod job;
pub(crate) mod log;
pub(crate) mod progress;
pub(crate) mod renew;
pub(crate) mod schedule;
pub(crate) mod settle;
pub(crate) mod step;
pub(crate) mod update;

pub(crate) use redtail_core::{lua_codes, lua_numbers};

lua_numbers! {
    /// The keys every queue script is given, in `KEYS` order (from 1), with the part that follows
    /// the queue's tag in each key's name (see `docs/keys.md`).
    QueueKey {
        /// String counter: the last job id (and the priority sequence).
        Id = 1 => "K_ID",
        /// List of waiting job ids.
        Wait = 2 => "K_WAIT",
        /// Sorted set of prioritized job ids.
        Prio = 3 => "K_PRIO",
        /// Sorted set of delayed job ids by due time.
        Delay = 4 => "K_DELAY",
        /// Sorted set: a worker lane's token -> lease deadline.
        Leases = 5 => "K_LEASES",
        /// List of completed job ids, oldest first.
        Done = 6 => "K_DONE",
        /// Sorted set of dead job ids by finishing time.
        Dead = 7 => "K_DEAD",
        /// The paused flag.
        Paused = 8 => "K_PAUSED",
        /// The wake-up marker list.
        Mark = 9 => "K_MARK",
        /// The events stream.
        Events = 10 => "K_EV",
        /// The rate-limit window's counter.
        Rate = 11 => "K_RATE",
        /// Hash of running jobs: id -> running entry (see `record::RunningEntry`).
        Run = 12 => "K_RUN",
        /// Hash of completed records: id -> record (see `record::Record`).
        Records = 13 => "K_RECS",
        /// Hash of job schedulers: id -> definition (JSON, see `scheduler::Definition`).
        Schedulers = 14 => "K_SCHED",
        /// Hash of the schedulers' progress: id -> `<next tick ms, 0 once ended> <runs> <last job id, or ->`.
        Ticks = 15 => "K_TICKS",
        /// The slot's guard ([`SLOT_GUARD`](redtail_core::contract::SLOT_GUARD)), a key that never
        /// exists, declared so that a call on a slot that is migrating between cluster nodes is
        /// refused whole (`TRYAGAIN`) before it runs: the job, log and minute keys the scripts
        /// build from the prefix are not declared, and a script that reached one already moved
        /// would fail after its first writes (see ARCHITECTURE.md).
        Guard = 16 => "K_GUARD",
        /// Sorted set, the ring of groups that may start a job: group -> its turn.
        GroupRing = 17 => "K_GRING",
        /// Hash: group -> its jobs waiting and running (and holding its place through a
        /// backoff), as one number (see [`GroupCounts`]).
        GroupCounts = 18 => "K_GCOUNT",
        /// Set of paused groups.
        GroupPaused = 19 => "K_GPAUSED",
        /// Sorted set: a group at its rate limit -> when its window ends.
        GroupTimed = 20 => "K_GTIMED",
        /// Sorted set of parents waiting for their children (flows): id -> when added.
        WaitingChildren = 21 => "K_WC",
        /// List of flow notices for parents, each a child's outcome to relay to its parent's
        /// queue (see `flow.rs`).
        Outbox = 22 => "K_OUTBOX",
    }
}

impl QueueKey {
    /// The key's last part, after `<prefix>:{<queue>}:`.
    pub(crate) const fn suffix(self) -> &'static str {
        match self {
            QueueKey::Id => "id",
            QueueKey::Wait => "w",
            QueueKey::Prio => "p",
            QueueKey::Delay => "d",
            QueueKey::Leases => "leases",
            QueueKey::Done => "c",
            QueueKey::Dead => "x",
            QueueKey::Paused => "paused",
            QueueKey::Mark => "mk",
            QueueKey::Events => "ev",
            QueueKey::Rate => "rl",
            QueueKey::Run => "run",
            QueueKey::Records => "cr",
            QueueKey::Schedulers => "sc",
            QueueKey::Ticks => "sn",
            QueueKey::Guard => redtail_core::contract::SLOT_GUARD,
            QueueKey::GroupRing => "gr",
            QueueKey::GroupCounts => "gn",
            QueueKey::GroupPaused => "gp",
            QueueKey::GroupTimed => "gt",
            QueueKey::WaitingChildren => "wc",
            QueueKey::Outbox => "ob",
        }
    }
}

lua_numbers! {
    /// The arguments every queue script takes first, before its own.
    Common {
        /// The queue's key prefix `<prefix>:{<queue>}:`, from which job, log and minute keys are built.
        Prefix = 1 => "ARG_PREFIX",
        /// How many events the stream keeps (0: no events).
        EventsCap = 2 => "ARG_EVENTS_CAP",
    }
}

/// The position of a script's first own argument.
pub(crate) const FIRST_OWN_ARG: usize = 3;

/// A value for some of the items (jobs to add, acknowledgements): the groups of grouped ones,
/// the parents of a flow's children; given to a script in one argument apart from the items' own
/// fields, so that the other items carry nothing: `<item number, from 0> <value>` pairs
/// separated by spaces (values hold no space), empty when no item has one. `listed_apart` in
/// `lua/lib.lua` reads it.
pub(crate) fn listed_apart<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut out = String::new();
    for (i, value) in values.into_iter().enumerate() {
        if let Some(value) = value {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&i.to_string());
            out.push(' ');
            out.push_str(value);
        }
    }
    out
}

lua_numbers! {
    /// How one number in `:gn` holds a group's two counts: `waiting * SPAN + running`, so that
    /// one `HINCRBY` both changes them and answers with both. A group's running jobs stay under
    /// `SPAN` ([`Groups::concurrency`](crate::Groups::concurrency) is at most
    /// [`MAX_GROUP_CONCURRENCY`](crate::MAX_GROUP_CONCURRENCY)), and a Lua number holds the sum
    /// exactly while fewer than 2^29 jobs wait in one group.
    GroupCounts {
        /// The factor of the waiting count.
        Span = 16777216 => "GROUP_SPAN",
    }
}

impl GroupCounts {
    /// A group's jobs waiting and running, from its value in `:gn`.
    pub(crate) fn split(value: i64) -> (u64, u64) {
        let span = GroupCounts::Span.at() as i64;
        (u64::try_from(value.div_euclid(span)).unwrap_or(0), u64::try_from(value.rem_euclid(span)).unwrap_or(0))
    }
}

lua_codes! {
    /// A job's state, as its hash's `s` field holds it.
    StateCode {
        /// Waiting (or running: a running job's hash still says waiting).
        Waiting => "STATE_WAITING" = "w",
        /// Delayed, or waiting out a retry's backoff.
        Delayed => "STATE_DELAYED" = "d",
        /// Completed.
        Completed => "STATE_COMPLETED" = "c",
        /// Dead-lettered.
        Dead => "STATE_DEAD" = "x",
        /// A flow's parent waiting for its children.
        WaitingChildren => "STATE_WAITING_CHILDREN" = "h",
    }
}

lua_codes! {
    /// What became of a flow's child, as a notice tells its parent (see `flows()` in `lua/lib.lua`).
    OutcomeCode {
        /// Completed; the notice carries its result.
        Completed => "OUTCOME_COMPLETED" = "c",
        /// Failed for good; the notice carries its error.
        Failed => "OUTCOME_FAILED" = "f",
        /// Deleted before it finished.
        Removed => "OUTCOME_REMOVED" = "r",
    }
}

/// One queue script: its generated prelude, `lua/lib.lua` and its own file.
pub(crate) struct QueueScript(LazyLock<Script>);

/// Builds a script's source: the prelude of `consts` (which always include the keys, the
/// common arguments and the state codes), `lua/lib.lua`, then `body`.
pub(crate) fn source(consts: &[(&'static str, String)], body: &str) -> String {
    let shared = QueueKey::ALL
        .iter()
        .map(|k| k.lua())
        .map(|(name, at)| (name, format!("KEYS[{at}]")))
        .chain(Common::consts())
        .chain(StateCode::consts())
        .chain(OutcomeCode::consts())
        .chain(GroupCounts::consts());
    let prelude =
        redtail_core::contract::prelude("crates/redtail-queue/src/script/", shared.chain(consts.iter().cloned()));
    format!("{prelude}{}{body}", include_str!("../../lua/lib.lua"))
}

impl QueueScript {
    /// A script named `queue_<name>` from `lua/<name>.lua` (`body`) with its own constants.
    pub(crate) const fn new(build: fn() -> Script) -> Self {
        QueueScript(LazyLock::new(build))
    }

    /// The script.
    pub(crate) fn script(&self) -> &Script {
        &self.0
    }

    /// Runs the script on `inner`'s queue with the common arguments, then `args`.
    pub(crate) async fn run(&self, inner: &Inner, args: impl IntoIterator<Item = Arg>) -> Result<Value> {
        inner.run(self.script(), args).await
    }
}

#[cfg(test)]
mod tests {

    /// Every queue script, with the source it runs.
    fn scripts() -> Vec<(&'static str, &'static str, String)> {
        [
            ("add", include_str!("../../lua/add.lua"), super::add::SCRIPT.script()),
            ("clean", include_str!("../../lua/clean.lua"), super::clean::SCRIPT.script()),
            ("control", include_str!("../../lua/control.lua"), super::control::SCRIPT.script()),
            ("counts", include_str!("../../lua/counts.lua"), super::counts::SCRIPT.script()),
            ("drain", include_str!("../../lua/drain.lua"), super::drain::SCRIPT.script()),
            ("job", include_str!("../../lua/job.lua"), super::job::SCRIPT.script()),
            ("log", include_str!("../../lua/log.lua"), super::log::SCRIPT.script()),
            ("progress", include_str!("../../lua/progress.lua"), super::progress::SCRIPT.script()),
            ("renew", include_str!("../../lua/renew.lua"), super::renew::SCRIPT.script()),
            ("schedule", include_str!("../../lua/schedule.lua"), super::schedule::SCRIPT.script()),
            ("settle", include_str!("../../lua/settle.lua"), super::settle::SCRIPT.script()),
            ("step", include_str!("../../lua/step.lua"), super::step::SCRIPT.script()),
            ("update", include_str!("../../lua/update.lua"), super::update::SCRIPT.script()),
        ]
        .into_iter()
        .map(|(name, file, script)| (name, file, script.source().to_owned()))
        .collect()
    }

    /// The names the queue's contracts give their constants.
    const PREFIXES: [&str; 15] = [
        "K_", "ARG_", "ACK_", "KIND_", "FLAG_", "REPLY_", "STATE_", "OP_", "SET_", "JOB_", "TAKEN_", "OUTCOME_",
        "POLICY_", "SETTLED_", "GROUP_",
    ];

    #[test]
    fn every_name_a_script_uses_is_declared_by_its_contract() {
        let lib = include_str!("../../lua/lib.lua");
        for (name, file, source) in scripts() {
            let prelude = &source[..source.find(lib).unwrap_or(0)];
            // lib.lua's own locals count as declared for the script after it.
            let missing = redtail_core::contract::undeclared_names(&format!("{prelude}{lib}"), file, &PREFIXES);
            assert!(
                missing.is_empty(),
                "{name}.lua uses {missing:?}, which its contract (src/script/{name}.rs) does not declare"
            );
            let missing = redtail_core::contract::undeclared_names(prelude, lib, &PREFIXES);
            assert!(missing.is_empty(), "lib.lua uses {missing:?}, which the {name} script's prelude does not declare");
        }
    }

    #[test]
    fn no_lua_file_uses_a_literal_position() {
        let lib = ("lib", include_str!("../../lua/lib.lua"), String::new());
        for (name, file, _) in scripts().into_iter().chain([lib]) {
            let literal = redtail_core::contract::literal_positions(file);
            assert!(
                literal.is_empty(),
                "{name}.lua indexes KEYS or ARGV by a literal: {literal:?}; name the position in its contract"
            );
        }
    }

    #[test]
    fn no_script_touches_the_guard_key() {
        let lib = ("lib", include_str!("../../lua/lib.lua"), String::new());
        for (name, file, _) in scripts().into_iter().chain([lib]) {
            let code = file.lines().map(|line| line.split("--").next().unwrap_or("")).collect::<String>();
            assert!(!code.contains("K_GUARD"), "{name}.lua uses K_GUARD, a key that must never exist");
        }
    }

    #[test]
    fn positions_are_distinct_and_start_where_the_common_arguments_end() {
        use super::*;
        let keys: Vec<usize> = QueueKey::ALL.iter().map(|k| k.at()).collect();
        assert_eq!(keys, (1..=QueueKey::ALL.len()).collect::<Vec<_>>(), "KEYS positions run 1..n");
        let common: Vec<usize> = Common::ALL.iter().map(|c| c.at()).collect();
        assert_eq!(common, (1..FIRST_OWN_ARG).collect::<Vec<_>>());
    }
}
