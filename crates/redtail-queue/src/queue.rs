//! `Queue`: adding jobs and everything else that is not running them.

use std::{fmt, marker::PhantomData, sync::Arc, time::Duration};

use redtail_core::{Arg, Backend, Cmd, Cursor, Key, Script, Tagged, Value, metrics};
use serde::Serialize;

use crate::{
    Added, Counts, Error, Finished, GroupInfo, JobId, JobInfo, JobOptions, JobState, Metrics, QueueConfig, Result,
    config::Stored,
    events::{QueueEvents, Start},
    record::{self, Record, RunningEntry},
    script::{
        Common, GroupCounts, QueueKey,
        add::{self, EncodedJob},
        clean::{self, CleanArg, SetCode},
        control::{self, ControlArg, ControlOp},
        counts, drain,
        job::{self, JobArg, JobOp},
    },
};

/// Jobs added in one script call: one round trip each.
const ADD_BATCH: usize = 1000;

/// A job queue over any [`Backend`], for jobs whose data is a `T`.
///
/// Cloning is cheap; clones share the backend and configuration.
pub struct Queue<T> {
    pub(crate) inner: Arc<Inner>,
    _data: PhantomData<fn() -> T>,
}

impl<T> Queue<T> {
    /// A handle on the queue `inner` describes.
    pub(crate) fn of(inner: Arc<Inner>) -> Self {
        Queue { inner, _data: PhantomData }
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue::of(Arc::clone(&self.inner))
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue").field("name", &self.inner.config.name).finish_non_exhaustive()
    }
}

/// What a queue's handles share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: QueueConfig,
    /// The keys every script is given, in [`QueueKey`] order.
    keys: Vec<Key>,
    tagged: Tagged,
    /// `<prefix>:{<name>}:`, from which scripts build job keys.
    pub(crate) prefix: String,
    pub(crate) defaults: Stored,
    /// Adds by outcome: added, deduplicated (`redtail_queue_adds_total`).
    adds: [metrics::Counter; 2],
    /// Other queues of the same namespace this one's flow notices go to (see `flow.rs`).
    siblings: std::sync::Mutex<std::collections::HashMap<String, Arc<Inner>>>,
}

impl Inner {
    /// A queue's shared parts, as `config` describes it.
    fn new(backend: Arc<dyn Backend>, config: QueueConfig) -> Result<Inner> {
        config.validate()?;
        let tagged = config.namespace.tagged(&config.name);
        let keys = QueueKey::ALL.iter().map(|key| tagged.key([key.suffix()])).collect();
        let prefix = format!("{}:{{{}}}:", config.namespace.prefix(), config.name);
        let defaults = Stored::of(&config.defaults);
        let adds = ["added", "deduplicated"].map(|outcome| {
            let labels = [("queue", config.name.clone()), ("outcome", outcome.to_owned())];
            metrics::Counter::new("redtail_queue_adds_total", &labels)
        });
        let siblings = std::sync::Mutex::default();
        Ok(Inner { backend, config, keys, tagged, prefix, defaults, adds, siblings })
    }

    /// Queue `name` of this queue's namespace, on this queue's backend, with its default
    /// configuration: what a flow notice needs of its parent's queue.
    pub(crate) fn sibling(self: &Arc<Self>, name: &str) -> Result<Arc<Inner>> {
        if name == self.config.name {
            return Ok(Arc::clone(self));
        }
        let mut siblings = self.siblings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sibling) = siblings.get(name) {
            return Ok(Arc::clone(sibling));
        }
        let config = QueueConfig::new(name).namespace(self.config.namespace.clone());
        let sibling = Arc::new(Inner::new(Arc::clone(&self.backend), config)?);
        siblings.insert(name.to_owned(), Arc::clone(&sibling));
        Ok(sibling)
    }

    /// One `lua/add.lua` call: `jobs`, and a flow's JSON (see `flow.rs`).
    pub(crate) async fn add(&self, jobs: &[EncodedJob], flow: Option<String>) -> Result<Vec<Added>> {
        let added = add::decode(add::SCRIPT.run(self, add::args(jobs, flow)).await?)?;
        let created = added.iter().filter(|a| a.created).count();
        self.adds[0].add(created as u64);
        self.adds[1].add(added.len().saturating_sub(created) as u64);
        Ok(added)
    }

    /// One job's fields for `lua/add.lua`, in the order of [`add::JobField`], from its data as
    /// JSON; `stored` replaces the options kept with it.
    pub(crate) fn encode(
        &self,
        data: Vec<u8>,
        options: &JobOptions,
        made: u32,
        stored: Option<Stored>,
    ) -> Result<EncodedJob> {
        options.validate()?;
        if data.len() > self.config.max_payload_bytes {
            return Err(Error::TooLarge { size: data.len(), max: self.config.max_payload_bytes });
        }
        let stored = match stored.or_else(|| options.stored(&self.config.defaults)) {
            Some(stored) => serde_json::to_string(&stored).map_err(Error::Encode)?,
            None => String::new(),
        };
        let fields = [
            Arg::from(options.id.as_deref().unwrap_or("")),
            Arg::from(data),
            Arg::from(millis(options.delay)),
            Arg::from(options.priority),
            Arg::from(options.attempts),
            Arg::from(stored),
            Arg::from(options.dedup.as_ref().map_or("", |d| d.id.as_str())),
            Arg::from(options.dedup.as_ref().map_or("", |d| add::DedupCode::of(d.mode).code())),
            Arg::from(options.dedup.as_ref().map_or(0, |d| millis(d.ttl))),
            Arg::from(made),
        ];
        Ok(EncodedJob { fields, group: options.group.clone() })
    }

    /// Runs a queue script with the common arguments (see [`Common`]) first.
    pub(crate) async fn run(&self, script: &Script, args: impl IntoIterator<Item = Arg>) -> Result<Value> {
        let common = Common::ALL.iter().map(|arg| match arg {
            Common::Prefix => Arg::from(self.prefix.as_str()),
            Common::EventsCap => Arg::from(self.config.events_cap),
        });
        let all: Vec<Arg> = common.chain(args).collect();
        Ok(self.backend.eval(script, &self.keys, all).await?)
    }

    /// One of the queue's keys.
    pub(crate) fn key(&self, key: QueueKey) -> &Key {
        &self.keys[key.at() - 1]
    }

    pub(crate) fn job_key(&self, id: &str) -> Key {
        Key::from_raw(format!("{}j:{id}", self.prefix))
    }

    fn log_key(&self, id: &str) -> Key {
        Key::from_raw(format!("{}lg:{id}", self.prefix))
    }

    /// A group's list of waiting jobs (`groups().key` in `lua/lib.lua`).
    fn group_key(&self, group: &str) -> Key {
        Key::from_raw(format!("{}g:{group}", self.prefix))
    }
}

impl<T: Serialize> Queue<T> {
    /// A queue as `config` describes it; nothing is sent to Redis until it is used.
    pub fn new(backend: impl Into<Arc<dyn Backend>>, config: QueueConfig) -> Result<Self> {
        Ok(Queue::of(Arc::new(Inner::new(backend.into(), config)?)))
    }

    /// The queue's configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Adds a job with the queue's default options.
    pub async fn add(&self, data: &T) -> Result<JobId> {
        Ok(self.add_with(data, self.inner.config.defaults.clone()).await?.id)
    }

    /// Adds a job with its own options.
    pub async fn add_with(&self, data: &T, options: JobOptions) -> Result<Added> {
        let mut added = self.add_batch(&[self.encode(data, &options)?]).await?;
        added.pop().ok_or_else(|| Error::Reply("the add script returned no job".to_owned()))
    }

    /// Adds jobs with the queue's default options, in one round trip per 1,000 jobs, in order.
    pub async fn add_bulk<'a, I>(&self, items: I) -> Result<Vec<JobId>>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        let defaults = &self.inner.config.defaults;
        let items = items.into_iter().map(|data| (data, defaults.clone())).collect();
        Ok(self.add_bulk_with(items).await?.into_iter().map(|a| a.id).collect())
    }

    /// Adds jobs, each with its own options, in one round trip per 1,000 jobs.
    /// Every job is checked before any is sent: one bad job adds none.
    pub async fn add_bulk_with(&self, items: Vec<(&T, JobOptions)>) -> Result<Vec<Added>> {
        let encoded = items.iter().map(|(data, options)| self.encode(data, options)).collect::<Result<Vec<_>>>()?;
        let mut added = Vec::with_capacity(items.len());
        for chunk in encoded.chunks(ADD_BATCH) {
            added.extend(self.add_batch(chunk).await?);
        }
        Ok(added)
    }

    /// One job's fields for `lua/add.lua`, in the order of [`add::JobField`].
    fn encode(&self, data: &T, options: &JobOptions) -> Result<EncodedJob> {
        self.encode_made(data, options, 0)
    }

    /// [`Queue::encode`] for a job that has made `made` attempts elsewhere (an import).
    pub(crate) fn encode_made(&self, data: &T, options: &JobOptions, made: u32) -> Result<EncodedJob> {
        let data = serde_json::to_vec(data).map_err(Error::Encode)?;
        self.inner.encode(data, options, made, None)
    }

    pub(crate) async fn add_batch(&self, jobs: &[EncodedJob]) -> Result<Vec<Added>> {
        self.inner.add(jobs, None).await
    }
}

impl<T> Queue<T> {
    /// A job by id, in whatever state, or `None` when there is no such job (never added,
    /// deleted, or past its retention).
    pub async fn get(&self, id: &str) -> Result<Option<JobInfo>> {
        let inner = &self.inner;
        let cmds = vec![
            Cmd::new("HGETALL").key(&inner.job_key(id)),
            Cmd::new("HGET").key(inner.key(QueueKey::Run)).arg(id),
            Cmd::new("HGET").key(inner.key(QueueKey::Records)).arg(id),
        ];
        let mut replies = inner.backend.pipeline(cmds).await?.into_iter();
        let (Some(fields), Some(entry), Some(record)) = (replies.next(), replies.next(), replies.next()) else {
            return Err(Error::Reply("a pipeline of 3 returned fewer replies".to_owned()));
        };
        let Some(mut job) = record::job_info(id, fields)? else {
            return match record.into_opt_bytes()? {
                Some(record) => Record::info(id, &record, inner.config.clock.now_ms()),
                None => Ok(None),
            };
        };
        if let Some(entry) = entry.into_opt_bytes()? {
            running_entry(id, &String::from_utf8_lossy(&entry))?.apply(&mut job);
        }
        Ok(Some(job))
    }

    /// The lines logged by a job with [`Job::log`](crate::Job::log), oldest first.
    pub async fn logs(&self, id: &str) -> Result<Vec<String>> {
        let lines = self.inner.backend.call(Cmd::new("LRANGE").key(&self.inner.log_key(id)).arg(0).arg(-1)).await?;
        lines.into_array()?.into_iter().map(|l| Ok(l.into_string()?)).collect()
    }

    /// Up to `count` of `group`'s waiting jobs ([`JobOptions::group`](crate::JobOptions::group)),
    /// skipping `offset`, in the order they will start.
    pub async fn list_group(&self, group: &str, offset: u64, count: u64) -> Result<Vec<JobInfo>> {
        crate::config::validate_name("a group", group)?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let last = offset.saturating_add(count - 1);
        let key = self.inner.group_key(group);
        let ids = self.inner.backend.call(Cmd::new("LRANGE").key(&key).arg(offset).arg(last)).await?;
        let ids = ids.into_array()?.into_iter().map(|id| Ok(id.into_string()?)).collect::<Result<Vec<_>>>()?;
        self.infos(JobState::Waiting, &ids, &std::collections::HashMap::new()).await
    }

    /// Up to `count` jobs in `state`, skipping `offset`: waiting and delayed in the order they
    /// will run, active by lease deadline, completed and dead newest first. Waiting lists the
    /// jobs without a group; [`Queue::list_group`] lists a group's.
    pub async fn list(&self, state: JobState, offset: u64, count: u64) -> Result<Vec<JobInfo>> {
        let inner = &self.inner;
        if count == 0 {
            return Ok(Vec::new());
        }
        let last = offset.saturating_add(count - 1);
        let mut running = std::collections::HashMap::new();
        let ids = match state {
            JobState::Waiting => {
                // Prioritized jobs run first, then the plain list.
                let mut ids = zrange(inner, QueueKey::Prio, offset, last, false).await?;
                if (ids.len() as u64) < count {
                    let prio = inner.backend.call(Cmd::new("ZCARD").key(inner.key(QueueKey::Prio))).await?.as_int()?;
                    let start = offset.saturating_sub(u64::try_from(prio).unwrap_or(0));
                    let end = start + (count - ids.len() as u64) - 1;
                    let cmd = Cmd::new("LRANGE").key(inner.key(QueueKey::Wait)).arg(start).arg(end);
                    for id in inner.backend.call(cmd).await?.into_array()? {
                        ids.push(id.into_string()?);
                    }
                }
                ids
            }
            JobState::Delayed => zrange(inner, QueueKey::Delay, offset, last, false).await?,
            JobState::WaitingChildren => zrange(inner, QueueKey::WaitingChildren, offset, last, false).await?,
            JobState::Active => {
                let entries = inner.backend.call(Cmd::new("HGETALL").key(inner.key(QueueKey::Run))).await?;
                for (id, entry) in record::pairs(entries)? {
                    running.insert(id.into_string()?, entry.into_string()?);
                }
                let mut ids: Vec<String> = running.keys().cloned().collect();
                // Oldest start first.
                let started = |id: &String| RunningEntry::parse(&running[id]).map(|e| e.started_ms);
                ids.sort_unstable_by_key(started);
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                ids.into_iter().skip(skip).take(usize::try_from(count).unwrap_or(usize::MAX)).collect()
            }
            JobState::Completed => {
                // Newest at the tail.
                let from_end = |n: u64| -1 - i64::try_from(n).unwrap_or(i64::MAX - 1);
                let cmd = Cmd::new("LRANGE").key(inner.key(QueueKey::Done)).arg(from_end(last)).arg(from_end(offset));
                let mut ids: Vec<String> = inner
                    .backend
                    .call(cmd)
                    .await?
                    .into_array()?
                    .into_iter()
                    .map(|id| id.into_string())
                    .collect::<Result<_, _>>()?;
                ids.reverse();
                ids
            }
            JobState::Dead => zrange(inner, QueueKey::Dead, offset, last, true).await?,
        };
        self.infos(state, &ids, &running).await
    }

    /// The jobs `ids` that are (still) in `state`, with their running entries.
    async fn infos(
        &self,
        state: JobState,
        ids: &[String],
        running: &std::collections::HashMap<String, String>,
    ) -> Result<Vec<JobInfo>> {
        let inner = &self.inner;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmds: Vec<Cmd> = ids.iter().map(|id| Cmd::new("HGETALL").key(&inner.job_key(id))).collect();
        if state == JobState::Completed {
            cmds.push(
                ids.iter().fold(Cmd::new("HMGET").key(inner.key(QueueKey::Records)), |cmd, id| cmd.arg(id.as_str())),
            );
        }
        let mut replies = inner.backend.pipeline(cmds).await?;
        // Completed jobs kept as records (see `record::Record`) have no hash.
        let mut records = match state {
            JobState::Completed => replies.pop().map(Value::into_array).transpose()?.unwrap_or_default(),
            _ => Vec::new(),
        }
        .into_iter();
        let now = inner.config.clock.now_ms();
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(replies) {
            let record = records.next().map(Value::into_opt_bytes).transpose()?.flatten();
            let mut job = match (record::job_info(id, fields)?, record) {
                (None, Some(record)) => Record::info(id, &record, now)?,
                (job, _) => job,
            };
            if let (Some(job), Some(entry)) = (job.as_mut(), running.get(id)) {
                running_entry(id, entry)?.apply(job);
            }
            // A job may move on, or expire, between the two reads.
            if let Some(job) = job.filter(|job| job.state == state) {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    /// Jobs by state, with no per-minute figures.
    pub async fn counts(&self) -> Result<Counts> {
        Ok(self.read_metrics(0).await?.counts)
    }

    /// Jobs by state, whether paused, the oldest waiting job's age, and completed and failed
    /// jobs in each of the last `minutes` minutes (at most 60 are kept).
    pub async fn metrics(&self, minutes: u32) -> Result<Metrics> {
        self.read_metrics(minutes.min(60)).await
    }

    async fn read_metrics(&self, minutes: u32) -> Result<Metrics> {
        let read = counts::decode(counts::SCRIPT.run(&self.inner, [Arg::from(minutes)]).await?)?;
        // Group totals as gauges, set on each read (the admin polls it); no group is a label.
        let groups = read.groups;
        let series = [
            ("redtail_queue_groups", "waiting", groups.waiting),
            ("redtail_queue_groups", "running", groups.running),
            ("redtail_queue_groups", "paused", groups.paused),
            ("redtail_queue_grouped_jobs", "waiting", groups.jobs_waiting),
            ("redtail_queue_grouped_jobs", "active", groups.jobs_active),
        ];
        for (name, state, value) in series {
            let labels = || vec![("queue", self.inner.config.name.clone()), ("state", state.to_owned())];
            metrics::gauge(name, labels, value as f64);
        }
        Ok(read)
    }

    /// Stops delivery: workers finish what they hold and take nothing new until [`Queue::resume`].
    /// Adding jobs still works.
    pub async fn pause(&self) -> Result<()> {
        self.control(ControlOp::Pause, "").await
    }

    /// Restarts delivery after [`Queue::pause`].
    pub async fn resume(&self) -> Result<()> {
        self.control(ControlOp::Resume, "").await
    }

    /// Stops starting jobs of `group` ([`JobOptions::group`](crate::JobOptions::group)) until
    /// [`Queue::resume_group`]; its running jobs finish, and adding to it still works.
    pub async fn pause_group(&self, group: &str) -> Result<()> {
        crate::config::validate_name("a group", group)?;
        self.control(ControlOp::PauseGroup, group).await
    }

    /// Starts jobs of `group` again after [`Queue::pause_group`].
    pub async fn resume_group(&self, group: &str) -> Result<()> {
        crate::config::validate_name("a group", group)?;
        self.control(ControlOp::ResumeGroup, group).await
    }

    async fn control(&self, op: ControlOp, group: &str) -> Result<()> {
        let args = ControlArg::ALL.iter().map(|arg| match arg {
            ControlArg::Op => Arg::from(op.code()),
            ControlArg::Group => Arg::from(group),
        });
        control::SCRIPT.run(&self.inner, args).await?;
        Ok(())
    }

    /// One group's jobs waiting and running, and whether it is paused (all zero and `false` for
    /// a group the queue has never seen).
    pub async fn group(&self, group: &str) -> Result<GroupInfo> {
        crate::config::validate_name("a group", group)?;
        let inner = &self.inner;
        let cmds = vec![
            Cmd::new("HGET").key(inner.key(QueueKey::GroupCounts)).arg(group),
            Cmd::new("SISMEMBER").key(inner.key(QueueKey::GroupPaused)).arg(group),
        ];
        let replies = inner.backend.transaction(cmds).await?;
        let [counts, paused] = <[Value; 2]>::try_from(replies)
            .map_err(|r| Error::Reply(format!("{} replies to a group's two reads", r.len())))?;
        let (waiting, active) = match counts {
            Value::Nil => (0, 0),
            v => GroupCounts::split(v.as_int()?),
        };
        Ok(GroupInfo { name: group.to_owned(), waiting, active, paused: paused.as_int()? == 1 })
    }

    /// Groups with jobs waiting or running, or paused, by name, at most `limit` of them after
    /// `after` (`None`: from the first); call again with the last name for the next page. Each
    /// call reads every group's counts (a read for operators, not for a hot path).
    pub async fn groups(&self, after: Option<&str>, limit: usize) -> Result<Vec<GroupInfo>> {
        let inner = &self.inner;
        let cmds = vec![
            Cmd::new("HGETALL").key(inner.key(QueueKey::GroupCounts)),
            Cmd::new("SMEMBERS").key(inner.key(QueueKey::GroupPaused)),
        ];
        let replies = inner.backend.transaction(cmds).await?;
        let [counts, paused] = <[Value; 2]>::try_from(replies)
            .map_err(|r| Error::Reply(format!("{} replies to the groups' two reads", r.len())))?;
        let mut groups = std::collections::BTreeMap::<String, GroupInfo>::new();
        fn entry(groups: &mut std::collections::BTreeMap<String, GroupInfo>, name: String) -> &mut GroupInfo {
            groups.entry(name.clone()).or_insert(GroupInfo { name, waiting: 0, active: 0, paused: false })
        }
        for pair in counts.into_array()?.chunks(2) {
            let [name, n] = pair else { return Err(Error::Reply("a group hash of odd length".to_owned())) };
            let n = n.clone().into_string()?.parse::<i64>().map_err(|e| Error::Reply(format!("a group count: {e}")))?;
            let info = entry(&mut groups, name.clone().into_string()?);
            (info.waiting, info.active) = GroupCounts::split(n);
        }
        for name in paused.into_array()? {
            entry(&mut groups, name.into_string()?).paused = true;
        }
        let start = after.map_or(std::ops::Bound::Unbounded, |a| std::ops::Bound::Excluded(a.to_owned()));
        Ok(groups.range((start, std::ops::Bound::Unbounded)).take(limit).map(|(_, info)| info.clone()).collect())
    }

    /// Removes every job that has not started (and the delayed ones too when `delayed`),
    /// 1,000 per round trip. Running and finished jobs stay. Returns how many were removed.
    pub async fn drain(&self, delayed: bool) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = drain::SCRIPT.run(&self.inner, [Arg::from(if delayed { "1" } else { "0" })]).await?.as_int()?;
            total += u64::try_from(n).unwrap_or(0);
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Removes up to `limit` completed or dead jobs finished more than `older_than` ago.
    pub async fn clean(&self, which: Finished, older_than: Duration, limit: u32) -> Result<u64> {
        let args = CleanArg::ALL.iter().map(|arg| match arg {
            CleanArg::Set => Arg::from(SetCode::from(which).code()),
            CleanArg::OlderThanMs => Arg::from(millis(older_than)),
            CleanArg::Limit => Arg::from(limit.max(1)),
        });
        let n = clean::SCRIPT.run(&self.inner, args).await?;
        Ok(u64::try_from(n.as_int()?).unwrap_or(0))
    }

    /// Deletes the whole queue: every job, its events and counters. Refused with
    /// [`Error::Busy`] while jobs are running, unless `force` (their workers then see their
    /// completions refused). The queue is paused first so that no worker takes a job meanwhile.
    /// Returns how many keys were deleted.
    pub async fn obliterate(&self, force: bool) -> Result<u64> {
        self.pause().await?;
        let active = self.counts().await?.active;
        if active > 0 && !force {
            self.resume().await?;
            return Err(Error::Busy(format!("{active} jobs are running; pass force to obliterate anyway")));
        }
        let backend = &self.inner.backend;
        let pattern = self.inner.tagged.pattern();
        let (mut cursor, mut deleted) = (Cursor::START, 0);
        loop {
            let page = backend.scan(cursor, &pattern, 1000).await?;
            if !page.keys.is_empty() {
                let cmd = page.keys.iter().fold(Cmd::new("UNLINK"), |cmd, key| cmd.key(key));
                deleted += u64::try_from(backend.call(cmd).await?.as_int()?).unwrap_or(0);
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        // The paused flag may have been found before other keys; make sure it is gone.
        backend.call(Cmd::new("DEL").key(self.inner.key(QueueKey::Paused))).await?;
        Ok(deleted)
    }

    /// Runs a dead-lettered job again, with as many attempts again as it had. Attempt numbers go
    /// on (a job dead after 3 attempts runs attempts 4 to 6), so every attempt's error is kept.
    /// Returns `false` when no dead job has this id.
    pub async fn retry_dead(&self, id: &str) -> Result<bool> {
        Ok(self.by_id(JobOp::Retry, id).await? == 1)
    }

    /// Runs a delayed job now (BullMQ's `promote`): a job added with a delay, put off by its
    /// handler, or waiting out a retry's backoff joins the line as if its time had come. Returns
    /// `false` when no delayed job has this id.
    pub async fn promote(&self, id: &str) -> Result<bool> {
        Ok(self.by_id(JobOp::Promote, id).await? == 1)
    }

    /// Deletes a job that is not running. Returns `false` when there is no such job, and
    /// [`Error::Busy`] when it is running.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        match self.by_id(JobOp::Delete, id).await? {
            -1 => Err(Error::Busy(format!("job {id} is running"))),
            n => Ok(n == 1),
        }
    }

    /// Gives a job that has not finished another priority (BullMQ's `changePriority`; 0 for
    /// none, higher runs first): a waiting job moves to its new place in line, a delayed or
    /// running one keeps it for when it waits. Returns `false` when there is no such job or it
    /// has finished. A grouped job runs in its group's order and takes no priority:
    /// [`Error::InvalidInput`].
    pub async fn change_priority(&self, id: &str, priority: u32) -> Result<bool> {
        if priority > crate::MAX_PRIORITY {
            return Err(Error::InvalidInput(format!(
                "priority {priority} is above the maximum {}",
                crate::MAX_PRIORITY
            )));
        }
        match self.job_op(JobOp::Priority, id, &priority.to_string()).await? {
            -2 => Err(Error::InvalidInput(format!(
                "job {id} is grouped: it runs in its group's order and takes no priority"
            ))),
            n => Ok(n == 1),
        }
    }

    /// One `lua/job.lua` call without a priority.
    async fn by_id(&self, op: JobOp, id: &str) -> Result<i64> {
        self.job_op(op, id, "").await
    }

    /// One `lua/job.lua` call.
    async fn job_op(&self, op: JobOp, id: &str, priority: &str) -> Result<i64> {
        let args = JobArg::ALL.iter().map(|arg| match arg {
            JobArg::Op => Arg::from(op.code()),
            JobArg::Id => Arg::from(id),
            JobArg::Priority => Arg::from(priority),
        });
        Ok(job::SCRIPT.run(&self.inner, args).await?.as_int()?)
    }

    /// Waits until job `id` has finished (completed, or dead-lettered) and returns it as it
    /// ended; `None` when there is no such job (never added, deleted, or expired; so also a job
    /// whose retention keeps nothing once it finishes). It reads the
    /// queue's events rather than polling, and looks at the job again every second in case its
    /// event was missed (the stream is capped). It waits as long as it takes: bound it with
    /// `tokio::time::timeout`, which is safe to cancel it with.
    pub async fn wait_until_finished(&self, id: &str) -> Result<Option<JobInfo>> {
        // Events first, then the job: a job that finishes in between is seen either way.
        let mut events = self.events(Start::Now).await?;
        loop {
            match self.get(id).await? {
                Some(job) if matches!(job.state, JobState::Completed | JobState::Dead) => return Ok(Some(job)),
                Some(_) => {}
                None => return Ok(None),
            }
            let finished = async {
                loop {
                    let event = events.next().await?;
                    if event.job.as_str() == id
                        && matches!(event.kind, crate::EventKind::Completed | crate::EventKind::Dead)
                    {
                        return Ok::<_, Error>(());
                    }
                }
            };
            if let Ok(read) = tokio::time::timeout(Duration::from_secs(1), finished).await {
                read?;
            }
        }
    }

    /// A listener for this queue's events, starting at `start` ([`Start::Now`] is the stream's
    /// newest entry at this call).
    pub async fn events(&self, start: Start) -> Result<QueueEvents> {
        QueueEvents::new(Arc::clone(&self.inner.backend), self.inner.key(QueueKey::Events).clone(), start).await
    }
}

async fn zrange(inner: &Inner, set: QueueKey, start: u64, stop: u64, newest_first: bool) -> Result<Vec<String>> {
    let mut cmd = Cmd::new("ZRANGE").key(inner.key(set)).arg(start).arg(stop);
    if newest_first {
        cmd = cmd.arg("REV");
    }
    inner.backend.call(cmd).await?.into_array()?.into_iter().map(|id| Ok(id.into_string()?)).collect()
}

/// A running job's entry, or an error naming the job.
fn running_entry<'a>(id: &str, entry: &'a str) -> Result<RunningEntry<'a>> {
    RunningEntry::parse(entry).ok_or_else(|| Error::Reply(format!("job {id}: unreadable running entry {entry:?}")))
}

/// A duration in whole milliseconds, as scripts take it.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
