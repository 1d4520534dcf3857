//! A keep-alive HTTP/1.1 client for the demo service, bound to a loopback source address of the
//! caller's choice (the service limits anonymous callers per address).

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// A client for one service, from one source address.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// A reply: status (`0` when no reply came: refused, reset or timed out), cookie set, body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) set_cookie: Option<String>,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The body as JSON, or null.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How long a request may take before the client gives up: above the service's own Redis
/// timeouts, so a reply always comes unless the service itself is gone.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Http {
    /// A client of the service at `base` (`http://127.0.0.1:port`) connecting from `local`.
    pub(crate) fn new(base: &str, local: IpAddr) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(local));
        connector.set_nodelay(true);
        Http { client: Client::builder(TokioExecutor::new()).build(connector), base: base.to_owned() }
    }

    /// Sends a request with an optional session cookie and JSON body.
    pub(crate) async fn send(&self, method: Method, path: &str, cookie: Option<&str>, json: Option<String>) -> Reply {
        let failed = Reply { status: 0, set_cookie: None, body: Bytes::new() };
        let mut request = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, format!("rt_session={cookie}"));
        }
        if json.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let Ok(request) = request.body(Full::new(Bytes::from(json.unwrap_or_default()))) else { return failed };
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            let status = response.status().as_u16();
            let set_cookie = response
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| v.strip_prefix("rt_session="))
                .and_then(|v| v.split(';').next())
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some(Reply { status, set_cookie, body })
        };
        tokio::time::timeout(TIMEOUT, exchange).await.ok().flatten().unwrap_or(failed)
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.send(Method::GET, path, cookie, None).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post(&self, path: &str, cookie: Option<&str>, json: serde_json::Value) -> Reply {
        self.send(Method::POST, path, cookie, Some(json.to_string())).await
    }

    /// `POST /api/auth/login` for `user`, whose password is its name (as the soak sets up).
    pub(crate) async fn login_request(&self, user: &str) -> Reply {
        self.post("/api/auth/login", None, serde_json::json!({"username": user, "password": user})).await
    }

    /// Logs `user` in and returns the session cookie.
    pub(crate) async fn login(&self, user: &str) -> Result<String, Reply> {
        let reply = self.login_request(user).await;
        match (&reply.status, &reply.set_cookie) {
            (200, Some(cookie)) => Ok(cookie.clone()),
            _ => Err(reply),
        }
    }
}
