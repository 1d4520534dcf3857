//! A move off BullMQ: the jobs a BullMQ queue has not run yet (waiting, prioritized, delayed,
//! paused), read from its Redis layout and added to a redtail queue with their ids, data,
//! attempts and the attempts already made, priorities and due times. BullMQ's keys are only
//! read, never changed: run the import while no BullMQ worker runs, check, then delete them
//! yourself.
//!
//! BullMQ's layout (5.x): `<prefix>:<queue>:wait` and `:paused` (lists, newest first),
//! `:prioritized` (sorted set, highest priority first), `:delayed` (sorted set scored
//! `due ms × 4096 + a counter`), and a hash per job `<prefix>:<queue>:<id>` with `data` (JSON),
//! `opts` (JSON: `attempts`, `backoff`, `priority`), `priority` and `atm` (attempts made).
//! Every read is a single-key command, so the import works wherever BullMQ's keys can be read:
//! standalone, sentinel, and a cluster (where BullMQ itself needs a prefix with a hash tag).

use std::time::Duration;

use redtail_core::{Arg, Cmd, Key, Value};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    Backoff, JobOptions, MAX_DURATION, MAX_PRIORITY, Queue, Result,
    config::validate_import_id,
    record,
    script::add::{EncodedJob, JobField},
};

/// Where a BullMQ job waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BullmqState {
    /// In `wait`.
    Waiting,
    /// In `paused` (a paused BullMQ queue of a version that kept such a list).
    Paused,
    /// In `prioritized`.
    Prioritized,
    /// In `delayed` (a delay, or a retry's backoff).
    Delayed,
}

/// One job the import found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BullmqJob {
    /// Its id, kept.
    pub id: String,
    /// Where it waited.
    pub state: BullmqState,
    /// Attempts allowed in all, and already made.
    pub attempts: u32,
    /// Attempts it made in BullMQ (a job waiting out a retry's backoff made some).
    pub attempts_made: u32,
    /// Its priority in redtail (BullMQ's 1, the highest, becomes redtail's highest).
    pub priority: u32,
    /// When a delayed job is due (ms since the epoch).
    pub due_ms: Option<u64>,
    /// Why it cannot be imported (its data does not decode as the queue's type, an id redtail
    /// cannot keep); such jobs are left out and stay in BullMQ.
    pub refused: Option<String>,
}

/// What an import found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BullmqImport {
    /// Every job found, in the order they would have run within each state.
    pub jobs: Vec<BullmqJob>,
    /// Jobs added to the redtail queue (0 for a dry run).
    pub added: u64,
    /// Jobs already there under the same id (an import run twice adds nothing twice).
    pub existing: u64,
}

/// The part of BullMQ's `opts` the import keeps.
#[derive(Debug, Default, Deserialize)]
struct BullOptions {
    attempts: Option<u32>,
    backoff: Option<BullBackoff>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BullBackoff {
    Fixed(u64),
    Typed {
        #[serde(rename = "type")]
        kind: String,
        delay: Option<u64>,
    },
}

impl BullBackoff {
    fn to_redtail(&self) -> Option<Backoff> {
        let ms = |d: u64| Duration::from_millis(d).min(MAX_DURATION);
        match self {
            BullBackoff::Fixed(delay) => Some(Backoff::Fixed { delay: ms(*delay), jitter: 0.0 }),
            BullBackoff::Typed { kind, delay } => match kind.as_str() {
                "fixed" => Some(Backoff::Fixed { delay: ms(delay.unwrap_or(0)), jitter: 0.0 }),
                "exponential" => {
                    Some(Backoff::Exponential { base: ms(delay.unwrap_or(0)), max: MAX_DURATION, jitter: 0.0 })
                }
                // A custom backoff strategy lives in BullMQ's worker code: the queue's is used.
                _ => None,
            },
        }
    }
}

/// How many jobs one add script call takes.
const BATCH: usize = 500;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Imports the jobs the BullMQ queue `queue` (keys under `prefix`, BullMQ's default being
    /// `bull`) has not run yet; with `dry_run`, only lists them. See the module's docs for the
    /// layout read and what is kept. Jobs whose data does not decode as `T` are listed as
    /// refused and left in BullMQ.
    pub async fn import_bullmq(&self, prefix: &str, queue: &str, dry_run: bool) -> Result<BullmqImport> {
        let backend = &self.inner.backend;
        let key = |suffix: &str| Key::from_raw(format!("{prefix}:{queue}:{suffix}"));
        let list = |suffix: &str| Cmd::new("LRANGE").key(&key(suffix)).arg(0).arg(-1);
        let now = self.inner.config.clock.now_ms();
        let mut found: Vec<(String, BullmqState, Option<u64>)> = Vec::new();
        for (suffix, state) in [("wait", BullmqState::Waiting), ("paused", BullmqState::Paused)] {
            let ids = strings(backend.call(list(suffix)).await?)?;
            // Newest first: BullMQ pushes on the left and takes from the right.
            found.extend(ids.into_iter().rev().map(|id| (id, state, None)));
        }
        let prioritized = Cmd::new("ZRANGE").key(&key("prioritized")).arg(0).arg(-1);
        found.extend(
            strings(backend.call(prioritized).await?)?.into_iter().map(|id| (id, BullmqState::Prioritized, None)),
        );
        let delayed =
            strings(backend.call(Cmd::new("ZRANGE").key(&key("delayed")).arg(0).arg(-1).arg("WITHSCORES")).await?)?;
        for pair in delayed.chunks(2) {
            if let [id, score] = pair {
                let due = score.parse::<f64>().map_or(now, |s| (s / 4096.0) as u64);
                found.push((id.clone(), BullmqState::Delayed, Some(due)));
            }
        }

        let mut report = BullmqImport::default();
        let mut batch: Vec<EncodedJob> = Vec::new();
        for (id, state, due_ms) in found {
            let fields = backend.call(Cmd::new("HGETALL").key(&key(&id))).await?;
            let (job, encoded) = self.convert(id, state, due_ms, fields, now)?;
            report.jobs.push(job);
            if let Some(encoded) = encoded.filter(|_| !dry_run) {
                batch.push(encoded);
                if batch.len() == BATCH {
                    self.add_imported(&mut batch, &mut report).await?;
                }
            }
        }
        self.add_imported(&mut batch, &mut report).await?;
        Ok(report)
    }

    /// One BullMQ job as the import lists it, and its add when it can be imported.
    fn convert(
        &self,
        id: String,
        state: BullmqState,
        due_ms: Option<u64>,
        fields: Value,
        now: u64,
    ) -> Result<(BullmqJob, Option<EncodedJob>)> {
        let hash = record::pairs(fields)?
            .into_iter()
            .map(|(k, v)| Ok((k.into_string()?, v.into_bytes()?)))
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        let text = |name: &str| hash.get(name).map(|v| String::from_utf8_lossy(v).into_owned());
        let options: BullOptions = text("opts").and_then(|o| serde_json::from_str(&o).ok()).unwrap_or_default();
        let attempts_made = text("atm").and_then(|a| a.parse().ok()).unwrap_or(0u32);
        let attempts = options.attempts.unwrap_or(1).max(attempts_made + 1);
        let bull_priority = text("priority").and_then(|p| p.parse::<u64>().ok()).unwrap_or(0);
        let priority = match bull_priority {
            0 => 0,
            p => MAX_PRIORITY + 1 - u32::try_from(p).unwrap_or(MAX_PRIORITY).min(MAX_PRIORITY),
        };
        let mut job = BullmqJob { id: id.clone(), state, attempts, attempts_made, priority, due_ms, refused: None };
        let data = match hash.get("data").map(|d| serde_json::from_slice::<T>(d)) {
            None => Err("it has no data (its hash is gone)".to_owned()),
            Some(Err(e)) => Err(format!("its data does not decode: {e}")),
            Some(Ok(data)) => validate_import_id(&id).map(|()| data).map_err(|e| e.to_string()),
        };
        let data = match data {
            Ok(data) => data,
            Err(reason) => {
                job.refused = Some(reason);
                return Ok((job, None));
            }
        };
        let mut add = JobOptions::default().attempts(attempts).priority(priority);
        if let Some(backoff) = options.backoff.as_ref().and_then(BullBackoff::to_redtail) {
            add = add.backoff(backoff);
        }
        if let Some(due) = due_ms.filter(|due| *due > now) {
            add = add.delay(Duration::from_millis(due - now).min(MAX_DURATION));
        }
        let mut encoded = self.encode_made(&data, &add, attempts_made)?;
        // BullMQ's ids are numbers, which adds refuse as custom ids: the add script moves the
        // queue's id counter past them.
        encoded.fields[JobField::Id.at()] = Arg::from(id.as_str());
        Ok((job, Some(encoded)))
    }

    async fn add_imported(&self, batch: &mut Vec<EncodedJob>, report: &mut BullmqImport) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        for added in self.add_batch(batch).await? {
            if added.created {
                report.added += 1;
            } else {
                report.existing += 1;
            }
        }
        batch.clear();
        Ok(())
    }
}

fn strings(value: Value) -> Result<Vec<String>> {
    value.into_array()?.into_iter().map(|v| Ok(v.into_string()?)).collect()
}
