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
use redtail_ratelimit::{HeaderKey, RateLimitLayer, RateLimiter};
use redtail_tests::{Env, Target, TestResult, for_each_backend};
use tower::ServiceExt;

for_each_backend!(the_101st_request_in_a_minute_is_refused_and_health_never_is);

async fn the_101st_request_in_a_minute_is_refused_and_health_never_is(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = RateLimiter::new(env.backend.clone(), env.ns.child("rl"));
    let layer = RateLimitLayer::new(limiter, vec![presets::API], HeaderKey(HeaderName::from_static("x-user-id")))
        .skip(|uri| uri.path() == "/api/health")
        .with_legacy_headers(true);
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
    assert_eq!(headers["content-type"], "application/problem+json");
    let retry: u64 = headers["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    let t: u64 = headers["ratelimit"].to_str()?.rsplit("t=").next().ok_or("no t")?.parse()?;
    assert!(retry >= t, "Retry-After ({retry}) must not be earlier than t ({t})");
    let body: serde_json::Value = serde_json::from_slice(&refused.into_body().collect().await?.to_bytes())?;
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["retryAfter"], retry);
    assert_eq!(body["status"], 429);

    for _ in 0..150 {
        assert_eq!(app.clone().oneshot(request("/api/health")?).await?.status(), StatusCode::OK);
    }
    // Another user is not affected.
    let other = Request::get("/api/items").header("x-user-id", "u2").body(Body::empty())?;
    assert_eq!(app.clone().oneshot(other).await?.status(), StatusCode::OK);
    Ok(())
}
