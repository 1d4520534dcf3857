//! What makes the admin safe to expose behind the host's authorization: headers that keep the
//! page out of frames and its responses from being sniffed or cached, and state-changing
//! requests refused when a browser says they come from another site.

use axum::{
    Json,
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

/// Scripts, styles and requests from the admin itself only; no frames, no plugins, no forms
/// posted elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub(crate) async fn guard(request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut response = if safe || same_site(request.headers()) {
        next.run(request).await
    } else {
        (StatusCode::FORBIDDEN, Json(json!({"error": "cross-site request refused"}))).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether a state-changing request may be from this site: a browser names the page's origin
/// in `Origin` (and `Sec-Fetch-Site`); a client that sends neither (curl, a script) is not a
/// browser a page elsewhere could drive, and is left to the host's authorization.
fn same_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(host) = headers.get(header::HOST) else { return false };
    // `Origin` is `scheme://host[:port]` (or `null`); the request's `Host` must be its host part.
    let origin = origin.as_bytes();
    let authority = origin.strip_prefix(b"https://").or_else(|| origin.strip_prefix(b"http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn only_the_admins_own_origin_may_change_state() {
        assert!(same_site(&headers(&[])), "no browser headers: the host's layer decides");
        assert!(same_site(&headers(&[("host", "media.example:8080"), ("origin", "https://media.example:8080")])));
        assert!(same_site(&headers(&[("host", "media.example"), ("origin", "http://MEDIA.example")])));
        for refused in [
            &[("host", "media.example"), ("origin", "https://evil.example")][..],
            &[("host", "media.example"), ("origin", "https://media.example.evil.example")],
            &[("host", "media.example"), ("origin", "null")],
            &[("origin", "https://media.example")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site"), ("host", "a.example"), ("origin", "https://a.example")],
        ] {
            assert!(!same_site(&headers(refused)), "{refused:?}");
        }
    }
}
