//! The chat demo (`hubcast demo chat`): `GET /demo/chat/` and its assets, the
//! files of `examples/chat/` embedded with `rust-embed` like the dashboard (no
//! CDN, no build step). The page is a plain client of the public WebSocket
//! protocol, with no privileges of its own; the server is a plain node whose
//! `chat:` rooms take ephemeral messages (the typing indicator, [`allow_typing`]).

use axum::extract::Path;
use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;
use hubcast_server::config::{Config, Ephemeral, NamespaceConfig};
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

/// The rooms the page uses by default (`?room=` may name another).
const CHAT_PREFIX: &str = "chat:";

/// Lets `chat:` rooms take ephemeral messages, which the page's typing
/// indicator sends, unless the configuration already decides it: the rules
/// that apply to `chat:` rooms (those of the longest configured prefix of
/// `chat:`, or the defaults) are kept, with `ephemeral = "allowed"` when
/// they say `"off"`.
pub fn allow_typing(config: &mut Config) {
    let governing = config
        .namespaces
        .iter()
        .enumerate()
        .filter(|(_, n)| CHAT_PREFIX.starts_with(n.prefix.as_str()))
        .max_by_key(|(_, n)| n.prefix.len())
        .map(|(i, n)| (i, n.clone()));
    match governing {
        Some((_, n)) if n.ephemeral != Ephemeral::Off => {}
        Some((i, n)) if n.prefix == CHAT_PREFIX => {
            config.namespaces[i].ephemeral = Ephemeral::Allowed
        }
        inherited => config.namespaces.push(NamespaceConfig {
            prefix: CHAT_PREFIX.into(),
            ephemeral: Ephemeral::Allowed,
            ..inherited.map(|(_, n)| n).unwrap_or_default()
        }),
    }
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
    fn chat_rooms_take_typing_indicators_and_keep_their_rules() {
        let mut config = Config::default();
        allow_typing(&mut config);
        assert_eq!(
            config.namespaces,
            [NamespaceConfig {
                prefix: "chat:".into(),
                ephemeral: Ephemeral::Allowed,
                ..Default::default()
            }]
        );
        let mut config = Config {
            namespaces: vec![NamespaceConfig {
                prefix: "ch".into(),
                echo: false,
                ..Default::default()
            }],
            ..Default::default()
        };
        allow_typing(&mut config);
        let chat = &config.namespaces[1];
        assert_eq!(
            (chat.prefix.as_str(), chat.echo, chat.ephemeral),
            ("chat:", false, Ephemeral::Allowed)
        );
        let mut config = Config {
            namespaces: vec![NamespaceConfig {
                prefix: "chat:".into(),
                ephemeral: Ephemeral::Only,
                ..Default::default()
            }],
            ..Default::default()
        };
        allow_typing(&mut config);
        assert_eq!(config.namespaces.len(), 1);
        assert_eq!(
            config.namespaces[0].ephemeral,
            Ephemeral::Only,
            "the config decides"
        );
    }

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
