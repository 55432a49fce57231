//! The demo pages, served only by `hubcast demo chat` (`Config::demo`):
//! `GET /demo/chat/` and its assets, the files of `examples/chat/` embedded with
//! `rust-embed` like the dashboard (no CDN, no build step). The page is a plain
//! client of the public WebSocket protocol, with no privileges of its own.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::dashboard::{content_type, is_plain_path, PAGE_POLICY};
use super::error::ApiError;
use crate::protocol::codes::ErrorCode;

#[derive(rust_embed::Embed)]
#[folder = "examples/chat/"]
struct Chat;

/// The demo routes, merged into the router when demo is on.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/demo/chat", get(|| async { Redirect::permanent("/demo/chat/") }))
        .route("/demo/chat/", get(|| async { chat("index.html") }))
        .route("/demo/chat/{*path}", get(|Path(path): Path<String>| async move { chat(&path) }))
}

fn chat(path: &str) -> Response {
    // The page's own files only (not the README next to them).
    let servable = is_plain_path(path) && [".html", ".js", ".css"].iter().any(|ext| path.ends_with(ext));
    let file = if servable { Chat::get(path) } else { None };
    serve_page_file(path, file, "chat asset")
}

/// An embedded file of a demo page as a response: its content type, no caching
/// (the binary is the version), and the page policy on the HTML itself; a
/// missing file is a JSON 404 naming `what` was asked for.
pub(super) fn serve_page_file(path: &str, file: Option<rust_embed::EmbeddedFile>, what: &str) -> Response {
    let Some(file) = file else {
        let shown: String = path.chars().take(128).collect();
        return ApiError::new(ErrorCode::NotFound, format!("no {what} {shown:?}")).into_response();
    };
    let mut response = (StatusCode::OK, file.data.into_owned()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if path == "index.html" {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_POLICY));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let page = Chat::get("index.html").expect("index.html is embedded");
        let page = std::str::from_utf8(&page.data).expect("utf-8");
        for name in ["style.css", "app.js"] {
            assert!(page.contains(&format!("/demo/chat/{name}")), "index.html names {name}");
            assert!(Chat::get(name).is_some(), "{name} is embedded");
        }
        assert_eq!(chat("README.md").status(), StatusCode::NOT_FOUND, "docs are not served");
        assert_eq!(chat("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(chat("app.js").status(), StatusCode::OK);
    }
}
