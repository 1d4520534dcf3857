//! `Cmd`: one Redis command with its arguments and the cluster slot of its first key.

use std::fmt;

use bytes::Bytes;

use crate::Key;

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
