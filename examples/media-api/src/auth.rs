//! Sessions in a cookie: the middleware that finds the caller, and the login routes.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Extension, Json,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use media_api::presets::UserSession;
use redtail_ratelimit::Subject;
use redtail_session::{Device, NewSession, Session};
use serde::Deserialize;
use serde_json::json;

use crate::{
    app::AppState,
    error::{ApiError, Body},
};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "rt_session";

/// The caller's session, put in the request's extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) token: String,
    pub(crate) session: Session<UserSession>,
}

impl Caller {
    pub(crate) fn user(&self) -> &str {
        &self.session.user_id
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.session.data.role == "admin"
    }
}

/// Finds the caller from the session cookie (a sliding session: each use may extend it) and
/// names them as the rate-limit subject. Requests without a valid session go on anonymous.
pub(crate) async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(token) = cookie(request.headers(), COOKIE) {
        match state.sessions.get(&token).await {
            Ok(Some(session)) => {
                if let Err(e) = state.sessions.extend(&token).await {
                    eprintln!("media-api: could not extend a session: {e}");
                }
                request.extensions_mut().insert(Subject(session.user_id.clone()));
                request.extensions_mut().insert(Caller { token, session });
            }
            Ok(None) => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    if request.extensions().get::<Subject>().is_none() {
        // Anonymous callers (login attempts) are limited by address.
        if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
            request.extensions_mut().insert(Subject(format!("ip:{}", peer.ip())));
        }
    }
    next.run(request).await
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(state: &AppState, value: &str, max_age: Duration) -> HeaderValue {
    let secure = if state.config.secure_cookies { "; Secure" } else { "" };
    let text = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", max_age.as_secs());
    // Tokens are URL-safe base64, so the header is always valid.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("rt_session=; Path=/; Max-Age=0"))
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Login {
    username: String,
    password: String,
    #[serde(default)]
    remember_me: bool,
}

/// `POST /api/auth/login`: checks a demo account, creates a session, sets the cookie.
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    Body(login): Body<Login>,
) -> Result<Response, ApiError> {
    let user =
        state.config.users.iter().find(|u| u.name == login.username && u.password == login.password).ok_or_else(
            || ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "bad_credentials", "wrong username or password"),
        )?;
    let mut data = UserSession::new(user.name.as_str(), user.role.as_str());
    data.remember_me = login.remember_me;
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(200).collect());
    let device = Device::new(connect.map(|Extension(ConnectInfo(peer))| peer.ip().to_string()), agent);
    let options = if login.remember_me { NewSession::remember_me() } else { NewSession::standard() };
    let (token, session) = state.sessions.create(&user.name, data, options.with_device(device)).await?;
    let max_age = session.expires_at.duration_since(SystemTime::now()).unwrap_or_default();
    let body = json!({
        "success": true,
        "user": {"id": user.name, "role": user.role},
        "rememberMe": login.remember_me,
        "expiresAt": millis(session.expires_at),
    });
    Ok(([(header::SET_COOKIE, set_cookie(&state, token.as_str(), max_age))], Json(body)).into_response())
}

/// `POST /api/auth/logout`: ends this session.
pub(crate) async fn logout(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let Extension(caller) = caller.ok_or_else(ApiError::unauthorized)?;
    state.sessions.invalidate(&caller.token).await?;
    let cleared = set_cookie(&state, "", Duration::ZERO);
    Ok(([(header::SET_COOKIE, cleared)], Json(json!({"success": true}))).into_response())
}

/// `POST /api/auth/logout-all`: ends every session of the caller, on every device.
pub(crate) async fn logout_all(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let Extension(caller) = caller.ok_or_else(ApiError::unauthorized)?;
    let ended = state.sessions.invalidate_all(caller.user()).await?;
    let cleared = set_cookie(&state, "", Duration::ZERO);
    Ok(([(header::SET_COOKIE, cleared)], Json(json!({"success": true, "ended": ended}))).into_response())
}

/// `GET /api/me`.
pub(crate) async fn me(caller: Option<Extension<Caller>>) -> Result<Json<serde_json::Value>, ApiError> {
    let Extension(caller) = caller.ok_or_else(ApiError::unauthorized)?;
    let s = &caller.session;
    Ok(Json(json!({
        "success": true,
        "user": {"id": s.user_id, "role": s.data.role},
        "rememberMe": s.remember_me,
        "createdAt": millis(s.created_at),
        "expiresAt": millis(s.expires_at),
    })))
}

/// `GET /api/sessions`: the caller's active sessions, this one marked.
pub(crate) async fn sessions(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Extension(caller) = caller.ok_or_else(ApiError::unauthorized)?;
    let list = state.sessions.list(caller.user()).await?;
    let sessions: Vec<_> = list
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "current": s.id == caller.session.id,
                "createdAt": millis(s.created_at),
                "lastSeen": millis(s.last_seen),
                "expiresAt": millis(s.expires_at),
                "rememberMe": s.remember_me,
                "device": s.device.as_ref().map(|d| json!({"ip": d.ip, "userAgent": d.user_agent})),
            })
        })
        .collect();
    Ok(Json(json!({"success": true, "sessions": sessions})))
}
