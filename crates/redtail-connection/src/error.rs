//! The connection crate's error type.

/// The result type of `redtail-connection`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from configuring and connecting; commands return [`redtail_core::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration (usually a URL) is not usable.
    #[error("{0}")]
    Config(String),
    /// The first connection could not be made.
    #[error("cannot connect to redis at {target}: {reason}")]
    Connect {
        /// The server, with any password removed.
        target: String,
        /// What went wrong and what to check.
        reason: String,
        /// What the client library reported, when it did.
        #[source]
        source: Option<redtail_core::Error>,
    },
    /// A command failed.
    #[error(transparent)]
    Redis(#[from] redtail_core::Error),
}
