//! The chat demo (`hubcast demo chat`): `GET /demo/chat/` and its assets, the
//! files of `examples/chat/` embedded with `rust-embed` like the dashboard (no
//! CDN, no build step). The page is a plain client of the public WebSocket
//! protocol, with no privileges of its own; the server is a plain node.

use axum::extract::Path;
use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;
use hubcast_server::page::{is_plain_path, serve_page_file};

#[derive(rust_embed::Embed)]
#[folder = "../../examples/chat/"]
struct Chat;

/// The chat page's routes.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/demo/chat",
            get(|| async { Redirect::permanent("/demo/chat/") }),
        )
        .route("/demo/chat/", get(|| async { chat("index.html") }))
        .route(
            "/demo/chat/{*path}",
            get(|Path(path): Path<String>| async move { chat(&path) }),
        )
}

fn chat(path: &str) -> Response {
    // The page's own files only (not the README next to them).
    let servable = is_plain_path(path)
        && [".html", ".js", ".css"]
            .iter()
            .any(|ext| path.ends_with(ext));
    let file = if servable {
        Chat::get(path).map(|file| file.data)
    } else {
        None
    };
    serve_page_file(path, file, "chat asset")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let page = Chat::get("index.html").expect("index.html is embedded");
        let page = std::str::from_utf8(&page.data).expect("utf-8");
        for name in ["style.css", "app.js"] {
            assert!(
                page.contains(&format!("/demo/chat/{name}")),
                "index.html names {name}"
            );
            assert!(Chat::get(name).is_some(), "{name} is embedded");
        }
        assert_eq!(
            chat("README.md").status(),
            StatusCode::NOT_FOUND,
            "docs are not served"
        );
        assert_eq!(chat("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(chat("app.js").status(), StatusCode::OK);
    }
}
