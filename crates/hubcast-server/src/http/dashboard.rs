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

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::page::{content_type, is_plain_path, PAGE_POLICY};
use crate::protocol::codes::ErrorCode;

#[derive(rust_embed::Embed)]
#[folder = "../../dashboard/"]
struct Assets;

/// `GET /`: the dashboard page.
pub async fn index(headers: HeaderMap) -> Response {
    page("index.html", &headers)
}

/// An embedded HTML page (the dashboard, the API reference) with the page
/// policy, or the JSON 404 when this build has no dashboard.
pub fn page(path: &str, headers: &HeaderMap) -> Response {
    match serve(path, headers) {
        Some(mut response) => {
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            );
            response.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            response
        }
        None => ApiError::new(
            ErrorCode::NotFound,
            "the dashboard is not part of this build",
        )
        .into_response(),
    }
}

/// `GET /dashboard/{*path}`: one asset, or the JSON 404.
pub async fn asset(path: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    // A path whose escapes are not UTF-8 names no asset either.
    let Ok(Path(path)) = path else {
        return not_found("");
    };
    if !is_plain_path(&path) {
        return not_found(&path);
    }
    serve(&path, &headers).unwrap_or_else(|| not_found(&path))
}

fn not_found(path: &str) -> Response {
    let shown: String = path.chars().take(128).collect();
    ApiError::new(ErrorCode::NotFound, format!("no dashboard asset {shown:?}")).into_response()
}

/// The embedded file as a `200`, or a `304` when the client's copy is current.
fn serve(path: &str, request: &HeaderMap) -> Option<Response> {
    let file = Assets::get(path)?;
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()));
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let status = if current {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut response = if current {
        status.into_response()
    } else {
        (status, file.data.into_owned()).into_response()
    };
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
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    Some(response)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let page = Assets::get("index.html").expect("index.html is embedded");
        let page = std::str::from_utf8(&page.data).expect("utf-8");
        for name in ["style.css", "theme.js", "app.js", "favicon.svg"] {
            assert!(
                page.contains(&format!("dashboard/{name}")),
                "index.html names {name}"
            );
            assert!(Assets::get(name).is_some(), "{name} is embedded");
        }
    }
}
