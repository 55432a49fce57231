//! The Pusher Channels protocol: pusher-js and Laravel Echo apps, and
//! Pusher's server libraries, switch to hubcast by changing the host.
//!
//! Each configured app (`[[pusher.apps]]`) serves protocol 7 at
//! `/app/{key}` and the HTTP API at `/apps/{id}/…`. A Pusher channel is a
//! hubcast room (`channel`: the name mapping), so every event published
//! through Pusher is a durable append with a seq, readable through hubcast's
//! history and protocol, and a hubcast publish reaches pusher-js.
//!
//! Pusher sockets are hubcast sessions in all that matters: the same hubs
//! fan out to them (a hub encodes a Pusher frame once per event when the
//! room has Pusher subscribers, `hub::PusherWire`), the same bounded queue
//! and slow-consumer rule, the same cluster-wide presence, the roster (a
//! signed-in user's sockets, for `terminate_connections`), limits and
//! metrics.
//!
//! Files: `config` (the `[pusher]` section), `channel` (kinds and the room
//! mapping), `frame` (the Pusher wire: only this module knows its JSON),
//! `auth` (every Pusher signature), `codes` (close codes), `socket` (one
//! Pusher connection), `http_api` (the REST API). Pusher-format webhooks are
//! an endpoint format of `webhook` (`webhook::pusher`).
//!
//! Layers: `config`, `channel`, `frame`, `auth` and `codes` are pure and
//! sit beside `protocol` (hubs use `frame`); `socket` and `http_api` sit
//! beside `session` and `http`.

pub mod auth;
pub mod channel;
pub mod codes;
pub mod config;
pub mod frame;
pub mod http_api;
pub mod socket;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

pub use config::{PusherAppConfig, PusherConfig, PusherWebhookConfig};

/// One configured app, checked.
#[derive(Debug)]
pub struct App {
    pub id: String,
    pub key: String,
    pub secret: String,
    pub enable_client_messages: bool,
    pub max_connections: usize,
    /// Its channels' rooms start with this.
    pub room_prefix: String,
    pub allowed_origins: Vec<String>,
    /// Its open sockets on this node.
    pub connections: AtomicUsize,
}

impl App {
    /// The roster's user name of this app's signed-in `user`: apps share
    /// the node's roster, so a user id is qualified by its app.
    pub fn roster_user(&self, user: &str) -> String {
        format!("pusher:{}:{user}", self.id)
    }

    pub fn origin_allowed(&self, node_allows: impl FnOnce() -> bool, origin: Option<&str>) -> bool {
        match origin {
            Some(origin) if !self.allowed_origins.is_empty() => {
                self.allowed_origins.iter().any(|o| o == origin)
            }
            _ => node_allows(),
        }
    }
}

/// Every configured app, by key and by id.
#[derive(Debug, Default)]
pub struct Apps {
    apps: Vec<Arc<App>>,
    /// Told to clients; the server pings a client silent for this long.
    pub activity_timeout_secs: u64,
    pub max_clock_skew_secs: u64,
}

impl Apps {
    /// Checks the `[pusher]` section: ids, keys and room prefixes distinct,
    /// no room prefix the start of another's (their rooms would mix).
    pub fn from_config(config: &PusherConfig) -> Result<Apps, String> {
        let mut apps: Vec<Arc<App>> = Vec::new();
        for (i, app) in config.apps.iter().enumerate() {
            let at = |what: &str| format!("pusher.apps[{i}]: {what}");
            if app.id.is_empty() || app.key.is_empty() || app.secret.is_empty() {
                return Err(at("id, key and secret must not be empty"));
            }
            if !app
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(at("id may use A-Z a-z 0-9 - _ only"));
            }
            let prefix = app.room_prefix();
            if crate::room::RoomName::parse(&format!("{prefix}x")).is_err() || prefix.len() > 64 {
                return Err(at(
                    "room_prefix may use the characters of room names and be at most 64 bytes",
                ));
            }
            for other in &apps {
                if other.id == app.id || other.key == app.key {
                    return Err(at("two apps have the same id or key"));
                }
                if other.room_prefix.starts_with(&prefix) || prefix.starts_with(&other.room_prefix)
                {
                    return Err(at(
                        "its room_prefix starts another app's (or the other way round): their channels would share rooms",
                    ));
                }
            }
            apps.push(Arc::new(App {
                id: app.id.clone(),
                key: app.key.clone(),
                secret: app.secret.clone(),
                enable_client_messages: app.enable_client_messages,
                max_connections: app.max_connections,
                room_prefix: prefix,
                allowed_origins: app.allowed_origins.clone(),
                connections: AtomicUsize::new(0),
            }));
        }
        if !apps.is_empty()
            && (config.activity_timeout_secs == 0 || config.max_clock_skew_secs == 0)
        {
            return Err(
                "pusher.activity_timeout_secs and pusher.max_clock_skew_secs must be at least 1"
                    .into(),
            );
        }
        Ok(Apps {
            apps,
            activity_timeout_secs: config.activity_timeout_secs,
            max_clock_skew_secs: config.max_clock_skew_secs,
        })
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|app| app.key == key)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|app| app.id == id)
    }
}

/// The routes of every app: `/app/{key}` and `/apps/{id}/…`.
pub fn routes() -> axum::Router<Arc<crate::node::Node>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/app/{key}", get(socket::upgrade))
        .route("/apps/{id}/events", post(http_api::events))
        .route("/apps/{id}/batch_events", post(http_api::batch_events))
        .route("/apps/{id}/channels", get(http_api::channels))
        .route("/apps/{id}/channels/{channel}", get(http_api::channel))
        .route("/apps/{id}/channels/{channel}/users", get(http_api::users))
        .route(
            "/apps/{id}/users/{user}/terminate_connections",
            post(http_api::terminate_connections),
        )
        .route(
            "/users/{user}/terminate_connections",
            post(http_api::terminate_connections_by_key),
        )
}
