//! The routes: the page and its assets, and the JSON API it calls.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{OriginalUri, Path, Query, State},
    http::{StatusCode, Uri, header},
    response::{Html, IntoResponse, Response},
    routing::{delete, get, post},
};
use redtail_queue::JobState;
use redtail_ratelimit::Decision;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Admin, guard,
    sources::{JobAction, QueueSource},
};

/// Why an admin request failed; answered as JSON `{"error": message}` with a fitting status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No queue, job, session or feature by that name.
    #[error("{0} not found")]
    NotFound(String),
    /// A queue operation failed.
    #[error(transparent)]
    Queue(#[from] redtail_queue::Error),
    /// A session operation failed.
    #[error(transparent)]
    Session(#[from] redtail_session::Error),
    /// A rate-limit read failed.
    #[error(transparent)]
    RateLimit(#[from] redtail_ratelimit::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Queue(redtail_queue::Error::Busy(_)) => StatusCode::CONFLICT,
            Error::Queue(redtail_queue::Error::InvalidInput(_))
            | Error::Session(redtail_session::Error::InvalidInput(_))
            | Error::RateLimit(redtail_ratelimit::Error::InvalidInput(_)) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

type Result<T> = std::result::Result<T, Error>;
type Shared = State<Arc<Admin>>;

pub(crate) fn router<S: Clone + Send + Sync + 'static>(admin: Arc<Admin>) -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/admin.js", get(|| asset("text/javascript; charset=utf-8", include_str!("../assets/admin.js"))))
        .route("/admin.css", get(|| asset("text/css; charset=utf-8", include_str!("../assets/admin.css"))))
        .route("/api/overview", get(overview))
        .route("/api/queues/{queue}/jobs", get(jobs))
        .route("/api/queues/{queue}/jobs/{id}", get(job).delete(delete_job))
        .route("/api/queues/{queue}/jobs/{id}/{action}", post(act))
        .route("/api/queues/{queue}/{action}", post(pause))
        .route("/api/queues/{queue}/groups", get(groups))
        .route("/api/queues/{queue}/groups/{group}", get(group))
        .route("/api/queues/{queue}/groups/{group}/{action}", post(pause_group))
        .route("/api/limits/{subject}", get(limits))
        .route("/api/sessions/{user}", get(sessions))
        .route("/api/sessions/{user}/{id}", delete(end_session))
        .fallback(|| async { Error::NotFound("route".to_owned()) })
        .layer(axum::middleware::from_fn(guard::guard))
        .with_state(admin)
}

/// The page, with the path the admin is mounted at (from the request: the router cannot know
/// where the host nests it) so that its assets and API calls resolve from `/admin` and `/admin/`.
async fn page(OriginalUri(original): OriginalUri, uri: Uri) -> Response {
    let full = original.path();
    let base = full.strip_suffix(uri.path()).unwrap_or(full).trim_end_matches('/');
    let base = escape(base);
    let html = include_str!("../assets/admin.html").replace("{base}", &base);
    Html(html).into_response()
}

/// Text safe inside an HTML attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&#39;")
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn queue<'a>(admin: &'a Admin, name: &str) -> Result<&'a Arc<dyn QueueSource>> {
    admin.queues.iter().find(|q| q.name() == name).ok_or_else(|| Error::NotFound(format!("queue {name:?}")))
}

/// Every queue's counts, whether it is paused, its last hour by minute, its deduplicated adds
/// and its schedulers; Redis health.
async fn overview(State(admin): Shared) -> Result<Json<Value>> {
    let mut queues = Vec::with_capacity(admin.queues.len());
    for queue in &admin.queues {
        let metrics = queue.metrics(60).await?;
        let deduplicated: u64 = metrics.minutes.iter().map(|m| m.deduplicated).sum();
        queues.push(json!({
            "name": queue.name(),
            "metrics": metrics,
            "deduplicated_last_hour": deduplicated,
            "schedulers": queue.schedulers().await?,
        }));
    }
    let health = match &admin.health {
        Some(check) => check().await,
        None => Value::Null,
    };
    let limits = admin.limits.as_ref().map(|(limiter, policies)| {
        let stats = limiter.stats();
        json!({
            "policies": policies.iter().map(|p| p.name.as_ref()).collect::<Vec<_>>(),
            "degraded": stats.degraded,
            "cached": stats.cached,
        })
    });
    Ok(Json(json!({
        "queues": queues,
        "health": health,
        "limits": limits,
        "sessions": admin.sessions.is_some(),
    })))
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    state: JobState,
    #[serde(default)]
    offset: u64,
    count: Option<u64>,
}

/// The most jobs one page lists.
const PAGE_MAX: u64 = 100;

/// Jobs in one state, a page at a time.
async fn jobs(State(admin): Shared, Path(name): Path<String>, Query(query): Query<JobsQuery>) -> Result<Json<Value>> {
    let count = query.count.unwrap_or(20).min(PAGE_MAX);
    let jobs = queue(&admin, &name)?.list(query.state, query.offset, count).await?;
    Ok(Json(json!({"jobs": jobs})))
}

/// One job with its log.
async fn job(State(admin): Shared, Path((name, id)): Path<(String, String)>) -> Result<Json<Value>> {
    let queue = queue(&admin, &name)?;
    let job = queue.get(&id).await?.ok_or_else(|| Error::NotFound(format!("job {id:?}")))?;
    let log = queue.logs(&id).await?;
    Ok(Json(json!({"job": job, "log": log})))
}

/// Retry (a dead job) or promote (a delayed one).
async fn act(State(admin): Shared, Path((name, id, action)): Path<(String, String, String)>) -> Result<Json<Value>> {
    let (action, wanted) = match action.as_str() {
        "retry" => (JobAction::Retry, "dead-lettered job"),
        "promote" => (JobAction::Promote, "delayed job"),
        other => return Err(Error::NotFound(format!("action {other:?}"))),
    };
    if !queue(&admin, &name)?.act(action, &id).await? {
        return Err(Error::NotFound(format!("{wanted} {id:?}")));
    }
    Ok(Json(json!({"ok": true})))
}

async fn delete_job(State(admin): Shared, Path((name, id)): Path<(String, String)>) -> Result<Json<Value>> {
    if !queue(&admin, &name)?.act(JobAction::Delete, &id).await? {
        return Err(Error::NotFound(format!("job {id:?}")));
    }
    Ok(Json(json!({"ok": true})))
}

/// Whether `action` pauses (`pause`) or resumes (`resume`).
fn pausing(action: &str) -> Result<bool> {
    match action {
        "pause" => Ok(true),
        "resume" => Ok(false),
        other => Err(Error::NotFound(format!("action {other:?}"))),
    }
}

/// Pause or resume a queue's delivery.
async fn pause(State(admin): Shared, Path((name, action)): Path<(String, String)>) -> Result<Json<Value>> {
    let paused = pausing(&action)?;
    queue(&admin, &name)?.pause(paused).await?;
    Ok(Json(json!({"ok": true, "paused": paused})))
}

#[derive(Debug, Deserialize)]
struct GroupsQuery {
    /// The last group of the previous page.
    after: Option<String>,
    count: Option<u64>,
}

/// A queue's groups with jobs waiting or running, or paused, by name, a page at a time.
async fn groups(
    State(admin): Shared,
    Path(name): Path<String>,
    Query(query): Query<GroupsQuery>,
) -> Result<Json<Value>> {
    let count = query.count.unwrap_or(50).min(PAGE_MAX) as usize;
    let groups = queue(&admin, &name)?.groups(query.after.as_deref(), count).await?;
    Ok(Json(json!({"groups": groups})))
}

/// One group, whether or not it has jobs.
async fn group(State(admin): Shared, Path((name, group)): Path<(String, String)>) -> Result<Json<Value>> {
    Ok(Json(json!({"group": queue(&admin, &name)?.group(&group).await?})))
}

/// Pause or resume one group of a queue.
async fn pause_group(
    State(admin): Shared,
    Path((name, group, action)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    let paused = pausing(&action)?;
    queue(&admin, &name)?.pause_group(&group, paused).await?;
    Ok(Json(json!({"ok": true, "paused": paused})))
}

/// A subject's usage of each configured policy, charging nothing.
async fn limits(State(admin): Shared, Path(subject): Path<String>) -> Result<Json<Value>> {
    let (limiter, policies) = admin.limits.as_ref().ok_or_else(|| Error::NotFound("rate limits".to_owned()))?;
    let mut usage = Vec::with_capacity(policies.len());
    for policy in policies {
        // A peek reports what one more request would leave; what is left now is one more,
        // unless that request would be refused.
        let (states, spare) = match limiter.peek(&subject, std::slice::from_ref(policy), 1).await? {
            Decision::Allowed { policies, .. } => (policies, 1),
            Decision::Limited { policies, .. } => (policies, 0),
            _ => (Vec::new(), 0),
        };
        for s in states {
            usage.push(json!({
                "policy": s.name,
                "limit": s.limit,
                "remaining": s.remaining.saturating_add(spare).min(s.limit),
                "period_secs": s.period.as_secs_f64(),
                "reset_after_secs": s.reset_after.as_secs_f64(),
            }));
        }
    }
    Ok(Json(json!({"subject": subject, "policies": usage})))
}

async fn sessions(State(admin): Shared, Path(user): Path<String>) -> Result<Json<Value>> {
    let store = admin.sessions.as_ref().ok_or_else(|| Error::NotFound("sessions".to_owned()))?;
    Ok(Json(json!({"user": user, "sessions": store.list(&user).await?})))
}

async fn end_session(State(admin): Shared, Path((user, id)): Path<(String, String)>) -> Result<Json<Value>> {
    let store = admin.sessions.as_ref().ok_or_else(|| Error::NotFound("sessions".to_owned()))?;
    if !store.end(&user, &id).await? {
        return Err(Error::NotFound(format!("session {id:?} of {user:?}")));
    }
    Ok(Json(json!({"ok": true})))
}
