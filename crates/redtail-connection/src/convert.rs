//! Conversions between fred's types and redtail-core's.

use std::time::Duration;

use fred::{
    error::{Error as FredError, ErrorKind},
    interfaces::{ClientLike, KeysInterface},
    types::{ClusterHash, CustomCommand, ExpireOptions, Resp3Frame, Value as FredValue},
};
use futures_util::{FutureExt, future::BoxFuture};
use redtail_core::{Arg, Bytes, Cmd, Error, ServerError, Value};

/// A fred command and its arguments from a core [`Cmd`].
pub(crate) fn command(cmd: Cmd, blocking: bool) -> (CustomCommand, Vec<FredValue>) {
    let (name, args, slot) = cmd.into_parts();
    let hash = slot.map_or(ClusterHash::Random, ClusterHash::Custom);
    let args = args.into_iter().map(|a: Arg| FredValue::Bytes(a.into_bytes())).collect();
    (CustomCommand::new_static(name, hash, blocking), args)
}

/// Sends `cmd` through `client` inside a `MULTI` whose `EXEC` is read raw, so only its `QUEUED`
/// reply matters. fred flushes the socket after every custom command, but feeds its typed
/// commands and flushes once when several are queued (its auto-pipelining); so the commands a
/// transaction carries most (those of the rate limiter's script-free path) go as typed commands,
/// and a transaction of many callers is a few writes instead of one per command. Others go as
/// custom commands.
pub(crate) fn queued<C>(client: &C, cmd: Cmd) -> BoxFuture<'_, Result<FredValue, FredError>>
where
    C: ClientLike + KeysInterface + Sync,
{
    let typed = match (cmd.name(), cmd.arguments()) {
        ("GET", [key]) => Some(client.get::<FredValue, _>(fred_key(key)).boxed()),
        ("PTTL", [key]) => Some(client.pttl::<FredValue, _>(fred_key(key)).boxed()),
        ("INCRBY", [key, by]) => int(by).map(|by| client.incr_by::<FredValue, _>(fred_key(key), by).boxed()),
        ("PEXPIRE", [key, ms, rest @ ..]) => {
            let option = match rest {
                [] => Some(None),
                [option] => match option.as_bytes().to_ascii_uppercase().as_slice() {
                    b"NX" => Some(Some(ExpireOptions::NX)),
                    b"XX" => Some(Some(ExpireOptions::XX)),
                    b"GT" => Some(Some(ExpireOptions::GT)),
                    b"LT" => Some(Some(ExpireOptions::LT)),
                    _ => None,
                },
                _ => None,
            };
            int(ms).zip(option).map(|(ms, option)| client.pexpire::<FredValue, _>(fred_key(key), ms, option).boxed())
        }
        _ => None,
    };
    typed.unwrap_or_else(|| {
        let (command, args) = command(cmd, false);
        client.custom::<FredValue, _>(command, args).boxed()
    })
}

/// A command without arguments or keys (`MULTI`, `EXEC`), routed by the client's options.
pub(crate) fn bare(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

fn fred_key(arg: &Arg) -> fred::types::Key {
    fred::types::Key::from(arg.clone().into_bytes())
}

fn int(arg: &Arg) -> Option<i64> {
    std::str::from_utf8(arg.as_bytes()).ok()?.parse().ok()
}

/// A core value from a fred value.
pub(crate) fn value(v: FredValue) -> Value {
    match v {
        FredValue::Null => Value::Nil,
        FredValue::Integer(i) => Value::Int(i),
        FredValue::String(s) => Value::Bytes(s.into_inner()),
        FredValue::Bytes(b) => Value::Bytes(b),
        FredValue::Double(d) => Value::Double(d),
        FredValue::Boolean(b) => Value::Bool(b),
        FredValue::Queued => Value::Bytes(Bytes::from_static(b"QUEUED")),
        FredValue::Array(a) => Value::Array(a.into_iter().map(value).collect()),
        FredValue::Map(m) => {
            Value::Map(m.inner().into_iter().map(|(k, v)| (Value::Bytes(k.inner().clone()), value(v))).collect())
        }
    }
}

/// A core value from a raw reply frame; unlike fred's conversion, nested error replies are kept
/// as [`Value::Error`] (an `EXEC` reply holds one per failed command).
pub(crate) fn frame(f: Resp3Frame) -> Value {
    let error = |data: &[u8]| Value::Error(ServerError::new(String::from_utf8_lossy(data)));
    match f {
        Resp3Frame::Null => Value::Nil,
        Resp3Frame::Number { data, .. } => Value::Int(data),
        Resp3Frame::Double { data, .. } => Value::Double(data),
        Resp3Frame::Boolean { data, .. } => Value::Bool(data),
        Resp3Frame::BlobString { data, .. }
        | Resp3Frame::SimpleString { data, .. }
        | Resp3Frame::VerbatimString { data, .. }
        | Resp3Frame::BigNumber { data, .. } => Value::Bytes(data),
        Resp3Frame::SimpleError { data, .. } => error(data.as_bytes()),
        Resp3Frame::BlobError { data, .. } => error(&data),
        Resp3Frame::Array { data, .. } | Resp3Frame::Push { data, .. } => {
            Value::Array(data.into_iter().map(frame).collect())
        }
        Resp3Frame::Set { data, .. } => Value::Array(data.into_iter().map(frame).collect()),
        Resp3Frame::Map { data, .. } => Value::Map(data.into_iter().map(|(k, v)| (frame(k), frame(v))).collect()),
        _ => Value::Error(ServerError::new("ERR reply frame type not supported by redtail")),
    }
}

/// Whether fred's error carries an error reply from the server rather than a client failure.
fn is_server_reply(e: &FredError) -> bool {
    let server_kinds = matches!(
        e.kind(),
        ErrorKind::Unknown
            | ErrorKind::InvalidArgument
            | ErrorKind::InvalidCommand
            | ErrorKind::Auth
            | ErrorKind::Cluster
    );
    let code = e.details().split_whitespace().next().unwrap_or("");
    server_kinds && code.len() >= 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Whether fred handed back a `MOVED` or `ASK` redirection (it follows none: `max_redirections`
/// is 0); the command did not run.
pub(crate) fn is_redirection(e: &FredError) -> bool {
    *e.kind() == ErrorKind::Routing && e.details().starts_with("Too many redirections")
}

/// A core error from fred's; `timeout` is the limit that applied, for the message.
pub(crate) fn error(e: FredError, timeout: Duration) -> Error {
    if is_server_reply(&e) {
        return Error::Server(ServerError::new(e.details()));
    }
    match e.kind() {
        ErrorKind::Timeout => Error::Timeout(timeout),
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Backpressure | ErrorKind::Routing => {
            Error::Connection { source: Box::new(e) }
        }
        // fred's answers for a command that finds no connection while it reconnects, for a
        // call written at most once that met a redirection (`MOVED`), and for a call whose
        // client's connection task ended before it was answered (docs/compatibility.md, "A slot
        // that migrates"): none is the server's answer.
        ErrorKind::Unknown
            if ["Failed to route command", "Too many failed write attempts", "channel closed"]
                .iter()
                .any(|start| e.details().starts_with(start)) =>
        {
            Error::Connection { source: Box::new(e) }
        }
        _ => Error::Backend { source: Box::new(e) },
    }
}

/// A reply of a pipeline or transaction: error replies stay in place as [`Value::Error`].
pub(crate) fn reply(r: Result<FredValue, FredError>, timeout: Duration) -> Result<Value, Error> {
    match r {
        Ok(v) => Ok(value(v)),
        Err(e) => match error(e, timeout) {
            Error::Server(s) => Ok(Value::Error(s)),
            other => Err(other),
        },
    }
}

/// Whether a command only reads, so that it needs no replica acknowledgement. Anything not
/// listed is taken to write.
pub(crate) fn is_read(name: &str) -> bool {
    const READS: &[&str] = &[
        "EXISTS",
        "GET",
        "GETRANGE",
        "HEXISTS",
        "HGET",
        "HGETALL",
        "HKEYS",
        "HLEN",
        "HMGET",
        "HSCAN",
        "HVALS",
        "LINDEX",
        "LLEN",
        "LRANGE",
        "MGET",
        "PING",
        "PTTL",
        "SCAN",
        "SCARD",
        "SISMEMBER",
        "SMEMBERS",
        "SSCAN",
        "STRLEN",
        "TIME",
        "TTL",
        "TYPE",
        "XLEN",
        "XRANGE",
        "XREVRANGE",
        "ZCARD",
        "ZCOUNT",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZRANK",
        "ZREVRANGE",
        "ZSCAN",
        "ZSCORE",
    ];
    READS.iter().any(|read| read.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_side_failures_are_unavailable_and_server_replies_stay_the_servers() {
        let timeout = Duration::from_secs(1);
        for details in ["Failed to route command.", "Too many failed write attempts.", "channel closed"] {
            let e = error(FredError::new(ErrorKind::Unknown, details), timeout);
            assert!(matches!(e, Error::Connection { .. }) && e.is_unavailable(), "{details}: {e:?}");
        }
        let e = error(
            FredError::new(ErrorKind::Unknown, "TRYAGAIN Multiple keys request during rehashing of slot"),
            timeout,
        );
        assert!(matches!(e, Error::Server(_)) && e.is_unavailable(), "{e:?}");
        let e = error(FredError::new(ErrorKind::Unknown, "ERR wrong number of arguments"), timeout);
        assert!(matches!(e, Error::Server(_)) && !e.is_unavailable(), "{e:?}");
    }
}
