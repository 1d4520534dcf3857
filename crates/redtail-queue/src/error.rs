//! The queue crate's error type.

/// The result type of `redtail-queue`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong. A job that fails is not an error of the queue: it is retried or
/// dead-lettered, and its errors are kept with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis failed or could not be reached. A script is never sent twice, so nothing was
    /// applied twice; after a timeout it is unknown whether it was applied once.
    #[error(transparent)]
    Redis(#[from] redtail_core::Error),
    /// Job data could not be encoded as JSON.
    #[error("cannot encode job data: {0}")]
    Encode(#[source] serde_json::Error),
    /// A stored value (a flow child's result) is not of the type asked for.
    #[error("cannot decode a stored value: {0}")]
    Decode(#[source] serde_json::Error),
    /// Encoded job data is larger than the queue accepts.
    #[error("job data is {size} bytes, more than this queue's limit of {max}")]
    TooLarge {
        /// Size of the encoded data.
        size: usize,
        /// The queue's `max_payload_bytes`.
        max: usize,
    },
    /// A queue name, job id or option was refused.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The operation needs the queue or job to be idle, and it is not.
    #[error("busy: {0}")]
    Busy(String),
    /// A script's reply did not have the expected shape.
    #[error("unexpected queue script reply: {0}")]
    Reply(String),
}
