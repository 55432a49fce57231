//! The client's settings, with the defaults of docs/clients.md.

use super::heartbeat::Heartbeat;
use super::reconnect::Backoff;

/// The client's settings (defaults as in docs/clients.md).
#[derive(Debug, Clone)]
pub struct Config {
    /// The server: `http(s)://host:port[/prefix]` or `ws(s)://…`.
    pub url: String,
    /// `None`: never reconnect.
    pub reconnect: Option<Backoff>,
    /// `None`: no application heartbeat.
    pub heartbeat: Option<Heartbeat>,
    /// 0: no connect timeout.
    pub connect_timeout_ms: u64,
    /// 0: no reconciliation poll.
    pub reconcile_ms: u64,
    pub history_page_size: u64,
    /// Send the token in an `auth` message instead of `?token=`.
    pub send_token_as_message: bool,
    /// Whether a token provider is installed (the caller answers [`super::Output::GetToken`]).
    pub has_token_provider: bool,
    /// 0: unpaced.
    pub max_publishes_per_second: u32,
    pub max_queued_publishes: usize,
    pub max_event_bytes: usize,
    /// 0: publishes never time out.
    pub publish_timeout_ms: u64,
    /// Connect on the first subscription or publish.
    pub auto_connect: bool,
}

impl Config {
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            reconnect: Some(Backoff::default()),
            heartbeat: Some(Heartbeat::default()),
            connect_timeout_ms: 10_000,
            reconcile_ms: 0,
            history_page_size: 1000,
            send_token_as_message: false,
            has_token_provider: false,
            max_publishes_per_second: 100,
            max_queued_publishes: 1000,
            max_event_bytes: 1024 * 1024,
            publish_timeout_ms: 0,
            auto_connect: true,
        }
    }
}
