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
type Refuse = Arc<dyn Fn(&Refused<'_>) -> Response<String> + Send + Sync>;

/// A refused request, for a custom response ([`RateLimitLayer::with_refusal`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Refused<'a> {
    /// When a retry can succeed.
    pub retry_after: Duration,
    /// The policies that refused (empty when the subject is blocked).
    pub violated: &'a [std::borrow::Cow<'static, str>],
    /// The subject the request was charged to.
    pub subject: &'a str,
}

/// Limits every request by `policies`, charged to the subject a [`KeyExtractor`] finds.
///
/// Allowed responses carry `RateLimit-Policy` and `RateLimit` headers
/// (draft-ietf-httpapi-ratelimit-headers-10); refused requests get `429 Too Many Requests` with
/// `Retry-After` and an RFC 9457 `application/problem+json` body, or the response
/// [`RateLimitLayer::with_refusal`] builds (the headers are added to it). Responses can be left
/// uncounted by their status ([`RateLimitLayer::skip_successful`],
/// [`RateLimitLayer::skip_failed`]): the request is charged when it arrives and refunded after.
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
    refuse: Option<Refuse>,
    skip_successful: bool,
    skip_failed: bool,
}

impl<K> std::fmt::Debug for RateLimitLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer").field("policies", &self.policies).finish_non_exhaustive()
    }
}

impl<K: KeyExtractor> RateLimitLayer<K> {
    /// A layer checking `policies` for the subject `key` finds. The policies are checked here,
    /// once: an empty list or a policy [`RateLimiter::check`] would refuse is
    /// [`Error::InvalidInput`](crate::Error) naming the policy and the setting.
    pub fn new(limiter: RateLimiter, policies: impl Into<Arc<[Policy]>>, key: K) -> crate::Result<Self> {
        let policies = policies.into();
        crate::limiter::validate(&policies, 1)?;
        Ok(RateLimitLayer {
            limiter,
            policies,
            key,
            skip: None,
            legacy_headers: false,
            refuse: None,
            skip_successful: false,
            skip_failed: false,
        })
    }

    /// Builds the response to a refused request (status, headers and body); `RateLimit`,
    /// `RateLimit-Policy` and `Retry-After` headers are added to it. By default: 429 with an
    /// RFC 9457 problem+json body.
    #[must_use]
    pub fn with_refusal(mut self, refuse: impl Fn(&Refused<'_>) -> Response<String> + Send + Sync + 'static) -> Self {
        self.refuse = Some(Arc::new(refuse));
        self
    }

    /// Requests answered with a status below 400 are not counted: refunded once the inner
    /// service answers (a login limit that counts only failed attempts, say).
    #[must_use]
    pub fn skip_successful(mut self, on: bool) -> Self {
        self.skip_successful = on;
        self
    }

    /// Requests answered with a status of 400 or more are not counted: refunded once the inner
    /// service answers.
    #[must_use]
    pub fn skip_failed(mut self, on: bool) -> Self {
        self.skip_failed = on;
        self
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
            match layer.limiter.decide(&subject, &layer.policies, 1).await {
                Ok(Decision::Allowed { policies, degraded, .. }) => {
                    let mut response = inner.call(request).await?;
                    let failed = response.status().as_u16() >= 400;
                    if !degraded && (if failed { layer.skip_failed } else { layer.skip_successful }) {
                        for policy in layer.policies.iter() {
                            if let Err(e) = layer.limiter.give_back(&subject, policy, 1).await {
                                tracing::warn!(error = %e, policy = %policy.name, "refunding an uncounted response failed");
                            }
                        }
                    }
                    add_headers(response.headers_mut(), &layer, &policies, None);
                    Ok(response)
                }
                Ok(Decision::Limited { retry_after, violated, policies, .. }) => {
                    let refused = Refused { retry_after, violated: &violated, subject: &subject };
                    let response = match &layer.refuse {
                        Some(refuse) => refuse(&refused),
                        None => too_many(retry_after),
                    };
                    let (mut parts, body) = response.into_parts();
                    add_headers(&mut parts.headers, &layer, &policies, Some(retry_after));
                    Ok(Response::from_parts(parts, ResBody::from(body)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "rate limiter failed; refusing the request");
                    let (parts, body) =
                        problem(StatusCode::SERVICE_UNAVAILABLE, "rate limiting is unavailable").into_parts();
                    Ok(Response::from_parts(parts, ResBody::from(body)))
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

/// The default refusal: 429 with an RFC 9457 problem+json body.
fn too_many(retry_after: Duration) -> Response<String> {
    let detail = format!("Too many requests; try again in {} seconds", seconds(retry_after));
    problem(StatusCode::TOO_MANY_REQUESTS, &detail)
}

/// A response with `status` and an RFC 9457 problem+json body; `detail` holds no characters JSON
/// would need escaped.
fn problem(status: StatusCode, detail: &str) -> Response<String> {
    let title = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let body = format!(r#"{{"type":"about:blank","title":"{title}","status":{code},"detail":"{detail}"}}"#);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}
