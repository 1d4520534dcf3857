//! `RateLimitLayer`: the limiter as tower middleware, with IETF `RateLimit` headers.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Decision, KeyExtractor, Policy, PolicyState, RateLimiter};

type Skip = Arc<dyn Fn(&http::Uri) -> bool + Send + Sync>;

/// Limits every request by `policies`, charged to the subject a [`KeyExtractor`] finds.
///
/// Allowed responses carry `RateLimit-Policy` and `RateLimit` headers
/// (draft-ietf-httpapi-ratelimit-headers-10); refused requests get `429 Too Many Requests` with
/// `Retry-After` and an `application/problem+json` body that keeps the fields of the Node service redtail replaced,
/// `{"success":false,"error":{"code":"RATE_LIMIT_EXCEEDED","message":...,"retryAfter":...}}`.
/// If the limiter fails for a reason other than Redis being unavailable (which the policies'
/// failure modes handle), the request is refused with 503: a broken setup is never silently
/// unlimited.
#[derive(Clone)]
pub struct RateLimitLayer<K> {
    limiter: RateLimiter,
    policies: Arc<[Policy]>,
    key: K,
    skip: Option<Skip>,
    legacy_headers: bool,
}

impl<K> std::fmt::Debug for RateLimitLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer").field("policies", &self.policies).finish_non_exhaustive()
    }
}

impl<K: KeyExtractor> RateLimitLayer<K> {
    /// A layer checking `policies` for the subject `key` finds.
    pub fn new(limiter: RateLimiter, policies: impl Into<Arc<[Policy]>>, key: K) -> Self {
        RateLimitLayer { limiter, policies: policies.into(), key, skip: None, legacy_headers: false }
    }

    /// Requests whose URI matches `skip` are never limited (the health endpoint, say).
    #[must_use]
    pub fn skip(mut self, skip: impl Fn(&http::Uri) -> bool + Send + Sync + 'static) -> Self {
        self.skip = Some(Arc::new(skip));
        self
    }

    /// Also sends `X-RateLimit-Limit`, `-Remaining` and `-Reset` (of the tightest policy).
    #[must_use]
    pub fn with_legacy_headers(mut self, on: bool) -> Self {
        self.legacy_headers = on;
        self
    }
}

impl<S, K: Clone> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, layer: self.clone() }
    }
}

/// The service [`RateLimitLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct RateLimit<S, K> {
    inner: S,
    layer: RateLimitLayer<K>,
}

impl<S, K> std::fmt::Debug for RateLimit<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("layer", &self.layer).finish_non_exhaustive()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    K: KeyExtractor,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let skipped = layer.skip.as_ref().is_some_and(|skip| skip(request.uri()));
        let subject = if skipped { None } else { layer.key.extract(&request) };
        Box::pin(async move {
            let Some(subject) = subject else { return inner.call(request).await };
            match layer.limiter.check(&subject, &layer.policies).await {
                Ok(Decision::Allowed { policies, .. }) => {
                    let mut response = inner.call(request).await?;
                    add_headers(response.headers_mut(), &layer, &policies, None);
                    Ok(response)
                }
                Ok(Decision::Limited { retry_after, policies, .. }) => Ok(too_many(&layer, &policies, retry_after)),
                Err(e) => {
                    tracing::error!(error = %e, "rate limiter failed; refusing the request");
                    let mut response = Response::new(ResBody::from(
                        r#"{"success":false,"error":{"code":"RATE_LIMITER_UNAVAILABLE","message":"rate limiting is unavailable"}}"#.to_owned(),
                    ));
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok(response)
                }
            }
        })
    }
}

fn seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
}

/// `RateLimit-Policy`, `RateLimit` and (optionally) legacy headers; `retry` is set on refusals.
fn add_headers<K>(headers: &mut HeaderMap, layer: &RateLimitLayer<K>, states: &[PolicyState], retry: Option<Duration>) {
    let policy =
        states.iter().map(|s| format!("\"{}\";q={};w={}", s.name, s.limit, seconds(s.period))).collect::<Vec<_>>();
    let current = states
        .iter()
        .map(|s| {
            let t = if s.retry_after > Duration::ZERO { s.retry_after } else { s.reset_after };
            format!("\"{}\";r={};t={}", s.name, s.remaining, seconds(t))
        })
        .collect::<Vec<_>>();
    for (name, values) in [("ratelimit-policy", policy), ("ratelimit", current)] {
        if let Ok(value) = HeaderValue::from_str(&values.join(", ")) {
            headers.insert(name, value);
        }
    }
    if let Some(retry) = retry {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds(retry)));
    }
    if layer.legacy_headers
        && let Some(tightest) = states.iter().min_by_key(|s| s.remaining)
    {
        headers.insert("x-ratelimit-limit", HeaderValue::from(tightest.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(tightest.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(seconds(tightest.reset_after.max(tightest.retry_after))));
    }
}

fn too_many<K, B: From<String>>(
    layer: &RateLimitLayer<K>,
    states: &[PolicyState],
    retry_after: Duration,
) -> Response<B> {
    let retry = seconds(retry_after);
    let message = format!("Too many requests; try again in {retry} seconds");
    let body = format!(
        r#"{{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"{message}","success":false,"error":{{"code":"RATE_LIMIT_EXCEEDED","message":"{message}","retryAfter":{retry}}}}}"#
    );
    let mut response = Response::new(B::from(body));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    add_headers(response.headers_mut(), layer, states, Some(retry_after));
    response
}
