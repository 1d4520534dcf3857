//! `Cmd`: one Redis command with its arguments and the cluster slot of its first key.

use std::{fmt, time::Duration};

use bytes::Bytes;

use crate::{Error, Key, Result};

/// Commands that `Backend::call` refuses because another method does the job safely.
const REFUSED: &[(&str, &str)] = &[
    ("MULTI", "use Backend::transaction"),
    ("EXEC", "use Backend::transaction"),
    ("WATCH", "use Backend::transaction or a script"),
    ("SUBSCRIBE", "use Backend::subscribe"),
    ("PSUBSCRIBE", "use Backend::subscribe"),
    ("SSUBSCRIBE", "use Backend::subscribe"),
    ("MONITOR", "it takes over the connection"),
    ("QUIT", "use Redis::shutdown"),
    ("EVAL", "use Backend::eval with a Script"),
    ("EVALSHA", "use Backend::eval with a Script"),
    ("BLMOVE", "use Backend::blocking"),
    ("BRPOPLPUSH", "use Backend::blocking"),
    ("BLPOP", "use Backend::blocking"),
    ("BRPOP", "use Backend::blocking"),
    ("BZPOPMIN", "use Backend::blocking"),
    ("BZPOPMAX", "use Backend::blocking"),
    ("BLMPOP", "use Backend::blocking"),
    ("BZMPOP", "use Backend::blocking"),
];

/// One argument of a command, binary safe.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Arg(Bytes);

impl Arg {
    /// The argument as sent to Redis.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The argument as shared bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

macro_rules! arg_from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg {
            fn from(v: $t) -> Self {
                Arg(Bytes::from(v.to_string()))
            }
        }
    )*};
}
arg_from_display!(i32, i64, u32, u64, usize, f64);

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg(Bytes::copy_from_slice(v.as_bytes()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg(Bytes::from(v))
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg(Bytes::copy_from_slice(v))
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg(Bytes::from(v))
    }
}
impl From<Bytes> for Arg {
    fn from(v: Bytes) -> Self {
        Arg(v)
    }
}
impl From<&Key> for Arg {
    fn from(k: &Key) -> Self {
        Arg(k.to_bytes())
    }
}

/// A Redis command.
///
/// Keys are added with [`Cmd::key`], which records the cluster slot of the first one so that a
/// cluster backend can route the command without parsing it.
///
/// ```
/// use redtail_core::{Cmd, Namespace};
///
/// let key = Namespace::new("app").unwrap().key(["visits"]);
/// let cmd = Cmd::new("SET").key(&key).arg(1).arg("EX").arg(60);
/// assert_eq!(cmd.name(), "SET");
/// assert_eq!(cmd.slot(), Some(key.slot()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Cmd {
    name: &'static str,
    args: Vec<Arg>,
    slot: Option<u16>,
    // The slot of a later key that differs from the first, so a cross-slot command is refused
    // before it is sent in a transaction or script.
    other_slot: Option<u16>,
}

impl Cmd {
    /// A command with no arguments yet, such as `Cmd::new("GET")`.
    pub fn new(name: &'static str) -> Self {
        Self { name, args: Vec::new(), slot: None, other_slot: None }
    }

    /// Appends a key argument; the first key decides the command's cluster slot.
    #[must_use]
    pub fn key(mut self, key: &Key) -> Self {
        let first = *self.slot.get_or_insert(key.slot());
        if first != key.slot() {
            self.other_slot.get_or_insert(key.slot());
        }
        self.args.push(Arg::from(key));
        self
    }

    /// Appends a plain argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several plain arguments.
    #[must_use]
    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Arg>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The arguments after the name.
    pub fn arguments(&self) -> &[Arg] {
        &self.args
    }

    /// Takes the arguments out, for a backend that sends them.
    pub fn into_parts(self) -> (&'static str, Vec<Arg>, Option<u16>) {
        (self.name, self.args, self.slot)
    }

    /// Refuses, with what to use instead, a command that `Backend::call` must not send:
    /// transactions, subscriptions, scripts and blocking commands have methods of their own.
    pub fn check_callable(&self) -> Result<()> {
        match REFUSED.iter().find(|(name, _)| self.name.eq_ignore_ascii_case(name)) {
            Some((_, what)) => Err(Error::InvalidInput(format!("Backend::call cannot send {}: {what}", self.name))),
            None => Ok(()),
        }
    }

    /// How long a blocking command may block, read from its own timeout argument.
    ///
    /// A timeout of 0 (forever) is refused: a connection lost during an endless block would never
    /// be noticed, which is how BullMQ workers hang after a failover.
    pub fn block_duration(&self) -> Result<Duration> {
        let args = &self.args;
        let name = self.name.to_ascii_uppercase();
        let (raw, millis) = if name == "XREAD" || name == "XREADGROUP" {
            let block = args.iter().position(|a| a.as_bytes().eq_ignore_ascii_case(b"BLOCK"));
            (block.and_then(|i| args.get(i + 1)), true)
        } else if matches!(name.as_str(), "BLMPOP" | "BZMPOP") {
            (args.first(), false)
        } else {
            (args.last(), false)
        };
        let parsed = raw
            .and_then(|a| std::str::from_utf8(a.as_bytes()).ok())
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0);
        match parsed {
            Some(v) if v > 0.0 => Ok(Duration::from_secs_f64(if millis { v / 1000.0 } else { v })),
            Some(_) => Err(Error::InvalidInput(format!(
                "{name} with timeout 0 blocks forever; use a finite timeout and loop, so a lost connection is noticed"
            ))),
            None => Err(Error::InvalidInput(format!(
                "{name} is not a blocking command with a timeout argument redtail can read"
            ))),
        }
    }

    /// The cluster slot of the first key, `None` for a command without keys.
    pub fn slot(&self) -> Option<u16> {
        self.slot
    }

    /// The slots of the command's keys: the first, and the first one that differs from it.
    pub fn slots(&self) -> impl Iterator<Item = u16> {
        self.slot.into_iter().chain(self.other_slot)
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        for arg in self.args.iter().take(8) {
            write!(f, " {arg:?}")?;
        }
        if self.args.len() > 8 {
            write!(f, " ...({} more)", self.args.len() - 8)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_durations_are_read_from_the_command() {
        let blmove = Cmd::new("BLMOVE").arg("a").arg("b").arg("LEFT").arg("RIGHT").arg("1.5");
        assert_eq!(blmove.block_duration().ok(), Some(Duration::from_millis(1500)));
        let xread = Cmd::new("XREAD").arg("BLOCK").arg(250).arg("STREAMS").arg("s").arg("$");
        assert_eq!(xread.block_duration().ok(), Some(Duration::from_millis(250)));
        let forever = Cmd::new("BZPOPMIN").arg("z").arg(0);
        assert!(matches!(forever.block_duration(), Err(Error::InvalidInput(m)) if m.contains("forever")));
    }

    #[test]
    fn commands_with_their_own_method_are_refused_by_call() {
        assert!(Cmd::new("multi").check_callable().is_err());
        assert!(Cmd::new("GET").check_callable().is_ok());
    }
}
