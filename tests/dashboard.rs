//! The dashboard is served by the binary itself: `GET /` is the page, every
//! asset it loads (and every module those import) is under `/dashboard/` with
//! its media type and cache validators, and a missing asset is the JSON 404.
//!
//! Every await has a limit that only turns "never" into a failure; nothing
//! asserts a duration.

mod support;

use serde_json::Value;
use support::{within, Server, STEP};

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn get(url: &str, if_none_match: Option<&str>) -> Answer {
    within(STEP, url, async {
        let mut request = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client")
            .get(url);
        if let Some(tag) = if_none_match {
            request = request.header("if-none-match", tag);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        Answer {
            status,
            headers,
            body,
        }
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
    let server = Server::start("").await;
    let base = &server.base();

    // The page.
    let page = get(&format!("{base}/"), None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(
        page.body
            .to_ascii_lowercase()
            .starts_with("<!doctype html>"),
        "{}",
        &page.body[..80.min(page.body.len())]
    );
    assert!(
        page.header("content-security-policy")
            .contains("default-src 'self'"),
        "the page is locked to its own origin"
    );
    for asset in [
        "dashboard/style.css",
        "dashboard/app.js",
        "dashboard/favicon.svg",
    ] {
        assert!(page.body.contains(asset), "the page names {asset}");
    }
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no CDN or other origin in the page"
    );

    // Assets, by media type, with a cache validator.
    for (path, content_type) in [
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let asset = get(&format!("{base}/dashboard/{path}"), None).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("content-type"), content_type, "{path}");
        assert_eq!(
            asset.header("cache-control"),
            "no-cache",
            "{path}: revalidated, never stale after an upgrade"
        );
        assert_eq!(asset.header("x-content-type-options"), "nosniff", "{path}");
        assert!(!asset.body.is_empty(), "{path}");

        // Revalidation: the same ETag is a 304 with no body.
        let etag = asset.header("etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.len() > 2,
            "{path}: strong ETag, got {etag:?}"
        );
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
        assert_eq!(
            (answer.status, answer.header("content-type")),
            (200, "text/javascript; charset=utf-8"),
            "module {module}"
        );
        pending.extend(imports(&answer.body));
        seen.push(module);
    }
    assert!(seen.len() > 3, "app.js imports its modules: {seen:?}");

    // A missing asset, and a path that climbs out of the folder, are the JSON 404.
    for path in [
        "dashboard/nope.js",
        "dashboard/img/nope.png",
        "dashboard/..%2FCargo.toml",
        "dashboard/%2e%2e/Cargo.toml",
    ] {
        let missing = get(&format!("{base}/{path}"), None).await;
        assert_eq!(missing.status, 404, "{path}");
        assert_eq!(missing.header("content-type"), "application/json", "{path}");
        let body: Value = serde_json::from_str(&missing.body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", missing.body));
        assert_eq!(body["error"], "not_found", "{path}: {body}");
        assert!(body["message"].is_string(), "{path}: {body}");
    }

    // The API routes are untouched by the dashboard's.
    let stats = get(&format!("{base}/v1/stats"), None).await;
    assert_eq!(stats.status, 200);
    assert!(serde_json::from_str::<Value>(&stats.body).expect("stats JSON")["history"].is_array());
}
