//! Starting the real `media-api` binary on a free port, and a small HTTP/1.1 client for it.

#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use redtail_testkit::TestRedis;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The error type of test bodies.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A standalone `redis-server` of this test's own, or a panic saying what to install.
pub fn redis() -> TestRedis {
    TestRedis::owned(redtail_testkit::Deployment::Standalone)
        .unwrap_or_else(|e| panic!("cannot start redis-server (install it: apt-get install redis-server): {e}"))
}

/// A running `media-api`, stopped (SIGTERM, then killed) on drop.
pub struct Service {
    child: Child,
    pub port: u16,
}

impl Service {
    /// Starts `media-api` with `args` and `env`, and waits for its "listening" line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Result<Service, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_media-api"))
            .args(args)
            .env("MEDIA_API_ADDR", "127.0.0.1:0")
            .env("MEDIA_API_DOWNLOAD_STEP_MS", "40")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start media-api: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("media-api did not start: {line:?}"))?;
        Ok(Service { child, port })
    }

    /// Starts `media-api` on `redis`.
    pub fn on(redis: &TestRedis) -> Result<Service, String> {
        Self::start(&[], &[("REDIS_URL", redis.url())])
    }

    /// Stops the service with SIGTERM and waits for it; returns its exit status.
    pub fn stop(mut self) -> Result<std::process::ExitStatus, String> {
        terminate(&self.child);
        self.child.wait().map_err(|e| e.to_string())
    }

    pub fn get(&self, path: &str) -> Request {
        Request::new(self.port, "GET", path)
    }

    pub fn post(&self, path: &str) -> Request {
        Request::new(self.port, "POST", path)
    }
}

fn terminate(child: &Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
}

impl Drop for Service {
    fn drop(&mut self) {
        terminate(&self.child);
        std::thread::sleep(Duration::from_millis(50));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request being built.
pub struct Request {
    port: u16,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("status {} body is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    /// The session cookie this response sets, as `name=value`.
    pub fn cookie(&self) -> Option<String> {
        let set = self.header("set-cookie")?;
        Some(set.split(';').next()?.to_owned())
    }
}

impl Request {
    fn new(port: u16, method: &'static str, path: &str) -> Request {
        Request { port, method, path: path.to_owned(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn cookie(self, cookie: &str) -> Request {
        self.header("cookie", cookie)
    }

    pub fn json(self, body: &serde_json::Value) -> Request {
        self.raw("application/json", body.to_string().into_bytes())
    }

    pub fn raw(mut self, content_type: &str, body: Vec<u8>) -> Request {
        self.body = body;
        self.header("content-type", content_type)
    }

    pub async fn send(self) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&self.body).await?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).ok_or("no status")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body)?;
    }
    Ok(Response { status, headers, body })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end])?.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        let start = line_end + 2;
        out.extend_from_slice(raw.get(start..start + size).ok_or("short chunk")?);
        raw = raw.get(start + size + 2..).ok_or("short chunk")?;
    }
}

/// Logs in and returns the session cookie.
pub async fn login(
    service: &Service,
    user: &str,
    remember: bool,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let body = serde_json::json!({"username": user, "password": user, "rememberMe": remember});
    let response = service.post("/api/auth/login").json(&body).send().await?;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    Ok(response.cookie().ok_or("no session cookie")?)
}

/// Queues a download as the holder of `cookie` (`path` may carry `?fail=...`), checks it was
/// accepted, and returns its job id.
pub async fn queue_download(
    service: &Service,
    cookie: &str,
    path: &str,
    url: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let response = service.post(path).cookie(cookie).json(&serde_json::json!({"url": url})).send().await?;
    assert_eq!(response.status, 202, "{}", String::from_utf8_lossy(&response.body));
    Ok(response.json()["jobId"].as_str().ok_or("no job id")?.to_owned())
}

/// Reads job `id` with `cookie` every 25 ms until it has completed, for at most `limit`; returns
/// it and how many reads that took (each read is a request with the session).
pub async fn until_completed(
    service: &Service,
    cookie: &str,
    id: &str,
    limit: Duration,
) -> Result<(serde_json::Value, u32), Box<dyn std::error::Error + Send + Sync>> {
    let started = std::time::Instant::now();
    let mut reads = 0;
    loop {
        let job = service.get(&format!("/api/jobs/{id}")).cookie(cookie).send().await?.json();
        reads += 1;
        if job["job"]["state"] == serde_json::json!("completed") {
            return Ok((job, reads));
        }
        if started.elapsed() > limit {
            return Err(format!("job {id} did not complete in {limit:?}: {job}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
