//! Serving an embedded web page: its media type by extension, the policy its
//! HTML gets, and the check that keeps a requested path inside the page's
//! files. The dashboard uses it, and so can an embedding application's page
//! (the demos do).

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::protocol::codes::ErrorCode;

/// For the page only: scripts, styles and connections from this origin only
/// (`'self'` covers the same-origin WebSocket), and no framing.
pub const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A relative path of plain segments: no `..`, `.`, empty segment or backslash.
pub fn is_plain_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// The media type for an asset, by its extension.
pub fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
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

/// An embedded file of a page as a response: its content type, no caching
/// (the binary is the version), and the page policy on `index.html`; a missing
/// file is a JSON 404 naming `what` was asked for.
pub fn serve_page_file(path: &str, file: Option<Cow<'static, [u8]>>, what: &str) -> Response {
    let Some(data) = file else {
        let shown: String = path.chars().take(128).collect();
        return ApiError::new(ErrorCode::NotFound, format!("no {what} {shown:?}")).into_response();
    };
    let mut response = (StatusCode::OK, data.into_owned()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == "index.html" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
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
}
