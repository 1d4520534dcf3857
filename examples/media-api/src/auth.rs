//! Sessions in a cookie: the middleware that finds the caller, and the login routes.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Extension, Json,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use media_api::presets::UserSession;
use redtail_ratelimit::Subject;
use redtail_session::{CurrentSession, Device, NewSession, Session, SessionCookie, SessionLayer};
use serde::Deserialize;
use serde_json::json;

use crate::{
    app::AppState,
    error::{ApiError, Body},
};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "rt_session";

/// The session cookie and the sessions behind it: redtail's `SessionLayer`, answering in the
/// API's error format when Redis cannot be read.
pub(crate) fn layer(state: &AppState) -> Result<SessionLayer<UserSession>, redtail_session::Error> {
    let cookie = SessionCookie::named(COOKIE).with_secure(state.config.secure_cookies);
    Ok(SessionLayer::new(Arc::clone(&state.sessions), cookie)?
        .with_unavailable(|e| ApiError::unavailable(e).into_plain_response()))
}

/// The caller's session, put in the request's extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Caller {
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

/// Names the caller the session layer found (a sliding session: the layer extends it when due)
/// as the rate-limit subject. Requests without a valid session go on anonymous.
pub(crate) async fn authenticate(mut request: Request, next: Next) -> Response {
    let session = request.extensions().get::<Sessions>().and_then(CurrentSession::get);
    if let Some(session) = session {
        request.extensions_mut().insert(Subject(session.user_id.clone()));
        request.extensions_mut().insert(Caller { session });
    } else if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        // Anonymous callers (login attempts) are limited by address.
        request.extensions_mut().insert(Subject(format!("ip:{}", peer.ip())));
    }
    next.run(request).await
}

/// The request's session, from the session layer.
type Sessions = CurrentSession<UserSession>;

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

/// `POST /api/auth/login`: checks a demo account, creates a session (ending any the request
/// came with), sets the cookie.
pub(crate) async fn login(
    State(state): State<AppState>,
    sessions: Sessions,
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
    let session = sessions.login(&user.name, data, options.with_device(device)).await?;
    let body = json!({
        "success": true,
        "user": {"id": user.name, "role": user.role},
        "rememberMe": login.remember_me,
        "expiresAt": millis(session.expires_at),
    });
    Ok(Json(body).into_response())
}

/// `POST /api/auth/logout`: ends this session and clears the cookie.
pub(crate) async fn logout(sessions: Sessions) -> Result<Response, ApiError> {
    if !sessions.logout().await? {
        return Err(ApiError::unauthorized());
    }
    Ok(Json(json!({"success": true})).into_response())
}

/// `POST /api/auth/logout-all`: ends every session of the caller, on every device.
pub(crate) async fn logout_all(sessions: Sessions) -> Result<Response, ApiError> {
    if sessions.user_id().is_none() {
        return Err(ApiError::unauthorized());
    }
    let ended = sessions.logout_everywhere().await?;
    Ok(Json(json!({"success": true, "ended": ended})).into_response())
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
