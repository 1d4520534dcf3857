//! `Worker`: runs a queue's jobs with leases, batched round trips, timeouts and a graceful stop.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    marker::PhantomData,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{
            AtomicU64, AtomicUsize,
            Ordering::{AcqRel, Acquire, Relaxed},
        },
    },
    time::Duration,
};

use futures_util::FutureExt;
use redtail_core::{
    Arg, Bytes, Cmd, Value,
    metrics::{self, Counter},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::{AbortHandle, JoinHandle},
    time::{Instant, sleep_until},
};

use crate::{
    Job, JobId, Queue, Result, Retention,
    config::Stored,
    job::NOT_DELAYED,
    queue::{Inner, millis},
    record::{Meta, Record},
    script::{
        QueueKey, renew,
        step::{self, Ack, AckKind, StepCall, Stepped, Taken},
    },
};

/// How a worker runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Jobs run at once (at least 1). The worker runs two lanes of half as many, each taking
    /// and acknowledging its jobs in batches in one round trip, so one lane's jobs run while
    /// the other's round trip is at the server.
    pub concurrency: usize,
    /// How long jobs stay this worker's without renewal; renewed every third of it. Each lane
    /// holds one lease for all its jobs. If the worker dies, its jobs run again this long after;
    /// if it loses its lease (a pause longer than the lease), it cancels its jobs and starts
    /// over, since they run elsewhere.
    pub lease: Duration,
    /// On shutdown, how long running jobs may take to finish before they are cancelled and
    /// handed back to the queue.
    pub shutdown_deadline: Duration,
    /// How long an idle worker waits for a wake-up before looking for jobs anyway.
    pub idle_poll: Duration,
}

impl Default for WorkerOptions {
    /// Concurrency 10, lease 30 s, shutdown deadline 30 s, idle poll 1 s.
    fn default() -> Self {
        WorkerOptions {
            concurrency: 10,
            lease: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(30),
            idle_poll: Duration::from_secs(1),
        }
    }
}

impl WorkerOptions {
    /// Sets [`WorkerOptions::concurrency`]: 1 to 10,000.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }
    /// Sets [`WorkerOptions::lease`]: 100 ms to a day.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Sets [`WorkerOptions::shutdown_deadline`]: up to a day.
    #[must_use]
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }
    /// Sets [`WorkerOptions::idle_poll`]: 10 ms to an hour.
    #[must_use]
    pub fn idle_poll(mut self, poll: Duration) -> Self {
        self.idle_poll = poll;
        self
    }

    /// Checks every setting, with an error that names the one out of range.
    fn validate(&self) -> Result<()> {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let within = |setting: &str, value: Duration, min: Duration, max: Duration| {
            if value < min || value > max {
                return Err(crate::Error::InvalidInput(format!(
                    "the worker's {setting} must be {min:?} to {max:?}, got {value:?}"
                )));
            }
            Ok(())
        };
        if !(1..=10_000).contains(&self.concurrency) {
            return Err(crate::Error::InvalidInput(format!(
                "the worker's concurrency must be 1 to 10000, got {}",
                self.concurrency
            )));
        }
        within("lease", self.lease, Duration::from_millis(100), DAY)?;
        within("shutdown deadline", self.shutdown_deadline, Duration::ZERO, DAY)?;
        within("idle poll", self.idle_poll, Duration::from_millis(10), Duration::from_secs(3600))
    }
}

/// What a worker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WorkerStats {
    /// Jobs completed.
    pub completed: u64,
    /// Attempts failed and scheduled to run again.
    pub retried: u64,
    /// Jobs dead-lettered (their last attempt failed, or their data could not be decoded).
    pub dead: u64,
    /// Attempts that panicked (counted in `retried` or `dead` too).
    pub panicked: u64,
    /// Attempts cancelled by their timeout (counted in `retried` or `dead` too).
    pub timed_out: u64,
    /// Acknowledgements refused because the lease had been lost: the job ran again elsewhere.
    pub refused: u64,
    /// Leases found lost on renewal; the handler was cancelled.
    pub lost: u64,
    /// Jobs handed back unfinished at shutdown.
    pub released: u64,
    /// Jobs their handler put off ([`Job::move_to_delayed`](crate::Job::move_to_delayed)).
    pub delayed: u64,
    /// Redis errors seen (each retried).
    pub redis_errors: u64,
}

/// What a worker counts, each also reported (feature `metrics`) with the label `queue`.
#[derive(Debug)]
struct Counters {
    completed: Counter,
    retried: Counter,
    dead: Counter,
    panicked: Counter,
    timed_out: Counter,
    refused: Counter,
    lost: Counter,
    released: Counter,
    delayed: Counter,
    redis_errors: Counter,
    /// From a job's creation to the start of its attempt, and the attempt's run.
    wait: metrics::Histogram,
    run: metrics::Histogram,
}

impl Counters {
    fn new(queue: &str) -> Counters {
        let label = || ("queue", queue.to_owned());
        let finished =
            |outcome: &str| Counter::new("redtail_queue_attempts_total", &[label(), ("outcome", outcome.to_owned())]);
        Counters {
            completed: finished("completed"),
            retried: finished("retried"),
            dead: finished("dead"),
            released: finished("released"),
            delayed: finished("delayed"),
            panicked: Counter::new("redtail_queue_attempts_panicked_total", &[label()]),
            timed_out: Counter::new("redtail_queue_attempts_timed_out_total", &[label()]),
            refused: Counter::new("redtail_queue_acks_refused_total", &[label()]),
            lost: Counter::new("redtail_queue_leases_lost_total", &[label()]),
            redis_errors: Counter::new("redtail_queue_redis_errors_total", &[label()]),
            wait: metrics::Histogram::new("redtail_queue_job_wait_seconds", &[label()]),
            run: metrics::Histogram::new("redtail_queue_job_run_seconds", &[label()]),
        }
    }

    fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            completed: self.completed.get(),
            retried: self.retried.get(),
            dead: self.dead.get(),
            panicked: self.panicked.get(),
            timed_out: self.timed_out.get(),
            refused: self.refused.get(),
            lost: self.lost.get(),
            released: self.released.get(),
            delayed: self.delayed.get(),
            redis_errors: self.redis_errors.get(),
        }
    }

    /// Reports how long a job created at `created_ms` waited before this attempt, and how long
    /// the attempt `ran`.
    fn timed(&self, created_ms: u64, ran: Duration) {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let waited = since_epoch.saturating_sub(Duration::from_millis(created_ms)).saturating_sub(ran);
        self.wait.record(waited);
        self.run.record(ran);
    }
}

/// A running worker, from [`Queue::worker`]. [`WorkerHandle::shutdown`] stops it and waits;
/// dropping the handle stops it the same way without waiting.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    inner: Arc<Inner>,
}

impl WorkerHandle {
    /// What the worker has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.counters.snapshot()
    }

    /// Stops taking jobs, lets running ones finish within the shutdown deadline, hands the rest
    /// back to the queue (their attempt does not count), acknowledges everything, and returns the
    /// final counts.
    pub async fn shutdown(self) -> WorkerStats {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "queue worker task failed");
            }
        }
        // The last acknowledgements' flow notices (another worker relays them if this fails).
        if let Err(e) = crate::flow::relay(&self.inner).await {
            tracing::warn!(error = %e, queue = %self.inner.config.name, "queue worker: flow notices left to relay");
        }
        self.counters.snapshot()
    }
}

/// A job being run by this lane.
struct Running {
    attempt: u32,
    started: u64,
    keep_failed: Retention,
    /// The job's group (empty: none).
    group: Arc<str>,
    /// A flow's child: its parent.
    parent: Option<Arc<str>>,
    abort: AbortHandle,
}

impl<T: DeserializeOwned + Send + 'static> Queue<T> {
    /// Starts a worker running `handler` on this queue's jobs, on the current tokio runtime.
    /// Options out of range are [`Error::InvalidInput`](crate::Error::InvalidInput), naming the
    /// setting, and nothing starts.
    ///
    /// A handler's `Ok` value is stored as the job's result (JSON); an `Err`, a panic or a
    /// timeout fails the attempt, which runs again after its backoff or, when it was the last,
    /// moves the job to the dead-letter set. Job data that cannot be decoded as `T` is
    /// dead-lettered at once, so a poison job never loops.
    pub fn worker<F, Fut, R, E>(&self, options: WorkerOptions, handler: F) -> Result<WorkerHandle>
    where
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        options.validate()?;
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::new(&self.inner.config.name));
        let mut id = [0u8; 8];
        // Only makes tokens unique between workers; a fixed id from a failed read still works
        // because tokens also carry the process id, the lane and a generation.
        let _ = getrandom::fill(&mut id);
        let worker_id = format!("{}-{}", std::process::id(), id.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let concurrency = options.concurrency;
        // Two lanes, each with half the slots and its own round trips: one lane's jobs run
        // while the other's step is at the server, so Redis and the handlers overlap.
        let lanes = concurrency.min(LANES);
        let (wake, wake_rx) = watch::channel(0u64);
        let idle = Arc::new(Idle::default());
        spawn_waker(&self.inner, wake, Arc::clone(&idle), options.idle_poll);
        let relay = Arc::new(Notify::new());
        spawn_relay(Arc::clone(&self.inner), Arc::clone(&relay), stop_rx.clone());
        let handler = Arc::new(handler);
        let tasks = (0..lanes)
            .map(|lane| {
                let runner = Runner {
                    inner: Arc::clone(&self.inner),
                    options: WorkerOptions {
                        concurrency: concurrency / lanes + usize::from(lane < concurrency % lanes),
                        ..options.clone()
                    },
                    handler: Arc::clone(&handler),
                    counters: Arc::clone(&counters),
                    lane_id: format!("{worker_id}-{lane}"),
                    generation: 0,
                    token: Arc::from(format!("{worker_id}-{lane}:0")),
                    registered: false,
                    reconcile: false,
                    wake: wake_rx.clone(),
                    idle: Arc::clone(&idle),
                    relay: Arc::clone(&relay),
                    running: HashMap::new(),
                    acks: Vec::new(),
                    data: PhantomData,
                };
                tokio::spawn(runner.run(stop_rx.clone()))
            })
            .collect();
        Ok(WorkerHandle { stop, tasks, counters, inner: Arc::clone(&self.inner) })
    }
}

/// Lanes of one worker; see [`Queue::worker`].
const LANES: usize = 2;

/// Waits for wake-ups on the queue's marker list, on the backend's connection for blocking
/// commands, while a lane is idle, and tells every lane. Each wait is bounded, so a connection
/// lost in a failover is noticed and replaced; the waker ends when the last lane has.
fn spawn_waker(inner: &Inner, wake: watch::Sender<u64>, idle: Arc<Idle>, poll: Duration) {
    let (backend, key) = (Arc::clone(&inner.backend), inner.key(QueueKey::Mark).clone());
    let seconds = format!("{:.3}", poll.as_secs_f64());
    tokio::spawn(async move {
        while wake.receiver_count() > 0 {
            if idle.lanes.load(Acquire) == 0 {
                // Every lane is busy and steps on its own: a wake-up would only cost a round
                // trip each, so the marker waits (for this or another worker) until one idles.
                let _ = tokio::time::timeout(poll, idle.notify.notified()).await;
                continue;
            }
            match backend.blocking(Cmd::new("BLPOP").key(&key).arg(seconds.as_str())).await {
                Ok(Value::Nil) => {}
                // Taken while every lane got busy: handed on to a worker that can use it.
                Ok(_) if idle.lanes.load(Acquire) == 0 => {
                    if let Err(e) = backend.call(Cmd::new("RPUSH").key(&key).arg(1)).await {
                        tracing::debug!(error = %e, "queue worker: could not hand a wake-up on");
                    }
                }
                Ok(_) => wake.send_modify(|n| *n = n.wrapping_add(1)),
                Err(e) => {
                    tracing::debug!(error = %e, "queue worker: wake-up wait failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

/// How often a worker relays its queue's flow notices when no acknowledgement of its own asked
/// for it: notices another worker left (it died between its acknowledgement and its relay).
const RELAY_EVERY: Duration = Duration::from_secs(1);

/// Relays the queue's flow notices (see `flow.rs`): at start, when a lane acknowledged a flow's
/// child, and every [`RELAY_EVERY`], until the worker stops.
fn spawn_relay(inner: Arc<Inner>, relay: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = crate::flow::relay(&inner).await {
                tracing::debug!(error = %e, queue = %inner.config.name, "queue worker: flow relay failed; retrying");
            }
            tokio::select! {
                () = relay.notified() => {}
                () = tokio::time::sleep(RELAY_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

/// How many of a worker's lanes wait for work; the waker listens for wake-ups only then.
#[derive(Default)]
struct Idle {
    lanes: AtomicUsize,
    notify: Notify,
}

struct Runner<T, F> {
    inner: Arc<Inner>,
    options: WorkerOptions,
    handler: Arc<F>,
    counters: Arc<Counters>,
    lane_id: String,
    /// How many leases this lane has lost; part of its token.
    generation: u64,
    /// The lane's lease token: every job it takes runs under it.
    token: Arc<str>,
    /// Whether the lease of `token` has been created.
    registered: bool,
    /// A round trip failed: the next one hands back jobs it may have taken unseen.
    reconcile: bool,
    wake: watch::Receiver<u64>,
    idle: Arc<Idle>,
    /// Told when an acknowledgement of a flow's child left a notice to relay.
    relay: Arc<Notify>,
    running: HashMap<String, Running>,
    acks: Vec<Ack>,
    data: PhantomData<fn() -> T>,
}

/// What a step told the worker about the queue.
struct Step {
    taken: usize,
    paused: bool,
    /// When there may be work again without a wake-up: a delayed job's time, or the end of
    /// the rate-limit window.
    recheck: Option<Instant>,
}

/// What an idle lane waits for (see [`Runner::wait`]).
struct Wait {
    /// When to look for work (or renew the lease) anyway.
    look_at: Instant,
    hard_deadline: Option<Instant>,
    /// Whether the lane looks for work (it then counts as idle, so the waker listens).
    looking: bool,
    stopping: bool,
}

/// Why an idle worker woke up.
enum Wakeup {
    Finished(Ack),
    Look,
    Stop,
}

impl<T, F, Fut, R, E> Runner<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Ack>();
        let renew_every = self.options.lease / 3;
        let mut next_renew = Instant::now() + renew_every;
        let (mut more, mut stopping) = (true, false);
        let mut hard_deadline: Option<Instant> = None;
        let mut recheck: Option<Instant> = None;
        let mut pause = Duration::from_millis(100);
        loop {
            while let Ok(ack) = rx.try_recv() {
                self.accept(ack);
            }
            // Noticed here too, so a stop is seen while Redis errors keep the loop busy.
            if !stopping && (stop.has_changed().is_err() || *stop.borrow()) {
                stopping = true;
                hard_deadline = Some(Instant::now() + self.options.shutdown_deadline);
            }
            if hard_deadline.is_some_and(|d| Instant::now() >= d) && !self.running.is_empty() {
                self.release_all();
            }
            if Instant::now() >= next_renew {
                self.renew().await;
                next_renew = Instant::now() + renew_every;
            }
            if stopping && self.running.is_empty() && self.acks.is_empty() {
                self.end_lease().await;
                break;
            }
            let want = if stopping || !more { 0 } else { self.options.concurrency.saturating_sub(self.running.len()) };
            if want > 0 || !self.acks.is_empty() {
                match self.step(want, &tx).await {
                    Ok(step) => {
                        pause = Duration::from_millis(100);
                        more = want > 0 && step.taken == want && !step.paused;
                        recheck = step.recheck;
                    }
                    Err(e) => {
                        self.step_failed();
                        if hard_deadline.is_some_and(|d| Instant::now() >= d) {
                            tracing::warn!(error = %e, unsent = self.acks.len(), "queue worker: stopping without acknowledging; those jobs run again after their lease");
                            break;
                        }
                        tracing::warn!(error = %e, queue = %self.inner.config.name, "queue worker: Redis step failed; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
                continue;
            }
            let look_at = recheck
                .map_or(Instant::now() + self.options.idle_poll, |r| r.min(Instant::now() + self.options.idle_poll));
            let wait = Wait { look_at: look_at.min(next_renew), hard_deadline, looking: !more && !stopping, stopping };
            match self.wait(wait, &mut rx, &mut stop).await {
                Wakeup::Finished(ack) => self.accept(ack),
                Wakeup::Look => {
                    more = true;
                    recheck = None;
                }
                Wakeup::Stop => {
                    stopping = true;
                    hard_deadline = Some(Instant::now() + self.options.shutdown_deadline);
                }
            }
        }
    }

    /// Waits, while nothing is to be sent, for whichever comes first: a finished attempt, a
    /// wake-up (while looking for work), the time to look anyway, a stop, or the hard deadline.
    async fn wait(
        &mut self,
        wait: Wait,
        rx: &mut mpsc::UnboundedReceiver<Ack>,
        stop: &mut watch::Receiver<bool>,
    ) -> Wakeup {
        let Wait { look_at, hard_deadline, looking, stopping } = wait;
        let holding = !self.running.is_empty();
        if looking {
            self.idle.lanes.fetch_add(1, AcqRel);
            self.idle.notify.notify_one();
        }
        let wakeup = tokio::select! {
            ack = rx.recv() => ack.map_or(Wakeup::Look, Wakeup::Finished),
            Ok(()) = self.wake.changed(), if !stopping => Wakeup::Look,
            () = sleep_until(look_at) => Wakeup::Look,
            changed = stop.changed(), if !stopping => { let _ = changed; Wakeup::Stop }
            () = sleep_until(hard_deadline.unwrap_or(look_at)), if hard_deadline.is_some() && holding => Wakeup::Look,
        };
        if looking {
            self.idle.lanes.fetch_sub(1, AcqRel);
        }
        wakeup
    }

    /// A step failed: each acknowledgement may have been applied (the script recognises those
    /// when they are sent again), and jobs the call may have taken are handed back by the next.
    fn step_failed(&mut self) {
        self.counters.redis_errors.bump();
        self.acks.iter_mut().for_each(|ack| ack.resend = true);
        self.reconcile = true;
    }

    /// Nothing runs under the lease any more: ends it rather than let it expire; unless a lost
    /// reply may have left jobs under it, which its expiry frees.
    async fn end_lease(&self) {
        if self.registered && !self.reconcile {
            let cmd = Cmd::new("ZREM").key(self.inner.key(QueueKey::Leases)).arg(&*self.token);
            if let Err(e) = self.inner.backend.call(cmd).await {
                tracing::debug!(error = %e, "queue worker: could not end its lease; it expires");
            }
        }
    }

    /// Takes a finished attempt's acknowledgement, unless the job was meanwhile lost or handed back.
    fn accept(&mut self, ack: Ack) {
        if self.running.get(&ack.id).is_some_and(|r| r.attempt == ack.attempt) {
            self.running.remove(&ack.id);
            self.acks.push(ack);
        }
    }

    /// The lane's lease was lost (it expired, and its jobs were taken back): cancel what runs,
    /// forget what is unacknowledged (it would be refused), and start over with a new token.
    fn lose_lease(&mut self) {
        for (id, running) in self.running.drain() {
            running.abort.abort();
            self.counters.lost.bump();
            tracing::warn!(job = %id, queue = %self.inner.config.name, "queue worker: lease lost; handler cancelled");
        }
        self.counters.refused.add(self.acks.len() as u64);
        self.acks.clear();
        self.generation += 1;
        self.token = Arc::from(format!("{}:{}", self.lane_id, self.generation));
        self.registered = false;
    }

    /// One round trip: the pending acknowledgements, and up to `want` new jobs.
    async fn step(&mut self, want: usize, tx: &mpsc::UnboundedSender<Ack>) -> Result<Step> {
        let inner = Arc::clone(&self.inner);
        let config = &inner.config;
        let call = StepCall {
            token: &self.token,
            lease: self.options.lease,
            want,
            rate: config.rate_limit.map(|r| (r.max, r.period)),
            groups: &config.groups,
            stalled: config.defaults.keep_failed,
            new_lease: !self.registered,
            acks: &self.acks,
            reconcile: self.reconcile.then(|| self.running.keys().map(String::as_str).collect()),
        };
        let told = self.acks.iter().any(|ack| ack.parent.is_some());
        let stepped = Stepped::decode(step::SCRIPT.run(&inner, call.args()).await?)?;
        if told {
            self.relay.notify_one();
        }
        self.reconcile = false;
        let Stepped { applied, taken, next_due, paused, limited, now_ms, held } = stepped;
        if !held {
            self.lose_lease();
            return Ok(Step { taken: 0, paused, recheck: None });
        }
        self.registered = true;

        for (ack, applied) in std::mem::take(&mut self.acks).iter().zip(applied) {
            let counter = match (applied, ack.kind) {
                (false, _) => {
                    tracing::warn!(job = %ack.id, queue = %config.name, "queue worker: acknowledgement refused, the lease was lost; the job runs again elsewhere");
                    &self.counters.refused
                }
                (true, AckKind::Completed | AckKind::Kept) => &self.counters.completed,
                (true, AckKind::Failed) => &self.counters.retried,
                (true, AckKind::Dead) => &self.counters.dead,
                (true, AckKind::Released) => &self.counters.released,
                (true, AckKind::Delayed) => &self.counters.delayed,
            };
            counter.bump();
        }
        let n_taken = taken.len();
        for job in taken {
            self.start(job, now_ms, tx)?;
        }
        let now = Instant::now();
        let recheck = match (next_due, limited) {
            (Some(a), Some(b)) => Some(now + a.min(b)),
            (a, b) => a.or(b).map(|d| now + d),
        };
        Ok(Step { taken: n_taken, paused, recheck })
    }

    /// Runs one taken job in its own task.
    fn start(&mut self, taken: Taken, started: u64, tx: &mpsc::UnboundedSender<Ack>) -> Result<()> {
        let Taken { id, data, attempt, meta, group } = taken;
        let meta = Meta::parse(&meta)
            .ok_or_else(|| crate::Error::Reply(format!("job {id}: unreadable fixed facts {meta:?}")))?;
        let stored = self.options_of(&id, &meta);
        let max_attempts = meta.max_attempts;
        let parent: Option<Arc<str>> = stored.parent.as_deref().map(Arc::from);
        // A scheduler's job: its acknowledgement carries the next tick, computed when it is
        // sent (the server's time then is the take's plus what has passed since).
        let taken_at = Instant::now();
        let tick = stored.tick.clone().map(|tick| (tick, stored.clone()));
        let next_tick = move || {
            tick.as_ref().map_or_else(String::new, |(tick, stored)| {
                tick.advance(stored, started.saturating_add(taken_at.elapsed().as_millis() as u64))
            })
        };
        let ack = |kind, payload, delay, keep| Ack {
            kind,
            id: id.clone(),
            attempt,
            started,
            payload,
            delay,
            keep,
            logged: false,
            resend: false,
            tick: String::new(),
            group: Arc::clone(&group),
            parent: parent.clone(),
        };
        let decoded: T = match serde_json::from_slice(&data) {
            Ok(data) => data,
            Err(e) => {
                // A poison job: no attempt can succeed, so none is retried.
                tracing::warn!(job = %id, error = %e, queue = %self.inner.config.name, "queue worker: job data does not decode; dead-lettered");
                let dead = ack(
                    AckKind::Dead,
                    Bytes::from(format!("cannot decode job data: {e}")),
                    Duration::ZERO,
                    stored.keep_failed,
                );
                self.acks.push(Ack { tick: next_tick(), ..dead });
                return Ok(());
            }
        };
        let timeout = stored.timeout.map(Duration::from_millis);
        let job = Job {
            id: JobId(id.clone()),
            data: decoded,
            attempt,
            max_attempts,
            created_ms: meta.created_ms,
            group: (!group.is_empty()).then(|| group.to_string()),
            timeout,
            token: Arc::clone(&self.token),
            inner: Arc::clone(&self.inner),
            logged: Arc::default(),
            progressed: Arc::default(),
            discarded: Arc::default(),
            delayed: Arc::new(AtomicU64::new(NOT_DELAYED)),
        };
        let (logged, progressed, discarded, delayed) = (
            Arc::clone(&job.logged),
            Arc::clone(&job.progressed),
            Arc::clone(&job.discarded),
            Arc::clone(&job.delayed),
        );
        // A first attempt's success leaves the job hash for a record (see `record::Record`),
        // which holds all there is to know about it unless it has a log or progress.
        // (Not a flow's job: a parent's hash holds its children's outcomes, and a child's result
        // goes to its parent.)
        let record = (attempt == 1 && !stored.in_flow()).then(|| {
            let (token, created_ms, priority) = (Arc::clone(&self.token), meta.created_ms, meta.priority);
            move |result: &[u8]| {
                let record = Record {
                    finished_ms: 0,
                    expires_ms: 0,
                    token: &token,
                    attempt,
                    started_ms: started,
                    created_ms,
                    max_attempts,
                    priority,
                    data: &data,
                    result,
                };
                record.worker_part()
            }
        });
        let (handler, counters, tx) = (Arc::clone(&self.handler), Arc::clone(&self.counters), tx.clone());
        let done = ack(AckKind::Completed, Bytes::new(), Duration::ZERO, stored.keep_completed);
        let keep_failed = stored.keep_failed;
        let task = async move {
            let result = attempt_once(&*handler, job, timeout, &counters).await;
            let put_off = delayed.load(Relaxed);
            // A put-off job runs again as the same attempt, and that run moves its scheduler on.
            let tick = if put_off == NOT_DELAYED { next_tick() } else { String::new() };
            let done = Ack { logged: logged.load(Relaxed), tick, ..done };
            let ack = match result {
                // Put off by the handler, whatever it returned: the attempt does not count.
                _ if put_off != NOT_DELAYED => {
                    Ack { kind: AckKind::Delayed, delay: Duration::from_millis(put_off), ..done }
                }
                Ok(json) => match record.filter(|_| !done.logged && !progressed.load(Relaxed)) {
                    Some(record) => Ack { kind: AckKind::Kept, payload: record(&json), ..done },
                    None => Ack { payload: Bytes::from(json), ..done },
                },
                Err(error) if attempt < max_attempts && !discarded.load(Relaxed) => {
                    let delay = stored.backoff.delay(attempt, random_unit());
                    Ack { kind: AckKind::Failed, payload: Bytes::from(error), delay, keep: stored.keep_failed, ..done }
                }
                Err(error) => {
                    Ack { kind: AckKind::Dead, payload: Bytes::from(error), keep: stored.keep_failed, ..done }
                }
            };
            let _ = tx.send(ack);
        };
        let abort = tokio::spawn(task).abort_handle();
        self.running.insert(id, Running { attempt, started, keep_failed, group, parent, abort });
        Ok(())
    }

    /// The options a job was added with, or the queue's when it has none of its own (or they
    /// cannot be read).
    fn options_of(&self, id: &str, meta: &Meta<'_>) -> Stored {
        if meta.options.is_empty() {
            return self.inner.defaults.clone();
        }
        serde_json::from_str::<Stored>(meta.options).unwrap_or_else(|e| {
            tracing::warn!(job = %id, error = %e, "queue worker: unreadable job options; using the queue's");
            self.inner.defaults.clone()
        })
    }

    /// Renews the lane's lease; on finding it lost, starts over.
    async fn renew(&mut self) {
        if !self.registered {
            return;
        }
        let args = renew::RenewArg::ALL.iter().map(|arg| match arg {
            renew::RenewArg::LeaseMs => Arg::from(millis(self.options.lease)),
            renew::RenewArg::Tokens => Arg::from(&*self.token),
        });
        match renew::SCRIPT.run(&self.inner, args).await.and_then(|v| Ok(v.into_array()?)) {
            Ok(lost) if lost.is_empty() => {}
            Ok(_) => self.lose_lease(),
            Err(e) => {
                self.counters.redis_errors.bump();
                tracing::warn!(error = %e, queue = %self.inner.config.name, "queue worker: lease renewal failed; retrying");
            }
        }
    }

    /// At the shutdown deadline: cancels what still runs and hands it back to the queue.
    fn release_all(&mut self) {
        for (id, running) in self.running.drain() {
            running.abort.abort();
            self.acks.push(Ack {
                kind: AckKind::Released,
                id,
                attempt: running.attempt,
                started: running.started,
                payload: Bytes::new(),
                delay: Duration::ZERO,
                keep: running.keep_failed,
                logged: false,
                resend: false,
                tick: String::new(),
                group: running.group,
                parent: running.parent,
            });
        }
    }
}

/// Runs one attempt of `job`: its result as JSON, or why it failed (the handler's error, a panic,
/// the timeout), counting panics and timeouts.
async fn attempt_once<T, F, Fut, R, E>(
    handler: &F,
    job: Job<T>,
    timeout: Option<Duration>,
    counters: &Counters,
) -> std::result::Result<Vec<u8>, String>
where
    F: Fn(Job<T>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Serialize,
    E: fmt::Display,
{
    // Timed only for the metrics facade.
    let (created_ms, started) = (job.created_ms, metrics::ENABLED.then(Instant::now));
    let run = AssertUnwindSafe(handler(job)).catch_unwind();
    let outcome = match timeout {
        Some(limit) => tokio::time::timeout(limit, run).await.ok(),
        None => Some(run.await),
    };
    if let Some(started) = started {
        counters.timed(created_ms, started.elapsed());
    }
    match outcome {
        Some(Ok(Ok(value))) => serde_json::to_vec(&value).map_err(|e| format!("cannot encode the result: {e}")),
        Some(Ok(Err(e))) => Err(e.to_string()),
        Some(Err(panic)) => {
            counters.panicked.bump();
            Err(format!("handler panicked: {}", panic_message(&*panic)))
        }
        None => {
            counters.timed_out.bump();
            Err(format!("timed out after {:?}", timeout.unwrap_or_default()))
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned())
}

/// A uniform number in `0.0..1.0` for backoff jitter (0 if the OS generator fails).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
