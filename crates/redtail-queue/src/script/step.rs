//! `lua/step.lua`: a worker lane's round trip. It acknowledges finished jobs, takes due delayed
//! jobs and expired leases' jobs back, and takes new jobs under the lane's lease.

use std::{sync::Arc, time::Duration};

use redtail_core::{Arg, Bytes, Script, Value};

use super::{FIRST_OWN_ARG, QueueScript, listed_apart, lua_codes, lua_numbers, source};
use crate::{Error, Groups, Result, Retention, queue::millis};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts: Vec<(&'static str, String)> = StepArg::consts().collect();
    consts.extend(AckField::consts());
    consts.push(("ACK_FIELDS", AckField::ALL.len().to_string()));
    consts.extend(AckKind::consts());
    consts.extend(StepReply::consts());
    consts.extend(TakenField::consts());
    consts.push(("TAKEN_FIELDS", TakenField::ALL.len().to_string()));
    Script::new("queue_step", source(&consts, include_str!("../../lua/step.lua")))
});

lua_numbers! {
    /// The step's own arguments.
    StepArg {
        /// The lane's lease token.
        Token = 3 => "ARG_TOKEN",
        /// The lease's length in ms.
        LeaseMs = 4 => "ARG_LEASE_MS",
        /// How many jobs to take.
        Want = 5 => "ARG_WANT",
        /// The queue's rate limit: jobs per window (0: none).
        RateMax = 6 => "ARG_RATE_MAX",
        /// The rate limit's window in ms.
        RateWindowMs = 7 => "ARG_RATE_WINDOW_MS",
        /// How long dead jobs are kept (for jobs whose lease ran out on their last attempt).
        StalledKeepMs = 8 => "ARG_STALLED_KEEP_MS",
        /// How many dead jobs are kept (the same).
        StalledKeepCount = 9 => "ARG_STALLED_KEEP_COUNT",
        /// `1` when the token is new and its lease is to be created.
        NewLease = 10 => "ARG_NEW_LEASE",
        /// Jobs of one group that may run at once.
        GroupConcurrency = 11 => "ARG_GROUP_CONCURRENCY",
        /// Jobs of one group that may start per window (0: no limit).
        GroupRateMax = 12 => "ARG_GROUP_RATE_MAX",
        /// That window, in ms.
        GroupRateWindowMs = 13 => "ARG_GROUP_RATE_WINDOW_MS",
        /// `1` when a grouped job waiting out a backoff holds its group's place.
        GroupHold = 14 => "ARG_GROUP_HOLD",
        /// The groups of the grouped jobs acknowledged: `<ack number, from 0> <group>` pairs
        /// separated by spaces, or empty (ungrouped acknowledgements carry nothing).
        AckGroups = 15 => "ARG_ACK_GROUPS",
        /// The parents (`<queue>:<id>`) of the acknowledged jobs that are a flow's children,
        /// listed the same way.
        AckParents = 16 => "ARG_ACK_PARENTS",
        /// The number of acknowledgements; their fields follow (see [`AckField`]), then the
        /// number of jobs the lane still runs and their ids, or -1 (no reconciling).
        Acks = 17 => "ARG_ACKS",
    }
}

lua_numbers! {
    /// One acknowledgement's fields, as offsets from its first (`ARGV[ARG_ACKS + 1 + i * ACK_FIELDS + offset]`).
    AckField {
        /// What happened: an [`AckKind`] code.
        Kind = 0 => "ACK_KIND",
        /// The job's id.
        Id = 1 => "ACK_ID",
        /// The attempt's number.
        Attempt = 2 => "ACK_ATTEMPT",
        /// When the attempt started, in the server's ms.
        Started = 3 => "ACK_STARTED",
        /// The result, the error, or for [`AckKind::Kept`] the worker's part of the record.
        Payload = 4 => "ACK_PAYLOAD",
        /// A retry's delay in ms.
        DelayMs = 5 => "ACK_DELAY_MS",
        /// How long the finished job is kept, in ms.
        KeepMs = 6 => "ACK_KEEP_MS",
        /// How many finished jobs are kept.
        KeepCount = 7 => "ACK_KEEP_COUNT",
        /// `1` when the handler wrote to the job's log.
        Logged = 8 => "ACK_LOGGED",
        /// `1` when sent before in a step that failed: it may have been applied.
        Resend = 9 => "ACK_RESEND",
        /// For a scheduler's job, its next tick (see [`crate::scheduler::Tick::advance`]), else empty.
        Tick = 10 => "ACK_TICK",
    }
}

lua_codes! {
    /// What became of an attempt.
    AckKind {
        /// Completed; the job keeps its hash.
        Completed => "KIND_COMPLETED" = "c",
        /// Completed on its first attempt without log or progress: its hash leaves for a record.
        Kept => "KIND_KEPT" = "k",
        /// Failed, to run again after its delay.
        Failed => "KIND_FAILED" = "f",
        /// Failed for the last time: dead-lettered.
        Dead => "KIND_DEAD" = "x",
        /// Handed back unstarted (shutdown): the attempt does not count.
        Released => "KIND_RELEASED" = "r",
        /// Moved to the delayed set by its handler ([`Job::move_to_delayed`](crate::Job::move_to_delayed)):
        /// the attempt does not count.
        Delayed => "KIND_DELAYED" = "d",
    }
}

lua_numbers! {
    /// Positions in the step's reply.
    StepReply {
        /// Per acknowledgement: 1 applied (or applied before), 0 refused (the lease was lost).
        Statuses = 1 => "REPLY_STATUSES",
        /// The jobs taken, [`TakenField`]s each.
        Jobs = 2 => "REPLY_JOBS",
        /// Ms until the next delayed job is due, or -1.
        NextDue = 3 => "REPLY_NEXT_DUE",
        /// 1 when the queue is paused.
        Paused = 4 => "REPLY_PAUSED",
        /// Ms until the rate window reopens, or 0.
        Limited = 5 => "REPLY_LIMITED",
        /// The server's time in ms.
        Now = 6 => "REPLY_NOW",
        /// 1 when the lease is held (0: lost; the lane takes a new token).
        Held = 7 => "REPLY_HELD",
        /// The groups of the grouped jobs taken: `<job number, from 1>, <group>` pairs (ungrouped
        /// jobs carry nothing).
        Groups = 8 => "REPLY_GROUPS",
    }
}

lua_numbers! {
    /// A taken job's fields in the reply, from 1.
    TakenField {
        /// The job's id.
        Id = 1 => "TAKEN_ID",
        /// Its data.
        Data = 2 => "TAKEN_DATA",
        /// This attempt's number.
        Attempt = 3 => "TAKEN_ATTEMPT",
        /// Its `m` field (see `record::Meta`).
        Meta = 4 => "TAKEN_META",
    }
}

/// An acknowledgement, as the step takes it.
#[derive(Debug)]
pub(crate) struct Ack {
    pub(crate) kind: AckKind,
    pub(crate) id: String,
    pub(crate) attempt: u32,
    /// When the attempt started, in the server's ms.
    pub(crate) started: u64,
    /// The result (JSON), the error, or for [`AckKind::Kept`] the worker's part of the record.
    pub(crate) payload: Bytes,
    pub(crate) delay: Duration,
    pub(crate) keep: Retention,
    /// The handler wrote to the job's log.
    pub(crate) logged: bool,
    /// Sent before, in a step that failed: it may have been applied.
    pub(crate) resend: bool,
    /// For a scheduler's job: its next tick, for the step to make once (empty otherwise).
    pub(crate) tick: String,
    /// The job's group (empty: none).
    pub(crate) group: Arc<str>,
    /// A flow's child: its parent, `<queue>:<id>`.
    pub(crate) parent: Option<Arc<str>>,
}

impl Ack {
    fn encode(&self, args: &mut Vec<Arg>) {
        let first = args.len();
        let flag = |on: bool| Arg::from(if on { "1" } else { "0" });
        let fields = [
            (AckField::Kind, Arg::from(self.kind.code())),
            (AckField::Id, Arg::from(self.id.as_str())),
            (AckField::Attempt, Arg::from(self.attempt)),
            (AckField::Started, Arg::from(self.started)),
            (AckField::Payload, Arg::from(self.payload.clone())),
            (AckField::DelayMs, Arg::from(millis(self.delay))),
            (AckField::KeepMs, Arg::from(millis(self.keep.age))),
            (AckField::KeepCount, Arg::from(self.keep.count)),
            (AckField::Logged, flag(self.logged)),
            (AckField::Resend, flag(self.resend)),
            (AckField::Tick, Arg::from(self.tick.as_str())),
        ];
        for (field, value) in fields {
            debug_assert_eq!(args.len() - first, field.at(), "{field:?} out of place");
            args.push(value);
        }
    }
}

/// One step's arguments.
#[derive(Debug)]
pub(crate) struct StepCall<'a> {
    pub(crate) token: &'a str,
    pub(crate) lease: Duration,
    pub(crate) want: usize,
    /// The queue's rate limit: jobs per window, and the window.
    pub(crate) rate: Option<(u32, Duration)>,
    /// The queue's limits on each group.
    pub(crate) groups: &'a Groups,
    pub(crate) stalled: Retention,
    pub(crate) new_lease: bool,
    pub(crate) acks: &'a [Ack],
    /// After a failed step: every job the lane still runs, so the script hands back the others
    /// recorded under its token.
    pub(crate) reconcile: Option<Vec<&'a str>>,
}

impl StepCall<'_> {
    /// The script's own arguments, in their positions.
    pub(crate) fn args(&self) -> Vec<Arg> {
        let (rate_max, rate_window) = self.rate.map_or((0, 0), |(max, window)| (max, millis(window)));
        let (group_max, group_window) = self.groups.rate_limit.map_or((0, 0), |r| (r.max, millis(r.period)));
        let mut args = Vec::with_capacity(StepArg::ALL.len() + self.acks.len() * AckField::ALL.len() + 1);
        let fixed = [
            (StepArg::Token, Arg::from(self.token)),
            (StepArg::LeaseMs, Arg::from(millis(self.lease))),
            (StepArg::Want, Arg::from(self.want)),
            (StepArg::RateMax, Arg::from(rate_max)),
            (StepArg::RateWindowMs, Arg::from(rate_window)),
            (StepArg::StalledKeepMs, Arg::from(millis(self.stalled.age))),
            (StepArg::StalledKeepCount, Arg::from(self.stalled.count)),
            (StepArg::NewLease, Arg::from(if self.new_lease { "1" } else { "0" })),
            (StepArg::GroupConcurrency, Arg::from(self.groups.concurrency)),
            (StepArg::GroupRateMax, Arg::from(group_max)),
            (StepArg::GroupRateWindowMs, Arg::from(group_window)),
            (StepArg::GroupHold, Arg::from(if self.groups.hold_on_retry { "1" } else { "0" })),
            (
                StepArg::AckGroups,
                Arg::from(listed_apart(self.acks.iter().map(|ack| Some(&*ack.group).filter(|g| !g.is_empty())))),
            ),
            (StepArg::AckParents, Arg::from(listed_apart(self.acks.iter().map(|ack| ack.parent.as_deref())))),
            (StepArg::Acks, Arg::from(self.acks.len())),
        ];
        for (arg, value) in fixed {
            debug_assert_eq!(args.len() + FIRST_OWN_ARG, arg.at(), "{arg:?} out of place");
            args.push(value);
        }
        for ack in self.acks {
            ack.encode(&mut args);
        }
        match &self.reconcile {
            Some(running) => {
                args.push(Arg::from(running.len()));
                args.extend(running.iter().map(|id| Arg::from(*id)));
            }
            None => args.push(Arg::from("-1")),
        }
        args
    }
}

/// A job the step took.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) id: String,
    pub(crate) data: Bytes,
    pub(crate) attempt: u32,
    /// Its `m` field (see `record::Meta`).
    pub(crate) meta: String,
    /// Its group (empty: none).
    pub(crate) group: Arc<str>,
}

/// What a step answered.
#[derive(Debug)]
pub(crate) struct Stepped {
    /// Per acknowledgement, in order: applied (or applied before), or refused.
    pub(crate) applied: Vec<bool>,
    pub(crate) taken: Vec<Taken>,
    /// Until the next delayed job is due.
    pub(crate) next_due: Option<Duration>,
    pub(crate) paused: bool,
    /// Until the rate window reopens, when it is closed.
    pub(crate) limited: Option<Duration>,
    /// The server's time in ms.
    pub(crate) now_ms: u64,
    /// Whether the lane's lease is held.
    pub(crate) held: bool,
}

impl Stepped {
    /// Reads the step's reply.
    pub(crate) fn decode(reply: Value) -> Result<Stepped> {
        let reply = reply.into_array()?;
        if reply.len() != StepReply::ALL.len() {
            return Err(Error::Reply(format!(
                "the step script returned {} values, not {}",
                reply.len(),
                StepReply::ALL.len()
            )));
        }
        let mut reply = reply.into_iter();
        // In order: the length is checked, so every position is there.
        let mut next = |at: StepReply| {
            debug_assert!(StepReply::ALL.get(at.at() - 1) == Some(&at));
            reply.next().ok_or_else(|| Error::Reply(format!("the step's reply has no {at:?}")))
        };
        let applied = next(StepReply::Statuses)?
            .into_array()?
            .into_iter()
            .map(|status| Ok(status.as_int()? == 1))
            .collect::<Result<Vec<bool>>>()?;
        let jobs = next(StepReply::Jobs)?.into_array()?;
        if jobs.len() % TakenField::ALL.len() != 0 {
            return Err(Error::Reply(format!("the step returned {} job fields", jobs.len())));
        }
        let mut taken = Vec::with_capacity(jobs.len() / TakenField::ALL.len());
        let mut fields = jobs.into_iter();
        let ungrouped: Arc<str> = Arc::from("");
        while let (Some(id), Some(data), Some(attempt), Some(meta)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        {
            let attempt = u32::try_from(attempt.as_int()?).map_err(|_| Error::Reply("a job's attempt".to_owned()))?;
            let (id, data, meta) = (id.into_string()?, data.into_bytes()?, meta.into_string()?);
            taken.push(Taken { id, data, attempt, meta, group: Arc::clone(&ungrouped) });
        }
        let ms = |value: i64| u64::try_from(value).ok().map(Duration::from_millis);
        let next_due = ms(next(StepReply::NextDue)?.as_int()?);
        let paused = next(StepReply::Paused)?.as_int()? == 1;
        let limited = ms(next(StepReply::Limited)?.as_int()?).filter(|d| !d.is_zero());
        let now_ms = u64::try_from(next(StepReply::Now)?.as_int()?).unwrap_or(0);
        let held = next(StepReply::Held)?.as_int()? == 1;
        let groups = next(StepReply::Groups)?.into_array()?;
        for pair in groups.chunks(2) {
            let [at, group] = pair else { return Err(Error::Reply("an odd list of taken jobs' groups".to_owned())) };
            let job = usize::try_from(at.as_int()?).ok().and_then(|at| taken.get_mut(at.wrapping_sub(1)));
            let job = job.ok_or_else(|| Error::Reply(format!("a group for taken job {at:?}, which is not there")))?;
            job.group = Arc::from(group.clone().into_string()?);
        }
        Ok(Stepped { applied, taken, next_due, paused, limited, now_ms, held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_sit_where_their_contract_says() {
        let ack = |kind, id: &str| Ack {
            kind,
            id: id.to_owned(),
            attempt: 2,
            started: 1_000,
            payload: Bytes::from_static(b"boom"),
            delay: Duration::from_millis(250),
            keep: Retention::new(Duration::from_secs(60), 5),
            logged: true,
            resend: false,
            tick: String::new(),
            group: Arc::from(""),
            parent: None,
        };
        let acks = [
            ack(AckKind::Failed, "7"),
            Ack { group: Arc::from("u1"), parent: Some(Arc::from("up:3")), ..ack(AckKind::Kept, "8") },
        ];
        let call = StepCall {
            token: "w-1:0",
            lease: Duration::from_secs(30),
            want: 4,
            rate: Some((10, Duration::from_secs(1))),
            groups: &Groups::default().rate_limit(5, Duration::from_secs(2)),
            stalled: Retention::new(Duration::from_secs(3_600), 100),
            new_lease: true,
            acks: &acks,
            reconcile: Some(vec!["9"]),
        };
        let args: Vec<String> =
            call.args().iter().map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned()).collect();
        // ARGV positions count from 1 and include the two common arguments.
        let at = |position: usize| args[position - FIRST_OWN_ARG].as_str();
        assert_eq!(at(StepArg::Token.at()), "w-1:0");
        assert_eq!(at(StepArg::LeaseMs.at()), "30000");
        assert_eq!(at(StepArg::Want.at()), "4");
        assert_eq!((at(StepArg::RateMax.at()), at(StepArg::RateWindowMs.at())), ("10", "1000"));
        assert_eq!((at(StepArg::StalledKeepMs.at()), at(StepArg::StalledKeepCount.at())), ("3600000", "100"));
        assert_eq!((at(StepArg::NewLease.at()), at(StepArg::Acks.at())), ("1", "2"));
        assert_eq!((at(StepArg::GroupConcurrency.at()), at(StepArg::GroupHold.at())), ("1", "1"));
        assert_eq!((at(StepArg::GroupRateMax.at()), at(StepArg::GroupRateWindowMs.at())), ("5", "2000"));
        assert_eq!(at(StepArg::AckGroups.at()), "1 u1", "only the grouped acknowledgement, by its number");
        assert_eq!(at(StepArg::AckParents.at()), "1 up:3", "only the flow child's acknowledgement");
        let second = StepArg::Acks.at() + 1 + AckField::ALL.len();
        assert_eq!(at(second + AckField::Kind.at()), "k");
        assert_eq!(at(second + AckField::Id.at()), "8");
        assert_eq!(at(second + AckField::DelayMs.at()), "250");
        assert_eq!((at(second + AckField::Logged.at()), at(second + AckField::Resend.at())), ("1", "0"));
        let reconcile = StepArg::Acks.at() + 1 + 2 * AckField::ALL.len();
        assert_eq!((at(reconcile), at(reconcile + 1)), ("1", "9"));
        assert_eq!(args.len() + FIRST_OWN_ARG - 1, reconcile + 1);
    }

    #[test]
    fn a_reply_reads_by_its_positions_and_a_short_one_is_an_error() {
        let int = Value::Int;
        let bulk = |s: &str| Value::Bytes(Bytes::copy_from_slice(s.as_bytes()));
        let reply = Value::Array(vec![
            Value::Array(vec![int(1), int(0)]),
            Value::Array(vec![
                bulk("5"),
                bulk("{}"),
                int(1),
                bulk("3 1000 0 "),
                bulk("6"),
                bulk("{}"),
                int(1),
                bulk("3 1000 0 "),
            ]),
            int(-1),
            int(0),
            int(250),
            int(1_700_000_000_000),
            int(1),
            Value::Array(vec![int(2), bulk("u1")]),
        ]);
        let stepped = Stepped::decode(reply).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stepped.applied, vec![true, false]);
        assert_eq!((stepped.taken.len(), stepped.taken[0].id.as_str(), stepped.taken[0].attempt), (2, "5", 1));
        assert_eq!((&*stepped.taken[0].group, &*stepped.taken[1].group), ("", "u1"));
        assert_eq!(
            (stepped.next_due, stepped.paused, stepped.limited),
            (None, false, Some(Duration::from_millis(250)))
        );
        assert_eq!((stepped.now_ms, stepped.held), (1_700_000_000_000, true));
        assert!(Stepped::decode(Value::Array(vec![int(1)])).is_err());
    }
}
