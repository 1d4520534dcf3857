//! The original media-server design's settings, built from redtail's general building blocks.

use std::time::Duration;

use redtail_cache::{Cache, Codec, EntryOptions, canonical_key};
use redtail_queue::{Groups, JobOptions, QueueConfig, Retention};
use redtail_ratelimit::{Algorithm, OnFailure, Policy, Refused};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value as Json;

/// The `youtube-downloads` queue: 3 attempts, exponential backoff from 2 s, completed jobs kept an
/// hour (the last 100), failed jobs kept 24 hours. Each user's downloads are a group, two at a
/// time: one user queuing hundreds does not hold back everyone else's.
pub fn youtube_downloads() -> QueueConfig {
    queue("youtube-downloads", 3).groups(Groups::default().concurrency(2))
}

/// The `media-requests` queue: as [`youtube_downloads`], 5 attempts.
pub fn media_requests() -> QueueConfig {
    queue("media-requests", 5)
}

/// The `notifications` queue: as [`youtube_downloads`], 1 attempt.
pub fn notifications() -> QueueConfig {
    queue("notifications", 1)
}

fn queue(name: &str, attempts: u32) -> QueueConfig {
    QueueConfig::new(name).defaults(
        JobOptions::default()
            .attempts(attempts)
            .keep_completed(Retention::new(Duration::from_secs(3600), 100))
            .keep_failed(Retention::new(Duration::from_secs(24 * 3600), 100_000)),
    )
}

/// The API limit: 100 requests a minute per user; when Redis is down, an in-process limit.
pub const API: Policy =
    Policy::new("api", 100, Duration::from_secs(60)).with_on_failure(OnFailure::Local { instances: 1 });
/// The download limit: 5 YouTube downloads an hour, counted exactly; refused when Redis is down.
pub const YOUTUBE_DOWNLOAD: Policy =
    Policy::new("youtube", 5, Duration::from_secs(3_600)).with_algorithm(Algorithm::SlidingLog);
/// The media-request limit: 20 an hour; refused when Redis is down.
pub const MEDIA_REQUEST: Policy = Policy::new("media-request", 20, Duration::from_secs(3_600));

/// The original service's 429 body, `{"success":false,"error":{"code":"RATE_LIMIT_EXCEEDED",
/// "message":...,"retryAfter":<seconds>}}`, for [`RateLimitLayer::with_refusal`](redtail_ratelimit::RateLimitLayer::with_refusal).
pub fn rate_limit_refusal(refused: &Refused<'_>) -> axum::http::Response<String> {
    let retry = refused.retry_after.as_millis().div_ceil(1000);
    let message = format!("Too many requests; try again in {retry} seconds");
    let body = serde_json::json!({
        "success": false,
        "error": {"code": "RATE_LIMIT_EXCEEDED", "message": message, "retryAfter": retry},
    });
    let mut response = axum::http::Response::new(body.to_string());
    *response.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    response
}

/// The tag of every service status entry.
pub const SERVICE_STATUS_TAG: &str = "service-status";
/// The tag of every API response entry (each also carries its endpoint as a tag).
pub const API_RESPONSE_TAG: &str = "api-response";

/// Options of service status entries: 60 s, tagged [`SERVICE_STATUS_TAG`].
pub fn service_status_options() -> EntryOptions {
    EntryOptions::ttl(Duration::from_secs(60)).tag(SERVICE_STATUS_TAG)
}

/// Options of API response entries: 300 s, tagged [`API_RESPONSE_TAG`] and `endpoint`.
pub fn api_response_options(endpoint: &str) -> EntryOptions {
    EntryOptions::ttl(Duration::from_secs(300)).tag(API_RESPONSE_TAG).tag(endpoint)
}

/// The key of a service's status.
pub fn service_status_key(service: &str) -> String {
    format!("service-status:{service}")
}

/// The key of an API response: the endpoint and its parameters, canonical (see
/// [`canonical_key`]).
pub fn api_response_key(endpoint: &str, params: &Json) -> String {
    canonical_key(&format!("api:{endpoint}"), params)
}

/// The cached status of `service`, if fresh.
pub async fn service_status<T: DeserializeOwned, C: Codec>(cache: &Cache<C>, service: &str) -> Option<T> {
    cache.get_with_tags(&service_status_key(service), &[SERVICE_STATUS_TAG]).await
}

/// Caches the status of `service` for 60 s.
pub async fn set_service_status<T: Serialize, C: Codec>(
    cache: &Cache<C>,
    service: &str,
    status: &T,
) -> redtail_cache::Result<()> {
    cache.set(&service_status_key(service), status, &service_status_options()).await
}

/// The cached response of `endpoint` for `params`, if fresh: one round trip.
pub async fn api_response<T: DeserializeOwned, C: Codec>(cache: &Cache<C>, endpoint: &str, params: &Json) -> Option<T> {
    cache.get_with_tags(&api_response_key(endpoint, params), &[API_RESPONSE_TAG, endpoint]).await
}

/// Caches the response of `endpoint` for `params` for 300 s.
pub async fn set_api_response<T: Serialize, C: Codec>(
    cache: &Cache<C>,
    endpoint: &str,
    params: &Json,
    response: &T,
) -> redtail_cache::Result<()> {
    cache.set(&api_response_key(endpoint, params), response, &api_response_options(endpoint)).await
}

/// What the original design kept in a session: who, with which role, and how they logged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct UserSession {
    /// The user's id.
    pub user_id: String,
    /// `user` or `admin`.
    pub role: String,
    /// The user's email, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's Plex account id, when linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_id: Option<String>,
    /// When the user logged in, in Unix milliseconds.
    pub created_at: u64,
    /// Whether the user asked to be remembered.
    pub remember_me: bool,
}

impl UserSession {
    /// A session for `user_id` with `role`, created now.
    pub fn new(user_id: impl Into<String>, role: impl Into<String>) -> Self {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        UserSession {
            user_id: user_id.into(),
            role: role.into(),
            email: None,
            plex_id: None,
            created_at,
            remember_me: false,
        }
    }
}
