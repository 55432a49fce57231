//! The operator dashboard: `GET /` (the page) and `GET /dashboard/{*path}` (its
//! assets). The files in `dashboard/` are embedded in the binary with
//! `rust-embed`, so the dashboard needs no CDN and works offline. (A debug build
//! reads them from `dashboard/` at run time, so editing them needs no rebuild.)
//!
//! The page is plain HTML, CSS and JavaScript modules that use only the public
//! API (`/v1/stats`, `/v1/rooms`, `/metrics`, the room WebSocket and publish),
//! so it has no privileges of its own.
//!
//! Caching: every answer carries a strong `ETag` (the file's SHA-256) and
//! `Cache-Control: no-cache`, so a browser revalidates (a cheap `304`) and never
//! runs a page and modules from two different versions after an upgrade.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::protocol::codes::ErrorCode;

#[derive(rust_embed::Embed)]
#[folder = "dashboard/"]
struct Assets;

/// For the page only: scripts, styles and connections from this origin only
/// (`'self'` covers the same-origin WebSocket), and no framing.
pub(super) const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard page.
pub async fn index(headers: HeaderMap) -> Response {
    match serve("index.html", &headers) {
        Some(mut response) => {
            response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_POLICY));
            response.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            response
        }
        None => ApiError::new(ErrorCode::NotFound, "the dashboard is not part of this build").into_response(),
    }
}

/// `GET /dashboard/{*path}`: one asset, or the JSON 404.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if !is_plain_path(&path) {
        return not_found(&path);
    }
    serve(&path, &headers).unwrap_or_else(|| not_found(&path))
}

fn not_found(path: &str) -> Response {
    let shown: String = path.chars().take(128).collect();
    ApiError::new(ErrorCode::NotFound, format!("no dashboard asset {shown:?}")).into_response()
}

/// A relative path of plain segments: no `..`, `.`, empty segment or backslash.
pub(super) fn is_plain_path(path: &str) -> bool {
    !path.is_empty() && !path.contains('\\') && path.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// The embedded file as a `200`, or a `304` when the client's copy is current.
fn serve(path: &str, request: &HeaderMap) -> Option<Response> {
    let file = Assets::get(path)?;
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()));
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let status = if current { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
    let mut response = if current { status.into_response() } else { (status, file.data.into_owned()).into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    Some(response)
}

/// The media type for an asset, by its extension.
pub(super) fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }

    #[test]
    fn only_plain_relative_paths() {
        assert!(is_plain_path("app.js"));
        assert!(is_plain_path("img/logo.svg"));
        assert!(!is_plain_path(""));
        assert!(!is_plain_path("../Cargo.toml"));
        assert!(!is_plain_path("a/../../b"));
        assert!(!is_plain_path("a//b"));
        assert!(!is_plain_path("./app.js"));
        assert!(!is_plain_path("a\\b"));
    }

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let page = Assets::get("index.html").expect("index.html is embedded");
        let page = std::str::from_utf8(&page.data).expect("utf-8");
        for name in ["style.css", "theme.js", "app.js", "favicon.svg"] {
            assert!(page.contains(&format!("dashboard/{name}")), "index.html names {name}");
            assert!(Assets::get(name).is_some(), "{name} is embedded");
        }
    }
}
