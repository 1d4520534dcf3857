//! An admin any axum service can mount: a JSON API and a dashboard for redtail's queues, rate
//! limits and sessions, and the health of Redis.
//!
//! ```no_run
//! # async fn demo(backend: std::sync::Arc<dyn redtail_core::Backend>) -> Result<(), redtail_queue::Error> {
//! use redtail_admin::Admin;
//! use redtail_queue::{Queue, QueueConfig};
//!
//! let downloads: Queue<serde_json::Value> = Queue::new(backend, QueueConfig::new("downloads"))?;
//! let admin = Admin::new().queue(downloads).router();
//! // Authorization is the host's: wrap the router in the service's own layer.
//! let app: axum::Router = axum::Router::new().nest("/admin", admin);
//! # let _ = app; Ok(()) }
//! ```
//!
//! What it offers, under the path it is mounted at:
//! - `GET /`: the dashboard (queues with a chart of the last hour, jobs by state, a job's data,
//!   log, progress and errors per attempt, retry, promote, delete, pause and resume; a subject's
//!   rate-limit usage; a user's sessions, each of which can be ended; Redis health);
//! - `GET /api/overview`, `GET /api/queues/{queue}/jobs?state=&offset=&count=`,
//!   `GET /api/queues/{queue}/jobs/{id}`, `POST /api/queues/{queue}/jobs/{id}/retry|promote`,
//!   `DELETE /api/queues/{queue}/jobs/{id}`, `POST /api/queues/{queue}/pause|resume`,
//!   `GET /api/limits/{subject}`, `GET /api/sessions/{user}`,
//!   `DELETE /api/sessions/{user}/{id}`: the JSON API the page uses.
//!
//! Every response carries `Content-Security-Policy` (scripts and styles from the admin only,
//! `frame-ancestors 'none'`), `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`; a
//! state-changing request whose `Origin` (or `Sec-Fetch-Site`) names another site is refused
//! with 403, so a page elsewhere cannot drive a logged-in operator's browser. Who may use the
//! admin at all is for the host to decide, in a layer around [`Admin::router`].

mod api;
mod guard;
mod sources;

use std::{future::Future, pin::Pin, sync::Arc};

use redtail_ratelimit::{Policy, RateLimiter};
use serde::{Serialize, de::DeserializeOwned};

pub use api::Error;
use sources::{QueueSource, SessionSource};

/// What the health check reports: any JSON the host chooses (for `redtail-connection`, its
/// `Health`). The page shows `up` when the value's `up` field is `true`.
type HealthCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = serde_json::Value> + Send>> + Send + Sync>;

/// The admin's configuration: what it shows. Build it, then mount [`Admin::router`].
#[derive(Clone, Default)]
pub struct Admin {
    queues: Vec<Arc<dyn QueueSource>>,
    sessions: Option<Arc<dyn SessionSource>>,
    limits: Option<(RateLimiter, Vec<Policy>)>,
    health: Option<HealthCheck>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("queues", &self.queues.iter().map(|q| q.name()).collect::<Vec<_>>())
            .field("sessions", &self.sessions.is_some())
            .field("limits", &self.limits.as_ref().map(|(_, policies)| policies.len()))
            .field("health", &self.health.is_some())
            .finish()
    }
}

impl Admin {
    /// An admin that shows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `queue` (by its configured name; a second queue of the same name replaces the first).
    pub fn queue<T>(mut self, queue: redtail_queue::Queue<T>) -> Self
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let queue: Arc<dyn QueueSource> = Arc::new(queue);
        self.queues.retain(|q| q.name() != queue.name());
        self.queues.push(queue);
        self
    }

    /// Shows the sessions of a user of `store`, and lets an operator end one.
    pub fn sessions<T, C>(mut self, store: Arc<redtail_session::SessionStore<T, C>>) -> Self
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        C: redtail_session::Codec + Send + Sync + 'static,
    {
        self.sessions = Some(store);
        self
    }

    /// Shows a subject's usage of `policies` (read with [`RateLimiter::peek`], which charges
    /// nothing).
    pub fn rate_limits(mut self, limiter: RateLimiter, policies: impl IntoIterator<Item = Policy>) -> Self {
        self.limits = Some((limiter, policies.into_iter().collect()));
        self
    }

    /// Shows what `check` reports about Redis (for `redtail-connection`:
    /// `move || { let redis = redis.clone(); async move { serde_json::to_value(redis.health().await).unwrap_or_default() } }`).
    pub fn health<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = serde_json::Value> + Send + 'static,
    {
        self.health = Some(Arc::new(move || Box::pin(check())));
        self
    }

    /// The admin's routes, to be nested under a path of the host's choice, inside the host's
    /// own authorization layer.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> axum::Router<S> {
        api::router(Arc::new(self))
    }
}
