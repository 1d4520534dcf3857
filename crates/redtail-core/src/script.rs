//! `Script`: a Lua script from `lua/*.lua`, with its SHA-1 computed once.

use std::{borrow::Cow, fmt};

use crate::{Key, Result, same_slot};

/// A Lua script run with `EVALSHA`.
///
/// Scripts live in `lua/*.lua` files of each crate and are loaded with `include_str!`, so they are
/// reviewed as Lua. A crate keeps each one in a `static` built once:
///
/// ```
/// use std::sync::LazyLock;
/// use redtail_core::Script;
///
/// static INCR_WITH_TTL: LazyLock<Script> = LazyLock::new(|| {
///     Script::new("incr_with_ttl", "local n = redis.call('INCR', KEYS[1]) redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX') return n")
/// });
/// assert_eq!(INCR_WITH_TTL.sha().len(), 40);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Script {
    name: &'static str,
    source: Cow<'static, str>,
    sha: String,
    across_slots: bool,
}

impl Script {
    /// A script named `name` (used in logs and errors) with Lua `source`: a `&'static str`
    /// from `include_str!`, or a `String` put together once (a file behind a generated prelude).
    pub fn new(name: &'static str, source: impl Into<Cow<'static, str>>) -> Self {
        Self::from_source(name, source.into(), false)
    }

    /// A script that does the work of many callers in one call, run through a
    /// [`BatchedScript`](crate::BatchedScript). `body` returns `batch(function(KEYS, ARGV) ... end)`:
    /// the function is one caller's work, written as a plain script with that caller's `KEYS`
    /// and `ARGV` (the `batch` helper of `lua/batch.lua` is prepended).
    ///
    /// Its keys may span slots on a backend that is not a cluster ([`Script::across_slots`]).
    pub fn batched(name: &'static str, body: impl AsRef<str>) -> Self {
        let prelude = crate::contract::prelude("crates/redtail-core/src/batch.rs", crate::batch::batch_consts());
        let source = format!("{prelude}{}{}", include_str!("../lua/batch.lua"), body.as_ref());
        Self::from_source(name, Cow::Owned(source), true)
    }

    fn from_source(name: &'static str, source: Cow<'static, str>, across_slots: bool) -> Self {
        let sha = sha1_smol::Sha1::from(source.as_ref()).digest().to_string();
        Self { name, source, sha, across_slots }
    }

    /// Marks a script that batches the work of many callers: on a backend that is not a cluster
    /// ([`Backend::is_cluster`](crate::Backend::is_cluster)) its keys may span slots. Any other
    /// script is refused keys of two slots everywhere, so a script that would fail on a cluster
    /// fails on one server too.
    #[must_use]
    pub fn across_slots(mut self) -> Self {
        self.across_slots = true;
        self
    }

    /// Whether [`Script::across_slots`] was called.
    pub fn spans_slots(&self) -> bool {
        self.across_slots
    }

    /// The slot the script runs on with `keys` (`None` without keys): the slot they share.
    /// Keys of two slots are [`Error::CrossSlot`](crate::Error::CrossSlot), unless the script
    /// spans slots and the backend is not a `cluster`; then it runs on its first key's slot.
    pub fn slot(&self, keys: &[Key], cluster: bool) -> Result<Option<u16>> {
        if self.across_slots && !cluster {
            return Ok(keys.first().map(Key::slot));
        }
        same_slot("script", keys.iter().map(Key::slot))
    }

    /// The name given to [`Script::new`].
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Lua source, sent with `SCRIPT LOAD` when the server does not know the script.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The lowercase hex SHA-1 of the source, as `EVALSHA` expects.
    pub fn sha(&self) -> &str {
        &self.sha
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script").field("name", &self.name).field("sha", &self.sha).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_matches_redis_script_load() {
        // `redis-cli SCRIPT LOAD "return 1"` answers this digest.
        assert_eq!(Script::new("one", "return 1").sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
