//! Keys: one place that builds every key, its hash tag, and the escaping of caller-supplied parts.
//!
//! A key is `<prefix>:<part>:<part>...`, and a key of a [`Tagged`] namespace is
//! `<prefix>:{<tag>}:<part>...`. Every part and tag is escaped, so the only `{`, `}` and glob
//! characters in a key are the ones this module puts there: a user id such as `a}b:*{c` can neither
//! move a key to another cluster slot nor widen a `SCAN` pattern.

use std::fmt;

use bytes::Bytes;

use crate::{Error, Result};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// A key prefix shared by a family of keys, such as `rt:sess`.
///
/// ```
/// use redtail_core::Namespace;
///
/// let ns = Namespace::new("app").unwrap();
/// assert_eq!(ns.key(["session", "a}b:*{c"]).as_bytes(), b"app:session:a%7Db%3A%2A%7Bc");
/// // All keys of one user share a slot.
/// let user = ns.tagged("u1");
/// assert_eq!(user.key(["rl", "api"]).slot(), user.key(["sessions"]).slot());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    /// A namespace whose keys start with `prefix:`.
    ///
    /// The prefix is written by the application, not by its users, and may hold ASCII letters,
    /// digits and `_ - . :`; anything else is refused so that prefixes never need escaping.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if prefix.is_empty() || prefix.len() > 128 {
            return Err(Error::InvalidInput(format!("key prefix must be 1 to 128 characters, got {}", prefix.len())));
        }
        if let Some(bad) = prefix.chars().find(|c| !allowed(*c)) {
            return Err(Error::InvalidInput(format!(
                "key prefix {prefix:?} contains {bad:?}; use ASCII letters, digits, `_`, `-`, `.` or `:`"
            )));
        }
        Ok(Self { prefix })
    }

    /// The prefix, without the trailing `:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A child namespace `<prefix>:<part>`, with `part` escaped.
    #[must_use]
    pub fn child(&self, part: impl AsRef<[u8]>) -> Namespace {
        let mut buf = Vec::with_capacity(self.prefix.len() + 16);
        buf.extend_from_slice(self.prefix.as_bytes());
        buf.push(b':');
        escape_into(part.as_ref(), &mut buf);
        // Escaped bytes are ASCII, so this never fails; keep the old prefix rather than panic.
        let prefix = String::from_utf8(buf).unwrap_or_else(|_| self.prefix.clone());
        Namespace { prefix }
    }

    /// The key `<prefix>:<part>:...`, each part escaped.
    pub fn key<I, P>(&self, parts: I) -> Key
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        Key::build(self.prefix.as_bytes(), NO_TAG, parts)
    }

    /// A namespace whose keys all carry the hash tag `tag`, so they share one cluster slot and can be
    /// used together in one transaction or script.
    pub fn tagged(&self, tag: impl AsRef<[u8]>) -> Tagged {
        let mut escaped = Vec::new();
        escape_tag_into(tag.as_ref(), &mut escaped);
        Tagged { prefix: self.prefix.clone(), tag: escaped }
    }

    /// `self.tagged(tag).key(parts)`, built at once: for keys made on every request.
    pub fn tagged_key<I, P>(&self, tag: impl AsRef<[u8]>, parts: I) -> Key
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        Key::build(self.prefix.as_bytes(), Some(|buf: &mut Vec<u8>| escape_tag_into(tag.as_ref(), buf)), parts)
    }

    /// A `SCAN` pattern matching every key under `<prefix>:<part>:...:`.
    pub fn pattern<I, P>(&self, parts: I) -> Pattern
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut key = Key::build(self.prefix.as_bytes(), NO_TAG, parts).bytes.to_vec();
        key.extend_from_slice(b":*");
        Pattern(key.into())
    }

    /// A `SCAN` pattern matching the keys `<prefix>:<part>` built by [`Namespace::key`] with one
    /// part that matches `glob`: `*` stands for any run of bytes, everything else is literal.
    ///
    /// ```
    /// use redtail_core::Namespace;
    ///
    /// let ns = Namespace::new("app").unwrap();
    /// let pattern = ns.glob("users:*:profile");
    /// assert!(pattern.matches(ns.key(["users:42:profile"]).as_bytes()));
    /// assert!(!pattern.matches(ns.key(["users:42:avatar"]).as_bytes()));
    /// ```
    pub fn glob(&self, glob: &str) -> Pattern {
        let mut pattern = Vec::with_capacity(self.prefix.len() + glob.len() + 8);
        pattern.extend_from_slice(self.prefix.as_bytes());
        pattern.push(b':');
        for (i, literal) in glob.as_bytes().split(|&b| b == b'*').enumerate() {
            if i > 0 {
                pattern.push(b'*');
            }
            escape_into(literal, &mut pattern);
        }
        Pattern(pattern.into())
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Namespace").field(&self.prefix).finish()
    }
}

/// A namespace whose keys share one hash tag, and so one cluster slot.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tagged {
    prefix: String,
    tag: Vec<u8>,
}

impl Tagged {
    /// The key `<prefix>:{<tag>}:<part>:...`.
    pub fn key<I, P>(&self, parts: I) -> Key
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        Key::build(self.prefix.as_bytes(), Some(|buf: &mut Vec<u8>| buf.extend_from_slice(&self.tag)), parts)
    }

    /// The cluster slot every key of this namespace maps to.
    pub fn slot(&self) -> u16 {
        slot_of(&self.tag)
    }

    /// The `SCAN` pattern matching every key of this namespace (`<prefix>:{<tag>}:*`); all of
    /// them are in one slot, so on a cluster they are all on one primary.
    pub fn pattern(&self) -> Pattern {
        let mut key = self.key(std::iter::empty::<&[u8]>()).bytes.to_vec();
        key.extend_from_slice(b":*");
        Pattern(key.into())
    }
}

impl fmt::Debug for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tagged({}:{{{}}})", self.prefix, String::from_utf8_lossy(&self.tag))
    }
}

/// [`Key::build`] without a hash tag.
const NO_TAG: Option<fn(&mut Vec<u8>)> = None;

/// A complete Redis key with its cluster slot computed once.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    bytes: Bytes,
    slot: u16,
}

impl Key {
    /// `prefix`, then the hash tag `tag` writes (already escaped) in braces, then each part.
    fn build<I, P>(prefix: &[u8], tag: Option<impl FnOnce(&mut Vec<u8>)>, parts: I) -> Key
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut buf = Vec::with_capacity(prefix.len() + 48);
        buf.extend_from_slice(prefix);
        if let Some(tag) = tag {
            buf.extend_from_slice(b":{");
            tag(&mut buf);
            buf.push(b'}');
        }
        for part in parts {
            buf.push(b':');
            escape_into(part.as_ref(), &mut buf);
        }
        Key::from_raw(buf)
    }

    /// A key from bytes taken as they are, such as a key returned by `SCAN`.
    ///
    /// Nothing is escaped: use [`Namespace`] to build keys from caller-supplied values.
    pub fn from_raw(bytes: impl Into<Bytes>) -> Key {
        let bytes = bytes.into();
        let slot = slot_of(hash_tag(&bytes));
        Key { bytes, slot }
    }

    /// The key as sent to Redis.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key as shared bytes, cheap to clone.
    pub fn to_bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The Redis Cluster hash slot of the key.
    pub fn slot(&self) -> u16 {
        self.slot
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", String::from_utf8_lossy(&self.bytes))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.bytes))
    }
}

/// A `SCAN MATCH` pattern built by a [`Namespace`]: escaped literals and `*` wildcards.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern(Bytes);

impl Pattern {
    /// The glob pattern as sent to Redis.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `key` matches the pattern, with the glob semantics of Redis restricted to what
    /// [`Namespace`] produces: escaped literals (which never hold glob characters) and `*`.
    pub fn matches(&self, key: &[u8]) -> bool {
        let mut literals = self.0.split(|&b| b == b'*');
        let first = literals.next().unwrap_or_default();
        let Some(mut rest) = key.strip_prefix(first) else { return false };
        let literals: Vec<&[u8]> = literals.collect();
        let Some((last, middle)) = literals.split_last() else { return rest.is_empty() };
        for literal in middle {
            match rest.windows(literal.len().max(1)).position(|w| literal.is_empty() || w == *literal) {
                Some(at) => rest = &rest[at + literal.len()..],
                None => return false,
            }
        }
        rest.ends_with(last)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({})", String::from_utf8_lossy(&self.0))
    }
}

/// Escapes a caller-supplied part: bytes outside `[A-Za-z0-9_.-]` become `%XX`.
///
/// The mapping is injective (`%` itself is escaped), and its output never holds `:`, `{`, `}`,
/// glob characters, whitespace or non-ASCII bytes.
fn escape_into(part: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in part {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xF)]]);
        }
    }
}

/// Escapes a hash tag. Redis hashes the whole key when its braces are empty, which would
/// scatter the keys of an empty tag over the cluster: an empty tag is written as a lone `%`,
/// which escaping never produces.
fn escape_tag_into(tag: &[u8], out: &mut Vec<u8>) {
    if tag.is_empty() {
        out.push(b'%');
    }
    escape_into(tag, out);
}

/// Reverses the escaping of one key part (or tag: a lone `%` is the empty tag); `None` when
/// `escaped` was not produced by this module.
pub fn unescape(escaped: &[u8]) -> Option<Vec<u8>> {
    if escaped == b"%" {
        return Some(Vec::new());
    }
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        if escaped[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(escaped[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The part of `key` that Redis Cluster hashes: the content of the first `{...}` when non-empty.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// CRC16 (XMODEM) of `data` modulo [`SLOTS`]: the hash slot Redis Cluster uses.
fn slot_of(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_tag_still_keeps_its_keys_in_one_slot() {
        // Found by the hostile-input property test: `{}` makes Redis hash the whole key.
        let tagged = Namespace::new("rt").map(|ns| ns.tagged("")).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (tagged.key(["a"]), tagged.key(["b"]));
        assert_eq!(a.as_bytes(), b"rt:{%}:a");
        assert_eq!((a.slot(), b.slot()), (tagged.slot(), tagged.slot()));
        assert_eq!(unescape(hash_tag(a.as_bytes())), Some(Vec::new()));
    }

    fn ns() -> Namespace {
        Namespace::new("t").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn slots_match_redis_reference_values() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(Key::from_raw("foo").slot(), 12182);
        assert_eq!(Key::from_raw("{user1000}.following").slot(), Key::from_raw("user1000").slot());
        assert_eq!(Key::from_raw("foo{}{bar}").slot(), slot_of(b"foo{}{bar}"));
    }

    #[test]
    fn hostile_parts_cannot_change_slot_or_pattern() {
        let hostile = "a}b:*{c";
        let user = ns().tagged(hostile);
        let key = user.key(["x"]);
        assert_eq!(key.as_bytes(), b"t:{a%7Db%3A%2A%7Bc}:x");
        assert_eq!(key.slot(), user.slot());
        assert_eq!(ns().tagged_key(hostile, ["x"]), key);
        assert_eq!(ns().tagged_key("", ["x"]), ns().tagged("").key(["x"]));
        let pattern = ns().pattern([hostile]);
        assert!(!pattern.as_bytes()[..pattern.as_bytes().len() - 1].iter().any(|b| b"*?[]{}\\".contains(b)));
    }

    #[test]
    fn every_byte_round_trips_through_escaping() {
        let all: Vec<u8> = (0..=255).collect();
        let mut escaped = Vec::new();
        escape_into(&all, &mut escaped);
        assert!(escaped.iter().all(|b| b.is_ascii_graphic() && !b"{}*?[]\\:".contains(b)));
        assert_eq!(unescape(&escaped), Some(all));
    }

    #[test]
    fn distinct_parts_never_collide() {
        assert_ne!(ns().key(["a:b"]), ns().key(["a", "b"]));
        assert_ne!(ns().key(["%3A"]), ns().key([":"]));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(Namespace::new("").is_err());
        assert!(Namespace::new("a{b}").is_err());
        assert!(Namespace::new("a b").is_err());
        assert!(Namespace::new("app:v1").is_ok());
    }

    #[test]
    fn globs_escape_literals_and_keep_stars() {
        let p = ns().glob("a:*{x}*");
        assert_eq!(p.as_bytes(), b"t:a%3A*%7Bx%7D*");
        assert!(p.matches(ns().key(["a:1{x}2"]).as_bytes()));
        assert!(p.matches(ns().key(["a:{x}"]).as_bytes()));
        assert!(!p.matches(ns().key(["b:{x}"]).as_bytes()));
        assert!(ns().glob("exact").matches(ns().key(["exact"]).as_bytes()));
        assert!(!ns().glob("exact").matches(ns().key(["exactly"]).as_bytes()));
        assert!(ns().glob("*").matches(ns().key([""]).as_bytes()));
        // A middle literal is searched after the prefix, and the suffix after it.
        assert!(!ns().glob("ab*b*ba").matches(ns().key(["aba"]).as_bytes()));
        assert!(ns().glob("ab*b*ba").matches(ns().key(["abbba"]).as_bytes()));
    }

    #[test]
    fn pattern_matches_only_its_namespace() {
        let p = ns().pattern(["s"]);
        assert!(p.matches(ns().key(["s", "1"]).as_bytes()));
        assert!(!p.matches(ns().key(["s2", "1"]).as_bytes()));
    }
}
