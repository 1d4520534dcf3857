//! The testkit's error type.

use std::path::PathBuf;

/// The result type of `redtail-testkit`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a test server could not be provided or a fault not injected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No way to get a server: nothing is configured and the server binary (`redis-server`, or
    /// the one [`ServerBinaries`](crate::ServerBinaries) names) is not installed.
    #[error("no server for tests: {hint}; or set {env} to a server the tests may write to")]
    NotInstalled {
        /// The variable that would name an existing server.
        env: &'static str,
        /// What is missing and how to install it.
        hint: String,
    },
    /// A server process did not start or did not become ready.
    #[error("{what} did not start: {reason} (log: {log})")]
    Start {
        /// Which server.
        what: String,
        /// What was seen.
        reason: String,
        /// The server's log file.
        log: PathBuf,
    },
    /// Talking to a test server failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A server answered something unexpected.
    #[error("{0}")]
    Unexpected(String),
    /// Faults need servers the harness started itself, not ones named by an environment variable.
    #[error(
        "cannot inject `{fault}`: the servers come from {env}, and faults need servers the harness owns; use an owned deployment"
    )]
    External {
        /// The fault asked for.
        fault: &'static str,
        /// The variable the servers came from.
        env: &'static str,
    },
    /// A condition was not reached in time.
    #[error("timed out after {seconds:.1} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        seconds: f64,
    },
}

impl Error {
    /// The server binary in use is missing; `env` would name an existing server instead.
    pub(crate) fn not_installed(env: &'static str) -> Error {
        Error::NotInstalled { env, hint: crate::ServerBinaries::current().install_hint() }
    }
}
