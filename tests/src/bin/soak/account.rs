//! The account of a soak run: every line is checked against what the load generator, the
//! worker's ledger and Redis recorded, and marked right or wrong.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use media_api::presets::{self, UserSession};
use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Cmd, Cursor, Namespace};
use redtail_queue::{JobState, Queue};
use redtail_session::{SessionConfig, SessionStore};

use crate::{Fault, Injected, MemorySample, Options, load::LoadReport};

/// Lines of the account: `Some(true)` right, `Some(false)` wrong, `None` information.
#[derive(Debug, Default)]
pub(crate) struct Account {
    lines: Vec<(Option<bool>, String)>,
}

/// An attempt's slack after its handler returned: the acknowledgement is still on its way.
const ACK_SLACK_MS: u64 = 1_000;

/// How long the queues get to finish after the load stops: past the 30 s lease of jobs a killed
/// worker held, and the retries' backoff.
const DRAIN: Duration = Duration::from_secs(120);

/// The client the account reads Redis with, for the whole account.
pub(crate) async fn connect(url: &str) -> Result<Arc<dyn Backend>, String> {
    let config = Config::from_url(url).map_err(|e| e.to_string())?;
    Ok(Arc::new(Redis::connect(config).await.map_err(|e| format!("cannot reach Redis for the account: {e}"))?))
}

fn queues(backend: &Arc<dyn Backend>) -> Result<[Queue<serde_json::Value>; 2], String> {
    let open = |config| Queue::new(Arc::clone(backend), config).map_err(|e| e.to_string());
    Ok([open(presets::youtube_downloads())?, open(presets::media_requests())?])
}

/// Waits for the queues to drain, then accounts for every accepted job, every attempt in the
/// ledger and every live session.
pub(crate) async fn jobs_and_sessions(
    backend: &Arc<dyn Backend>,
    report: &LoadReport,
    dir: &Path,
    injected: &[Injected],
) -> Result<Account, String> {
    let mut account = Account::default();
    let [downloads, requests] = queues(backend)?;
    let started = tokio::time::Instant::now();
    let mut totals = (0, 0);
    loop {
        let (a, b) = (downloads.counts().await, requests.counts().await);
        if let (Ok(a), Ok(b)) = (a, b) {
            let unfinished = a.waiting + a.delayed + a.active + b.waiting + b.delayed + b.active;
            totals = (a.completed + b.completed, a.dead + b.dead);
            if unfinished == 0 {
                break;
            }
        }
        if started.elapsed() > DRAIN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    account.info(format!("queues drained {:.1} s after the load stopped", started.elapsed().as_secs_f64()));

    // Every job the service acknowledged ends completed or dead-lettered.
    let (mut completed, mut dead, mut unfinished, mut missing) = (0u64, 0u64, Vec::new(), Vec::new());
    let (mut always, mut always_dead, mut dead_by_faults) = (0u64, 0u64, Vec::new());
    for job in &report.jobs {
        let queue = if job.id.starts_with("dl-") { &downloads } else { &requests };
        let asked_always = job.fail.as_deref() == Some("always");
        always += u64::from(asked_always);
        match queue.get(&job.id).await.map_err(|e| format!("reading job {}: {e}", job.id))? {
            Some(info) if info.state == JobState::Completed => completed += 1,
            Some(info) if info.state == JobState::Dead => {
                dead += 1;
                if asked_always {
                    always_dead += 1;
                } else {
                    let last = info.errors.last().map(|(_, e)| e.clone()).unwrap_or_default();
                    dead_by_faults.push(format!("{}: {last}", job.id));
                }
            }
            Some(info) => unfinished.push(format!("{} ({:?})", job.id, info.state)),
            None => missing.push(job.id.clone()),
        }
    }
    let known = report.jobs.len() as u64;
    account.check(
        missing.is_empty() && unfinished.is_empty(),
        format!(
            "jobs: {known} accepted = {completed} completed + {dead} dead-lettered; {} lost, {} unfinished{}",
            missing.len(),
            unfinished.len(),
            sample(&[missing.as_slice(), unfinished.as_slice()].concat())
        ),
    );
    account.check(
        always_dead == always,
        format!("jobs: {always_dead} of {always} asked to fail every attempt are dead-lettered"),
    );
    account.info(format!(
        "jobs: {} dead-lettered by faults (every attempt hit one){}",
        dead_by_faults.len(),
        sample(&dead_by_faults)
    ));
    let extra = (totals.0 + totals.1).saturating_sub(completed + dead);
    account.info(format!(
        "jobs: {extra} more ran than were acknowledged (an add whose reply a fault lost; the client saw an error)"
    ));

    // Duplicates, from the ledger, bounded by what was in flight at the faults.
    let ledger = std::fs::read_to_string(dir.join("ledger.txt")).map_err(|e| format!("cannot read the ledger: {e}"))?;
    let attempts = attempts(&ledger);
    let mut done: BTreeMap<&str, u64> = BTreeMap::new();
    for attempt in &attempts {
        if attempt.done {
            *done.entry(attempt.id.as_str()).or_default() += 1;
        }
    }
    let duplicates: u64 = done.values().map(|n| n.saturating_sub(1)).sum();
    let in_flight: u64 = injected
        .iter()
        .map(|f| {
            attempts
                .iter()
                .filter(|a| a.start_ms <= f.end_ms && a.end_ms.is_none_or(|e| e + ACK_SLACK_MS >= f.start_ms))
                .count() as u64
        })
        .sum();
    account.check(
        duplicates <= in_flight,
        format!(
            "duplicates: {duplicates} jobs completed more than once; bound {in_flight} (attempts in flight at the faults); {} attempts in the ledger",
            attempts.len()
        ),
    );

    // Sessions: every one created and not logged out is still there (Redis kept its data).
    let store =
        SessionStore::<UserSession>::new(Arc::clone(backend), SessionConfig::default()).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    for (user, token) in &report.sessions {
        match store.get(token).await {
            Ok(Some(session)) if session.user_id == *user => {}
            Ok(_) => lost.push(user.clone()),
            Err(e) => return Err(format!("reading a session: {e}")),
        }
    }
    account.check(
        lost.is_empty() && report.missing.is_empty(),
        format!(
            "sessions: {} live at the end, {} lost; {} refused as unknown during the run{}",
            report.sessions.len(),
            lost.len(),
            report.missing.len(),
            sample(&lost)
        ),
    );
    Ok(account)
}

/// One attempt from the ledger.
#[derive(Debug)]
struct Attempt {
    id: String,
    start_ms: u64,
    end_ms: Option<u64>,
    done: bool,
}

/// Pairs the ledger's `start` lines with their `done`/`fail` line (same job, same attempt).
fn attempts(ledger: &str) -> Vec<Attempt> {
    let mut open: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut attempts = Vec::new();
    for line in ledger.lines() {
        let [at, event, id, attempt] = line.split(' ').collect::<Vec<_>>()[..] else { continue };
        let Ok(at) = at.parse::<u64>() else { continue };
        let key = (id.to_owned(), attempt.to_owned());
        match event {
            "start" => {
                open.insert(key, attempts.len());
                attempts.push(Attempt { id: id.to_owned(), start_ms: at, end_ms: None, done: false });
            }
            "done" | "fail" => {
                if let Some(i) = open.remove(&key) {
                    attempts[i].end_ms = Some(at);
                    attempts[i].done = event == "done";
                }
            }
            _ => {}
        }
    }
    attempts
}

/// Up to three examples, for a line of the account.
fn sample(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" (e.g. {})", items.iter().take(3).cloned().collect::<Vec<_>>().join("; "))
    }
}

/// A failed request outside every fault, said with the fault before it, for the account.
fn describe_failure(injected: &[Injected], at: u64, kind: u64, status: u64, micros: u32, body: &str) -> String {
    let route = crate::load::KINDS.get(kind as usize).copied().unwrap_or("?");
    let before = injected.iter().rev().find(|f| f.start_ms <= at).map_or(String::new(), |f| {
        let until = f.end_ms + f.recovered.map_or(0, |d| d.as_millis() as u64);
        format!(", {} ms after {} and its recovery", at.saturating_sub(until), f.fault.name())
    });
    format!("{route} answered {status} after {} ms{before}: {body:?}", micros / 1000)
}

/// p50, p99 and max of latencies in microseconds, as text in milliseconds.
fn percentiles(mut micros: Vec<u32>) -> String {
    if micros.is_empty() {
        return "no requests".to_owned();
    }
    micros.sort_unstable();
    let at = |q: f64| f64::from(micros[((micros.len() - 1) as f64 * q) as usize]) / 1000.0;
    format!("{} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.0} ms", micros.len(), at(0.5), at(0.99), at(1.0))
}

/// What is left in Redis after the queues are obliterated and every session ended.
#[derive(Debug)]
pub(crate) struct Leftovers {
    pub(crate) keys: u64,
    pub(crate) without_ttl: Vec<String>,
}

/// Obliterates the queues and ends every user's sessions, then scans every key for a TTL.
pub(crate) async fn clean_up(backend: &Arc<dyn Backend>, users: &[String]) -> Result<Leftovers, String> {
    for queue in queues(backend)? {
        queue.obliterate(true).await.map_err(|e| format!("obliterate: {e}"))?;
    }
    let store =
        SessionStore::<UserSession>::new(Arc::clone(backend), SessionConfig::default()).map_err(|e| e.to_string())?;
    for user in users.iter().map(String::as_str).chain(["admin", "abuser", "probe"]) {
        store.invalidate_all(user).await.map_err(|e| format!("invalidate_all({user}): {e}"))?;
    }
    let pattern = Namespace::new("rt").map_err(|e| e.to_string())?.glob("*");
    let mut cursor = Cursor::START;
    let mut leftovers = Leftovers { keys: 0, without_ttl: Vec::new() };
    loop {
        let page = backend.scan(cursor, &pattern, 1000).await.map_err(|e| format!("scan: {e}"))?;
        for key in page.keys {
            leftovers.keys += 1;
            let ttl = backend.call(Cmd::new("PTTL").key(&key)).await.map_err(|e| e.to_string())?;
            if ttl.as_int().map_err(|e| e.to_string())? == -1 {
                leftovers.without_ttl.push(String::from_utf8_lossy(key.as_bytes()).into_owned());
            }
        }
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    Ok(leftovers)
}

impl Account {
    fn check(&mut self, ok: bool, text: String) {
        self.lines.push((Some(ok), text));
    }

    fn info(&mut self, text: String) {
        self.lines.push((None, text));
    }

    /// Whether any line is wrong.
    pub(crate) fn failed(&self) -> bool {
        self.lines.iter().any(|(ok, _)| *ok == Some(false))
    }

    /// No panic in any log; both processes stopped cleanly on SIGTERM.
    pub(crate) fn services(&mut self, dir: &Path, stopped: &[(String, bool)]) {
        let mut panics = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".log") && std::fs::read_to_string(entry.path()).is_ok_and(|t| t.contains("panicked"))
                {
                    panics.push(name);
                }
            }
        }
        let unclean: Vec<String> = stopped.iter().filter(|(_, clean)| !clean).map(|(name, _)| name.clone()).collect();
        self.check(panics.is_empty(), format!("no panic in the service's or workers' logs{}", sample(&panics)));
        self.check(unclean.is_empty(), format!("api and worker stopped cleanly on SIGTERM{}", sample(&unclean)));
    }

    /// Fail-closed limits never admitted more than their limit allows over the run; degraded
    /// decisions were counted (required when Redis refused writes for a while: the
    /// out-of-memory fault).
    pub(crate) fn rate_limits(
        &mut self,
        report: &LoadReport,
        admin: &serde_json::Value,
        injected: &[Injected],
        secs: u64,
    ) {
        let most = |admitted: &BTreeMap<String, u32>| u64::from(admitted.values().copied().max().unwrap_or(0));
        let (downloads, requests) = (most(&report.downloads), most(&report.requests));
        // Downloads: a sliding log, never more than 5 in any hour. Media requests: GCRA with a
        // burst of 20 and one more every 3 minutes, so a run of `secs` admits at most this many.
        let (download_bound, request_bound) = (5 * secs.div_ceil(3600), 20 + secs / 180);
        self.check(
            downloads <= download_bound && requests <= request_bound,
            format!(
                "rate limits (fail closed): at most {downloads} downloads (sliding log, 5 an hour: {download_bound} in {secs} s) and {requests} media requests (GCRA, 20 an hour with a burst of 20: {request_bound} in {secs} s) admitted to any user"
            ),
        );
        let degraded = admin["limits"]["degraded"].as_u64().unwrap_or(0);
        let cached = admin["limits"]["cached"].as_u64().unwrap_or(0);
        let refused = report.statuses.get("abuse").and_then(|s| s.get(&429)).copied().unwrap_or(0);
        let must_degrade = injected.iter().any(|f| f.fault == Fault::MemoryPressure);
        self.check(
            (degraded > 0 || !must_degrade) && refused > 0,
            format!(
                "rate limits: {degraded} degraded decisions counted while Redis could not serve (API limit, local fallback){}; the abusive user got {refused} 429s, {cached} from the refusal cache",
                if must_degrade { "" } else { " (not required: this run had no out-of-memory fault)" }
            ),
        );
    }

    /// Every fault was recovered from.
    pub(crate) fn recovery(&mut self, injected: &[Injected]) {
        let never: Vec<String> =
            injected.iter().filter(|f| f.recovered.is_none()).map(|f| f.fault.name().to_owned()).collect();
        let mut by_fault: BTreeMap<&str, Duration> = BTreeMap::new();
        for f in injected {
            let slot = by_fault.entry(f.fault.name()).or_default();
            *slot = (*slot).max(f.recovered.unwrap_or_default());
        }
        let worst: Vec<String> = by_fault.iter().map(|(name, d)| format!("{name} {:.2} s", d.as_secs_f64())).collect();
        self.check(
            never.is_empty(),
            format!(
                "recovery: {} faults, each followed by a working login and session read within 60 s; slowest per fault: {}{}",
                injected.len(),
                worst.join(", "),
                sample(&never)
            ),
        );
    }

    /// Latency in steady state and while faults (and their recovery) were under way.
    pub(crate) fn latency(&mut self, dir: &Path, injected: &[Injected], end_ms: u64) -> Result<(), String> {
        let text =
            std::fs::read_to_string(dir.join("requests.tsv")).map_err(|e| format!("cannot read requests.tsv: {e}"))?;
        let first_fault = injected.first().map_or(end_ms, |f| f.start_ms);
        let (mut before, mut during, mut after, mut errors) = (Vec::new(), Vec::new(), Vec::new(), (0u64, 0u64));
        let mut outside = Vec::new();
        for line in text.lines() {
            let mut columns = line.split('\t');
            let fields: Vec<u64> = columns.by_ref().take(4).filter_map(|f| f.parse().ok()).collect();
            let [at, kind, status, micros] = fields[..] else { continue };
            if kind == 7 {
                continue; // the abusive user: refused by design
            }
            // A request in flight when a fault began counts as during it.
            let in_fault = injected.iter().any(|f| {
                let until = f.end_ms + f.recovered.map_or(0, |d| d.as_millis() as u64);
                at <= until && at + micros / 1000 >= f.start_ms
            });
            let micros = u32::try_from(micros).unwrap_or(u32::MAX);
            let failed = status == 0 || status >= 500;
            if in_fault {
                during.push(micros);
                errors.0 += u64::from(failed);
            } else {
                errors.1 += u64::from(failed);
                if failed {
                    outside.push(describe_failure(injected, at, kind, status, micros, columns.next().unwrap_or("")));
                }
                if at < first_fault { before.push(micros) } else { after.push(micros) }
            }
        }
        self.info(format!("latency before the first fault: {}", percentiles(before)));
        self.info(format!(
            "latency during faults and their recovery: {} ({} errors: 5xx or no reply)",
            percentiles(during),
            errors.0
        ));
        self.info(format!("latency between and after faults: {}", percentiles(after)));
        self.check(
            errors.1 == 0,
            format!(
                "no request failed (5xx or no reply) outside a fault and its recovery; {} did{}",
                errors.1,
                sample(&outside)
            ),
        );
        Ok(())
    }

    /// The service's and the worker's memory stay flat over the run.
    pub(crate) fn memory(&mut self, samples: &[MemorySample], start_ms: u64, end_ms: u64) {
        let span = (end_ms - start_ms) / 3;
        let third = |from: u64, series: &dyn Fn(&MemorySample) -> Option<u64>| {
            samples.iter().filter(|s| s.0 >= from && s.0 < from + span).filter_map(series).max().unwrap_or(0)
        };
        let api = |s: &MemorySample| Some(s.1);
        // Workers are killed and restarted on schedule: the peak of whichever one ran.
        let worker = |s: &MemorySample| (s.2 > 0).then_some(s.2);
        for (name, series) in [("api", &api as &dyn Fn(&MemorySample) -> Option<u64>), ("worker", &worker)] {
            let (middle, last) = (third(start_ms + span, series), third(start_ms + 2 * span, series));
            if middle == 0 || last == 0 {
                self.info(format!("memory: {name}: too few samples to compare"));
                continue;
            }
            self.check(
                last <= middle + middle / 4 + 8 * 1024,
                format!(
                    "memory: {name} RSS flat: peak {:.1} MiB in the middle third of the load, {:.1} MiB in the last",
                    middle as f64 / 1024.0,
                    last as f64 / 1024.0
                ),
            );
        }
    }

    /// After clean-up nothing is left without a TTL; Redis memory before, at peak and after.
    pub(crate) fn redis_memory(&mut self, leftovers: &Leftovers, baseline: u64, samples: &[MemorySample], after: u64) {
        let peak = samples.iter().map(|s| s.3).max().unwrap_or(0);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        self.check(
            leftovers.without_ttl.is_empty(),
            format!(
                "redis: after obliterating the queues and ending every session, {} keys are left, {} without a TTL{}; used_memory {:.1} MiB before, {:.1} MiB at peak, {:.1} MiB after",
                leftovers.keys,
                leftovers.without_ttl.len(),
                sample(&leftovers.without_ttl),
                mib(baseline),
                mib(peak),
                mib(after)
            ),
        );
    }

    /// The account as text.
    pub(crate) fn render(&self, options: &Options, injected: &[Injected]) -> String {
        let mut out = format!(
            "\nsoak account: {:?}, {} s of load, {} users, {} faults\n",
            options.mode,
            options.secs,
            options.users,
            injected.len()
        );
        for f in injected {
            if f.fault == Fault::MemoryPressure || !f.note.is_empty() {
                out.push_str(&format!("  · {}: {}\n", f.fault.name(), f.note));
            }
        }
        for (ok, text) in &self.lines {
            let mark = match ok {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "·",
            };
            out.push_str(&format!("  {mark} {text}\n"));
        }
        out.push_str(if self.failed() { "soak: FAILED\n" } else { "soak: every line holds\n" });
        out
    }
}
