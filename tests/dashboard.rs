//! The dashboard is served by the binary itself: `GET /` is the page, every
//! asset it loads (and every module those import) is under `/dashboard/` with
//! its media type and cache validators, and a missing asset is the JSON 404.
//!
//! Self-contained: it starts the real binary with its own small spawner (the
//! shared `tests/support` is not used here). Every await has a limit that only
//! turns "never" into a failure; nothing asserts a duration.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const STEP: Duration = Duration::from_secs(15);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut).await.unwrap_or_else(|_| panic!("timed out after {STEP:?} waiting for {what}"))
}

/// `hubcast serve` on a free loopback port with its own data dir; killed on drop.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::Builder::new().prefix("hubcast-dashboard-").tempdir().expect("temp dir");
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let mut command = Command::new(env!("CARGO_BIN_EXE_hubcast"));
            command
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--store")
                .arg(format!("sqlite://{}", dir.path().join("hubcast.db").display()))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // HUBCAST_* variables are configuration: none of this shell's may leak in.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("HUBCAST_") {
                    command.env_remove(key);
                }
            }
            let mut child = command.spawn().expect("spawn hubcast");
            let base = format!("http://127.0.0.1:{port}");
            if ready(&mut child, &base).await {
                return Server { child, base, _dir: dir };
            }
            // Exited before answering: most likely another process took the port.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("hubcast did not start after 5 attempts");
    }
}

/// Waits for `/readyz`; false if the process exited first (a port race).
async fn ready(child: &mut Child, base: &str) -> bool {
    let client = reqwest::Client::new();
    let url = format!("{base}/readyz");
    within("the server to become ready", async {
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

async fn get(url: &str, if_none_match: Option<&str>) -> Answer {
    within(url, async {
        let mut request = reqwest::Client::new().get(url);
        if let Some(tag) = if_none_match {
            request = request.header("if-none-match", tag);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        Answer { status, headers, body }
    })
    .await
}

/// The `./name.js` modules a module imports.
fn imports(source: &str) -> Vec<String> {
    source
        .lines()
        .filter(|line| line.trim_start().starts_with("import "))
        .filter_map(|line| line.split("from './").nth(1))
        .filter_map(|rest| rest.split('\'').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_its_assets_and_the_json_404() {
    let server = Server::start().await;
    let base = &server.base;

    // The page.
    let page = get(&format!("{base}/"), None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.body.to_ascii_lowercase().starts_with("<!doctype html>"), "{}", &page.body[..80.min(page.body.len())]);
    assert!(page.header("content-security-policy").contains("default-src 'self'"), "the page is locked to its own origin");
    for asset in ["dashboard/style.css", "dashboard/app.js", "dashboard/favicon.svg"] {
        assert!(page.body.contains(asset), "the page names {asset}");
    }
    assert!(!page.body.contains("http://") && !page.body.contains("https://"), "no CDN or other origin in the page");

    // Assets, by media type, with a cache validator.
    for (path, content_type) in [
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let asset = get(&format!("{base}/dashboard/{path}"), None).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("content-type"), content_type, "{path}");
        assert_eq!(asset.header("cache-control"), "no-cache", "{path}: revalidated, never stale after an upgrade");
        assert_eq!(asset.header("x-content-type-options"), "nosniff", "{path}");
        assert!(!asset.body.is_empty(), "{path}");

        // Revalidation: the same ETag is a 304 with no body.
        let etag = asset.header("etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() > 2, "{path}: strong ETag, got {etag:?}");
        let again = get(&format!("{base}/dashboard/{path}"), Some(&etag)).await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty(), "{path}");
    }

    // Every module reachable from app.js is served as JavaScript.
    let mut pending = vec!["app.js".to_owned()];
    let mut seen = Vec::new();
    while let Some(module) = pending.pop() {
        if seen.contains(&module) {
            continue;
        }
        let answer = get(&format!("{base}/dashboard/{module}"), None).await;
        assert_eq!((answer.status, answer.header("content-type")), (200, "text/javascript; charset=utf-8"), "module {module}");
        pending.extend(imports(&answer.body));
        seen.push(module);
    }
    assert!(seen.len() > 3, "app.js imports its modules: {seen:?}");

    // A missing asset, and a path that climbs out of the folder, are the JSON 404.
    for path in ["dashboard/nope.js", "dashboard/img/nope.png", "dashboard/..%2FCargo.toml", "dashboard/%2e%2e/Cargo.toml"] {
        let missing = get(&format!("{base}/{path}"), None).await;
        assert_eq!(missing.status, 404, "{path}");
        assert_eq!(missing.header("content-type"), "application/json", "{path}");
        let body: Value = serde_json::from_str(&missing.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", missing.body));
        assert_eq!(body["error"], "not_found", "{path}: {body}");
        assert!(body["message"].is_string(), "{path}: {body}");
    }

    // The API routes are untouched by the dashboard's.
    let stats = get(&format!("{base}/v1/stats"), None).await;
    assert_eq!(stats.status, 200);
    assert!(serde_json::from_str::<Value>(&stats.body).expect("stats JSON")["history"].is_array());
}
