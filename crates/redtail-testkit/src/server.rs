//! One `redis-server` process the harness owns: start, kill, restart, pause, resume.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    Error, Result,
    resp::{self, Reply},
};

/// A `redis-server` (or sentinel) process on a loopback port, in its own folder.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Mutex<Option<Child>>,
    what: String,
    detached: bool,
}

impl Process {
    /// Starts `redis-server` with `args` on a free port in a new folder under `root`.
    /// `config` is written to `redis.conf` first when given (sentinels need a writable file).
    pub(crate) fn start(
        root: &Path,
        what: &str,
        args: &[&str],
        config: Option<&dyn Fn(u16) -> String>,
    ) -> Result<Process> {
        Self::start_with(root, what, args, config, false)
    }

    /// As [`Process::start`]; a `detached` server runs in a process group of its own, so a
    /// Ctrl-C at the terminal does not stop it before its owner has stopped its clients.
    pub(crate) fn start_with(
        root: &Path,
        what: &str,
        args: &[&str],
        config: Option<&dyn Fn(u16) -> String>,
        detached: bool,
    ) -> Result<Process> {
        let mut last = None;
        // A port found free can be taken by another test process before the server binds it.
        for _ in 0..5 {
            let port = free_port()?;
            let dir = root.join(format!("{what}-{port}"));
            fs::create_dir_all(&dir)
                .map_err(|e| Error::Io { context: format!("create {}", dir.display()), source: e })?;
            let mut full: Vec<String> = Vec::new();
            if let Some(config) = config {
                let file = dir.join("redis.conf");
                fs::write(&file, config(port))
                    .map_err(|e| Error::Io { context: format!("write {}", file.display()), source: e })?;
                full.push(file.display().to_string());
            }
            for arg in [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir.display().to_string(),
                "--logfile",
                "redis.log",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
            ] {
                full.push(arg.to_owned());
            }
            full.extend(args.iter().map(|a| (*a).to_owned()));
            let process = Process {
                port,
                dir,
                args: full,
                child: Mutex::new(None),
                what: format!("{what} on port {port}"),
                detached,
            };
            match process.spawn() {
                Ok(()) => return Ok(process),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unexpected("no port could be used".to_owned())))
    }

    fn spawn(&self) -> Result<()> {
        let mut command = Command::new(&crate::ServerBinaries::current().server);
        #[cfg(unix)]
        if self.detached {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let child = command
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::not_installed("REDIS_URL"),
                _ => Error::Io {
                    context: format!("spawn {} for {}", crate::ServerBinaries::current().server.display(), self.what),
                    source: e,
                },
            })?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let pid = self.child.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Child::id);
        let started = Instant::now();
        loop {
            if let Ok(Reply::Status(pong)) = resp::command(self.port, &["PING"])
                && pong == "PONG"
            {
                // Another test process may have taken the port first: make sure the server that
                // answers is the one just started.
                let answering = self.info_field("server", "process_id")?;
                if answering.as_deref() == pid.map(|p| p.to_string()).as_deref() {
                    return Ok(());
                }
                self.kill();
                return Err(self.start_error(format!("port {} is taken by another server", self.port)));
            }
            let exited =
                self.child.lock().unwrap_or_else(|p| p.into_inner()).as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(self.start_error(format!("exited with {status}")));
            }
            if started.elapsed() > Duration::from_secs(10) {
                self.kill();
                return Err(self.start_error("no PONG within 10 s".to_owned()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_error(&self, reason: String) -> Error {
        let log = self.dir.join("redis.log");
        let tail = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(3).collect();
        Error::Start { what: self.what.clone(), reason: format!("{reason}; last log lines: {}", tail.join(" | ")), log }
    }

    /// SIGKILL: no shutdown, no save, connections dropped at once.
    pub(crate) fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, in the same folder, with the same arguments.
    pub(crate) fn restart(&self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Sends a signal to the process with the system `kill` command.
    pub(crate) fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.child.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Child::id);
        let Some(pid) = pid else { return Err(Error::Unexpected(format!("{} is not running", self.what))) };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| Error::Io { context: format!("kill -{signal} {pid}"), source: e })?;
        if status.success() { Ok(()) } else { Err(Error::Unexpected(format!("kill -{signal} {pid} failed: {status}"))) }
    }

    /// Sends a command to this server.
    pub(crate) fn command(&self, args: &[&str]) -> Result<Reply> {
        resp::command(self.port, args)
    }

    /// A field of `INFO`, such as `role`.
    pub(crate) fn info_field(&self, section: &str, field: &str) -> Result<Option<String>> {
        let info = self.command(&["INFO", section])?.text().unwrap_or_default();
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_owned()))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A paused server would ignore everything but SIGKILL, which is what kill sends.
        self.kill();
    }
}

/// A loopback port that is free now, as is `port + 10000` (the cluster bus port).
pub(crate) fn free_port() -> Result<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread processes over the range so parallel test processes rarely race for a port.
    let seed = u16::try_from((std::process::id() as u64 * 7919 + nanos()) % 30_000).unwrap_or(0);
    let _ = NEXT.compare_exchange(0, 20_000 + seed, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..30_000 {
        let mut port = NEXT.fetch_add(1, Ordering::SeqCst);
        if !(20_000..50_000).contains(&port) {
            port = 20_000 + port % 30_000;
            NEXT.store(port + 1, Ordering::SeqCst);
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return Ok(port);
        }
    }
    Err(Error::Unexpected("no free loopback port between 20000 and 50000".to_owned()))
}

pub(crate) fn nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos().into()).unwrap_or(0)
}

/// Polls `check` every 50 ms until it returns `Ok(true)`, for at most `timeout`.
pub(crate) fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(true) = check() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(Error::Timeout { what: what.to_owned(), seconds: timeout.as_secs_f64() });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
