//! `QueueEvents`: a listener on a queue's capped event stream that resumes where it left off.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use redtail_core::{Backend, Cmd, Key, Value};
use serde::Serialize;

use crate::{Error, JobId, Result};

/// Where a [`QueueEvents`] listener starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// With events added after the listener was made.
    Now,
    /// With the oldest event the stream still holds.
    Beginning,
    /// After the event with this stream id (one a previous listener saw last).
    After(String),
}

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventKind {
    /// Added to the queue.
    Added,
    /// Ready to run again (a delay ended, or a dead job was retried).
    Waiting,
    /// Taken by a worker.
    Active,
    /// Progress reported; `data` holds it as JSON.
    Progress,
    /// Completed.
    Completed,
    /// An attempt failed; `data` holds the error.
    Failed,
    /// Will run again; `data` holds the delay in ms.
    Retrying,
    /// Its worker's lease ran out; it runs again or is dead-lettered.
    Stalled,
    /// Dead-lettered: every attempt failed.
    Dead,
    /// Deleted by `delete`, `drain` or `clean`.
    Removed,
    /// The queue was paused (the job id is `-`).
    Paused,
    /// The queue was resumed (the job id is `-`).
    Resumed,
}

impl EventKind {
    fn parse(name: &[u8]) -> Option<EventKind> {
        Some(match name {
            b"added" => EventKind::Added,
            b"waiting" => EventKind::Waiting,
            b"active" => EventKind::Active,
            b"progress" => EventKind::Progress,
            b"completed" => EventKind::Completed,
            b"failed" => EventKind::Failed,
            b"retrying" => EventKind::Retrying,
            b"stalled" => EventKind::Stalled,
            b"dead" => EventKind::Dead,
            b"removed" => EventKind::Removed,
            b"paused" => EventKind::Paused,
            b"resumed" => EventKind::Resumed,
            _ => return None,
        })
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueEvent {
    /// The stream entry's id; events of one batch (say, jobs completed together) share it.
    pub stream_id: String,
    /// What happened.
    pub kind: EventKind,
    /// To which job.
    pub job: JobId,
    /// Progress, error or delay, by kind.
    pub data: Option<String>,
}

/// Reads a queue's events in order, from [`Queue::events`](crate::Queue::events).
///
/// The stream is capped (`events_cap`), so a listener that falls far behind misses the oldest.
/// Reads block on the backend's connection for blocking commands; after a Redis error the
/// listener waits (up to 2 s, growing) and continues after the last event it returned.
#[derive(Debug)]
pub struct QueueEvents {
    backend: Arc<dyn Backend>,
    key: Key,
    last: String,
    buffer: VecDeque<QueueEvent>,
}

impl QueueEvents {
    pub(crate) async fn new(backend: Arc<dyn Backend>, key: Key, start: Start) -> Result<Self> {
        let last = match start {
            Start::Beginning => "0-0".to_owned(),
            Start::After(id) => id,
            Start::Now => {
                // The newest id now, rather than `$` at each read, so nothing between reads is lost.
                let cmd = Cmd::new("XREVRANGE").key(&key).arg("+").arg("-").arg("COUNT").arg(1);
                match backend.call(cmd).await?.into_array()?.into_iter().next() {
                    Some(entry) => entry_id(entry)?,
                    None => "0-0".to_owned(),
                }
            }
        };
        Ok(QueueEvents { backend, key, last, buffer: VecDeque::new() })
    }

    /// The stream id of the last event read, to resume from with [`Start::After`].
    pub fn position(&self) -> &str {
        &self.last
    }

    /// The next event, waiting as long as it takes. Redis errors are retried; an error is
    /// returned only for a stream entry that cannot be read.
    pub async fn next(&mut self) -> Result<QueueEvent> {
        let mut pause = Duration::from_millis(100);
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(event);
            }
            match self.read().await {
                Ok(()) => pause = Duration::from_millis(100),
                Err(Error::Redis(e)) => {
                    tracing::warn!(error = %e, "queue events: read failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn read(&mut self) -> Result<()> {
        let cmd = Cmd::new("XREAD").arg("COUNT").arg(500).arg("BLOCK").arg(1000).arg("STREAMS");
        let cmd = cmd.key(&self.key).arg(self.last.as_str());
        let reply = self.backend.blocking(cmd).await?;
        let streams = match reply {
            Value::Nil => return Ok(()),
            Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
            other => other
                .into_array()?
                .into_iter()
                .map(|stream| {
                    stream.into_array()?.pop().ok_or(redtail_core::Error::UnexpectedReply {
                        expected: "a stream and its entries",
                        got: "an empty array".to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        for entries in streams {
            for entry in entries.into_array()? {
                let mut parts = entry.into_array()?.into_iter();
                let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                    return Err(Error::Reply("a stream entry without id or fields".to_owned()));
                };
                let id = id.into_string()?;
                self.expand(&id, fields)?;
                self.last = id;
            }
        }
        Ok(())
    }

    /// One stream entry may name several jobs; it becomes one event per job.
    fn expand(&mut self, id: &str, fields: Value) -> Result<()> {
        let (mut kind, mut jobs, mut data) = (None, String::new(), None);
        let flat = match fields {
            Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => other.into_array()?,
        };
        let mut it = flat.into_iter();
        while let (Some(field), Some(value)) = (it.next(), it.next()) {
            match &field.into_bytes()?[..] {
                b"e" => kind = EventKind::parse(&value.into_bytes()?),
                b"j" => jobs = value.into_string()?,
                b"d" => data = Some(value.into_string()?),
                _ => {}
            }
        }
        // Kinds from a newer version of this crate are skipped.
        if let Some(kind) = kind {
            for job in jobs.split(' ').filter(|j| !j.is_empty()) {
                self.buffer.push_back(QueueEvent {
                    stream_id: id.to_owned(),
                    kind,
                    job: JobId(job.to_owned()),
                    data: data.clone(),
                });
            }
        }
        Ok(())
    }
}

fn entry_id(entry: Value) -> Result<String> {
    let id = entry.into_array()?.into_iter().next().ok_or_else(|| Error::Reply("an empty stream entry".to_owned()))?;
    Ok(id.into_string()?)
}
