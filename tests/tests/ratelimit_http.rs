//! `RateLimitLayer` in an axum app, on every backend: the 101st request in a minute gets 429
//! with correct headers and body, and the health route is never limited.

use axum::{
    Router,
    body::Body,
    http::{HeaderName, Request, StatusCode},
    routing::get,
};
use http_body_util::BodyExt;
use media_api::presets;
use std::time::Duration;

use redtail_ratelimit::{HeaderKey, Policy, RateLimitLayer, RateLimiter};
use redtail_tests::{Env, Target, TestResult, for_each_backend};
use tower::ServiceExt;

for_each_backend!(
    the_101st_request_in_a_minute_is_refused_and_health_never_is,
    failed_responses_can_go_uncounted_and_cached_refusals_keep_their_headers
);

async fn the_101st_request_in_a_minute_is_refused_and_health_never_is(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = RateLimiter::new(env.backend.clone(), env.ns.child("rl"));
    let layer = RateLimitLayer::new(limiter, vec![presets::API], HeaderKey(HeaderName::from_static("x-user-id")))?
        .skip(|uri| uri.path() == "/api/health")
        .with_legacy_headers(true)
        .with_refusal(presets::rate_limit_refusal);
    let app = Router::new()
        .route("/api/health", get(|| async { "up" }))
        .route("/api/items", get(|| async { "items" }))
        .layer(layer);
    let request = |path: &str| Request::get(path).header("x-user-id", "u1").body(Body::empty());

    for i in 0..100 {
        let response = app.clone().oneshot(request("/api/items")?).await?;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        if i == 0 {
            let headers = response.headers();
            assert_eq!(headers["ratelimit-policy"], "\"api\";q=100;w=60");
            assert!(headers["ratelimit"].to_str()?.starts_with("\"api\";r=99;t="), "{:?}", headers["ratelimit"]);
            assert_eq!(headers["x-ratelimit-limit"], "100");
            assert_eq!(headers["x-ratelimit-remaining"], "99");
        }
    }
    let refused = app.clone().oneshot(request("/api/items")?).await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = refused.headers().clone();
    // The demo's body, built by `with_refusal`, with the layer's headers added.
    assert_eq!(headers["content-type"], "application/json");
    let retry: u64 = headers["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    let t: u64 = headers["ratelimit"].to_str()?.rsplit("t=").next().ok_or("no t")?.parse()?;
    assert!(retry >= t, "Retry-After ({retry}) must not be earlier than t ({t})");
    let body: serde_json::Value = serde_json::from_slice(&refused.into_body().collect().await?.to_bytes())?;
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["retryAfter"], retry);

    for _ in 0..150 {
        assert_eq!(app.clone().oneshot(request("/api/health")?).await?.status(), StatusCode::OK);
    }
    // Another user is not affected.
    let other = Request::get("/api/items").header("x-user-id", "u2").body(Body::empty())?;
    assert_eq!(app.clone().oneshot(other).await?.status(), StatusCode::OK);
    Ok(())
}

/// With `skip_failed`, 150 requests answered 500 use none of a limit of 5 a minute; successful ones
/// do, and the 6th is refused with the default problem+json body. A refusal answered again from
/// the in-process cache (no round trip) still carries the `RateLimit` headers, aged.
async fn failed_responses_can_go_uncounted_and_cached_refusals_keep_their_headers(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = RateLimiter::new(env.backend.clone(), env.ns.child("rl"));
    let policy = Policy::named(String::from("login"), 5, Duration::from_secs(60));
    let layer = RateLimitLayer::new(limiter.clone(), vec![policy], HeaderKey(HeaderName::from_static("x-user-id")))?
        .skip_failed(true);
    let app = Router::new()
        .route("/fail", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no") }))
        .route("/ok", get(|| async { "yes" }))
        .layer(layer);
    let request = |path: &str| Request::get(path).header("x-user-id", "u1").body(Body::empty());
    for _ in 0..150 {
        assert_eq!(app.clone().oneshot(request("/fail")?).await?.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    for i in 0..5 {
        assert_eq!(app.clone().oneshot(request("/ok")?).await?.status(), StatusCode::OK, "request {i}");
    }
    let refused = app.clone().oneshot(request("/ok")?).await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    assert!(refused.headers()["ratelimit"].to_str()?.starts_with("\"login\";r=0;t="));
    let body: serde_json::Value = serde_json::from_slice(&refused.into_body().collect().await?.to_bytes())?;
    assert_eq!((body["status"].as_u64(), body.get("success")), (Some(429), None), "{body}");
    let cached_before = limiter.stats().cached;
    let again = app.clone().oneshot(request("/ok")?).await?;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limiter.stats().cached, cached_before + 1, "answered from the refusal cache");
    assert_eq!(again.headers()["ratelimit-policy"], "\"login\";q=5;w=60");
    assert!(again.headers()["ratelimit"].to_str()?.starts_with("\"login\";r=0;t="), "{:?}", again.headers());
    assert!(again.headers().contains_key("retry-after"));
    Ok(())
}
