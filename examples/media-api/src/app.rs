//! The service: state, routes and handlers.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use media_api::presets::{self, UserSession};
use redtail_cache::Cache;
use redtail_connection::Redis;
use redtail_queue::JobOptions;
use redtail_ratelimit::{Policy, RateLimitLayer, RateLimiter, SubjectKey};
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
        .map_err(|e| e.to_string())?
        .skip(|uri| {
            matches!(uri.path(), "/api/health" | "/api/youtube/download" | "/api/media/request")
                || !uri.path().starts_with("/api/")
        })
        .with_refusal(presets::rate_limit_refusal);
    let downloads = RateLimitLayer::new(limiter.clone(), DOWNLOAD, SubjectKey)
        .map_err(|e| e.to_string())?
        .with_refusal(presets::rate_limit_refusal);
    let requests = RateLimitLayer::new(limiter, MEDIA_REQUEST, SubjectKey)
        .map_err(|e| e.to_string())?
        .with_refusal(presets::rate_limit_refusal);
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
        .nest("/admin", admin_router(&state))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(api)
        .layer(middleware::from_fn(auth::authenticate))
        .layer(sessions)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state))
}

/// The admin every redtail service can mount, showing this service's queues, limits and sessions.
fn admin_router(state: &AppState) -> Router<AppState> {
    let redis = state.redis.clone();
    redtail_admin::Admin::new()
        .queue(state.queues.downloads.clone())
        .queue(state.queues.requests.clone())
        .sessions(Arc::clone(&state.sessions))
        .rate_limits(state.limiter.clone(), [presets::API, presets::YOUTUBE_DOWNLOAD, presets::MEDIA_REQUEST])
        .health(move || {
            let redis = redis.clone();
            async move {
                match redis {
                    Some(redis) => serde_json::to_value(redis.health().await).unwrap_or(Value::Null),
                    None => json!({"up": true, "backend": "memory"}),
                }
            }
        })
        .router()
        .layer(middleware::from_fn(admin_only))
}

fn caller(caller: Option<Extension<Caller>>) -> Result<Caller, ApiError> {
    caller.map(|Extension(c)| c).ok_or_else(ApiError::unauthorized)
}

fn admin(caller: Option<Extension<Caller>>) -> Result<Caller, ApiError> {
    let caller = self::caller(caller)?;
    if caller.is_admin() { Ok(caller) } else { Err(ApiError::forbidden()) }
}

/// `GET /metrics`: every redtail crate's metrics (docs/metrics.md) in Prometheus's text format,
/// for a scraper. The queues' group gauges are read from Redis first (one script call each).
async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = media_api::prometheus() else {
        return ApiError::not_found("route").into_response();
    };
    let (downloads, requests) = tokio::join!(state.queues.downloads.metrics(0), state.queues.requests.metrics(0));
    if let Err(e) = downloads.and(requests) {
        tracing::warn!(error = %e, "metrics: the queues' group gauges could not be read; they keep their last values");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
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
    let options = state.queues.downloads.config().defaults.clone().id(id.as_str()).group(caller.user());
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
    let (queue, job) = state.queues.get(&id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let owner = job.data.get("userId").and_then(Value::as_str);
    if owner != Some(caller.user()) && !caller.is_admin() {
        return Err(ApiError::not_found("job"));
    }
    Ok(Json(json!({"success": true, "queue": queue, "job": job})))
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

/// In front of the admin (`redtail-admin`, nested at `/admin`): admins only. Anyone else asking
/// for the page gets a 403 page with a login form; the admin's API answers them 401 or 403.
async fn admin_only(caller: Option<Extension<Caller>>, request: Request, next: Next) -> Response {
    match admin(caller) {
        Ok(_) => next.run(request).await,
        Err(_) if request.method() == axum::http::Method::GET && request.uri().path() == "/" => {
            (StatusCode::FORBIDDEN, [(header::CACHE_CONTROL, "no-store")], Html(include_str!("login.html")))
                .into_response()
        }
        Err(refused) => refused.into_response(),
    }
}
