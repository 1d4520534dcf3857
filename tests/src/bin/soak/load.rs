//! The load generator, run as a process of its own (`soak load ...`): simulated users log in
//! and out, read their session, read the cached status route, queue downloads and media
//! requests (some asked to fail), and one abusive user hammers the API limit. Every request is
//! recorded with its time, route, status and latency; what the account needs afterwards
//! (accepted jobs, live sessions, admissions per user) is written as JSON.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{http::Http, now_ms};

/// Requests the loop sends, by route.
pub(crate) const KINDS: [&str; 8] = ["login", "logout", "me", "status", "download", "request", "job", "abuse"];

/// A job the service accepted (202) and that must end completed or dead-lettered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Accepted {
    pub(crate) id: String,
    pub(crate) user: String,
    /// The failure asked for (`once`, `always`), if any.
    pub(crate) fail: Option<String>,
}

/// What the load generator saw, for the account.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LoadReport {
    pub(crate) jobs: Vec<Accepted>,
    /// `(user, token)` of every session created and not logged out.
    pub(crate) sessions: Vec<(String, String)>,
    /// `(ms, user)`: a live session the service did not know (401) while the run went on.
    pub(crate) missing: Vec<(u64, String)>,
    /// Downloads and media requests admitted (202) per user.
    pub(crate) downloads: BTreeMap<String, u32>,
    pub(crate) requests: BTreeMap<String, u32>,
    /// Count of replies by route and status (`0`: no reply).
    pub(crate) statuses: BTreeMap<String, BTreeMap<u16, u64>>,
}

/// One request: when it started (ms since the epoch), its route, its status, its latency.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) at_ms: u64,
    pub(crate) kind: u8,
    pub(crate) status: u16,
    pub(crate) micros: u32,
    /// The start of the body of a failed reply (5xx or none), for the account.
    pub(crate) error: Option<String>,
}

/// The user names the service is started with.
pub(crate) fn user_names(users: usize) -> Vec<String> {
    (0..users).map(|i| format!("u{i}")).collect()
}

/// Loopback addresses the load comes from, one per task, so the per-address limit on anonymous
/// callers (100 a minute) does not throttle logins.
fn source(task: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 2 + (task / 250) as u8, 1 + (task % 250) as u8))
}

/// A small deterministic generator, seeded per task.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[derive(Debug, Default)]
struct UserState {
    name: String,
    sessions: Vec<String>,
    jobs: Vec<String>,
    downloads_tried: u32,
    requests_tried: u32,
}

/// Attempts per user over a run: more than the hourly limits (5 and 20), so both are reached.
const DOWNLOAD_TRIES: u32 = 7;
const REQUEST_TRIES: u32 = 24;
/// Sessions a user keeps; a login beyond logs the oldest out first.
const SESSIONS_KEPT: usize = 3;

/// Runs `tasks` simulated clients for `secs` against `base`, then writes `load.json` and
/// `requests.tsv` into `out`.
pub(crate) async fn run(base: &str, secs: u64, users: usize, tasks: usize, out: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let names = user_names(users);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let owned: Vec<UserState> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| i % tasks == task)
            .map(|(_, n)| UserState { name: n.clone(), ..UserState::default() })
            .collect();
        let http = Http::new(base, source(task));
        handles.push(tokio::spawn(simulate(http, owned, task as u64, deadline)));
    }
    handles.push(tokio::spawn(abuse(Http::new(base, source(tasks)), deadline)));
    let mut report = LoadReport::default();
    let mut samples = Vec::new();
    for handle in handles {
        let (part, part_samples) = handle.await.map_err(|e| format!("a load task failed: {e}"))?;
        report.jobs.extend(part.jobs);
        report.sessions.extend(part.sessions);
        report.missing.extend(part.missing);
        report.downloads.extend(part.downloads);
        report.requests.extend(part.requests);
        for (kind, counts) in part.statuses {
            let into = report.statuses.entry(kind).or_default();
            for (status, n) in counts {
                *into.entry(status).or_default() += n;
            }
        }
        samples.extend(part_samples);
    }
    samples.sort_by_key(|s| s.at_ms);
    let tsv: String = samples
        .iter()
        .map(|s| format!("{}\t{}\t{}\t{}\t{}\n", s.at_ms, s.kind, s.status, s.micros, s.error.as_deref().unwrap_or("")))
        .collect();
    std::fs::write(out.join("requests.tsv"), tsv).map_err(|e| format!("cannot write requests.tsv: {e}"))?;
    let text = serde_json::to_string(&report).map_err(|e| e.to_string())?;
    std::fs::write(out.join("load.json"), text).map_err(|e| format!("cannot write load.json: {e}"))
}

/// A recorder of one task's requests.
#[derive(Default)]
struct Recorder {
    report: LoadReport,
    samples: Vec<Sample>,
}

impl Recorder {
    async fn timed<F: Future<Output = crate::http::Reply>>(&mut self, kind: usize, request: F) -> crate::http::Reply {
        let (at_ms, started) = (now_ms(), Instant::now());
        let reply = request.await;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let error = (reply.status == 0 || reply.status >= 500).then(|| {
            let text: String = String::from_utf8_lossy(&reply.body).chars().take(160).collect();
            text.replace(['\t', '\n'], " ")
        });
        self.samples.push(Sample { at_ms, kind: kind as u8, status: reply.status, micros, error });
        *self.report.statuses.entry(KINDS[kind].to_owned()).or_default().entry(reply.status).or_default() += 1;
        reply
    }
}

/// Requests one task may send per second of the run, at most: the load is bounded in count as
/// well as in time (a task sends about 12 a second).
const MAX_PER_TASK_SECOND: u64 = 40;

async fn simulate(http: Http, mut users: Vec<UserState>, seed: u64, deadline: Instant) -> (LoadReport, Vec<Sample>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut rec = Recorder::default();
    let mut n = 0u64;
    let cap = deadline.saturating_duration_since(Instant::now()).as_secs().max(1) * MAX_PER_TASK_SECOND;
    while Instant::now() < deadline && !users.is_empty() && n < cap {
        n += 1;
        let pick = rng.below(users.len() as u64) as usize;
        let user = &mut users[pick];
        let roll = rng.below(100);
        if user.sessions.is_empty() || roll < 10 {
            if user.sessions.len() >= SESSIONS_KEPT {
                let oldest = user.sessions.remove(0);
                // Logged out or not (an error leaves it unknown), it is no longer checked.
                rec.timed(1, http.post("/api/auth/logout", Some(&oldest), json!({}))).await;
            }
            let reply = rec.timed(0, http.login_request(&user.name)).await;
            if let (200, Some(cookie)) = (reply.status, reply.set_cookie) {
                user.sessions.push(cookie);
            }
        } else {
            let cookie = user.sessions[rng.below(user.sessions.len() as u64) as usize].clone();
            match roll {
                10..45 => {
                    let reply = rec.timed(2, http.get("/api/me", Some(&cookie))).await;
                    if reply.status == 401 {
                        rec.report.missing.push((now_ms(), user.name.clone()));
                        user.sessions.retain(|c| *c != cookie);
                    }
                }
                45..70 => {
                    rec.timed(3, http.get("/api/services/status", Some(&cookie))).await;
                }
                70..80 if user.downloads_tried < DOWNLOAD_TRIES => {
                    user.downloads_tried += 1;
                    let fail = match rng.below(100) {
                        0..4 => Some("always"),
                        4..14 => Some("once"),
                        _ => None,
                    };
                    let path =
                        fail.map_or("/api/youtube/download".to_owned(), |f| format!("/api/youtube/download?fail={f}"));
                    let body = json!({"url": format!("https://example.invalid/v/{seed}-{n}")});
                    let reply = rec.timed(4, http.post(&path, Some(&cookie), body)).await;
                    if let Some(id) = accepted(&reply) {
                        *rec.report.downloads.entry(user.name.clone()).or_default() += 1;
                        rec.report.jobs.push(Accepted {
                            id: id.clone(),
                            user: user.name.clone(),
                            fail: fail.map(str::to_owned),
                        });
                        user.jobs.push(id);
                    }
                }
                80..95 if user.requests_tried < REQUEST_TRIES => {
                    user.requests_tried += 1;
                    let body = json!({"title": format!("Film {seed}-{n}"), "mediaType": "movie"});
                    let reply = rec.timed(5, http.post("/api/media/request", Some(&cookie), body)).await;
                    if let Some(id) = accepted(&reply) {
                        *rec.report.requests.entry(user.name.clone()).or_default() += 1;
                        rec.report.jobs.push(Accepted { id: id.clone(), user: user.name.clone(), fail: None });
                        user.jobs.push(id);
                    }
                }
                _ => {
                    if let Some(id) = user.jobs.last().cloned() {
                        rec.timed(6, http.get(&format!("/api/jobs/{id}"), Some(&cookie))).await;
                    }
                }
            }
        }
        // About 12 requests a second per task.
        tokio::time::sleep(Duration::from_millis(40 + rng.below(80))).await;
    }
    for user in users {
        rec.report.sessions.extend(user.sessions.into_iter().map(|c| (user.name.clone(), c)));
    }
    (rec.report, rec.samples)
}

/// One user far over the API limit (100 a minute): refused quickly, from the refusal cache.
async fn abuse(http: Http, deadline: Instant) -> (LoadReport, Vec<Sample>) {
    let mut rec = Recorder::default();
    let mut cookie = None;
    let cap = deadline.saturating_duration_since(Instant::now()).as_secs().max(1) * 100;
    let mut sent = 0u64;
    while Instant::now() < deadline && sent < cap {
        sent += 1;
        match &cookie {
            None => cookie = http.login("abuser").await.ok(),
            Some(c) => {
                rec.timed(7, http.get("/api/me", Some(c))).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (rec.report, rec.samples)
}

fn accepted(reply: &crate::http::Reply) -> Option<String> {
    if reply.status != 202 {
        return None;
    }
    reply.json()["jobId"].as_str().map(str::to_owned)
}
