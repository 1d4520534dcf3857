//! The service end to end over HTTP, against a real Redis started for each test.

mod common;

use std::time::Duration;

use common::{Service, TestResult, login, queue_download, redis, until_completed};
use redtail_testkit::TestRedis;
use serde_json::json;

#[tokio::test]
async fn login_me_sessions_and_logout_all_ends_every_cookie() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    let laptop = login(&service, "alice", false).await?;
    let phone = login(&service, "alice", true).await?;
    let login_response =
        service.post("/api/auth/login").json(&json!({"username": "alice", "password": "alice"})).send().await?;
    let set_cookie = login_response.header("set-cookie").ok_or("no set-cookie")?;
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86399"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "no Secure without TLS: {set_cookie}");
    let third = login_response.cookie().ok_or("no cookie")?;

    let me = service.get("/api/me").cookie(&phone).send().await?;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["user"], json!({"id": "alice", "role": "user"}));
    assert_eq!(me.json()["rememberMe"], json!(true));
    let sessions = service.get("/api/sessions").cookie(&laptop).send().await?.json();
    let list = sessions["sessions"].as_array().ok_or("no list")?;
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|s| s["current"] == json!(true)).count(), 1);
    assert!(list.iter().all(|s| s["device"]["ip"] == json!("127.0.0.1")));

    let out = service.post("/api/auth/logout").cookie(&third).send().await?;
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(service.get("/api/me").cookie(&third).send().await?.status, 401);

    let all = service.post("/api/auth/logout-all").cookie(&laptop).send().await?;
    assert_eq!((all.status, all.json()["ended"].clone()), (200, json!(2)));
    for cookie in [&laptop, &phone] {
        let me = service.get("/api/me").cookie(cookie).send().await?;
        assert_eq!(me.status, 401, "every session ended");
        assert_eq!(me.json()["error"]["code"], json!("unauthorized"));
    }
    let wrong = service.post("/api/auth/login").json(&json!({"username": "alice", "password": "nope"})).send().await?;
    assert_eq!((wrong.status, wrong.json()["error"]["code"].clone()), (401, json!("bad_credentials")));
    Ok(())
}

#[tokio::test]
async fn the_sixth_download_in_an_hour_gets_429_with_correct_headers() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    let bob = login(&service, "bob", false).await?;
    for i in 1..=5 {
        let url = format!("https://example.invalid/v/{i}");
        let response = service.post("/api/youtube/download").cookie(&bob).json(&json!({"url": url})).send().await?;
        assert_eq!(response.status, 202, "{}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.header("ratelimit-policy"), Some("\"api\";q=100;w=60, \"youtube\";q=5;w=3600"));
        let expected = format!("\"youtube\";r={}", 5 - i);
        assert!(
            response.header("ratelimit").is_some_and(|h| h.contains(&expected)),
            "{:?}",
            response.header("ratelimit")
        );
    }
    let sixth = service
        .post("/api/youtube/download")
        .cookie(&bob)
        .json(&json!({"url": "https://example.invalid/v/6"}))
        .send()
        .await?;
    assert_eq!(sixth.status, 429);
    let retry: u64 = sixth.header("retry-after").ok_or("no retry-after")?.parse()?;
    assert!((600..=3600).contains(&retry), "retry after {retry} s: the next slot frees 12 minutes after the first");
    assert!(sixth.header("ratelimit").is_some_and(|h| h.contains("\"youtube\";r=0")));
    // Other routes are only under the API limit, which has room.
    let me = service.get("/api/me").cookie(&bob).send().await?;
    assert_eq!(me.status, 200);
    assert!(me.header("ratelimit").is_some_and(|h| h.starts_with("\"api\";r=")));
    // Health is never limited.
    assert!(service.get("/api/health").send().await?.header("ratelimit").is_none());
    Ok(())
}

#[tokio::test]
async fn a_jobs_progress_reaches_100_and_its_result_is_visible_and_failures_retry() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    let alice = login(&service, "alice", false).await?;
    let id = queue_download(&service, &alice, "/api/youtube/download?fail=once", "https://example.invalid/v/9").await?;
    let mut seen_progress = Vec::new();
    let job = loop {
        let job = service.get(&format!("/api/jobs/{id}")).cookie(&alice).send().await?.json();
        if let Some(p) = job["job"]["progress"].as_u64() {
            seen_progress.push(p);
        }
        if job["job"]["state"] == json!("completed") {
            break job;
        }
        assert!(seen_progress.len() < 400, "job did not complete: {job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(job["job"]["progress"], json!(100));
    assert_eq!(job["job"]["attempts_started"], json!(2), "failed once, then retried after the backoff");
    assert!(job["job"]["errors"][0][1].as_str().is_some_and(|e| e.contains("simulated failure")));
    assert!(job["job"]["result"]["file"].as_str().is_some_and(|f| f.ends_with(".mp4")));
    assert!(seen_progress.windows(2).any(|w| w[0] < w[1]), "progress moved: {seen_progress:?}");
    // Another user cannot see it.
    let bob = login(&service, "bob", false).await?;
    assert_eq!(service.get(&format!("/api/jobs/{id}")).cookie(&bob).send().await?.status, 404);
    let request = service
        .post("/api/media/request")
        .cookie(&bob)
        .json(&json!({"title": "Dune", "mediaType": "movie"}))
        .send()
        .await?;
    assert_eq!(request.status, 202);
    assert!(request.header("ratelimit").is_some_and(|h| h.contains("\"media-request\";r=19")));
    Ok(())
}

#[tokio::test]
async fn the_status_route_is_served_from_cache_on_the_second_call() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    let first = service.get("/api/services/status").send().await?;
    let second = service.get("/api/services/status").send().await?;
    assert_eq!((first.status, first.header("x-cache")), (200, Some("miss")));
    assert_eq!((second.status, second.header("x-cache")), (200, Some("hit")));
    assert_eq!(first.json()["services"], second.json()["services"]);
    let ttl = redis_ttl(&redis, "rt:c:e:service-status*")?;
    assert!((1..=60).contains(&ttl), "cached for 60 s: ttl {ttl}");
    Ok(())
}

/// The TTL of the one key matching `pattern`, read with SCAN and TTL.
fn redis_ttl(redis: &TestRedis, pattern: &str) -> Result<i64, String> {
    use redtail_testkit::resp::{Reply, command};
    let port = redis.data_ports()[0];
    let scan = command(port, &["SCAN", "0", "MATCH", pattern, "COUNT", "1000"]).map_err(|e| e.to_string())?;
    let key = match scan {
        Reply::Array(Some(parts)) => match parts.get(1) {
            Some(Reply::Array(Some(keys))) => keys.first().and_then(Reply::text),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| format!("no key matches {pattern}"))?;
    match command(port, &["TTL", &key]).map_err(|e| e.to_string())? {
        Reply::Int(n) => Ok(n),
        other => Err(format!("TTL answered {other:?}")),
    }
}

#[tokio::test]
async fn bad_bodies_get_400_or_413_as_json_never_500() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    let alice = login(&service, "alice", false).await?;
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("/api/auth/login", "application/json", b"{\"username\": ".to_vec(), 400, "malformed_json"),
        ("/api/auth/login", "application/json", b"{\"username\": \"alice\"}".to_vec(), 400, "invalid_body"),
        ("/api/auth/login", "text/plain", b"{}".to_vec(), 400, "expected_json"),
        ("/api/youtube/download", "application/json", b"{\"url\": 5}".to_vec(), 400, "invalid_body"),
        ("/api/youtube/download", "application/json", b"{\"url\": \"ftp://x\"}".to_vec(), 400, "invalid_request"),
        ("/api/youtube/download", "application/json", vec![0xff, 0xfe, 0x00], 400, "malformed_json"),
        (
            "/api/media/request",
            "application/json",
            b"{\"title\": \"\", \"mediaType\": \"movie\"}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/api/media/request",
            "application/json",
            format!("{{\"title\": \"{}\"}}", "x".repeat(40_000)).into_bytes(),
            413,
            "body_too_large",
        ),
    ];
    for (path, content_type, body, status, code) in cases {
        let response = service.post(path).cookie(&alice).raw(content_type, body).send().await?;
        assert_eq!(response.status, status, "{path}: {}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.json()["error"]["code"], json!(code), "{path}");
        assert_eq!(response.json()["success"], json!(false));
    }
    let missing = service.get("/api/nothing-here").send().await?;
    assert_eq!((missing.status, missing.json()["error"]["code"].clone()), (404, json!("not_found")));
    Ok(())
}

#[tokio::test]
async fn the_dashboard_and_admin_routes_need_the_admin_role() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    assert_eq!(service.get("/admin").send().await?.status, 403);
    let alice = login(&service, "alice", false).await?;
    assert_eq!(service.get("/admin").cookie(&alice).send().await?.status, 403);
    assert_eq!(service.get("/admin/api/overview").cookie(&alice).send().await?.status, 403);
    let retry = "/admin/api/queues/youtube-downloads/jobs/dl-x/retry";
    assert_eq!(service.post(retry).cookie(&alice).send().await?.status, 403);
    let admin = login(&service, "admin", false).await?;
    let page = service.get("/admin").cookie(&admin).send().await?;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("redtail admin"));
    assert!(page.header("content-security-policy").is_some_and(|csp| csp.contains("frame-ancestors 'none'")));
    let overview = service.get("/admin/api/overview").cookie(&admin).send().await?.json();
    assert_eq!(overview["health"]["up"], json!(true));
    assert_eq!(overview["queues"].as_array().map(Vec::len), Some(2));
    assert_eq!(overview["limits"]["policies"][0], json!("api"));
    let sessions = service.get("/admin/api/sessions/alice").cookie(&admin).send().await?.json();
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(1));
    let usage = service.get("/admin/api/limits/alice").cookie(&admin).send().await?.json();
    assert_eq!(usage["policies"][0]["policy"], json!("api"));
    Ok(())
}

#[tokio::test]
async fn health_is_200_when_redis_is_up_and_503_when_it_is_down() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    let up = service.get("/api/health").send().await?;
    assert_eq!(up.status, 200);
    assert_eq!(up.json()["redis"]["role"], json!("master"));
    let port = redis.kill_primary()?;
    let down = service.get("/api/health").send().await?;
    assert_eq!(down.status, 503);
    assert_eq!(down.json()["redis"]["up"], json!(false));
    redis.restart_killed(port)?;
    let mut status = 0;
    for _ in 0..100 {
        status = service.get("/api/health").send().await?.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "healthy again after the restart");
    Ok(())
}

#[tokio::test]
async fn a_worker_only_process_runs_the_jobs_an_api_only_process_queues() -> TestResult {
    let redis = redis();
    let api = Service::start(&[], &[("REDIS_URL", redis.url()), ("MEDIA_API_WORKER", "off")])?;
    let alice = login(&api, "alice", false).await?;
    let id = queue_download(&api, &alice, "/api/youtube/download", "https://example.invalid/v/1").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = api.get(&format!("/api/jobs/{id}")).cookie(&alice).send().await?.json();
    assert_eq!(waiting["job"]["state"], json!("waiting"), "no worker in the API process");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_media-api"))
        .arg("--worker-only")
        .env("REDIS_URL", redis.url())
        .env("MEDIA_API_DOWNLOAD_STEP_MS", "40")
        .spawn()?;
    let mut state = json!(null);
    for _ in 0..200 {
        state = api.get(&format!("/api/jobs/{id}")).cookie(&alice).send().await?.json()["job"]["state"].clone();
        if state == json!("completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(state, json!("completed"));
    Ok(())
}

#[tokio::test]
async fn bad_configuration_stops_start_up_with_one_clear_message() -> TestResult {
    for (name, value, expected) in [
        ("MEDIA_API_ADDR", "not-an-address", "MEDIA_API_ADDR"),
        ("MEDIA_API_USERS", "alice", "name:password:role"),
        ("MEDIA_API_WORKER", "sometimes", "MEDIA_API_WORKER"),
        ("REDIS_URL", "http://example.invalid", "REDIS_URL"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_media-api")).env(name, value).output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}={value} was accepted");
        assert!(stderr.contains(expected) && stderr.lines().count() <= 3, "{name}: {stderr}");
    }
    let memory = Service::start(&["--memory"], &[])?;
    assert_eq!(memory.get("/api/health").send().await?.json()["backend"], json!("memory"));
    assert!(memory.stop()?.success(), "stops cleanly on SIGTERM");
    Ok(())
}

/// `GET /metrics` answers every crate's metrics in Prometheus's text format.
/// A Prometheus text scrape as `name{label="value",...}` (labels sorted) to value.
fn scrape(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect();
        labels.sort_unstable();
        samples.insert(format!("{name}{{{}}}", labels.join(",")), value);
    }
    samples
}

/// After a short load, the scrape has every family docs/metrics.md lists (counters at zero
/// included, so alerts on them work from the start) with values that match the load.
#[tokio::test]
async fn metrics_are_exported_for_prometheus() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    let alice = login(&service, "alice", false).await?;
    let mut authed = 0;
    for _ in 0..2 {
        assert_eq!(service.get("/api/me").cookie(&alice).send().await?.status, 200);
        authed += 1;
    }
    for _ in 0..3 {
        assert_eq!(service.get("/api/services/status").send().await?.status, 200);
    }
    let mut jobs = Vec::new();
    for n in 0..5 {
        jobs.push(
            queue_download(&service, &alice, "/api/youtube/download", &format!("https://example.invalid/v/{n}"))
                .await?,
        );
        authed += 1;
    }
    let refused = service
        .post("/api/youtube/download")
        .cookie(&alice)
        .json(&json!({"url": "https://example.invalid/v/6"}))
        .send()
        .await?;
    assert_eq!(refused.status, 429);
    authed += 1;
    for id in &jobs {
        authed += until_completed(&service, &alice, id, Duration::from_secs(15)).await?.1;
    }

    let metrics = service.get("/metrics").send().await?;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").is_some_and(|t| t.starts_with("text/plain")));
    let text = String::from_utf8_lossy(&metrics.body);
    let samples = scrape(&text);
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md"))?;
    // The tables' rows name the families.
    let documented: std::collections::BTreeSet<&str> = doc
        .lines()
        .filter(|line| line.starts_with("| `redtail_"))
        .flat_map(|line| line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with("redtail_") && word.len() > "redtail_".len())
        .collect();
    assert!(documented.len() >= 26, "docs/metrics.md lists {} families: {documented:?}", documented.len());
    let missing: Vec<&&str> = documented
        .iter()
        .filter(|name| {
            !samples.keys().any(|s| {
                s.strip_prefix(**name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with("_sum") || rest.starts_with("_count"))
            })
        })
        .collect();
    assert!(missing.is_empty(), "documented but not exported: {missing:?}\n{text}");

    let value = |series: &str| samples.get(series).copied().unwrap_or_else(|| panic!("{series} missing:\n{text}"));
    let sum = |prefix: &str, with: &[&str]| -> f64 {
        samples
            .iter()
            .filter(|(s, _)| s.starts_with(prefix) && with.iter().all(|w| s.contains(w)))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(value("redtail_sessions_created_total{}"), 1.0);
    // Every request with alice's cookie read her session once.
    assert_eq!(value("redtail_session_reads_total{outcome=\"found\"}"), authed as f64);
    assert_eq!(value("redtail_queue_adds_total{outcome=\"added\",queue=\"youtube-downloads\"}"), 5.0);
    assert_eq!(value("redtail_queue_attempts_total{outcome=\"completed\",queue=\"youtube-downloads\"}"), 5.0);
    assert_eq!(value("redtail_queue_job_run_seconds_count{queue=\"youtube-downloads\"}"), 5.0);
    assert_eq!(
        value("redtail_ratelimit_decisions_total{outcome=\"limited\",policy=\"youtube\",source=\"redis\"}"),
        1.0
    );
    assert_eq!(
        value("redtail_ratelimit_decisions_total{outcome=\"allowed\",policy=\"youtube\",source=\"redis\"}"),
        5.0
    );
    assert_eq!(
        sum("redtail_cache_requests_total{", &["outcome=\"hit\""]),
        2.0,
        "the status route: one miss, then two hits"
    );
    assert!(value("redtail_redis_pool_connections{pool=\"commands\"}") >= 1.0);
    assert!(sum("redtail_redis_commands_total{", &["outcome=\"ok\""]) > 0.0);
    Ok(())
}
