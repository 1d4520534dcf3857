//! The core error type shared by every backend and feature crate.

use std::{fmt, sync::Arc, time::Duration};

/// A boxed error from a backend implementation, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of `redtail-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error reply sent by the Redis server, such as `WRONGTYPE ...` or `NOSCRIPT ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    message: String,
}

impl ServerError {
    /// Wraps a server error line, for example `ERR value is not an integer or out of range`.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// The error code: the first word of the reply (`ERR`, `WRONGTYPE`, `NOSCRIPT`, `READONLY`, ...).
    pub fn code(&self) -> &str {
        self.message.split_whitespace().next().unwrap_or("")
    }

    /// The whole reply line as the server sent it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

/// Everything that can go wrong when talking to Redis through a [`Backend`](crate::Backend).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error reply.
    #[error("redis replied with an error: {0}")]
    Server(#[from] ServerError),
    /// No reply arrived within the timeout.
    /// Whether the command was applied is unknown: it may have reached the server.
    #[error("redis did not answer within {0:?}; the command may or may not have been applied")]
    Timeout(Duration),
    /// The write was applied on the primary, but fewer replicas than asked acknowledged it in
    /// time (`WAIT`; see the backend's replica acknowledgement setting). Like a timeout, its
    /// outcome is unknown: a failover now may lose it.
    #[error(
        "redis applied the write but {acked} of {wanted} replicas acknowledged it within {waited:?}; a failover may lose it"
    )]
    NotReplicated {
        /// Replicas that acknowledged it.
        acked: u64,
        /// Replicas asked for.
        wanted: u32,
        /// How long it waited.
        waited: Duration,
    },
    /// The connection could not be made or was lost before the command was sent or answered.
    #[error("cannot reach redis: {source}")]
    Connection {
        /// What the client library reported.
        #[source]
        source: BoxError,
    },
    /// The keys of one transaction or script map to different cluster hash slots.
    #[error(
        "keys of one {what} must share a hash slot, found slots {first} and {other}; build them from one `Namespace::tagged` namespace"
    )]
    CrossSlot {
        /// `transaction` or `script`.
        what: &'static str,
        /// Slot of the first key.
        first: u16,
        /// Slot of the first key that differs.
        other: u16,
    },
    /// The reply did not have the shape the caller expected.
    #[error("unexpected reply from redis: expected {expected}, got {got}")]
    UnexpectedReply {
        /// What the caller expected, such as `an integer`.
        expected: &'static str,
        /// A short description of what arrived.
        got: String,
    },
    /// A value could not be encoded or decoded by a [`Codec`](crate::Codec).
    #[error("cannot {action} value: {source}")]
    Codec {
        /// `encode` or `decode`.
        action: &'static str,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// A caller-supplied value was rejected before anything was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Too many callers already wait for batched requests (see
    /// [`Batcher::MAX_WAITING`](crate::Batcher::MAX_WAITING)): the request was not queued, and
    /// nothing was sent. Redis is slow or gone; a caller decides as if it were unavailable.
    #[error("{waiting} batched requests already wait for redis; this one was not queued and nothing was sent")]
    Overloaded {
        /// How many were waiting.
        waiting: usize,
    },
    /// The backend is shutting down and takes no new commands.
    #[error("the redis backend is shutting down and takes no new commands")]
    ShuttingDown,
    /// Any other backend failure, with its source kept.
    #[error("redis backend error: {source}")]
    Backend {
        /// What the backend reported.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// The same error once for each of `n` callers that shared one batched call
    /// ([`Batcher`](crate::Batcher)), with the sources kept (shared between the copies).
    pub fn fan_out(self, n: usize) -> Vec<Error> {
        let shared = |source: BoxError| Arc::new(Shared(source));
        let copy: Box<dyn Fn() -> Error> = match self {
            Error::Server(e) => Box::new(move || Error::Server(e.clone())),
            Error::Timeout(d) => Box::new(move || Error::Timeout(d)),
            Error::NotReplicated { acked, wanted, waited } => {
                Box::new(move || Error::NotReplicated { acked, wanted, waited })
            }
            Error::Connection { source } => {
                let source = shared(source);
                Box::new(move || Error::Connection { source: Box::new(Arc::clone(&source)) })
            }
            Error::CrossSlot { what, first, other } => Box::new(move || Error::CrossSlot { what, first, other }),
            Error::UnexpectedReply { expected, got } => {
                Box::new(move || Error::UnexpectedReply { expected, got: got.clone() })
            }
            Error::Codec { action, source } => {
                let source = shared(source);
                Box::new(move || Error::Codec { action, source: Box::new(Arc::clone(&source)) })
            }
            Error::InvalidInput(m) => Box::new(move || Error::InvalidInput(m.clone())),
            Error::Overloaded { waiting } => Box::new(move || Error::Overloaded { waiting }),
            Error::ShuttingDown => Box::new(|| Error::ShuttingDown),
            Error::Backend { source } => {
                let source = shared(source);
                Box::new(move || Error::Backend { source: Box::new(Arc::clone(&source)) })
            }
        };
        (0..n).map(|_| copy()).collect()
    }

    /// The server error reply, when this error is one.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the server answered `code` (for example `NOSCRIPT` or `WRONGTYPE`).
    pub fn is_server_code(&self, code: &str) -> bool {
        self.server().is_some_and(|e| e.code() == code)
    }

    /// Whether the error means Redis could not be reached, did not answer in time, or cannot
    /// serve the command in its present state: out of memory with `noeviction` (`OOM`), loading
    /// its data (`LOADING`), busy with a long script (`BUSY`), without a primary or a quorum of
    /// replicas (`MASTERDOWN`, `CLUSTERDOWN`, `NOREPLICAS`, or a write its replicas did not
    /// acknowledge: [`Error::NotReplicated`]), or migrating the keys (`TRYAGAIN`).
    /// Callers with a fallback (a rate limit's failure mode, a cache miss) take it for these.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Timeout(_)
            | Error::NotReplicated { .. }
            | Error::Connection { .. }
            | Error::ShuttingDown
            | Error::Overloaded { .. } => true,
            Error::Server(e) => {
                matches!(
                    e.code(),
                    "OOM" | "LOADING" | "BUSY" | "MASTERDOWN" | "CLUSTERDOWN" | "NOREPLICAS" | "TRYAGAIN"
                )
            }
            _ => false,
        }
    }
}

/// An error source shared by the copies of [`Error::fan_out`]; shows and chains as the original.
#[derive(Debug)]
struct Shared(BoxError);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
