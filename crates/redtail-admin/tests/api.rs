//! The admin's API and its guard, in process on the in-memory backend: the page and its headers,
//! the host's layer in front, cross-site requests refused, and every action the page offers.
//! (`examples/media-api/tests/browser.rs` drives the page itself in Chromium on a real server.)

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use redtail_admin::Admin;
use redtail_core::Backend;
use redtail_queue::{JobOptions, Queue, QueueConfig};
use redtail_ratelimit::{Namespace, Policy, RateLimiter};
use redtail_session::{NewSession, SessionConfig, SessionStore};
use redtail_testkit::MemoryBackend;
use serde_json::{Value, json};
use tower::ServiceExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    app: Router,
    queue: Queue<Value>,
    sessions: Arc<SessionStore<Value>>,
}

/// The admin nested at `/ops` behind a layer that, as a host's would, refuses callers without
/// its credential.
fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let queue = Queue::<Value>::new(Arc::clone(&backend), QueueConfig::new("downloads"))?;
    let sessions = Arc::new(SessionStore::<Value>::new(Arc::clone(&backend), SessionConfig::default())?);
    let limiter = RateLimiter::new(Arc::clone(&backend), Namespace::new("rl")?);
    let admin = Admin::new()
        .queue(queue.clone())
        .sessions(Arc::clone(&sessions))
        .rate_limits(limiter, [Policy::new("api", 100, Duration::from_secs(60))])
        .health(|| async { json!({"up": true}) });
    let host_auth = axum::middleware::from_fn(|request: Request<Body>, next: Next| async move {
        if request.headers().get("x-operator").is_some_and(|v| v == "yes") {
            next.run(request).await
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    });
    let app = Router::new().nest("/ops", admin.router().layer(host_auth));
    Ok(Fixture { app, queue, sessions })
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, Box<dyn std::error::Error>> {
    let mut request =
        Request::builder().method(method).uri(path).header("x-operator", "yes").header("host", "media.example");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(app.clone().oneshot(request.body(Body::empty())?).await?)
}

async fn json_of(response: Response) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?)
}

#[tokio::test]
async fn the_page_carries_its_headers_and_finds_its_assets_where_it_is_mounted() -> TestResult {
    let Fixture { app, .. } = fixture()?;
    let page = send(&app, "GET", "/ops", &[]).await?;
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    let csp = headers.get("content-security-policy").ok_or("no CSP")?.to_str()?;
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(headers.get("x-content-type-options").ok_or("no nosniff")?, "nosniff");
    let html = String::from_utf8(page.into_body().collect().await?.to_bytes().to_vec())?;
    assert!(html.contains(r#"src="/ops/admin.js""#) && html.contains(r#"data-base="/ops""#), "{html}");
    let script = send(&app, "GET", "/ops/admin.js", &[]).await?;
    assert!(
        script
            .headers()
            .get("content-type")
            .is_some_and(|t| t.to_str().is_ok_and(|t| t.starts_with("text/javascript")))
    );
    assert_eq!(script.headers().get("x-content-type-options").ok_or("no nosniff")?, "nosniff");
    Ok(())
}

#[tokio::test]
async fn the_hosts_layer_decides_who_gets_in() -> TestResult {
    let Fixture { app, queue, .. } = fixture()?;
    for (method, path) in [("GET", "/ops"), ("GET", "/ops/api/overview"), ("POST", "/ops/api/queues/downloads/pause")] {
        let refused = app.clone().oneshot(Request::builder().method(method).uri(path).body(Body::empty())?).await?;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert!(!queue.metrics(0).await?.paused, "the refused pause did nothing");
    Ok(())
}

#[tokio::test]
async fn state_changing_requests_from_another_site_are_refused() -> TestResult {
    let Fixture { app, queue, .. } = fixture()?;
    for headers in [
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site"), ("origin", "https://media.example")],
    ] {
        let refused = send(&app, "POST", "/ops/api/queues/downloads/pause", headers).await?;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert!(refused.headers().contains_key("content-security-policy"));
    }
    assert!(!queue.metrics(0).await?.paused);
    let allowed = [("origin", "https://media.example"), ("sec-fetch-site", "same-origin")];
    assert_eq!(send(&app, "POST", "/ops/api/queues/downloads/pause", &allowed).await?.status(), StatusCode::OK);
    assert!(queue.metrics(0).await?.paused, "the same-origin pause took effect");
    // A read from another site is harmless (the browser keeps the answer from that site).
    let read = send(&app, "GET", "/ops/api/overview", &[("origin", "https://evil.example")]).await?;
    assert_eq!(read.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn every_action_of_the_page_works_through_the_api() -> TestResult {
    let Fixture { app, queue, sessions } = fixture()?;
    let hour = Duration::from_secs(3600);
    let delayed =
        queue.add_with(&json!({"url": "<script>alert(1)</script>"}), JobOptions::default().delay(hour)).await?.id;
    let path = |rest: &str| format!("/ops/api/queues/downloads{rest}");

    let nightly = redtail_queue::Scheduler::cron("library-scan", "0 0 3 * * *", "Europe/Paris")?;
    queue.upsert_scheduler(nightly, &json!({"scan": "all"})).await?;
    let overview = json_of(send(&app, "GET", "/ops/api/overview", &[]).await?).await?;
    assert_eq!(overview["queues"][0]["name"], "downloads");
    let scheduler = &overview["queues"][0]["schedulers"][0];
    assert_eq!((scheduler["id"].as_str(), scheduler["runs"].as_u64()), (Some("library-scan"), Some(1)));
    assert!(scheduler["next_ms"].as_u64().is_some() && scheduler["last_job"].as_str().is_some(), "{scheduler}");
    assert_eq!(overview["queues"][0]["deduplicated_last_hour"], 0);
    assert!(queue.remove_scheduler("library-scan").await?);
    assert_eq!(overview["queues"][0]["metrics"]["counts"]["delayed"], 2, "the delayed job and the scheduler's");
    assert_eq!(overview["health"]["up"], true);
    assert_eq!(overview["limits"]["policies"], json!(["api"]));

    let listed = json_of(send(&app, "GET", &path("/jobs?state=delayed"), &[]).await?).await?;
    assert_eq!(listed["jobs"][0]["id"], delayed.as_str());
    let one = json_of(send(&app, "GET", &path(&format!("/jobs/{delayed}")), &[]).await?).await?;
    assert_eq!(
        (one["job"]["data"]["url"].as_str(), one["log"].as_array().map(Vec::len)),
        (Some("<script>alert(1)</script>"), Some(0))
    );
    assert_eq!(send(&app, "GET", &path("/jobs?state=sleeping"), &[]).await?.status(), StatusCode::BAD_REQUEST);
    assert_eq!(send(&app, "GET", "/ops/api/queues/nope/jobs?state=dead", &[]).await?.status(), StatusCode::NOT_FOUND);

    assert_eq!(
        send(&app, "POST", &path(&format!("/jobs/{delayed}/retry")), &[]).await?.status(),
        StatusCode::NOT_FOUND,
        "not dead"
    );
    assert_eq!(send(&app, "POST", &path(&format!("/jobs/{delayed}/promote")), &[]).await?.status(), StatusCode::OK);
    assert_eq!(queue.metrics(0).await?.counts.waiting, 1, "promoted to run now");
    assert_eq!(
        send(&app, "POST", &path(&format!("/jobs/{delayed}/promote")), &[]).await?.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(send(&app, "DELETE", &path(&format!("/jobs/{delayed}")), &[]).await?.status(), StatusCode::OK);
    assert!(queue.get(delayed.as_str()).await?.is_none());

    for (action, paused) in [("pause", true), ("resume", false)] {
        assert_eq!(send(&app, "POST", &path(&format!("/{action}")), &[]).await?.status(), StatusCode::OK);
        assert_eq!(queue.metrics(0).await?.paused, paused);
    }

    for user in ["bob", "alice", "alice"] {
        queue.add_with(&json!({"url": "x"}), JobOptions::default().group(user)).await?;
    }
    let listed = json_of(send(&app, "GET", &path("/groups?count=1"), &[]).await?).await?;
    assert_eq!(listed["groups"], json!([{"name": "alice", "waiting": 2, "active": 0, "paused": false}]));
    let next = json_of(send(&app, "GET", &path("/groups?after=alice"), &[]).await?).await?;
    assert_eq!(next["groups"][0]["name"], "bob");
    assert_eq!(send(&app, "POST", &path("/groups/bob/pause"), &[]).await?.status(), StatusCode::OK);
    let bob = json_of(send(&app, "GET", &path("/groups/bob"), &[]).await?).await?;
    assert_eq!(bob["group"], json!({"name": "bob", "waiting": 1, "active": 0, "paused": true}));
    let unseen = json_of(send(&app, "GET", &path("/groups/carol"), &[]).await?).await?;
    assert_eq!(unseen["group"]["waiting"], 0, "a group without jobs reads as empty");
    let overview = json_of(send(&app, "GET", "/ops/api/overview", &[]).await?).await?;
    let totals = &overview["queues"][0]["metrics"]["groups"];
    assert_eq!((totals["waiting"].as_u64(), totals["paused"].as_u64()), (Some(2), Some(1)), "{totals}");
    assert_eq!(send(&app, "POST", &path("/groups/bob/resume"), &[]).await?.status(), StatusCode::OK);
    assert!(!queue.group("bob").await?.paused);
    assert_eq!(send(&app, "POST", &path("/groups/bob/sleep"), &[]).await?.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        send(&app, "POST", &path("/groups/two%20words/pause"), &[]).await?.status(),
        StatusCode::BAD_REQUEST,
        "a group name the queue refuses"
    );

    let (token, session) = sessions.create("alice", json!({}), NewSession::standard()).await?;
    let listed = json_of(send(&app, "GET", "/ops/api/sessions/alice", &[]).await?).await?;
    assert_eq!(listed["sessions"][0]["id"], session.id.as_str());
    assert!(listed.to_string().find(token.as_str()).is_none(), "tokens are never shown");
    let end = format!("/ops/api/sessions/alice/{}", session.id);
    assert_eq!(send(&app, "DELETE", &end, &[]).await?.status(), StatusCode::OK);
    assert!(sessions.get(token.as_str()).await?.is_none());
    assert_eq!(send(&app, "DELETE", &end, &[]).await?.status(), StatusCode::NOT_FOUND);

    let usage = json_of(send(&app, "GET", "/ops/api/limits/alice", &[]).await?).await?;
    assert_eq!(
        usage["policies"][0],
        json!({"policy": "api", "limit": 100, "remaining": 100, "period_secs": 60.0, "reset_after_secs": usage["policies"][0]["reset_after_secs"]})
    );
    Ok(())
}
