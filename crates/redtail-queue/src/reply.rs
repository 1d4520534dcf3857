//! Reading script and command replies into the crate's types.

use std::time::Duration;

use redtail_core::Value;

use crate::{Counts, Error, JobId, JobInfo, JobState, Metrics, Result, queue::Minute};

fn int(values: &[Value], i: usize) -> Result<i64> {
    let value =
        values.get(i).ok_or_else(|| Error::Reply(format!("{} values, expected more than {i}", values.len())))?;
    Ok(value.as_int()?)
}

fn count(values: &[Value], i: usize) -> Result<u64> {
    Ok(u64::try_from(int(values, i)?).unwrap_or(0))
}

/// `lua/counts.lua`'s reply.
pub(crate) fn metrics(reply: &[Value]) -> Result<Metrics> {
    let counts = Counts {
        waiting: count(reply, 0)?,
        delayed: count(reply, 1)?,
        active: count(reply, 2)?,
        completed: count(reply, 3)?,
        dead: count(reply, 4)?,
    };
    let (oldest, now) = (int(reply, 6)?, count(reply, 7)?);
    let minute_start = now / 60_000 * 60_000;
    let minutes = (8..reply.len())
        .step_by(2)
        .enumerate()
        .map(|(i, at)| {
            Ok(Minute {
                start_ms: minute_start.saturating_sub(i as u64 * 60_000),
                completed: count(reply, at)?,
                failed: count(reply, at + 1)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Metrics {
        counts,
        paused: int(reply, 5)? == 1,
        oldest_waiting: u64::try_from(oldest).ok().map(|t| Duration::from_millis(now.saturating_sub(t))),
        minutes,
    })
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

/// A job hash from `HGETALL`; `None` when empty.
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
    };
    for (field, value) in pairs {
        let field = field.into_string()?;
        let text = value.into_string()?;
        let number = || text.parse::<u64>().ok();
        match field.as_str() {
            "s" => {
                job.state = JobState::from_code(&text).ok_or_else(|| Error::Reply(format!("job state {text:?}")))?;
            }
            "d" => job.data = json(&text),
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

/// A job's fixed facts, from its `m` field (`lua/lib.lua`):
/// `<max attempts> <created ms> <priority> <options>`.
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

/// A completed job kept as a record in the completed-records hash (`keep_record` in
/// `lua/lib.lua`): `<finished> <expires> <token> <attempt> <started> <created> <max attempts>
/// <priority> <data bytes> <data><result>`. `None` when it expired before `now_ms`.
pub(crate) fn record_info(id: &str, record: &[u8], now_ms: u64) -> Result<Option<JobInfo>> {
    let bad = || Error::Reply(format!("job {id}: unreadable completed record"));
    let mut rest = record;
    let mut numbers = [0_u64; 9];
    for (i, number) in numbers.iter_mut().enumerate() {
        let end = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let (word, tail) = (&rest[..end], &rest[end + 1..]);
        rest = tail;
        // The third word is the lease token, kept for resent acknowledgements only.
        if i != 2 {
            *number = std::str::from_utf8(word).ok().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        }
    }
    let [finished, expires, _, attempt, started, created, max, priority, data_len] = numbers;
    if expires <= now_ms {
        return Ok(None);
    }
    let data_len = usize::try_from(data_len).map_err(|_| bad())?;
    if data_len > rest.len() {
        return Err(bad());
    }
    let (data, result) = rest.split_at(data_len);
    let small = |n: u64| u32::try_from(n).map_err(|_| bad());
    Ok(Some(JobInfo {
        id: JobId(id.to_owned()),
        state: JobState::Completed,
        data: json(&String::from_utf8_lossy(data)),
        attempts_started: small(attempt)?,
        max_attempts: small(max)?,
        priority: small(priority)?,
        created_ms: created,
        started_ms: Some(started),
        finished_ms: Some(finished),
        progress: None,
        result: Some(json(&String::from_utf8_lossy(result))),
        errors: Vec::new(),
    }))
}

/// Marks a job as running from its entry in the running hash
/// (`<token> <attempts before> <started ms>`): its own hash is written only when it finishes.
pub(crate) fn apply_running(job: &mut JobInfo, entry: &str) {
    let mut parts = entry.split(' ').skip(1);
    let before = parts.next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(job.attempts_started);
    job.state = JobState::Active;
    job.attempts_started = before + 1;
    job.started_ms = parts.next().and_then(|n| n.parse().ok()).or(job.started_ms);
    job.finished_ms = None;
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
    fn a_completed_record_reads_whole_until_it_expires() {
        let record = br#"2000 5000 w-1:0 1 1500 1000 3 2 9 {"a":"b"}{"ok":true}"#;
        let job = record_info("7", record, 4999).ok().flatten().unwrap_or_else(|| panic!("record unread"));
        assert_eq!((job.state, job.attempts_started, job.max_attempts, job.priority), (JobState::Completed, 1, 3, 2));
        assert_eq!((job.created_ms, job.started_ms, job.finished_ms), (1000, Some(1500), Some(2000)));
        assert_eq!((job.data, job.result), (serde_json::json!({"a": "b"}), Some(serde_json::json!({"ok": true}))));
        assert!(matches!(record_info("7", record, 5000), Ok(None)), "expired");
        for bad in [&b"2000 5000 w-1:0 1 1500 1000 3 2 99 {}"[..], b"2000 5000", b"a b c d e f g h i j"] {
            assert!(record_info("7", bad, 0).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
