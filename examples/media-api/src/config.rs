//! Configuration from the command line and environment variables, checked at start-up.

use std::{env, net::SocketAddr, time::Duration};

/// Where the service keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Store {
    /// A Redis deployment, by URL.
    Redis(String),
    /// The in-memory backend: nothing survives a restart.
    Memory,
}

/// Which parts of the service run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The HTTP API with a worker in the same process.
    All,
    /// The HTTP API only.
    Api,
    /// The worker only (`--worker-only`).
    Worker,
}

/// A demo account: `name:password:role`.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) role: String,
}

/// The service's settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) addr: SocketAddr,
    pub(crate) store: Store,
    pub(crate) role: Role,
    pub(crate) users: Vec<User>,
    pub(crate) secure_cookies: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) download_step: Duration,
    /// Completed jobs kept per queue, when not the queues' defaults.
    pub(crate) keep_completed: Option<u64>,
    /// Where the worker appends a line per attempt (`MEDIA_API_JOB_LEDGER`).
    pub(crate) job_ledger: Option<std::path::PathBuf>,
    /// Replicas that must hold each write before it is answered (`MEDIA_API_REPLICA_ACKS`).
    pub(crate) replica_acks: u32,
    /// The least severe log event printed (`MEDIA_API_LOG`).
    pub(crate) log: tracing_subscriber::filter::LevelFilter,
}

pub(crate) const HELP: &str = "\
media-api: the media-server backend of the original design, on redtail

usage: media-api [--memory] [--worker-only]

  --memory        keep data in process (no Redis); nothing survives a restart
  --worker-only   run only the job worker, no HTTP

environment (defaults in brackets):
  MEDIA_API_ADDR            address to listen on [127.0.0.1:3000]
  REDIS_URL                 Redis to use [redis://127.0.0.1:6379]; any redtail URL scheme
  MEDIA_API_USERS           demo accounts, name:password:role,... [admin:admin:admin,alice:alice:user,bob:bob:user]
  MEDIA_API_SECURE_COOKIES  true when served over TLS (adds Secure to the session cookie) [false]
  MEDIA_API_WORKER          inline: run the worker in this process; off: API only [inline]
  MEDIA_API_MAX_BODY_BYTES  largest request body accepted [16384]
  MEDIA_API_DOWNLOAD_STEP_MS  time per progress step of a simulated download [400]
  MEDIA_API_KEEP_COMPLETED  completed jobs kept (an hour at most) per queue [100 downloads, 1000 requests]
  MEDIA_API_JOB_LEDGER      a file the worker appends `<ms> start|done|fail <job id> <attempt>` to,
                            one line per event (the soak's account of every attempt) [none]
  MEDIA_API_LOG             the least severe of redtail's log events printed to stderr: off, error, warn,
                            info, debug or trace [warn]
  MEDIA_API_REPLICA_ACKS    replicas that must hold each write before it is answered, waiting
                            up to 250 ms (WAIT); 0 for none. With Sentinel, 1 keeps a failover from
                            losing a job just added [0]
";

impl Config {
    /// Reads the command line `args` (without the program name) and the environment.
    pub(crate) fn load(args: &[String]) -> Result<Config, String> {
        let mut memory = false;
        let mut worker_only = false;
        for arg in args {
            match arg.as_str() {
                "--memory" => memory = true,
                "--worker-only" => worker_only = true,
                "-h" | "--help" => return Err(HELP.to_owned()),
                other => return Err(format!("unknown argument {other:?}\n\n{HELP}")),
            }
        }
        let var = |name: &str| env::var(name).ok().filter(|v| !v.trim().is_empty());
        let addr = parse("MEDIA_API_ADDR", var("MEDIA_API_ADDR"), "127.0.0.1:3000", |v| v.parse::<SocketAddr>().ok())?;
        let store = if memory {
            Store::Memory
        } else {
            Store::Redis(var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()))
        };
        let worker = var("MEDIA_API_WORKER").unwrap_or_else(|| "inline".to_owned());
        let role = match (worker_only, worker.as_str()) {
            (true, _) => Role::Worker,
            (false, "inline") => Role::All,
            (false, "off") => Role::Api,
            (false, other) => return Err(format!("MEDIA_API_WORKER={other:?}: expected inline or off")),
        };
        if worker_only && store == Store::Memory {
            return Err("--worker-only needs Redis: an in-memory worker would see no jobs".to_owned());
        }
        let users = parse_users(
            &var("MEDIA_API_USERS").unwrap_or_else(|| "admin:admin:admin,alice:alice:user,bob:bob:user".to_owned()),
        )?;
        let secure_cookies =
            parse("MEDIA_API_SECURE_COOKIES", var("MEDIA_API_SECURE_COOKIES"), "false", |v| v.parse::<bool>().ok())?;
        let max_body_bytes = parse("MEDIA_API_MAX_BODY_BYTES", var("MEDIA_API_MAX_BODY_BYTES"), "16384", |v| {
            v.parse::<usize>().ok().filter(|n| (256..=16 * 1024 * 1024).contains(n))
        })?;
        let step = parse("MEDIA_API_DOWNLOAD_STEP_MS", var("MEDIA_API_DOWNLOAD_STEP_MS"), "400", |v| {
            v.parse::<u64>().ok().filter(|n| *n <= 60_000)
        })?;
        let keep_completed = match var("MEDIA_API_KEEP_COMPLETED") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("MEDIA_API_KEEP_COMPLETED={v:?} is not a number of jobs; see --help"))?,
            ),
        };
        let job_ledger = var("MEDIA_API_JOB_LEDGER").map(std::path::PathBuf::from);
        let log = parse("MEDIA_API_LOG", var("MEDIA_API_LOG"), "warn", |v| {
            v.parse::<tracing_subscriber::filter::LevelFilter>().ok()
        })?;
        let replica_acks = parse("MEDIA_API_REPLICA_ACKS", var("MEDIA_API_REPLICA_ACKS"), "0", |v| {
            v.parse::<u32>().ok().filter(|n| *n <= 16)
        })?;
        Ok(Config {
            addr,
            store,
            role,
            users,
            secure_cookies,
            max_body_bytes,
            download_step: Duration::from_millis(step),
            keep_completed,
            job_ledger,
            replica_acks,
            log,
        })
    }
}

fn parse<T>(name: &str, value: Option<String>, default: &str, read: impl Fn(&str) -> Option<T>) -> Result<T, String> {
    let text = value.unwrap_or_else(|| default.to_owned());
    read(text.trim()).ok_or_else(|| format!("{name}={text:?} is not valid (default {default}); see --help"))
}

fn parse_users(text: &str) -> Result<Vec<User>, String> {
    let mut users = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split(':').collect();
        let [name, password, role] = parts[..] else {
            return Err(format!("MEDIA_API_USERS entry {entry:?} is not name:password:role"));
        };
        if name.is_empty() || password.is_empty() || !matches!(role, "user" | "admin") {
            return Err(format!("MEDIA_API_USERS entry {entry:?}: name and password must be set, role user or admin"));
        }
        users.push(User { name: name.to_owned(), password: password.to_owned(), role: role.to_owned() });
    }
    if users.is_empty() {
        return Err("MEDIA_API_USERS holds no account".to_owned());
    }
    Ok(users)
}
