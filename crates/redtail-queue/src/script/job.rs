//! `lua/job.lua`: one job by id: retry a dead job, delete a job, change its priority, or run a
//! delayed job now.

use redtail_core::Script;

use super::{QueueScript, lua_codes, lua_numbers, source};

pub(crate) static SCRIPT: QueueScript = QueueScript::new(|| {
    let mut consts: Vec<_> = JobArg::consts().collect();
    consts.extend(JobOp::consts());
    Script::new("queue_job", source(&consts, include_str!("../../lua/job.lua")))
});

lua_numbers! {
    /// The job script's arguments.
    JobArg {
        /// A [`JobOp`].
        Op = 3 => "ARG_OP",
        /// The job's id.
        Id = 4 => "ARG_ID",
        /// The new priority, for [`JobOp::Priority`] (empty for the others).
        Priority = 5 => "ARG_PRIORITY",
    }
}

lua_codes! {
    /// What to do with the job.
    JobOp {
        /// Run a dead job again.
        Retry => "OP_RETRY" = "retry",
        /// Delete a job that is not running.
        Delete => "OP_DELETE" = "delete",
        /// Give a job that has not finished another priority.
        Priority => "OP_PRIORITY" = "priority",
        /// Run a delayed job now.
        Promote => "OP_PROMOTE" = "promote",
    }
}
