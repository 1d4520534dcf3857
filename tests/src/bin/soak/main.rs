//! `cargo xtask soak`: the demo service and its worker under load while faults are injected on a
//! schedule, then an exact account; exits non-zero when any line of the account is wrong.
//!
//! ```text
//! soak [--secs N] [--mode standalone|cluster|sentinel] [--users N] [--tasks N]
//! soak load <base-url> <secs> <users> <tasks> <out-dir>      (the load generator process)
//! ```
//!
//! The run: a Redis of its own (standalone with AOF `appendfsync always`, or a cluster or a
//! sentinel set), `media-api` serving HTTP in one process and its worker in another (so the
//! worker can be killed), the load generator in a third. Every 90 s cycle injects, in order:
//! every client connection dropped, `SCRIPT FLUSH`, the worker killed with SIGKILL and started
//! again, Redis paused 3 s (SIGSTOP), Redis killed with SIGKILL and restarted (standalone) or a
//! failover (cluster, sentinel), and `maxmemory` reached with `noeviction` for 4 s. After each
//! fault, the time until the service answers a login and a session read again is measured.

mod account;
mod http;
mod load;

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use redtail_testkit::{Deployment, FaultProxy, TestRedis};

use crate::http::Http;

/// Milliseconds since the Unix epoch: the time base shared by the processes of a run.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
struct Options {
    secs: u64,
    mode: Deployment,
    users: usize,
    tasks: usize,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = if args.first().map(String::as_str) == Some("load") {
        load_process(&args[1..])
    } else {
        parse(&args).and_then(|options| soak(&options))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())
}

fn load_process(args: &[String]) -> Result<(), String> {
    let [base, secs, users, tasks, out] = args else {
        return Err("usage: soak load <base-url> <secs> <users> <tasks> <out-dir>".to_owned());
    };
    let number = |v: &str| v.parse::<usize>().map_err(|_| format!("{v:?} is not a number"));
    let (secs, users, tasks) = (number(secs)? as u64, number(users)?, number(tasks)?);
    runtime()?.block_on(load::run(base, secs, users, tasks, Path::new(out)))
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options { secs: 90, mode: Deployment::Standalone, users: 600, tasks: 40 };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--secs" => options.secs = value()?.parse().map_err(|_| "--secs takes a number of seconds")?,
            "--users" => options.users = value()?.parse().map_err(|_| "--users takes a number")?,
            "--tasks" => options.tasks = value()?.parse().map_err(|_| "--tasks takes a number")?,
            "--mode" => {
                options.mode = match value()?.as_str() {
                    "standalone" => Deployment::Standalone,
                    "cluster" => Deployment::Cluster,
                    "sentinel" => Deployment::Sentinel,
                    other => return Err(format!("unknown mode {other:?} (standalone, cluster or sentinel)")),
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.secs < 30 || options.users == 0 || options.tasks == 0 {
        return Err("--secs must be at least 30, --users and --tasks at least 1".to_owned());
    }
    Ok(options)
}

/// A fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    DropClients,
    ScriptFlush,
    KillWorker,
    Pause,
    KillRedis,
    Failover,
    MemoryPressure,
    Latency,
    Stall,
    Reset,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::DropClients => "CLIENT KILL (every connection)",
            Fault::ScriptFlush => "SCRIPT FLUSH",
            Fault::KillWorker => "worker SIGKILL + restart",
            Fault::Pause => "Redis SIGSTOP 3 s",
            Fault::KillRedis => "Redis SIGKILL + restart (AOF)",
            Fault::Failover => "failover",
            Fault::MemoryPressure => "maxmemory reached, noeviction, 4 s",
            Fault::Latency => "network: 2 s latency for 3 s (proxy)",
            Fault::Stall => "network: connections stall (half-open)",
            Fault::Reset => "network: connections reset (RST)",
        }
    }
}

/// One fault as it happened: when it started and ended (ms since the epoch), how long until the
/// service worked again after it ended, and what it observed.
#[derive(Debug, Clone)]
pub(crate) struct Injected {
    pub(crate) fault: Fault,
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    pub(crate) recovered: Option<Duration>,
    pub(crate) note: String,
}

/// The schedule of one 90 s cycle: offset in seconds, fault.
/// On standalone the services reach Redis through a fault proxy, and the network faults run too
/// (cluster and sentinel clients learn the servers' own addresses, which would bypass it).
fn schedule(mode: Deployment) -> Vec<(u64, Fault)> {
    let redis_down = if mode == Deployment::Standalone { Fault::KillRedis } else { Fault::Failover };
    let mut faults = vec![
        (8, Fault::DropClients),
        (16, Fault::ScriptFlush),
        (24, Fault::KillWorker),
        (34, Fault::Pause),
        (46, redis_down),
        (62, Fault::MemoryPressure),
    ];
    if mode == Deployment::Standalone {
        faults.extend([(70, Fault::Latency), (77, Fault::Stall), (83, Fault::Reset)]);
    }
    faults
}

const CYCLE_SECS: u64 = 90;

/// The service's processes: the HTTP API, and the worker, which the schedule kills.
struct Services {
    binary: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    api: Child,
    worker: Child,
    worker_pid: Arc<AtomicU32>,
    workers_started: u32,
    base: String,
}

impl Services {
    fn start(
        binary: &Path,
        dir: &Path,
        redis: &TestRedis,
        redis_url: &str,
        users: &[String],
    ) -> Result<Services, String> {
        let accounts: Vec<String> = users.iter().map(|u| format!("{u}:{u}:user")).collect();
        // With replicas, a write is answered once one holds it: replication is asynchronous, and
        // a failover otherwise loses what the old primary acknowledged in its last milliseconds.
        let replica_acks = if redis.deployment() == Deployment::Standalone { "0" } else { "1" };
        let env = vec![
            ("MEDIA_API_REPLICA_ACKS".to_owned(), replica_acks.to_owned()),
            ("REDIS_URL".to_owned(), redis_url.to_owned()),
            ("MEDIA_API_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "MEDIA_API_USERS".to_owned(),
                format!("admin:admin:admin,abuser:abuser:user,probe:probe:user,{}", accounts.join(",")),
            ),
            ("MEDIA_API_DOWNLOAD_STEP_MS".to_owned(), "5".to_owned()),
            ("MEDIA_API_KEEP_COMPLETED".to_owned(), "1000000".to_owned()),
            ("MEDIA_API_JOB_LEDGER".to_owned(), dir.join("ledger.txt").display().to_string()),
        ];
        let log = |name: &str| {
            fs::File::create(dir.join(name)).map(Stdio::from).map_err(|e| format!("cannot create {name}: {e}"))
        };
        let mut api = Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("MEDIA_API_WORKER", "off")
            .stdout(Stdio::piped())
            .stderr(log("api.log")?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = api.stdout.take().ok_or("media-api has no stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map_err(|e| e.to_string())?;
        let base = line
            .trim()
            .strip_prefix("media-api listening on ")
            .ok_or_else(|| format!("media-api did not start: {line:?}; see {}", dir.join("api.log").display()))?
            .to_owned();
        let worker = Self::spawn_worker(binary, &env, log("worker-1.log")?)?;
        let worker_pid = Arc::new(AtomicU32::new(worker.id()));
        Ok(Services {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            env,
            api,
            worker,
            worker_pid,
            workers_started: 1,
            base,
        })
    }

    fn spawn_worker(binary: &Path, env: &[(String, String)], log: Stdio) -> Result<Child, String> {
        Command::new(binary)
            .arg("--worker-only")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the worker: {e}"))
    }

    fn kill_worker(&mut self) -> Result<(), String> {
        self.worker.kill().map_err(|e| format!("cannot kill the worker: {e}"))?;
        let _ = self.worker.wait();
        Ok(())
    }

    fn restart_worker(&mut self) -> Result<(), String> {
        self.workers_started += 1;
        let name = format!("worker-{}.log", self.workers_started);
        let log = fs::File::create(self.dir.join(&name)).map_err(|e| format!("cannot create {name}: {e}"))?;
        self.worker = Self::spawn_worker(&self.binary, &self.env, Stdio::from(log))?;
        self.worker_pid.store(self.worker.id(), Ordering::SeqCst);
        Ok(())
    }

    /// Stops both processes with SIGTERM; whether each exited cleanly within 20 s.
    fn stop(mut self) -> Vec<(String, bool)> {
        let mut outcome = Vec::new();
        for (name, child) in [("api", &mut self.api), ("worker", &mut self.worker)] {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let started = Instant::now();
            let clean = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status.success(),
                    Ok(None) if started.elapsed() < Duration::from_secs(20) => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        let _ = child.kill();
                        break false;
                    }
                }
            };
            outcome.push((name.to_owned(), clean));
        }
        outcome
    }
}

impl Drop for Services {
    /// A run that fails half way leaves no process behind (after [`Services::stop`], a no-op).
    fn drop(&mut self) {
        for child in [&mut self.api, &mut self.worker] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process killed when dropped: the load generator, if the run fails before it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Memory samples: `(ms, api RSS KiB, RSS KiB of the worker running then, Redis used_memory bytes)`.
pub(crate) type MemorySample = (u64, u64, u64, u64);

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().to_owned()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `used_memory` summed over the data nodes that answer.
fn redis_used_memory(ports: &[u16]) -> u64 {
    ports
        .iter()
        .filter_map(|port| redtail_testkit::resp::command(*port, &["INFO", "memory"]).ok())
        .filter_map(|reply| {
            reply
                .text()?
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:").and_then(|v| v.trim().parse::<u64>().ok()))
        })
        .sum()
}

fn soak(options: &Options) -> Result<(), String> {
    let binary = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("media-api");
    if !binary.exists() {
        return Err(format!("{} is missing: build it first (cargo build -p media-api)", binary.display()));
    }
    let dir = std::env::temp_dir().join(format!("redtail-soak-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let redis = match options.mode {
        Deployment::Standalone => TestRedis::standalone_persistent(),
        kind => TestRedis::owned(kind),
    }
    .map_err(|e| format!("cannot start Redis (install redis-server: apt-get install redis-server): {e}"))?;
    let cycles = options.secs.div_ceil(CYCLE_SECS);
    eprintln!(
        "soak: {:?} {} at {}, {} s of load from {} users in {} tasks, {} fault cycle(s); files in {}",
        options.mode,
        match redtail_testkit::ServerBinaries::current().kind {
            redtail_testkit::ServerKind::Redis => "Redis",
            redtail_testkit::ServerKind::Valkey => "Valkey",
        },
        redis.url(),
        options.secs,
        options.users,
        options.tasks,
        cycles,
        dir.display()
    );
    if options.mode == Deployment::Sentinel {
        // Without it a failover loses every write the old primary takes between the promotion
        // of its replica and its own demotion (seconds): see docs/security.md.
        for port in redis.data_ports() {
            for (name, value) in [("min-replicas-to-write", "1"), ("min-replicas-max-lag", "10")] {
                redis.admin(port, &["CONFIG", "SET", name, value]).map_err(|e| format!("CONFIG SET {name}: {e}"))?;
            }
        }
    }
    let users = load::user_names(options.users);
    let rt = runtime()?;
    let proxy = match options.mode {
        Deployment::Standalone => {
            let upstream = ([127, 0, 0, 1], redis.data_ports()[0]).into();
            Some(rt.block_on(FaultProxy::start(upstream)).map_err(|e| format!("cannot start the fault proxy: {e}"))?)
        }
        _ => None,
    };
    let url = proxy.as_ref().map_or_else(|| redis.url().to_owned(), |p| format!("redis://{}", p.addr()));
    let mut services = Services::start(&binary, &dir, &redis, &url, &users)?;
    let ports = redis.data_ports();
    let baseline_memory = redis_used_memory(&ports);

    // Memory every second, until the account.
    let sampling = Arc::new(AtomicBool::new(true));
    let samples: Arc<Mutex<Vec<MemorySample>>> = Arc::default();
    let sampler = {
        let (sampling, samples, api_pid, worker_pid, ports) = (
            Arc::clone(&sampling),
            Arc::clone(&samples),
            services.api.id(),
            Arc::clone(&services.worker_pid),
            ports.clone(),
        );
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                let worker = worker_pid.load(Ordering::SeqCst);
                let sample = (now_ms(), rss_kib(api_pid), rss_kib(worker), redis_used_memory(&ports));
                if let Ok(mut samples) = samples.lock() {
                    samples.push(sample);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let started_ms = now_ms();
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut loader = Reaped(
        Command::new(exe)
            .args(["load", &services.base, &options.secs.to_string(), &options.users.to_string()])
            .arg(options.tasks.to_string())
            .arg(&dir)
            .spawn()
            .map_err(|e| format!("cannot start the load generator: {e}"))?,
    );

    let mut injected = Vec::new();
    let mut probes = 0u8;
    for cycle in 0..cycles {
        for (offset, fault) in schedule(options.mode) {
            let at = Duration::from_secs(cycle * CYCLE_SECS + offset);
            if at + Duration::from_secs(5) > Duration::from_secs(options.secs) {
                break;
            }
            std::thread::sleep(at.saturating_sub(started.elapsed()));
            let start_ms = now_ms();
            let note = inject(fault, &redis, proxy.as_ref(), &mut services, &rt)?;
            let end_ms = now_ms();
            // Addresses 127.0.1.1 to 127.0.1.200, one per fault (250 and 251 serve other calls).
            probes = probes % 200 + 1;
            let recovered = rt.block_on(recover(&services.base, probes));
            eprintln!(
                "soak: +{:>5.1} s {:<36} {:>6} ms, recovered in {}{}",
                (start_ms - started_ms) as f64 / 1000.0,
                fault.name(),
                end_ms - start_ms,
                recovered.map_or("NEVER".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
                if note.is_empty() { String::new() } else { format!(" ({note})") }
            );
            injected.push(Injected { fault, start_ms, end_ms, recovered, note });
        }
    }
    let status = loader.0.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the load generator failed: {status}"));
    }
    let load_end_ms = now_ms();
    let report: load::LoadReport = serde_json::from_str(
        &fs::read_to_string(dir.join("load.json")).map_err(|e| format!("cannot read load.json: {e}"))?,
    )
    .map_err(|e| format!("load.json: {e}"))?;

    let admin = rt.block_on(admin_overview(&services.base))?;
    let backend = rt.block_on(account::connect(redis.url()))?;
    let mut account = rt.block_on(account::jobs_and_sessions(&backend, &report, &dir, &injected))?;
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let stopped = services.stop();
    account.services(&dir, &stopped);
    account.rate_limits(&report, &admin, &injected, options.secs);
    account.recovery(&injected);
    account.latency(&dir, &injected, load_end_ms)?;
    account.memory(&samples, started_ms, load_end_ms);
    let leftovers = rt.block_on(account::clean_up(&backend, &users))?;
    account.redis_memory(&leftovers, baseline_memory, &samples, redis_used_memory(&ports));
    println!("{}", account.render(options, &injected));
    if account.failed() {
        Err(format!("the account has wrong lines; logs and records are in {}", dir.display()))
    } else {
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}

/// Injects one fault and waits until it has ended; returns what it observed.
fn inject(
    fault: Fault,
    redis: &TestRedis,
    proxy: Option<&FaultProxy>,
    services: &mut Services,
    rt: &tokio::runtime::Runtime,
) -> Result<String, String> {
    let e = |e: redtail_testkit::Error| format!("{}: {e}", fault.name());
    match fault {
        Fault::DropClients => redis.drop_clients().map_err(e)?,
        Fault::ScriptFlush => redis.script_flush().map_err(e)?,
        Fault::KillWorker => {
            services.kill_worker()?;
            std::thread::sleep(Duration::from_secs(1));
            services.restart_worker()?;
        }
        Fault::Pause => {
            redis.pause().map_err(e)?;
            std::thread::sleep(Duration::from_secs(3));
            redis.resume().map_err(e)?;
        }
        Fault::KillRedis => {
            let port = redis.kill_primary().map_err(e)?;
            std::thread::sleep(Duration::from_secs(1));
            redis.restart_killed(port).map_err(e)?;
        }
        Fault::Failover => {
            let port = match redis.deployment() {
                Deployment::Cluster => redis.cluster_failover(),
                _ => redis.sentinel_failover(),
            }
            .map_err(e)?;
            return Ok(format!("new primary on port {port}"));
        }
        Fault::MemoryPressure => return memory_pressure(redis, services, rt),
        Fault::Latency | Fault::Stall | Fault::Reset => {
            let proxy = proxy.ok_or("network faults need the fault proxy (standalone)")?;
            match fault {
                Fault::Latency => {
                    proxy.set_latency(Duration::from_secs(2));
                    std::thread::sleep(Duration::from_secs(3));
                    proxy.set_latency(Duration::ZERO);
                }
                Fault::Stall => proxy.stall(),
                _ => proxy.reset(),
            }
        }
    }
    Ok(String::new())
}

/// Sets `maxmemory` below what each primary uses, with `noeviction`, for 4 s; a login tried
/// meanwhile must be refused with a clear error, then `maxmemory` is lifted.
fn memory_pressure(redis: &TestRedis, services: &Services, rt: &tokio::runtime::Runtime) -> Result<String, String> {
    let e = |e: redtail_testkit::Error| format!("memory pressure: {e}");
    let ports = redis.data_ports();
    for port in &ports {
        let used = redis_used_memory(&[*port]);
        redis.admin(*port, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).map_err(e)?;
        redis.admin(*port, &["CONFIG", "SET", "maxmemory", &(used / 2).max(1 << 20).to_string()]).map_err(e)?;
    }
    let http = Http::new(&services.base, IpAddr::V4(Ipv4Addr::new(127, 0, 1, 250)));
    let refused = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        http.login_request("admin").await
    });
    std::thread::sleep(Duration::from_millis(3500));
    for port in &ports {
        redis.admin(*port, &["CONFIG", "SET", "maxmemory", "0"]).map_err(e)?;
    }
    let message = refused.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    Ok(format!("a login meanwhile: {} {message}", refused.status))
}

/// Waits until the service answers health, a login (a write) and a session read again; how long
/// that took, or `None` after 60 s. Each probe logs in from an address and account of its own.
async fn recover(base: &str, probe: u8) -> Option<Duration> {
    let started = Instant::now();
    let http = Http::new(base, IpAddr::V4(Ipv4Addr::new(127, 0, 1, probe)));
    while started.elapsed() < Duration::from_secs(60) {
        if http.get("/api/health", None).await.status == 200
            && let Ok(cookie) = http.login("probe").await
            && http.get("/api/me", Some(&cookie)).await.status == 200
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The admin overview, with the limiter's counters.
async fn admin_overview(base: &str) -> Result<serde_json::Value, String> {
    let http = Http::new(base, IpAddr::V4(Ipv4Addr::new(127, 0, 1, 251)));
    let cookie = http.login("admin").await.map_err(|r| format!("admin login failed: {}", r.status))?;
    let reply = http.get("/admin/api/overview", Some(&cookie)).await;
    if reply.status != 200 {
        return Err(format!("admin overview answered {}", reply.status));
    }
    Ok(reply.json())
}
