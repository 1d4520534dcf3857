//! The admin (`redtail-admin`, mounted at `/admin`) in a real browser: headless Chromium
//! (Debian's `chromium`, installed here when missing) driven over the DevTools protocol. An
//! admin logs in, retries a dead-lettered download and sees it complete with its errors and
//! log, reads the chart, pauses and resumes a queue, reads a user's rate-limit usage and ends
//! their session. A screenshot is written to the target directory, and to `docs/admin.png`
//! when `UPDATE_SCREENSHOT=1`.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use common::{Service, TestResult, login, queue_download, redis, until_completed};
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

/// Clicks the button matching `selector`, failing when there is none.
async fn click(page: &mut Page, selector: &str) -> TestResult {
    let script = format!(
        "(() => {{ const b = document.querySelector({selector:?}); if (!b) return false; b.click(); return true; }})()"
    );
    if page.eval(&script).await? != json!(true) {
        return Err(format!("no button {selector} on the page").into());
    }
    Ok(())
}

/// Types `text` into the form field `input` and submits its form.
async fn submit(page: &mut Page, input: &str, text: &str) -> TestResult {
    let script = format!(
        "(() => {{ const i = document.getElementById({input:?}); i.value = {text:?}; i.form.requestSubmit(); return true; }})()"
    );
    page.eval(&script).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_uses_every_part_of_the_mounted_admin() -> TestResult {
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
    page.wait_for(
        "the admin shows the queues",
        "!!document.querySelector('.queue[data-queue=\"youtube-downloads\"]')",
        Duration::from_secs(10),
    )
    .await?;

    // Dead letters of the first queue are listed by default; two retries after 2 s and 4 s,
    // then the job is dead.
    let dead = format!("!!document.querySelector('[data-job=\"{id}\"][data-state=\"dead\"]')");
    page.wait_for("the download is dead-lettered", &dead, Duration::from_secs(30)).await?;
    let error = page.eval(&format!("document.querySelector('[data-job=\"{id}\"] td.error').textContent")).await?;
    assert!(error.as_str().is_some_and(|e| e.contains("simulated failure")), "{error}");
    click(&mut page, &format!("button[data-action=\"retry\"][data-id=\"{id}\"]")).await?;
    submit(&mut page, "job-search", &id).await?;
    let completed = format!("!!document.querySelector('[data-job=\"{id}\"][data-state=\"completed\"]')");
    page.wait_for("the retried download completes", &completed, Duration::from_secs(30)).await?;
    click(&mut page, &format!("button[data-action=\"view\"][data-id=\"{id}\"]")).await?;
    page.wait_for(
        "the job's errors by attempt and its log show",
        "document.querySelectorAll('#job-detail li[data-attempt]').length === 3 && document.getElementById('job-log').textContent.includes('attempt 4')",
        Duration::from_secs(10),
    )
    .await?;

    // The chart is drawn from the queue's per-minute counts: two downloads completed, three
    // attempts failed.
    let sum = |field: &str| {
        format!(
            "[...document.querySelectorAll('.queue[data-queue=\"youtube-downloads\"] rect[data-{field}]')].reduce((n, r) => n + Number(r.dataset.{field}), 0)"
        )
    };
    page.wait_for(
        "the chart shows 2 completed and 3 failed attempts",
        &format!("{} === 2 && {} === 3", sum("completed"), sum("failed")),
        Duration::from_secs(10),
    )
    .await?;

    // Paused from the page, a queue holds a new job until resumed from the page.
    click(&mut page, "button[data-action=\"pause\"][data-queue=\"media-requests\"]").await?;
    page.wait_for(
        "media-requests shows paused",
        "!!document.querySelector('.queue[data-queue=\"media-requests\"][data-paused=\"true\"]')",
        Duration::from_secs(10),
    )
    .await?;
    let request = service
        .post("/api/media/request")
        .cookie(&alice)
        .json(&json!({"title": "Dune", "mediaType": "movie"}))
        .send()
        .await?;
    assert_eq!(request.status, 202);
    let request = request.json()["jobId"].as_str().ok_or("no job id")?.to_owned();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = service.get(&format!("/api/jobs/{request}")).cookie(&alice).send().await?.json();
    assert_eq!(held["job"]["state"], json!("waiting"), "a paused queue runs nothing");
    click(&mut page, "button[data-action=\"resume\"][data-queue=\"media-requests\"]").await?;
    until_completed(&service, &alice, &request, Duration::from_secs(20)).await?;

    // Downloads are grouped by user: alice's group is listed, paused and resumed from the page.
    submit(&mut page, "group-name", "alice").await?;
    page.wait_for(
        "alice's downloads show as a group",
        "!!document.querySelector('#group-list tr[data-group=\"alice\"]')",
        Duration::from_secs(10),
    )
    .await?;
    click(&mut page, "button[data-action=\"pause-group\"][data-id=\"alice\"]").await?;
    page.wait_for(
        "alice's group shows paused",
        "!!document.querySelector('button[data-action=\"resume-group\"][data-id=\"alice\"]')",
        Duration::from_secs(10),
    )
    .await?;
    let held = queue_download(&service, &alice, "/api/youtube/download", "https://example.invalid/v/held").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = service.get(&format!("/api/jobs/{held}")).cookie(&alice).send().await?.json();
    assert_eq!(waiting["job"]["state"], json!("waiting"), "a paused group runs nothing");
    click(&mut page, "button[data-action=\"resume-group\"][data-id=\"alice\"]").await?;
    until_completed(&service, &alice, &held, Duration::from_secs(20)).await?;

    // A subject's rate-limit usage, and a user's session ended from the page.
    submit(&mut page, "limit-subject", "alice").await?;
    page.wait_for(
        "alice's usage shows",
        "!!document.querySelector('tr[data-policy=\"api\"]')",
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(service.get("/api/me").cookie(&alice).send().await?.status, 200);
    submit(&mut page, "session-user", "alice").await?;
    page.wait_for(
        "alice's session shows",
        "document.querySelectorAll('tr[data-session]').length === 1",
        Duration::from_secs(10),
    )
    .await?;
    let health = page.eval("document.getElementById('health').textContent").await?;
    assert_eq!(health, json!("up"));

    let shot = page.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await?;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().ok_or("no screenshot")?)?;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin.png"), &png)?;
    if std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/admin.png"), &png)?;
    }

    click(&mut page, "button[data-action=\"end\"]").await?;
    page.wait_for(
        "alice's session is gone from the page",
        "document.querySelectorAll('tr[data-session]').length === 0",
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(service.get("/api/me").cookie(&alice).send().await?.status, 401, "the ended session no longer works");
    Ok(())
}
