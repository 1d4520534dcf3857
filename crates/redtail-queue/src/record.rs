//! The queue's stored formats, each read (and, where Rust writes it, written) in one place, beside
//! the one Lua helper that handles it in `lua/lib.lua`:
//! - a job's hash, and its `m` field ([`Meta`]; `meta()` in Lua);
//! - a running job's entry in the running hash ([`RunningEntry`]; `running()` in Lua);
//! - a completed job kept as a record ([`Record`]; `keep_record()` and `record_parts()` in Lua).

use redtail_core::{Bytes, Value};

use crate::{Error, JobId, JobInfo, JobState, Result, script::StateCode};

/// A job's fixed facts, its `m` field: `<max attempts> <created ms> <priority> <options>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta<'a> {
    pub(crate) max_attempts: u32,
    pub(crate) created_ms: u64,
    pub(crate) priority: u32,
    /// The job's options (JSON), empty for the queue's.
    pub(crate) options: &'a str,
}

impl<'a> Meta<'a> {
    pub(crate) fn parse(text: &'a str) -> Option<Meta<'a>> {
        let (max, rest) = text.split_once(' ')?;
        let (created, rest) = rest.split_once(' ')?;
        let (priority, options) = rest.split_once(' ')?;
        Some(Meta {
            max_attempts: max.parse().ok()?,
            created_ms: created.parse().ok()?,
            priority: priority.parse().ok()?,
            options,
        })
    }
}

/// A running job's entry in the running hash: `<lane token> <attempts before> <started ms>`.
/// A running job's own hash is written only when it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunningEntry<'a> {
    pub(crate) token: &'a str,
    pub(crate) before: u32,
    pub(crate) started_ms: u64,
}

impl<'a> RunningEntry<'a> {
    pub(crate) fn parse(entry: &'a str) -> Option<RunningEntry<'a>> {
        let mut parts = entry.split(' ');
        let (token, before, started) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || token.is_empty() {
            return None;
        }
        Some(RunningEntry { token, before: before.parse().ok()?, started_ms: started.parse().ok()? })
    }

    /// Marks `job` as running this attempt.
    pub(crate) fn apply(&self, job: &mut JobInfo) {
        job.state = JobState::Active;
        job.attempts_started = self.before + 1;
        job.started_ms = Some(self.started_ms);
        job.finished_ms = None;
    }
}

/// A job completed on its first attempt without log or progress, kept as one field of the
/// completed-records hash instead of a hash of its own:
/// `<finished> <expires> <token> <attempt> <started> <created> <max attempts> <priority>
/// <data bytes> <data><result>`. The worker writes all from `<token>` on ([`Record::worker_part`]);
/// the script puts the times it knows in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) finished_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) token: &'a str,
    pub(crate) attempt: u32,
    pub(crate) started_ms: u64,
    pub(crate) created_ms: u64,
    pub(crate) max_attempts: u32,
    pub(crate) priority: u32,
    pub(crate) data: &'a [u8],
    pub(crate) result: &'a [u8],
}

impl<'a> Record<'a> {
    /// The part of a record the worker writes (the payload of a `Kept` acknowledgement).
    pub(crate) fn worker_part(&self) -> Bytes {
        let head = format!(
            "{} {} {} {} {} {} {} ",
            self.token,
            self.attempt,
            self.started_ms,
            self.created_ms,
            self.max_attempts,
            self.priority,
            self.data.len()
        );
        let mut out = Vec::with_capacity(head.len() + self.data.len() + self.result.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(self.data);
        out.extend_from_slice(self.result);
        Bytes::from(out)
    }

    /// Reads a whole record; `None` when it is not one.
    pub(crate) fn parse(record: &'a [u8]) -> Option<Record<'a>> {
        let mut words = Words(record);
        let (finished_ms, expires_ms) = (words.number()?, words.number()?);
        let token = std::str::from_utf8(words.word()?).ok()?;
        let attempt = words.number()?;
        let (started_ms, created_ms) = (words.number()?, words.number()?);
        let (max_attempts, priority) = (words.number()?, words.number()?);
        let data_len: usize = words.number()?;
        let rest = words.0;
        if data_len > rest.len() {
            return None;
        }
        let (data, result) = rest.split_at(data_len);
        Some(Record {
            finished_ms,
            expires_ms,
            token,
            attempt,
            started_ms,
            created_ms,
            max_attempts,
            priority,
            data,
            result,
        })
    }

    /// The job as [`Queue::get`](crate::Queue::get) reports it; `None` when it expired before
    /// `now_ms`.
    pub(crate) fn info(id: &str, record: &[u8], now_ms: u64) -> Result<Option<JobInfo>> {
        let record =
            Record::parse(record).ok_or_else(|| Error::Reply(format!("job {id}: unreadable completed record")))?;
        if record.expires_ms <= now_ms {
            return Ok(None);
        }
        Ok(Some(JobInfo {
            id: JobId(id.to_owned()),
            state: JobState::Completed,
            data: json(&String::from_utf8_lossy(record.data)),
            attempts_started: record.attempt,
            max_attempts: record.max_attempts,
            priority: record.priority,
            created_ms: record.created_ms,
            started_ms: Some(record.started_ms),
            finished_ms: Some(record.finished_ms),
            progress: None,
            result: Some(json(&String::from_utf8_lossy(record.result))),
            errors: Vec::new(),
            group: None,
        }))
    }
}

/// Space-separated words from the front of a record.
struct Words<'a>(&'a [u8]);

impl<'a> Words<'a> {
    fn word(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|&b| b == b' ')?;
        let word = &self.0[..end];
        self.0 = &self.0[end + 1..];
        Some(word)
    }

    fn number<N: std::str::FromStr>(&mut self) -> Option<N> {
        std::str::from_utf8(self.word()?).ok()?.parse().ok()
    }
}

/// The field-value pairs of an `HGETALL` reply (a flat array, or a RESP3 map).
pub(crate) fn pairs(reply: Value) -> Result<Vec<(Value, Value)>> {
    Ok(match reply {
        Value::Map(pairs) => pairs,
        other => {
            let flat = other.into_array()?;
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
    })
}

/// A job's hash from `HGETALL` (its fields are listed in `lua/lib.lua`); `None` when empty.
pub(crate) fn job_info(id: &str, fields: Value) -> Result<Option<JobInfo>> {
    let pairs = pairs(fields)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut job = JobInfo {
        id: JobId(id.to_owned()),
        state: JobState::Waiting,
        data: serde_json::Value::Null,
        attempts_started: 0,
        max_attempts: 1,
        priority: 0,
        created_ms: 0,
        started_ms: None,
        finished_ms: None,
        progress: None,
        result: None,
        errors: Vec::new(),
        group: None,
    };
    for (field, value) in pairs {
        let field = field.into_string()?;
        let text = value.into_string()?;
        let number = || text.parse::<u64>().ok();
        match field.as_str() {
            "s" => job.state = state(&text).ok_or_else(|| Error::Reply(format!("job state {text:?}")))?,
            "d" => job.data = json(&text),
            "g" => job.group = Some(text),
            "a" => job.attempts_started = number().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            "m" => {
                let meta = Meta::parse(&text).ok_or_else(|| Error::Reply(format!("job {id}: fixed facts {text:?}")))?;
                (job.max_attempts, job.created_ms, job.priority) = (meta.max_attempts, meta.created_ms, meta.priority);
            }
            "st" => job.started_ms = number(),
            "f" => job.finished_ms = number(),
            "p" => job.progress = Some(json(&text)),
            "r" => job.result = Some(json(&text)),
            other => {
                if let Some(attempt) = other.strip_prefix('e').and_then(|n| n.parse().ok()) {
                    job.errors.push((attempt, text));
                }
            }
        }
    }
    job.errors.sort_by_key(|(attempt, _)| *attempt);
    Ok(Some(job))
}

/// A job hash's `s` field.
fn state(code: &str) -> Option<JobState> {
    let code = StateCode::ALL.iter().find(|s| s.code() == code)?;
    Some(match code {
        StateCode::Waiting => JobState::Waiting,
        StateCode::Delayed => JobState::Delayed,
        StateCode::Completed => JobState::Completed,
        StateCode::Dead => JobState::Dead,
        StateCode::WaitingChildren => JobState::WaitingChildren,
    })
}

/// Stored JSON, or the text itself when it is not JSON (data written by something else).
fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_facts_read_with_and_without_options() {
        let plain = Meta { max_attempts: 3, created_ms: 1_764_150_000_000, priority: 0, options: "" };
        assert_eq!(Meta::parse("3 1764150000000 0 "), Some(plain));
        let options = r#"{"backoff": {"fixed": 20}, "timeout": null}"#;
        assert_eq!(Meta::parse(&format!("5 7 2 {options}")).map(|m| (m.priority, m.options)), Some((2, options)));
        for bad in ["", "3 1764150000000 0", "x 1 0 ", "3 -1 0 ", "3 1 99999999999 "] {
            assert_eq!(Meta::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_running_entry_reads_back() {
        let entry = RunningEntry::parse("w-1:0 2 1500").unwrap_or_else(|| panic!("unread"));
        assert_eq!(entry, RunningEntry { token: "w-1:0", before: 2, started_ms: 1500 });
        for bad in ["", "w 2", "w x 1", "w 1 2 3", " 1 2"] {
            assert_eq!(RunningEntry::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_record_round_trips_through_what_the_worker_and_the_script_write() {
        let written = Record {
            finished_ms: 0,
            expires_ms: 0,
            token: "w-1:0",
            attempt: 1,
            started_ms: 1500,
            created_ms: 1000,
            max_attempts: 3,
            priority: 2,
            data: br#"{"a":"b c"}"#,
            result: br#"{"ok":true}"#,
        };
        // keep_record() in lua/lib.lua puts "<finished> <expires> " in front.
        let mut stored = b"2000 5000 ".to_vec();
        stored.extend_from_slice(&written.worker_part());
        let read = Record::parse(&stored).unwrap_or_else(|| panic!("unread"));
        assert_eq!(read, Record { finished_ms: 2000, expires_ms: 5000, ..written });
        let job = Record::info("7", &stored, 4999).ok().flatten().unwrap_or_else(|| panic!("no job"));
        assert_eq!((job.state, job.attempts_started, job.max_attempts, job.priority), (JobState::Completed, 1, 3, 2));
        assert_eq!((job.created_ms, job.started_ms, job.finished_ms), (1000, Some(1500), Some(2000)));
        assert_eq!((job.data, job.result), (serde_json::json!({"a": "b c"}), Some(serde_json::json!({"ok": true}))));
        assert!(matches!(Record::info("7", &stored, 5000), Ok(None)), "expired");
        for bad in [&b"2000 5000 w-1:0 1 1500 1000 3 2 99 {}"[..], b"2000 5000", b"a b c d e f g h i j"] {
            assert!(Record::info("7", bad, 0).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
