//! Errors as JSON: `{"success": false, "error": {"code": ..., "message": ...}}`, never a bare 500.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error answered to the client.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "log in first")
    }

    pub(crate) fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "this needs the admin role")
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// Redis (or another dependency) failed: 503, and the cause in the server's log only.
    pub(crate) fn unavailable(cause: impl std::fmt::Display) -> Self {
        eprintln!("media-api: dependency failed: {cause}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage is unavailable; try again shortly")
    }
}

impl ApiError {
    /// The response with its JSON as a `String` body, for middleware that builds its own
    /// responses (the session layer's).
    pub(crate) fn into_plain_response(self) -> axum::http::Response<String> {
        let body = json!({"success": false, "error": {"code": self.code, "message": self.message}});
        let mut response = axum::http::Response::new(body.to_string());
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_plain_response().map(axum::body::Body::from)
    }
}

macro_rules! unavailable_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                ApiError::unavailable(e)
            }
        }
    )*};
}
unavailable_from!(redtail_session::Error, redtail_queue::Error, redtail_cache::Error, redtail_ratelimit::Error);

/// A JSON body whose rejections are JSON errors too: 413 when too large, 400 otherwise
/// (malformed JSON, missing or mistyped fields, wrong content type).
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(reject(&rejection)),
        }
    }
}

fn reject(rejection: &JsonRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "body_too_large", "the request body is larger than this service accepts");
    }
    let code = match rejection {
        JsonRejection::JsonSyntaxError(_) => "malformed_json",
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::MissingJsonContentType(_) => "expected_json",
        _ => "invalid_body",
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, rejection.body_text())
}
