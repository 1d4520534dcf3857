//! The rate-limit crate's error type.

/// The result type of `redtail-ratelimit`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong. Being limited is not an error: it is [`Decision::Limited`](crate::Decision).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis failed or could not be reached; no retry was made, so nothing was counted twice.
    #[error(transparent)]
    Redis(#[from] redtail_core::Error),
    /// The cost is larger than the policy could ever admit at once: waiting will not help.
    #[error("a cost of {cost} can never fit policy {policy}, which admits at most {capacity} at once")]
    CannotFit {
        /// The policy.
        policy: String,
        /// The cost asked for.
        cost: u64,
        /// The most the policy admits at once.
        capacity: u64,
    },
    /// A policy, subject or cost was refused.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The script's reply did not have the expected shape.
    #[error("unexpected rate-limit script reply: {0}")]
    Reply(String),
}
