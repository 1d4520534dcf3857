//! The data of the in-memory backend: typed values with Redis's expiry rules.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use redtail_core::Bytes;

/// A reply before it becomes a core `Value`; status replies stay distinct for Lua.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Nil,
    Int(i64),
    Bulk(Bytes),
    Status(String),
    Array(Vec<Reply>),
    Error(String),
}

impl Reply {
    pub(crate) fn ok() -> Reply {
        Reply::Status("OK".to_owned())
    }

    pub(crate) fn bulk(b: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(b.as_ref()))
    }

    pub(crate) fn from_bool(b: bool) -> Reply {
        Reply::Int(i64::from(b))
    }
}

/// The error line of a failed command, as Redis would send it.
pub(crate) type CmdResult = Result<Reply, String>;

pub(crate) const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub(crate) const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub(crate) const NOT_FLOAT: &str = "ERR value is not a valid float";
pub(crate) const SYNTAX: &str = "ERR syntax error";

/// A sorted set: members by score and scores by member.
#[derive(Debug, Clone, Default)]
pub(crate) struct ZSet {
    pub(crate) by_score: BTreeSet<(Score, Bytes)>,
    pub(crate) scores: HashMap<Bytes, f64>,
}

/// An `f64` score ordered as Redis orders scores (never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Score(pub(crate) f64);

impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl ZSet {
    /// Sets `member`'s score; returns whether the member is new.
    pub(crate) fn insert(&mut self, member: Bytes, score: f64) -> bool {
        // -0.0 and 0.0 are one score in Redis.
        let score = if score == 0.0 { 0.0 } else { score };
        match self.scores.insert(member.clone(), score) {
            Some(old) => {
                self.by_score.remove(&(Score(old), member.clone()));
                self.by_score.insert((Score(score), member));
                false
            }
            None => {
                self.by_score.insert((Score(score), member));
                true
            }
        }
    }

    pub(crate) fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => {
                self.by_score.remove(&(Score(score), Bytes::copy_from_slice(member)));
                true
            }
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.scores.len()
    }
}

/// A stream entry id.
pub(crate) type StreamId = (u64, u64);

/// A stream: entries by id, and the last id ever generated.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stream {
    pub(crate) entries: BTreeMap<StreamId, Vec<(Bytes, Bytes)>>,
    pub(crate) last_id: StreamId,
}

/// A value of one of Redis's types.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    Str(Bytes),
    Hash(BTreeMap<Bytes, Bytes>),
    List(VecDeque<Bytes>),
    Set(BTreeSet<Bytes>),
    ZSet(ZSet),
    Stream(Stream),
}

impl Data {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Data::Str(_) => "string",
            Data::Hash(_) => "hash",
            Data::List(_) => "list",
            Data::Set(_) => "set",
            Data::ZSet(_) => "zset",
            Data::Stream(_) => "stream",
        }
    }

    /// Whether Redis would have deleted the key: collections never stay empty (streams do).
    fn is_empty_collection(&self) -> bool {
        match self {
            Data::Hash(h) => h.is_empty(),
            Data::List(l) => l.is_empty(),
            Data::Set(s) => s.is_empty(),
            Data::ZSet(z) => z.len() == 0,
            Data::Str(_) | Data::Stream(_) => false,
        }
    }
}

/// A key's value and its expiry time in Unix milliseconds.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) data: Data,
    pub(crate) expires_at: Option<u64>,
}

/// All keys, with lazy expiry against the time of the command being run.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) keys: BTreeMap<Bytes, Entry>,
    /// Unix milliseconds of the command being run; set before each command.
    pub(crate) now: u64,
    /// With key tracking on: the keys changed (written, deleted or expired) since the backend
    /// last took them, and whether everything was flushed.
    pub(crate) changes: Option<Changes>,
    /// While a script runs with the key audit on: the keys it has touched.
    pub(crate) audit: Option<Audit>,
}

/// The keys a script has touched, for [`MemoryBackend::auditing_script_keys`](super::MemoryBackend::auditing_script_keys).
#[derive(Debug, Default)]
pub(crate) struct Audit {
    /// The keys first touched after the script's first write, in order.
    pub(crate) late: Vec<Bytes>,
    seen: std::collections::HashSet<Bytes>,
    wrote: bool,
}

/// What changed since the tracking subscriptions were last told.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) keys: Vec<Bytes>,
    pub(crate) flushed: bool,
}

impl Store {
    /// Drops `key` if it has expired; returns whether it exists afterwards.
    fn expire_if_due(&mut self, key: &[u8]) -> bool {
        self.note(key, false);
        let due = match self.keys.get(key) {
            None => return false,
            Some(entry) => entry.expires_at.is_some_and(|at| at <= self.now),
        };
        if due {
            self.keys.remove(key);
            self.changed(key);
        }
        !due
    }

    /// Records that the running script touched `key`, with the audit on.
    fn note(&mut self, key: &[u8], write: bool) {
        if let Some(audit) = &mut self.audit {
            if !audit.seen.contains(key) {
                let key = Bytes::copy_from_slice(key);
                if audit.wrote {
                    audit.late.push(key.clone());
                }
                audit.seen.insert(key);
            }
            audit.wrote |= write;
        }
    }

    /// Records that `key` was written. Every write path calls it; a call for a key that did not
    /// change in the end only costs a tracker a needless invalidation.
    pub(crate) fn touch(&mut self, key: &[u8]) {
        self.note(key, true);
        self.changed(key);
    }

    /// Records that `key` changed (written, deleted or expired), for key tracking.
    fn changed(&mut self, key: &[u8]) {
        if let Some(changes) = &mut self.changes {
            changes.keys.push(Bytes::copy_from_slice(key));
        }
    }

    /// Records that every key is gone, for key tracking.
    pub(crate) fn flushed(&mut self) {
        if let Some(changes) = &mut self.changes {
            changes.flushed = true;
        }
    }

    pub(crate) fn get(&mut self, key: &[u8]) -> Option<&Entry> {
        if self.expire_if_due(key) { self.keys.get(key) } else { None }
    }

    /// The entry at `key` for changing; the caller [touches](Store::touch) it if it does.
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        if self.expire_if_due(key) { self.keys.get_mut(key) } else { None }
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        if !self.expire_if_due(key) {
            return None;
        }
        self.touch(key);
        self.keys.remove(key)
    }

    pub(crate) fn exists(&mut self, key: &[u8]) -> bool {
        self.expire_if_due(key)
    }

    /// Sets a value with no expiry, replacing whatever was there.
    pub(crate) fn set(&mut self, key: &[u8], data: Data, expires_at: Option<u64>) {
        self.touch(key);
        self.keys.insert(Bytes::copy_from_slice(key), Entry { data, expires_at });
    }

    /// Deletes `key` if it holds an empty collection, as Redis does after every removal.
    pub(crate) fn drop_if_empty(&mut self, key: &[u8]) {
        if self.keys.get(key).is_some_and(|e| e.data.is_empty_collection()) {
            self.keys.remove(key);
        }
    }

    /// Live keys in order, for `SCAN` and `DBSIZE`.
    pub(crate) fn live_keys(&self) -> impl Iterator<Item = &Bytes> {
        let now = self.now;
        self.keys.iter().filter(move |(_, e)| e.expires_at.is_none_or(|at| at > now)).map(|(k, _)| k)
    }
}

/// Typed access to a key's collection, creating it when asked.
macro_rules! typed {
    ($name:ident, $name_mut:ident, $variant:ident, $ty:ty) => {
        impl Store {
            /// The value at `key` when it has this type; `Ok(None)` when missing.
            pub(crate) fn $name(&mut self, key: &[u8]) -> Result<Option<&$ty>, String> {
                match self.get(key) {
                    None => Ok(None),
                    Some(Entry { data: Data::$variant(v), .. }) => Ok(Some(v)),
                    Some(_) => Err(WRONGTYPE.to_owned()),
                }
            }

            /// The value at `key` for writing, created empty when `create` and missing.
            pub(crate) fn $name_mut(&mut self, key: &[u8], create: bool) -> Result<Option<&mut $ty>, String> {
                let exists = self.exists(key);
                if !exists {
                    if !create {
                        return Ok(None);
                    }
                    self.set(key, Data::$variant(Default::default()), None);
                }
                self.touch(key);
                match self.keys.get_mut(key) {
                    Some(Entry { data: Data::$variant(v), .. }) => Ok(Some(v)),
                    Some(_) => Err(WRONGTYPE.to_owned()),
                    None => Ok(None),
                }
            }
        }
    };
}

typed!(hash, hash_mut, Hash, BTreeMap<Bytes, Bytes>);
typed!(list, list_mut, List, VecDeque<Bytes>);
typed!(set_of, set_mut, Set, BTreeSet<Bytes>);
typed!(zset, zset_mut, ZSet, ZSet);
typed!(stream, stream_mut, Stream, Stream);

impl Default for Data {
    fn default() -> Self {
        Data::Str(Bytes::new())
    }
}

/// Parses an integer as Redis does: optional `-`, no `+`, no spaces, no leading zeros.
pub(crate) fn parse_int(arg: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(arg).map_err(|_| NOT_INTEGER.to_owned())?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && text.len() == 1 || !digits.starts_with('0'));
    if !canonical {
        return Err(NOT_INTEGER.to_owned());
    }
    text.parse().map_err(|_| NOT_INTEGER.to_owned())
}

/// Parses a float as Redis does for scores: `inf`, `+inf`, `-inf` allowed, NaN refused.
pub(crate) fn parse_float(arg: &[u8]) -> Result<f64, String> {
    let text = std::str::from_utf8(arg).map_err(|_| NOT_FLOAT.to_owned())?;
    let value = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ if text.is_empty() || text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) => {
            return Err(NOT_FLOAT.to_owned());
        }
        _ => text.parse::<f64>().map_err(|_| NOT_FLOAT.to_owned())?,
    };
    if value.is_nan() { Err(NOT_FLOAT.to_owned()) } else { Ok(value) }
}

/// Formats a score as Redis 7.0 does (`%.17g`).
pub(crate) fn format_score(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf".to_owned() } else { "-inf".to_owned() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0".to_owned() } else { "0".to_owned() };
    }
    let sci = format!("{x:.16e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..17).contains(&exponent) {
        let point = exponent + 1;
        let text = if point <= 0 {
            format!("0.{}{}", "0".repeat(usize::try_from(-point).unwrap_or(0)), digits)
        } else {
            let point = usize::try_from(point).unwrap_or(0);
            format!("{}.{}", &digits[..point.min(digits.len())], &digits[point.min(digits.len())..])
        };
        let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text };
        format!("{sign}{text}")
    } else {
        let fraction = digits[1..].trim_end_matches('0');
        let dot = if fraction.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{}{dot}{fraction}e{exp_sign}{:02}", &digits[..1], exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_strictly() {
        assert_eq!(parse_int(b"42"), Ok(42));
        assert_eq!(parse_int(b"-7"), Ok(-7));
        assert_eq!(parse_int(b"0"), Ok(0));
        for bad in [&b"+1"[..], b"01", b"-0", b" 1", b"1.0", b"", b"99999999999999999999"] {
            assert!(parse_int(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn scores_format_like_printf_g17() {
        assert_eq!(format_score(1.5), "1.5");
        assert_eq!(format_score(3.0), "3");
        assert_eq!(format_score(-2.0), "-2");
        assert_eq!(format_score(0.1), "0.10000000000000001");
        assert_eq!(format_score(1e20), "1e+20");
        assert_eq!(format_score(f64::INFINITY), "inf");
        assert_eq!(format_score(0.0001), "0.0001");
    }
}
