//! `SessionLayer`: sessions from cookie to Redis as tower middleware, and the handle handlers use.

use std::{
    borrow::Cow,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use serde::{Serialize, de::DeserializeOwned};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Codec, Error, JsonCodec, NewSession, Result, Session, SessionStore};

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only with requests from the site itself.
    Strict,
    /// Also sent on top-level navigation from other sites (the default).
    Lax,
    /// Sent with every request, cross-site included; needs `Secure`.
    None,
}

/// The session cookie: its name and attributes.
///
/// The default is `rt_session` with `Path=/`, `HttpOnly`, `Secure` and `SameSite=Lax`.
/// [`SessionCookie::host_only`] uses the `__Host-` prefix, which browsers accept only with
/// `Secure`, `Path=/` and no `Domain`: the cookie then cannot be set or shadowed by a
/// subdomain. Settings are checked by [`SessionLayer::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCookie {
    name: Cow<'static, str>,
    path: Cow<'static, str>,
    domain: Option<String>,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
}

impl Default for SessionCookie {
    fn default() -> Self {
        SessionCookie::named("rt_session")
    }
}

impl SessionCookie {
    /// A cookie called `name`, with the default attributes.
    pub fn named(name: impl Into<Cow<'static, str>>) -> Self {
        SessionCookie {
            name: name.into(),
            path: Cow::Borrowed("/"),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }

    /// `__Host-rt_session`: `Secure`, `Path=/`, no `Domain` (the browser enforces all three).
    pub fn host_only() -> Self {
        SessionCookie::named("__Host-rt_session")
    }

    /// The `Path` attribute. Default `/`.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<Cow<'static, str>>) -> Self {
        self.path = path.into();
        self
    }

    /// The `Domain` attribute (sent to subdomains too). Default none: this host only.
    #[must_use]
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The `Secure` attribute: sent over HTTPS only. Default on; turn it off only to serve
    /// plain HTTP (browsers treat `localhost` as secure either way).
    #[must_use]
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The `HttpOnly` attribute: hidden from scripts. Default on.
    #[must_use]
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// The `SameSite` attribute. Default [`SameSite::Lax`].
    #[must_use]
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Refuses a cookie a browser would drop or that could break the header.
    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidInput(format!("session cookie: {what}")));
        // RFC 6265: a name is an HTTP token.
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if self.name.is_empty() || !self.name.bytes().all(token_char) {
            return bad(format!("{:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)", self.name));
        }
        let attribute_char = |b: u8| (0x20..0x7f).contains(&b) && b != b';';
        if !self.path.starts_with('/') || !self.path.bytes().all(attribute_char) {
            return bad(format!("path {:?} must start with / and hold no control character or ;", self.path));
        }
        if let Some(domain) = &self.domain
            && (domain.is_empty() || !domain.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)))
        {
            return bad(format!("domain {domain:?} is not a host name"));
        }
        if self.name.starts_with("__Host-") && (!self.secure || self.path != "/" || self.domain.is_some()) {
            return bad(format!("{} has the __Host- prefix: it needs Secure, Path=/ and no Domain", self.name));
        }
        if self.name.starts_with("__Secure-") && !self.secure {
            return bad(format!("{} has the __Secure- prefix: it needs Secure", self.name));
        }
        if self.same_site == SameSite::None && !self.secure {
            return bad("SameSite=None needs Secure".to_owned());
        }
        Ok(())
    }

    /// The cookie's value in the request's `Cookie` headers, if there.
    fn find<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.name)
            .map(|(_, value)| value.trim_matches('"'))
    }

    /// A `Set-Cookie` value: `value` for `max_age`, or the cookie cleared (`None`).
    fn header(&self, set: Option<(&str, Duration)>) -> Option<HeaderValue> {
        let (value, max_age) = set.unwrap_or(("", Duration::ZERO));
        let mut text = format!("{}={value}; Path={}", self.name, self.path);
        if let Some(domain) = &self.domain {
            text.push_str("; Domain=");
            text.push_str(domain);
        }
        text.push_str(&format!("; Max-Age={}", max_age.as_secs()));
        if self.http_only {
            text.push_str("; HttpOnly");
        }
        if self.secure {
            text.push_str("; Secure");
        }
        text.push_str(match self.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
        // Checked settings and URL-safe tokens always make a valid header.
        HeaderValue::from_str(&text).ok()
    }
}

/// Sessions from cookie to Redis, as tower middleware (it works in axum).
///
/// For each request it reads the session cookie and puts a [`CurrentSession`] in the
/// request's extensions, for handlers to read the session and to log in, rotate and log out;
/// the response then carries the cookie those calls set. What a request costs:
/// - no cookie, or one that is not a well-formed token (forged, truncated): nothing is sent to
///   Redis, and a malformed cookie is cleared;
/// - a session: one round trip (its read), and a second when its sliding expiry is due to move
///   ([`SessionStore::extension_due`]), which also renews the cookie's `Max-Age`;
/// - an unknown or ended session: one round trip, and the cookie is cleared;
/// - a token of the Node service, with [`SessionStore::with_legacy`]: exchanged once for a
///   redtail session, whose token the cookie then carries;
/// - Redis unavailable: `503 Service Unavailable` (a `problem+json` body, or
///   [`SessionLayer::with_unavailable`]'s), and the handler is not called.
///
/// ```
/// use std::sync::Arc;
/// use redtail_session::{SessionConfig, SessionCookie, SessionLayer, SessionStore};
/// use redtail_testkit::MemoryBackend;
///
/// let store: SessionStore<String> = SessionStore::new(MemoryBackend::new(), SessionConfig::default())?;
/// let layer = SessionLayer::new(Arc::new(store), SessionCookie::host_only())?;
/// # Ok::<(), redtail_session::Error>(())
/// ```
pub struct SessionLayer<T, C: Codec = JsonCodec> {
    store: Arc<SessionStore<T, C>>,
    cookie: Arc<SessionCookie>,
    unavailable: Option<Unavailable>,
}

/// Builds the response to a request whose session could not be read.
type Unavailable = Arc<dyn Fn(&Error) -> Response<String> + Send + Sync>;

impl<T, C: Codec> Clone for SessionLayer<T, C> {
    fn clone(&self) -> Self {
        SessionLayer {
            store: Arc::clone(&self.store),
            cookie: Arc::clone(&self.cookie),
            unavailable: self.unavailable.clone(),
        }
    }
}

impl<T, C: Codec> fmt::Debug for SessionLayer<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer").field("cookie", &self.cookie).finish_non_exhaustive()
    }
}

impl<T, C: Codec> SessionLayer<T, C> {
    /// Sessions of `store` in `cookie`; fails on a cookie setting browsers would refuse (a bad
    /// name or path, `__Host-` without `Secure`, `SameSite=None` without `Secure`).
    pub fn new(store: Arc<SessionStore<T, C>>, cookie: SessionCookie) -> Result<Self> {
        cookie.check()?;
        Ok(SessionLayer { store, cookie: Arc::new(cookie), unavailable: None })
    }

    /// Answers requests whose session could not be read (Redis unavailable) with `respond`'s
    /// response instead of the default `503` `problem+json`, for an API with its own error
    /// format.
    #[must_use]
    pub fn with_unavailable(mut self, respond: impl Fn(&Error) -> Response<String> + Send + Sync + 'static) -> Self {
        self.unavailable = Some(Arc::new(respond));
        self
    }
}

impl<T, C: Codec> SessionLayer<T, C> {
    /// The response to a request whose session could not be read.
    fn unavailable<B: From<String>>(&self, error: &Error) -> Response<B> {
        tracing::error!(%error, "reading the session failed; refusing the request");
        let (parts, body) = match &self.unavailable {
            Some(respond) => respond(error),
            None => unavailable(),
        }
        .into_parts();
        Response::from_parts(parts, B::from(body))
    }
}

impl<S, T, C: Codec> Layer<S> for SessionLayer<T, C> {
    type Service = SessionService<S, T, C>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService { inner, layer: self.clone() }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
pub struct SessionService<S, T, C: Codec = JsonCodec> {
    inner: S,
    layer: SessionLayer<T, C>,
}

impl<S: Clone, T, C: Codec> Clone for SessionService<S, T, C> {
    fn clone(&self) -> Self {
        SessionService { inner: self.inner.clone(), layer: self.layer.clone() }
    }
}

impl<S, T, C: Codec> fmt::Debug for SessionService<S, T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService").field("layer", &self.layer).finish_non_exhaustive()
    }
}

impl<S, T, C, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, T, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    C: Codec + Send + Sync + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let presented = layer.cookie.find(request.headers()).map(str::to_owned);
        Box::pin(async move {
            let mut state = State { token: None, session: None, cookie: CookieChange::Keep };
            // A cookie that is not a token this store could have issued (forged, truncated) is
            // refused by `get` without a round trip, and cleared like an ended session's.
            if let Some(text) = presented.as_deref().filter(|text| layer.store.accepts_legacy(text)) {
                // A token of the Node service ([`SessionStore::with_legacy`]): exchanged once for
                // a redtail session. When there is nothing to exchange, the cookie is left
                // alone: a concurrent request with it may just have set the new token.
                match layer.store.upgrade_legacy(text).await {
                    Ok(Some((token, session))) => {
                        state.cookie = CookieChange::Set(token.as_str().to_owned(), remaining(&session));
                        state.token = Some(token.as_str().to_owned());
                        state.session = Some(session);
                    }
                    Ok(None) => {}
                    Err(e) => return Ok(layer.unavailable(&e)),
                }
            } else if let Some(text) = presented.as_deref() {
                match layer.store.get_and_extend(text).await {
                    Ok(Some((session, extended))) => {
                        if extended {
                            state.cookie = CookieChange::Set(text.to_owned(), remaining(&session));
                        }
                        state.token = Some(text.to_owned());
                        state.session = Some(session);
                    }
                    Ok(None) => state.cookie = CookieChange::Clear,
                    Err(e) => return Ok(layer.unavailable(&e)),
                }
            }
            let state = Arc::new(Mutex::new(state));
            let current = CurrentSession { store: Arc::clone(&layer.store), state: Arc::clone(&state) };
            request.extensions_mut().insert(current);
            let mut response = inner.call(request).await?;
            let change = std::mem::replace(&mut lock(&state).cookie, CookieChange::Keep);
            let header = match change {
                CookieChange::Keep => None,
                CookieChange::Set(token, max_age) => layer.cookie.header(Some((&token, max_age))),
                CookieChange::Clear => layer.cookie.header(None),
            };
            if let Some(header) = header {
                response.headers_mut().append(header::SET_COOKIE, header);
            }
            Ok(response)
        })
    }
}

/// A `503` with a `problem+json` body (RFC 9457).
fn unavailable() -> Response<String> {
    let body =
        r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"sessions are unavailable"}"#;
    let mut response = Response::new(body.to_owned());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

/// What the response does to the cookie.
#[derive(Debug)]
enum CookieChange {
    Keep,
    Set(String, Duration),
    Clear,
}

/// One request's session, shared by the layer and the handler's [`CurrentSession`].
struct State<T> {
    token: Option<String>,
    session: Option<Session<T>>,
    cookie: CookieChange,
}

fn lock<T>(state: &Mutex<State<T>>) -> std::sync::MutexGuard<'_, State<T>> {
    // The state is only swapped whole under the lock: a panic elsewhere leaves it consistent.
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long the cookie should live: until the session expires.
fn remaining<T>(session: &Session<T>) -> Duration {
    session.expires_at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// The request's session, put in its extensions by [`SessionLayer`]: read it, log in, rotate,
/// update and log out. With the `axum` feature it is an extractor.
///
/// Changes show in the response's cookie: [`CurrentSession::login`] and
/// [`CurrentSession::rotate`] set a new token, [`CurrentSession::logout`] clears it.
pub struct CurrentSession<T, C: Codec = JsonCodec> {
    store: Arc<SessionStore<T, C>>,
    state: Arc<Mutex<State<T>>>,
}

impl<T, C: Codec> Clone for CurrentSession<T, C> {
    fn clone(&self) -> Self {
        CurrentSession { store: Arc::clone(&self.store), state: Arc::clone(&self.state) }
    }
}

impl<T, C: Codec> fmt::Debug for CurrentSession<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("CurrentSession")
            .field("session", &state.session.as_ref().map(|s| &s.id))
            .field("cookie", &state.cookie)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned + Clone, C: Codec> CurrentSession<T, C> {
    /// The session the request's cookie names, or the one a login in this request created;
    /// `None` for an anonymous caller.
    pub fn get(&self) -> Option<Session<T>> {
        lock(&self.state).session.clone()
    }

    /// Whose session it is, if any.
    pub fn user_id(&self) -> Option<String> {
        lock(&self.state).session.as_ref().map(|s| s.user_id.clone())
    }

    /// Creates a session for `user_id` and sets its cookie. A session the request came with
    /// is ended first: a login always gets a new token (no session fixation).
    pub async fn login(&self, user_id: &str, data: T, options: NewSession) -> Result<Session<T>> {
        self.end_current().await?;
        let (token, session) = self.store.create(user_id, data, options).await?;
        let mut state = lock(&self.state);
        state.cookie = CookieChange::Set(token.as_str().to_owned(), remaining(&session));
        state.token = Some(token.as_str().to_owned());
        state.session = Some(session.clone());
        Ok(session)
    }

    /// Gives the session a new token (the old one stops working at once) and sets it in the
    /// cookie: call it when the user's privileges change. Returns `false` without a session.
    pub async fn rotate(&self) -> Result<bool> {
        let Some(token) = lock(&self.state).token.clone() else { return Ok(false) };
        match self.store.rotate(&token).await? {
            Some(new) => {
                let mut state = lock(&self.state);
                let max_age = state.session.as_ref().map(remaining).unwrap_or_default();
                state.cookie = CookieChange::Set(new.as_str().to_owned(), max_age);
                state.token = Some(new.as_str().to_owned());
                Ok(true)
            }
            None => {
                self.forget();
                Ok(false)
            }
        }
    }

    /// Replaces the session's data. Returns `false`, writing nothing, without a live session.
    pub async fn update(&self, data: T) -> Result<bool> {
        let Some(token) = lock(&self.state).token.clone() else { return Ok(false) };
        let updated = self.store.update(&token, &data).await?;
        let mut state = lock(&self.state);
        match state.session.as_mut() {
            Some(session) if updated => session.data = data,
            _ => {}
        }
        Ok(updated)
    }

    /// Ends this session and clears the cookie. Returns whether a session was live.
    pub async fn logout(&self) -> Result<bool> {
        let ended = self.end_current().await?;
        self.forget();
        Ok(ended)
    }

    /// Ends every session of this user ("log out everywhere") and clears the cookie. Returns
    /// how many were live; 0 without a session.
    pub async fn logout_everywhere(&self) -> Result<u64> {
        let Some(user) = self.user_id() else { return Ok(0) };
        let ended = self.store.invalidate_all(&user).await?;
        self.forget();
        Ok(ended)
    }

    async fn end_current(&self) -> Result<bool> {
        let token = lock(&self.state).token.clone();
        match token {
            Some(token) => self.store.invalidate(&token).await,
            None => Ok(false),
        }
    }

    /// No session from here on, and the cookie cleared.
    fn forget(&self) {
        let mut state = lock(&self.state);
        state.token = None;
        state.session = None;
        state.cookie = CookieChange::Clear;
    }
}

#[cfg(feature = "axum")]
impl<S, T, C> axum_core::extract::FromRequestParts<S> for CurrentSession<T, C>
where
    S: Send + Sync,
    T: Send + Sync + 'static,
    C: Codec + Send + Sync + 'static,
{
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> std::result::Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CurrentSession<T, C>>()
            .cloned()
            .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "no session: the SessionLayer is not installed on this route"))
    }
}
