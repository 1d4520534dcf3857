//! `Value`: one typed reply from Redis.

use bytes::Bytes;

use crate::{Error, Result, ServerError};

/// A reply from Redis.
///
/// Simple strings (`OK`) and bulk strings both arrive as [`Value::Bytes`].
/// Error replies nested inside arrays (from `EXEC` or a pipeline) arrive as [`Value::Error`];
/// a top-level error reply is an [`Error::Server`] instead.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A nil reply: a missing key, a timed-out blocking pop.
    Nil,
    /// An integer reply.
    Int(i64),
    /// A string reply, binary safe.
    Bytes(Bytes),
    /// A RESP3 double.
    Double(f64),
    /// A RESP3 boolean.
    Bool(bool),
    /// An array reply.
    Array(Vec<Value>),
    /// A RESP3 map, in server order.
    Map(Vec<(Value, Value)>),
    /// An error reply nested in an array.
    Error(ServerError),
}

impl Value {
    /// Whether this is [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        const MAX: usize = 64;
        match self {
            Value::Nil => "nil".to_owned(),
            Value::Int(i) => format!("integer {i}"),
            Value::Bytes(b) => {
                let text = String::from_utf8_lossy(&b[..b.len().min(MAX)]);
                format!("string {text:?}{}", if b.len() > MAX { "..." } else { "" })
            }
            Value::Double(d) => format!("double {d}"),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Array(a) => format!("array of {}", a.len()),
            Value::Map(m) => format!("map of {}", m.len()),
            Value::Error(e) => format!("error {:?}", e.message()),
        }
    }

    fn unexpected<T>(&self, expected: &'static str) -> Result<T> {
        match self {
            Value::Error(e) => Err(Error::Server(e.clone())),
            other => Err(Error::UnexpectedReply { expected, got: other.describe() }),
        }
    }

    /// The integer, also parsed from a string reply such as `"42"` (what `GET` of a counter returns).
    pub fn as_int(&self) -> Result<i64> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or_else(|| self.unexpected("an integer"), Ok),
            _ => self.unexpected("an integer"),
        }
    }

    /// The integer, or `None` for nil.
    pub fn as_opt_int(&self) -> Result<Option<i64>> {
        if self.is_nil() { Ok(None) } else { self.as_int().map(Some) }
    }

    /// The bytes of a string reply, or `None` for nil.
    pub fn into_opt_bytes(self) -> Result<Option<Bytes>> {
        match self {
            Value::Nil => Ok(None),
            Value::Bytes(b) => Ok(Some(b)),
            Value::Int(i) => Ok(Some(Bytes::from(i.to_string()))),
            other => other.unexpected("a string or nil"),
        }
    }

    /// The bytes of a string reply.
    pub fn into_bytes(self) -> Result<Bytes> {
        match self {
            Value::Bytes(b) => Ok(b),
            Value::Int(i) => Ok(Bytes::from(i.to_string())),
            other => other.unexpected("a string"),
        }
    }

    /// A string reply as UTF-8 text.
    pub fn into_string(self) -> Result<String> {
        let bytes = self.into_bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::UnexpectedReply {
            expected: "UTF-8 text",
            got: format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        })
    }

    /// The elements of an array reply; nil is an empty array.
    pub fn into_array(self) -> Result<Vec<Value>> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Nil => Ok(Vec::new()),
            other => other.unexpected("an array"),
        }
    }

    /// Whether this is the status reply `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Value::Bytes(b) if b.as_ref() == b"OK")
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_stored_as_strings_read_as_integers() {
        assert_eq!(Value::from("42").as_int().ok(), Some(42));
        assert!(matches!(Value::from("4x").as_int(), Err(Error::UnexpectedReply { .. })));
    }

    #[test]
    fn nested_error_surfaces_as_server_error() {
        let v = Value::Error(ServerError::new("WRONGTYPE Operation against a key"));
        let err = v.as_int().err();
        assert!(err.is_some_and(|e| e.is_server_code("WRONGTYPE")));
    }

    #[test]
    fn long_strings_are_shortened_in_descriptions() {
        let v = Value::Bytes(Bytes::from(vec![b'a'; 500]));
        assert!(v.describe().len() < 100);
    }
}
