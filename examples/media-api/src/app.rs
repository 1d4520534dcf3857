//! The service: state, routes and handlers.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{StatusCode, header},
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{delete, get, post},
};
use media_api::presets::{self, UserSession};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use redtail_cache::Cache;
use redtail_connection::Redis;
use redtail_queue::{JobOptions, JobState};
use redtail_ratelimit::{Decision, Policy, RateLimitLayer, RateLimiter, SubjectKey};
use redtail_session::SessionStore;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::{self, Caller},
    config::Config,
    error::{ApiError, Body},
    jobs::{Download, MediaRequest, Queues},
};

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) config: Arc<Config>,
    /// The Redis client, for health; `None` on the in-memory backend.
    pub(crate) redis: Option<Redis>,
    pub(crate) sessions: Arc<SessionStore<UserSession>>,
    pub(crate) limiter: RateLimiter,
    pub(crate) cache: Cache,
    pub(crate) queues: Queues,
}

/// Policies of the routes with their own limit; each is checked with the API limit, all or nothing.
const DOWNLOAD: [Policy; 2] = [presets::API, presets::YOUTUBE_DOWNLOAD];
const MEDIA_REQUEST: [Policy; 2] = [presets::API, presets::MEDIA_REQUEST];

pub(crate) fn router(state: AppState) -> Result<Router, String> {
    let sessions = auth::layer(&state).map_err(|e| e.to_string())?;
    let limiter = state.limiter.clone();
    // Every /api route is under the API limit except health; the two routes with their own
    // limit check it together with the API limit.
    let api = RateLimitLayer::new(limiter.clone(), [presets::API], SubjectKey)
        .skip(|uri| {
            matches!(uri.path(), "/api/health" | "/api/youtube/download" | "/api/media/request")
                || !uri.path().starts_with("/api/")
        })
        .with_refusal(presets::rate_limit_refusal);
    let downloads =
        RateLimitLayer::new(limiter.clone(), DOWNLOAD, SubjectKey).with_refusal(presets::rate_limit_refusal);
    let requests = RateLimitLayer::new(limiter, MEDIA_REQUEST, SubjectKey).with_refusal(presets::rate_limit_refusal);
    Ok(Router::new()
        .route("/api/health", get(health))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/logout-all", post(auth::logout_all))
        .route("/api/me", get(auth::me))
        .route("/api/sessions", get(auth::sessions))
        .route("/api/youtube/download", post(download).route_layer(downloads))
        .route("/api/media/request", post(media_request).route_layer(requests))
        .route("/api/jobs/{id}", get(job))
        .route("/api/services/status", get(services_status))
        .route("/api/admin/overview", get(admin_overview))
        .route("/api/admin/jobs/{queue}/{id}/retry", post(admin_retry))
        .route("/api/admin/jobs/{queue}/{id}", delete(admin_delete))
        .route("/admin", get(dashboard))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(api)
        .layer(middleware::from_fn(auth::authenticate))
        .layer(sessions)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state))
}

fn caller(caller: Option<Extension<Caller>>) -> Result<Caller, ApiError> {
    caller.map(|Extension(c)| c).ok_or_else(ApiError::unauthorized)
}

fn admin(caller: Option<Extension<Caller>>) -> Result<Caller, ApiError> {
    let caller = self::caller(caller)?;
    if caller.is_admin() { Ok(caller) } else { Err(ApiError::forbidden()) }
}

/// The process's Prometheus recorder, installed on first use: `main` calls it before building
/// anything that counts, since a counter registered before a recorder exists is never exported.
/// `None` if another recorder was installed first.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).as_ref()
}

/// `GET /metrics`: every redtail crate's metrics (docs/metrics.md) in Prometheus's text format,
/// for a scraper.
async fn metrics() -> Response {
    match prometheus() {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => ApiError::not_found("route").into_response(),
    }
}

/// `GET /api/health`: Redis health as JSON, 200 when up and 503 when down.
async fn health(State(state): State<AppState>) -> Response {
    match &state.redis {
        Some(redis) => {
            let health = redis.health().await;
            let status = if health.up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, Json(json!({"success": health.up, "backend": "redis", "redis": health}))).into_response()
        }
        None => Json(json!({"success": true, "backend": "memory", "redis": {"up": true}})).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadBody {
    url: String,
}

#[derive(Debug, Deserialize)]
struct FailFlag {
    fail: Option<String>,
}

/// A job id of the service: a queue prefix and 16 random hex digits.
fn job_id(prefix: &str) -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(ApiError::unavailable)?;
    Ok(format!("{prefix}-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// `POST /api/youtube/download` (5 an hour): queues a download; `?fail=once|always|until-retried`
/// injects failures.
async fn download(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(flag): Query<FailFlag>,
    Body(body): Body<DownloadBody>,
) -> Result<Response, ApiError> {
    let caller = self::caller(caller)?;
    let url = body.url.trim();
    if url.len() > 2048
        || !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains(char::is_whitespace)
    {
        return Err(ApiError::bad_request("url must be an http(s) URL of at most 2048 characters"));
    }
    if let Some(fail) = &flag.fail
        && !matches!(fail.as_str(), "once" | "always" | "until-retried")
    {
        return Err(ApiError::bad_request("fail must be once, always or until-retried"));
    }
    let data = Download { url: url.to_owned(), user_id: caller.user().to_owned(), fail: flag.fail };
    let id = job_id("dl")?;
    let options = state.queues.downloads.config().defaults.clone().id(id.as_str());
    state.queues.downloads.add_with(&data, options).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"success": true, "jobId": id}))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MediaRequestBody {
    title: String,
    media_type: String,
}

/// `POST /api/media/request` (20 an hour): queues a request for a movie or show.
async fn media_request(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Body(body): Body<MediaRequestBody>,
) -> Result<Response, ApiError> {
    let caller = self::caller(caller)?;
    let title = body.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::bad_request("title must be 1 to 200 characters"));
    }
    if !matches!(body.media_type.as_str(), "movie" | "show") {
        return Err(ApiError::bad_request("mediaType must be movie or show"));
    }
    let data = MediaRequest { title: title.to_owned(), media_type: body.media_type, user_id: caller.user().to_owned() };
    let id = job_id("mr")?;
    let options: JobOptions = state.queues.requests.config().defaults.clone().id(id.as_str());
    state.queues.requests.add_with(&data, options).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"success": true, "jobId": id}))).into_response())
}

/// `GET /api/jobs/{id}`: a job of the caller (any job for an admin).
async fn job(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = self::caller(caller)?;
    let queue = state.queues.of_job(&id).ok_or_else(|| ApiError::not_found("job"))?;
    let job = queue.get(&id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let owner = job.data.get("userId").and_then(Value::as_str);
    if owner != Some(caller.user()) && !caller.is_admin() {
        return Err(ApiError::not_found("job"));
    }
    Ok(Json(json!({"success": true, "queue": queue.name(), "job": job})))
}

/// `GET /api/services/status`: the services' status, cached 60 s (tag `service-status`).
async fn services_status(State(state): State<AppState>) -> Result<Response, ApiError> {
    if let Some(status) = presets::service_status::<Value, _>(&state.cache, "all").await {
        return Ok(
            ([("x-cache", "hit")], Json(json!({"success": true, "cached": true, "services": status}))).into_response()
        );
    }
    // Checking the services takes a while; this is what the cache saves.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let checked_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let status = json!([
        {"service": "plex", "status": "up", "latencyMs": 12, "checkedAt": checked_at},
        {"service": "youtube", "status": "up", "latencyMs": 48, "checkedAt": checked_at},
        {"service": "tmdb", "status": "degraded", "latencyMs": 910, "checkedAt": checked_at},
    ]);
    presets::set_service_status(&state.cache, "all", &status).await?;
    Ok(([("x-cache", "miss")], Json(json!({"success": true, "cached": false, "services": status}))).into_response())
}

#[derive(Debug, Deserialize)]
struct OverviewQuery {
    user: Option<String>,
}

/// `GET /api/admin/overview`: what the dashboard shows.
async fn admin_overview(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(query): Query<OverviewQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(caller)?;
    let mut queues = Vec::new();
    let mut latest = Vec::new();
    let mut dead = Vec::new();
    for queue in
        [state.queues.by_name("youtube-downloads"), state.queues.by_name("media-requests")].into_iter().flatten()
    {
        let metrics = queue.metrics().await?;
        queues.push(json!({"name": queue.name(), "metrics": metrics}));
        for job_state in [JobState::Active, JobState::Waiting, JobState::Delayed, JobState::Completed] {
            for job in queue.list(job_state, 10).await? {
                latest.push(json!({"queue": queue.name(), "job": job}));
            }
        }
        for job in queue.list(JobState::Dead, 20).await? {
            dead.push(json!({"queue": queue.name(), "job": job}));
        }
    }
    latest.sort_by_key(|j| std::cmp::Reverse(j["job"]["created_ms"].as_u64()));
    latest.truncate(20);
    let mut sessions = 0;
    for user in &state.config.users {
        sessions += state.sessions.list(&user.name).await?.len();
    }
    let user = query.user.unwrap_or_else(|| "alice".to_owned());
    let mut usage = Vec::new();
    for policy in [presets::API, presets::YOUTUBE_DOWNLOAD, presets::MEDIA_REQUEST] {
        // A peek reports what one more request would leave; what is left now is one more
        // unless that request would be refused.
        let (states, spare) = match state.limiter.peek(&user, &[policy], 1).await? {
            Decision::Allowed { policies, .. } => (policies, 1),
            Decision::Limited { policies, .. } => (policies, 0),
            _ => (Vec::new(), 0),
        };
        for s in states {
            let remaining = (s.remaining + spare).min(s.limit);
            usage.push(
                json!({"policy": s.name, "limit": s.limit, "remaining": remaining, "periodSecs": s.period.as_secs()}),
            );
        }
    }
    let health = match &state.redis {
        Some(redis) => serde_json::to_value(redis.health().await).unwrap_or(Value::Null),
        None => json!({"up": true, "backend": "memory"}),
    };
    let limiter = state.limiter.stats();
    Ok(Json(json!({
        "success": true,
        "limiter": {"degraded": limiter.degraded, "cached": limiter.cached, "shadowWouldLimit": limiter.shadow_would_limit},
        "queues": queues,
        "latest": latest,
        "dead": dead,
        "sessions": sessions,
        "rateLimit": {"user": user, "policies": usage},
        "health": health,
    })))
}

/// `POST /api/admin/jobs/{queue}/{id}/retry`: runs a dead-lettered job again.
async fn admin_retry(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    admin(caller)?;
    let queue = state.queues.by_name(&queue).ok_or_else(|| ApiError::not_found("queue"))?;
    if !queue.retry_dead(&id).await? {
        return Err(ApiError::not_found("dead-lettered job"));
    }
    Ok(Json(json!({"success": true})))
}

/// `DELETE /api/admin/jobs/{queue}/{id}`: deletes a job that is not running.
async fn admin_delete(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    admin(caller)?;
    let queue = state.queues.by_name(&queue).ok_or_else(|| ApiError::not_found("queue"))?;
    match queue.delete(&id).await {
        Ok(true) => Ok(Json(json!({"success": true}))),
        Ok(false) => Err(ApiError::not_found("job")),
        Err(redtail_queue::Error::Busy(message)) => Err(ApiError::new(StatusCode::CONFLICT, "job_running", message)),
        Err(e) => Err(e.into()),
    }
}

/// `GET /admin`: the dashboard for admins; for anyone else a 403 page with a login form.
async fn dashboard(caller: Option<Extension<Caller>>) -> Response {
    let html = [(header::CACHE_CONTROL, "no-store")];
    match admin(caller) {
        Ok(_) => (html, Html(include_str!("dashboard.html"))).into_response(),
        Err(_) => (StatusCode::FORBIDDEN, html, Html(include_str!("login.html"))).into_response(),
    }
}
