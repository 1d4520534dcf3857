//! Flows: trees of jobs in which a parent runs after its children, with their results.
//!
//! A parent is added waiting for its children (`JobState::WaitingChildren`), its hash holding
//! an entry per child. A child's outcome reaches its parent as a notice: the script that
//! finishes the child writes it to its queue's outbox in the same call, and that queue's
//! workers relay it ([`relay`]) to `lua/settle.lua` on the parent's queue, which applies it only
//! while the parent's entry says pending. Delivery is at least once (a notice leaves the
//! outbox only after it was applied), application exactly once; ARCHITECTURE.md has the
//! invariants.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use redtail_core::{Arg, Cmd};
use serde::Serialize;

use crate::{
    Error, Job, JobId, JobInfo, JobOptions, JobState, Queue, Result,
    config::Stored,
    queue::{Inner, millis},
    script::{
        OutcomeCode, QueueKey,
        add::{EncodedJob, JobField},
        settle::{self, PolicyCode, SettleArg},
    },
};

/// Jobs one flow may hold.
pub const MAX_FLOW_JOBS: usize = 1000;

/// How deep a flow may be (a root with children is 2 levels).
pub const MAX_FLOW_DEPTH: usize = 32;

/// How long a flow whose jobs go to more than one queue has to be fully added: a parent still
/// waiting for children that were never added (its producer stopped midway) fails after it.
const ADD_DEADLINE: Duration = Duration::from_secs(60);

/// Notices relayed per read of an outbox.
const RELAY_BATCH: i64 = 100;

/// What a child's failure (its last attempt failed, or it died with its worker) does to its
/// parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChildFailure {
    /// The parent fails too: it is dead-lettered with `child <queue>:<id> failed: <error>`, and
    /// its other children run on. The default.
    #[default]
    FailParent,
    /// The parent runs anyway once its other children are done, and sees the failure
    /// ([`ChildOutcome::Ignored`]).
    Ignore,
    /// The dependency is removed: the parent runs without it, as if it had never had it.
    Remove,
}

/// One job of a flow, with its children: built, then added whole with [`FlowJob::add`].
///
/// ```no_run
/// # async fn demo(downloads: redtail_queue::Queue<String>, notify: redtail_queue::Queue<u64>) -> redtail_queue::Result<()> {
/// use redtail_queue::FlowJob;
/// let flow = FlowJob::new(&notify, &42)?
///     .child(FlowJob::new(&downloads, &"https://example.com/a".to_owned())?)
///     .child(FlowJob::new(&downloads, &"https://example.com/b".to_owned())?);
/// let added = flow.add().await?;
/// println!("parent {} waits for {} children", added.id, added.children.len());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FlowJob {
    queue: Arc<Inner>,
    data: Vec<u8>,
    options: JobOptions,
    on_failure: ChildFailure,
    children: Vec<FlowJob>,
}

/// The ids a flow was added with, as a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowNode {
    /// The job's queue.
    pub queue: String,
    /// Its id.
    pub id: JobId,
    /// Its children, in the order they were given.
    pub children: Vec<FlowNode>,
}

/// A flow as it stands ([`Queue::flow`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowTree {
    /// The job's queue.
    pub queue: String,
    /// Its id.
    pub id: JobId,
    /// The job, or `None` when it is gone (deleted, or past its retention).
    pub job: Option<JobInfo>,
    /// Its children as its hash records them (none once it is gone), each read from its queue.
    pub children: Vec<(ChildOutcome, FlowTree)>,
}

/// A child of a parent, as the parent sees it ([`Job::children`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Child {
    /// The child's queue.
    pub queue: String,
    /// Its id.
    pub id: JobId,
    /// What became of it.
    pub outcome: ChildOutcome,
}

/// What became of a child, as its parent records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", content = "value", rename_all = "snake_case")]
pub enum ChildOutcome {
    /// Not finished.
    Pending,
    /// Completed with this result.
    Completed(serde_json::Value),
    /// Failed for good with this error, failing the parent ([`ChildFailure::FailParent`]).
    Failed(String),
    /// Failed for good with this error, which the parent ignores ([`ChildFailure::Ignore`]).
    Ignored(String),
}

impl Child {
    /// The child's result as an `R`: `None` unless it completed.
    pub fn result<R: serde::de::DeserializeOwned>(&self) -> Result<Option<R>> {
        match &self.outcome {
            ChildOutcome::Completed(value) => Ok(Some(R::deserialize(value).map_err(Error::Decode)?)),
            _ => Ok(None),
        }
    }
}

impl FlowJob {
    /// A job for `queue` with `data` and the queue's default options, with no children yet.
    /// The data is encoded now: [`Error::Encode`] if it cannot be.
    pub fn new<T: Serialize>(queue: &Queue<T>, data: &T) -> Result<FlowJob> {
        Ok(FlowJob {
            queue: Arc::clone(&queue.inner),
            data: serde_json::to_vec(data).map_err(Error::Encode)?,
            options: queue.inner.config.defaults.clone(),
            on_failure: ChildFailure::default(),
            children: Vec::new(),
        })
    }

    /// The job's own options. A flow's job takes no deduplication, and a parent no delay.
    #[must_use]
    pub fn options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }

    /// What this job's failure does to its parent (for the root: nothing).
    #[must_use]
    pub fn on_failure(mut self, policy: ChildFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Adds a child: this job runs only after it (and every other child) has finished.
    #[must_use]
    pub fn child(mut self, child: FlowJob) -> Self {
        self.children.push(child);
        self
    }

    /// Adds the whole flow: every child before its parent may run, and the parent once all its
    /// children have finished. A flow in one queue is added in one script call, atomically.
    /// One over several queues is added level by level, parents first; if the producer stops
    /// midway, the parents left waiting for children never added fail after a minute.
    ///
    /// The flow's queues must share a namespace and a Redis (each child tells its parent's
    /// queue, by name, in that namespace). [`Error::InvalidInput`] for more than
    /// [`MAX_FLOW_JOBS`] jobs or [`MAX_FLOW_DEPTH`] levels, a job with a deduplication id, a
    /// parent with a delay, an id used twice, or a job whose id exists (nothing is added then,
    /// for a flow in one queue).
    pub async fn add(self) -> Result<FlowNode> {
        let mut flat = flatten(self)?;
        assign_ids(&mut flat).await?;
        let encoded = flat.iter().map(|job| encode(&flat, job)).collect::<Result<Vec<_>>>()?;
        let root = &flat[0].queue;
        let one_call = flat.iter().all(|job| job.queue.config.name == root.config.name);
        if one_call {
            let all: Vec<usize> = (0..flat.len()).collect();
            add_part(&flat, &encoded, &all, None).await?;
        } else {
            // Level by level, so that a parent exists before any child can finish; then each
            // queue's parents are confirmed, ending their deadlines.
            let depth = flat.iter().map(|job| job.depth).max().unwrap_or(0);
            for level in 0..=depth {
                let mut queues: Vec<&str> = flat.iter().filter(|j| j.depth == level).map(|j| j.name()).collect();
                queues.sort_unstable();
                queues.dedup();
                for queue in queues {
                    let part: Vec<usize> =
                        (0..flat.len()).filter(|&i| flat[i].depth == level && flat[i].name() == queue).collect();
                    add_part(&flat, &encoded, &part, Some(ADD_DEADLINE)).await?;
                }
            }
            let mut parents: HashMap<&str, (Arc<Inner>, Vec<&str>)> = HashMap::new();
            for job in flat.iter().filter(|j| !j.children.is_empty()) {
                let entry = parents.entry(job.name()).or_insert_with(|| (Arc::clone(&job.queue), Vec::new()));
                entry.1.push(&job.id);
            }
            for (inner, ids) in parents.into_values() {
                inner.add(&[], Some(serde_json::json!({ "c": ids }).to_string())).await?;
            }
        }
        Ok(tree_of(&flat, 0))
    }
}

/// A flow's job, numbered in the order parents before children.
struct Flat {
    queue: Arc<Inner>,
    data: Vec<u8>,
    options: JobOptions,
    on_failure: ChildFailure,
    depth: usize,
    parent: Option<usize>,
    children: Vec<usize>,
    id: String,
}

impl Flat {
    fn name(&self) -> &str {
        &self.queue.config.name
    }

    /// `<queue>:<id>`, as a parent names a child and a child its parent.
    fn reference(&self) -> String {
        format!("{}:{}", self.name(), self.id)
    }
}

/// The flow's jobs, parents before children, checked.
fn flatten(root: FlowJob) -> Result<Vec<Flat>> {
    let namespace = root.queue.config.namespace.clone();
    let mut flat: Vec<Flat> = Vec::new();
    let mut stack = vec![(root, None, 0)];
    while let Some((job, parent, depth)) = stack.pop() {
        if flat.len() == MAX_FLOW_JOBS {
            return Err(Error::InvalidInput(format!("a flow holds at most {MAX_FLOW_JOBS} jobs")));
        }
        if depth >= MAX_FLOW_DEPTH {
            return Err(Error::InvalidInput(format!("a flow is at most {MAX_FLOW_DEPTH} levels deep")));
        }
        let FlowJob { queue, data, options, on_failure, children } = job;
        if queue.config.namespace != namespace {
            return Err(Error::InvalidInput(format!(
                "queue {} is in another namespace than the flow's root: a flow's queues share one",
                queue.config.name
            )));
        }
        options.validate()?;
        if options.dedup.is_some() {
            return Err(Error::InvalidInput("a flow's job takes no deduplication".to_owned()));
        }
        if !children.is_empty() && !options.delay.is_zero() {
            return Err(Error::InvalidInput(
                "a flow's parent takes no delay: it runs when its children are done".to_owned(),
            ));
        }
        let at = flat.len();
        if let Some(parent) = parent {
            let parent: &mut Flat = &mut flat[parent];
            parent.children.push(at);
        }
        let id = options.id.clone().unwrap_or_default();
        flat.push(Flat { queue, data, options, on_failure, depth, parent, children: Vec::new(), id });
        // Reversed onto the stack, so children are numbered in the order given.
        for child in children.into_iter().rev() {
            stack.push((child, Some(at), depth + 1));
        }
    }
    Ok(flat)
}

/// Gives every job without a custom id the next of its queue's numbers (one round trip per
/// queue), and checks that no id is used twice.
async fn assign_ids(flat: &mut [Flat]) -> Result<()> {
    let mut wanted: HashMap<String, (Arc<Inner>, i64)> = HashMap::new();
    for job in flat.iter().filter(|j| j.id.is_empty()) {
        wanted.entry(job.name().to_owned()).or_insert_with(|| (Arc::clone(&job.queue), 0)).1 += 1;
    }
    let mut next: HashMap<String, i64> = HashMap::new();
    for (name, (inner, n)) in wanted {
        let last = inner.backend.call(Cmd::new("INCRBY").key(inner.key(QueueKey::Id)).arg(n)).await?.as_int()?;
        next.insert(name, last - n + 1);
    }
    let mut seen = std::collections::HashSet::new();
    for job in flat.iter_mut() {
        if job.id.is_empty() {
            let id = next
                .get_mut(job.queue.config.name.as_str())
                .ok_or_else(|| Error::Reply(format!("no id was reserved for queue {}", job.queue.config.name)))?;
            job.id = id.to_string();
            *id += 1;
        }
        if !seen.insert(job.reference()) {
            return Err(Error::InvalidInput(format!("job {} appears twice in the flow", job.reference())));
        }
    }
    Ok(())
}

/// One job's fields: its id set, and its place in the flow kept with its options.
fn encode(flat: &[Flat], job: &Flat) -> Result<EncodedJob> {
    let stored = Stored {
        parent: job.parent.map(|p| flat[p].reference()),
        has_children: !job.children.is_empty(),
        ..Stored::of(&job.options)
    };
    let mut encoded = job.queue.encode(job.data.clone(), &job.options, 0, Some(stored))?;
    // (A number reserved from the queue's counter, which a custom id may not be.)
    encoded.fields[JobField::Id.at()] = Arg::from(job.id.as_str());
    Ok(encoded)
}

/// Adds the jobs `part` (all of one queue), parents with a deadline when `deadline`.
async fn add_part(flat: &[Flat], encoded: &[EncodedJob], part: &[usize], deadline: Option<Duration>) -> Result<()> {
    let Some(&first) = part.first() else { return Ok(()) };
    let inner = &flat[first].queue;
    let mut parents = serde_json::Map::new();
    for (n, &i) in part.iter().enumerate() {
        let job = &flat[i];
        if job.children.is_empty() {
            continue;
        }
        let deps: Vec<[String; 2]> = job
            .children
            .iter()
            .map(|&c| [flat[c].reference(), PolicyCode::of(flat[c].on_failure).code().to_owned()])
            .collect();
        let keep = job.options.keep_failed;
        let fk = format!("{} {} {}", millis(keep.age), keep.count, job.queue.config.events_cap);
        let t = deadline.map_or(0, millis);
        parents.insert(n.to_string(), serde_json::json!({ "d": deps, "k": fk, "t": t }));
    }
    let flow = serde_json::json!({ "p": parents }).to_string();
    let jobs: Vec<EncodedJob> = part.iter().map(|&i| encoded[i].clone()).collect();
    let added = inner.add(&jobs, Some(flow)).await?;
    if let Some(taken) = added.iter().find(|a| !a.created) {
        return Err(Error::InvalidInput(format!("job {}:{} already exists", inner.config.name, taken.id)));
    }
    Ok(())
}

fn tree_of(flat: &[Flat], at: usize) -> FlowNode {
    let job = &flat[at];
    FlowNode {
        queue: job.name().to_owned(),
        id: JobId(job.id.clone()),
        children: job.children.iter().map(|&c| tree_of(flat, c)).collect(),
    }
}

/// The children a parent's hash records, in no particular order.
async fn children_of(inner: &Inner, id: &str) -> Result<Vec<Child>> {
    let fields = inner.backend.call(Cmd::new("HGETALL").key(&inner.job_key(id))).await?;
    let mut children = Vec::new();
    for pair in fields.into_array()?.chunks(2) {
        let [field, value] = pair else { return Err(Error::Reply("a job hash of odd length".to_owned())) };
        let field = field.clone().into_string()?;
        let Some(reference) = field.strip_prefix("k:") else { continue };
        let (queue, child) = split_reference(reference)?;
        let value = value.clone().into_string()?;
        let (code, rest) = value.split_at(value.len().min(2));
        let outcome = match code {
            "p " => ChildOutcome::Pending,
            "c " => ChildOutcome::Completed(
                serde_json::from_str(rest).unwrap_or(serde_json::Value::String(rest.to_owned())),
            ),
            "f " => ChildOutcome::Failed(rest.to_owned()),
            "i " => ChildOutcome::Ignored(rest.to_owned()),
            _ => return Err(Error::Reply(format!("job {id}: unreadable child entry {value:?}"))),
        };
        children.push(Child { queue: queue.to_owned(), id: JobId(child.to_owned()), outcome });
    }
    children.sort_by(|a, b| (&a.queue, &a.id).cmp(&(&b.queue, &b.id)));
    Ok(children)
}

/// `<queue>:<id>` split (queue names hold no `:`).
fn split_reference(reference: &str) -> Result<(&str, &str)> {
    reference.split_once(':').ok_or_else(|| Error::Reply(format!("unreadable job reference {reference:?}")))
}

impl<T> Job<T> {
    /// This job's children, when it is a flow's parent ([`FlowJob`]): each with its result,
    /// or its error when it failed and its policy let this job run. Children whose dependency
    /// was removed ([`ChildFailure::Remove`], or deleted) are not listed.
    pub async fn children(&self) -> Result<Vec<Child>> {
        children_of(&self.inner, self.id.as_str()).await
    }
}

impl<T> Queue<T> {
    /// The flow under job `id` of this queue: the job and its descendants, each read from its
    /// queue, one level per round trip per job. `None` when there is no such job.
    pub async fn flow(&self, id: &str) -> Result<Option<FlowTree>> {
        crate::config::validate_name("a job id", id)?;
        let tree = read_tree(Arc::clone(&self.inner), id.to_owned(), 0).await?;
        Ok(tree.job.is_some().then_some(tree))
    }

    /// Removes the unfinished jobs of the flow under job `id`: parents before their children,
    /// so that no parent is released by a removal. A job running now is left to finish (its
    /// parent is gone, so its outcome goes nowhere); completed and dead jobs stay to their
    /// retention. Returns how many jobs were removed.
    pub async fn remove_flow(&self, id: &str) -> Result<u64> {
        let Some(tree) = self.flow(id).await? else { return Ok(0) };
        let mut removed = 0;
        let mut stack = vec![&tree];
        while let Some(node) = stack.pop() {
            let unfinished =
                node.job.as_ref().is_some_and(|job| !matches!(job.state, JobState::Completed | JobState::Dead));
            if unfinished {
                let queue: Queue<()> = Queue::of(self.inner.sibling(&node.queue)?);
                match queue.delete(node.id.as_str()).await {
                    Ok(true) => removed += 1,
                    Ok(false) | Err(Error::Busy(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            stack.extend(node.children.iter().map(|(_, child)| child));
        }
        Ok(removed)
    }
}

fn read_tree(inner: Arc<Inner>, id: String, depth: usize) -> Pin<Box<dyn Future<Output = Result<FlowTree>> + Send>> {
    Box::pin(async move {
        let queue: Queue<()> = Queue::of(Arc::clone(&inner));
        let job = queue.get(&id).await?;
        let mut children = Vec::new();
        if job.is_some() && depth < MAX_FLOW_DEPTH {
            for child in children_of(&inner, &id).await? {
                let tree = read_tree(inner.sibling(&child.queue)?, child.id.0.clone(), depth + 1).await?;
                children.push((child.outcome, tree));
            }
        }
        Ok(FlowTree { queue: inner.config.name.clone(), id: JobId(id), job, children })
    })
}

/// Relays `inner`'s outbox: each notice to its parent's queue (`lua/settle.lua`), then out of
/// the outbox. A notice that cannot be read (or names no valid queue) is dropped with a
/// warning; one that the server refuses to apply (a parent's hash that is not a hash) is left
/// with a warning, and the others are relayed; while Redis cannot be reached, the rest waits
/// for the next relay. Returns how many notices were relayed.
pub(crate) async fn relay(inner: &Arc<Inner>) -> Result<usize> {
    let outbox = inner.key(QueueKey::Outbox);
    let mut relayed = 0;
    loop {
        let notices = inner.backend.call(Cmd::new("LRANGE").key(outbox).arg(0).arg(RELAY_BATCH - 1)).await?;
        let notices = notices.into_array()?;
        let (full, mut left) = (notices.len() as i64 == RELAY_BATCH, false);
        for notice in notices {
            let notice = notice.into_bytes()?;
            let applied = match Notice::parse(&notice) {
                Some(n) => match inner.sibling(n.parent_queue) {
                    Ok(parent) => settle(inner, &parent, &n).await,
                    Err(e) => Err(e),
                },
                None => Err(Error::Reply("unreadable".to_owned())),
            };
            match applied {
                Ok(()) => {}
                Err(Error::Redis(e)) if e.is_unavailable() => return Err(Error::Redis(e)),
                Err(Error::Redis(e)) => {
                    tracing::warn!(queue = %inner.config.name, error = %e, "queue: a flow notice was refused; left in the outbox");
                    left = true;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(queue = %inner.config.name, error = %e, "queue: a flow notice that cannot be relayed was dropped");
                }
            }
            inner.backend.call(Cmd::new("LREM").key(outbox).arg(1).arg(notice)).await?;
            relayed += 1;
        }
        // (A batch with a notice left behind would be read again: the next relay goes on.)
        if !full || left {
            return Ok(relayed);
        }
    }
}

/// Applies notice `n` of `inner`'s outbox to its parent, in queue `parent`.
async fn settle(inner: &Inner, parent: &Inner, n: &Notice<'_>) -> Result<()> {
    let child = format!("{}:{}", inner.config.name, n.child);
    let args = SettleArg::ALL.iter().map(|arg| match arg {
        SettleArg::Parent => Arg::from(n.parent),
        SettleArg::Child => Arg::from(child.as_str()),
        SettleArg::Outcome => Arg::from(n.outcome),
        SettleArg::Payload => Arg::from(n.payload),
    });
    settle::SCRIPT.run(parent, args).await?;
    Ok(())
}

/// A notice in an outbox: `<parent queue>:<parent id> <child id> <outcome>\n<payload>` (see
/// `flows()` in `lua/lib.lua`).
struct Notice<'a> {
    parent_queue: &'a str,
    parent: &'a str,
    child: &'a str,
    outcome: &'a str,
    payload: &'a [u8],
}

impl<'a> Notice<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Notice<'a>> {
        let newline = bytes.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..newline]).ok()?;
        let mut parts = head.split(' ');
        let (parent_ref, child, outcome) = (parts.next()?, parts.next()?, parts.next()?);
        let (parent_queue, parent) = parent_ref.split_once(':')?;
        OutcomeCode::ALL.iter().any(|code| code.code() == outcome).then_some(())?;
        Some(Notice { parent_queue, parent, child, outcome, payload: &bytes[newline + 1..] })
    }
}
