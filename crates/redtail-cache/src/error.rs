//! The cache crate's error type.

use std::sync::Arc;

/// The result type of `redtail-cache`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the cache. A miss is not an error, and neither is a Redis failure on
/// a read: reads answer `None` and count the failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis failed or could not be reached while writing or invalidating.
    #[error(transparent)]
    Redis(#[from] Arc<redtail_core::Error>),
    /// The value could not be encoded.
    #[error("cannot encode the value for {key:?}: {source}")]
    Encode {
        /// The cache key.
        key: String,
        /// What the codec said.
        source: Arc<redtail_core::Error>,
    },
    /// The encoded value is larger than the configured limit.
    #[error(
        "the value for {key:?} is {size} bytes, over the limit of {limit}; cache less or raise CacheConfig::with_max_value_bytes"
    )]
    TooLarge {
        /// The cache key.
        key: String,
        /// Encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The loader of [`crate::Cache::get_or_compute`] failed and no stale value could be served.
    /// Callers that waited on the same load share this error.
    #[error("loading {key:?} failed: {source}")]
    Loader {
        /// The cache key.
        key: String,
        /// The loader's error.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The loader ran past [`crate::EntryOptions::hard_timeout`] and was stopped, and no stale
    /// value could be served. Callers that waited on the same load share this error.
    #[error("loading {key:?} took longer than its hard timeout of {after:?}; the load was stopped")]
    LoadTimeout {
        /// The cache key.
        key: String,
        /// The hard timeout.
        after: std::time::Duration,
    },
    /// Another process is loading the value under the distributed lock, and it did not appear
    /// within the wait of [`crate::EntryOptions::lock_wait`].
    #[error("{key:?} is being loaded by another process; try again shortly")]
    Busy {
        /// The cache key.
        key: String,
    },
    /// A caller-supplied value was refused.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl From<redtail_core::Error> for Error {
    fn from(e: redtail_core::Error) -> Self {
        Error::Redis(Arc::new(e))
    }
}
