//! `[pusher]`: the Pusher apps this node serves (`[[pusher.apps]]`), checked
//! once at startup into [`super::Apps`].

use serde::{Deserialize, Serialize};

/// The Pusher-compatible surface: `/app/{key}` (WebSocket protocol 7) and
/// `/apps/{id}/…` (the HTTP API), for each configured app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// The apps, each with its own key, secret and room prefix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<PusherAppConfig>,
    /// The `activity_timeout` told to clients in
    /// `pusher:connection_established`, in seconds: a client pings after this
    /// long without a message. The server pings a silent client after it and
    /// closes the connection (4201) when nothing answers for 30 s more.
    pub activity_timeout_secs: u64,
    /// How long an HTTP API request's `auth_timestamp` may be from the
    /// server's clock, either way (Pusher refuses beyond 600 s).
    pub max_clock_skew_secs: u64,
}

impl Default for PusherConfig {
    fn default() -> Self {
        PusherConfig {
            apps: Vec::new(),
            activity_timeout_secs: 120,
            max_clock_skew_secs: 600,
        }
    }
}

/// One Pusher app (`[[pusher.apps]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PusherAppConfig {
    /// The app id of the HTTP API's paths (`/apps/{id}/events`).
    pub id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// Signs channel authorizations, user sign-ins, HTTP API requests and
    /// webhooks.
    pub secret: String,
    /// Accept `client-` events on private and presence channels from clients
    /// (off by default, as in Pusher's dashboard).
    pub enable_client_messages: bool,
    /// Most concurrent connections of this app on this node (0: no limit of
    /// its own; the node's limits still apply).
    pub max_connections: usize,
    /// The prefix of the rooms this app's channels are stored as; defaults to
    /// `pusher:{id}:` (see docs/pusher.md for the mapping). May be empty for
    /// a single app whose channels should be rooms of the same names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_prefix: Option<String>,
    /// Browser origins allowed to connect to this app (empty: the node's
    /// `auth.allowed_origins` decides).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Pusher-format webhooks of this app, delivered by hubcast's durable
    /// webhook machinery.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<PusherWebhookConfig>,
}

/// A Pusher-format webhook endpoint of one app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PusherWebhookConfig {
    /// Where to POST (`http://…` or `https://…`).
    pub url: String,
    /// Which events: `channel_occupied`, `channel_vacated`, `member_added`,
    /// `member_removed`, `client_event`, `cache_miss`, `subscription_count`
    /// (empty: the first five; `cache_miss` and `subscription_count` are
    /// sent only when named, as Pusher sends them only when enabled).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
}

impl PusherAppConfig {
    /// The prefix of this app's rooms.
    pub fn room_prefix(&self) -> String {
        self.room_prefix
            .clone()
            .unwrap_or_else(|| format!("pusher:{}:", self.id))
    }
}
