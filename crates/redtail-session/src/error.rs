//! The session crate's error type.

/// The result type of `redtail-session`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with sessions. An unknown, expired or malformed token is not an error:
/// lookups answer `None`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis failed or could not be reached.
    #[error(transparent)]
    Redis(#[from] redtail_core::Error),
    /// The session data, once encoded, is larger than the configured limit.
    #[error(
        "session data is {size} bytes, over the limit of {limit} bytes; store less in the session or raise SessionConfig::with_max_data_bytes"
    )]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A caller-supplied value was refused.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The operating system's random generator failed.
    #[error("cannot draw a session token from the OS random generator: {0}")]
    Random(String),
}
