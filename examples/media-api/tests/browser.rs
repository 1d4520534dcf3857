//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed here when
//! missing) driven over the DevTools protocol. An admin logs in, sees a dead-lettered download,
//! clicks Retry, and sees it complete. A screenshot is written to the target directory, and to
//! `docs/dashboard.png` when `UPDATE_SCREENSHOT=1`.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use common::{Service, TestResult, login, queue_download, redis};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// Finds Chromium, installing Debian's package when it is missing.
fn chromium() -> Result<String, String> {
    let found = |name: &str| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    for name in ["chromium", "chromium-browser"] {
        if found(name) {
            return Ok(name.to_owned());
        }
    }
    eprintln!("chromium is missing; installing it with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status().is_ok_and(|s| s.success())
    };
    if apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "chromium"]) && found("chromium") {
        return Ok("chromium".to_owned());
    }
    Err("chromium is not installed and apt-get could not install it: run `apt-get install chromium` as root".to_owned())
}

/// A headless browser, killed on drop.
struct Browser {
    child: Child,
    _profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

/// A DevTools connection to one page.
struct Page {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    next: u64,
    session: Option<String>,
}

impl Page {
    async fn open() -> Result<(Browser, Page), Box<dyn std::error::Error + Send + Sync>> {
        let binary = chromium()?;
        let profile = std::env::temp_dir().join(format!("media-api-chromium-{}", std::process::id()));
        let mut child = Command::new(binary)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            .args(["--remote-debugging-port=0", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let browser = Browser { child, _profile: profile };
        let mut url = None;
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            if let Some(at) = line.find("ws://") {
                url = Some(line[at..].trim().to_owned());
                break;
            }
        }
        let url = url.ok_or("chromium printed no DevTools address")?;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        let mut page = Page { ws, next: 0, session: None };
        let target = page.call("Target.createTarget", json!({"url": "about:blank"})).await?;
        let attached =
            page.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await?;
        page.session = attached["sessionId"].as_str().map(str::to_owned);
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        Ok((browser, page))
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.next += 1;
        let mut message = json!({"id": self.next, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).await?;
        loop {
            let frame =
                tokio::time::timeout(Duration::from_secs(20), self.ws.next()).await?.ok_or("DevTools closed")??;
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text)?;
            if reply["id"] == json!(self.next) {
                if let Some(error) = reply.get("error") {
                    return Err(format!("{method}: {error}").into());
                }
                return Ok(reply["result"].clone());
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let result = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}").into());
        }
        Ok(result["result"]["value"].clone())
    }

    async fn wait_for(&mut self, what: &str, expression: &str, limit: Duration) -> TestResult {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.eval(expression).await.is_ok_and(|v| v == json!(true)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''").await?;
        Err(format!("timed out waiting until {what}; the page shows: {body}").into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retries_a_dead_lettered_download_from_the_dashboard() -> TestResult {
    let redis = redis();
    let service = Service::on(&redis)?;
    let base = format!("http://127.0.0.1:{}", service.port);

    // A download that fails every attempt until it is retried from the dead letters.
    let alice = login(&service, "alice", false).await?;
    let id = queue_download(
        &service,
        &alice,
        "/api/youtube/download?fail=until-retried",
        "https://example.invalid/v/broken",
    )
    .await?;
    queue_download(&service, &alice, "/api/youtube/download", "https://example.invalid/v/ok").await?;

    let (_browser, mut page) = Page::open().await?;
    page.call("Page.navigate", json!({"url": format!("{base}/admin")})).await?;
    page.wait_for("the login form shows", "!!document.getElementById('login')", Duration::from_secs(10)).await?;
    page.eval(
        "document.getElementById('username').value = 'admin';
         document.getElementById('password').value = 'admin';
         document.getElementById('submit').click(); true",
    )
    .await?;
    page.wait_for("the dashboard shows", "!!document.getElementById('dead')", Duration::from_secs(10)).await?;
    // Two retries after 2 s and 4 s, then the job is dead.
    let dead = format!("!!document.querySelector('[data-dead=\"{id}\"]')");
    page.wait_for("the download is dead-lettered", &dead, Duration::from_secs(30)).await?;
    let error = page.eval(&format!("document.querySelector('[data-dead=\"{id}\"] td.error').textContent")).await?;
    assert!(error.as_str().is_some_and(|e| e.contains("simulated failure")), "{error}");
    page.eval(&format!("document.querySelector('button[data-action=\"retry\"][data-id=\"{id}\"]').click(); true"))
        .await?;
    let completed = format!("!!document.querySelector('[data-job=\"{id}\"][data-state=\"completed\"]')");
    page.wait_for("the retried download completes", &completed, Duration::from_secs(30)).await?;
    page.wait_for(
        "the dead letters are empty",
        &format!("!document.querySelector('[data-dead=\"{id}\"]')"),
        Duration::from_secs(5),
    )
    .await?;
    let health = page.eval("document.getElementById('health').textContent").await?;
    assert_eq!(health, json!("up"));

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"})).await?;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().ok_or("no screenshot")?)?;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"), &png)?;
    if std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png"), &png)?;
    }
    let job = service.get(&format!("/api/jobs/{id}")).cookie(&alice).send().await?.json();
    assert_eq!(job["job"]["state"], json!("completed"));
    assert_eq!(job["job"]["attempts_started"], json!(4), "three failed attempts, then the retried one");
    Ok(())
}
