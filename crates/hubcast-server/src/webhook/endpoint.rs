//! `[[webhooks]]`: an endpoint, the kinds of message it wants, for which
//! rooms, and how its deliveries are retried. Checked once at startup
//! ([`Webhooks::from_config`]); a bad URL, secret or event type is a
//! configuration error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Notify;

use super::message::{new_msg_id, render, NewWebhook, Published};

/// One `[[webhooks]]` block as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST: `http://…` or `https://…`.
    pub url: String,
    /// `whsec_<base64>` (24 to 64 bytes): the HMAC key of `webhook-signature`.
    pub secret: String,
    /// Which messages: `room.occupied`, `room.vacated`, `presence.joined`,
    /// `presence.left`, `event.published`.
    pub events: Vec<String>,
    /// Only rooms matching this pattern (`*` any run of characters, as in grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<String>,
    /// The endpoint's name in the store, metrics and logs; defaults to the URL.
    /// Undelivered messages stay with the name, so renaming (or changing the
    /// URL of an unnamed endpoint) leaves its backlog behind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How long one delivery attempt may take (connect, send, answer).
    pub timeout_ms: u64,
    /// The first retry's delay; each retry doubles it (with jitter) up to
    /// `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// A message still undelivered this long after it was recorded is
    /// dead-lettered (moved to `webhook_dead_letters`, counted).
    pub max_age_secs: u64,
    /// Most undelivered messages kept for this endpoint; beyond it new ones
    /// are dead-lettered at once (counted), so a dead endpoint cannot fill the disk.
    pub max_backlog: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            secret: String::new(),
            events: Vec::new(),
            rooms: None,
            name: None,
            timeout_ms: 5000,
            retry_base_ms: 1000,
            retry_max_ms: 300_000,
            max_age_secs: 3 * 24 * 3600,
            max_backlog: 100_000,
        }
    }
}

/// The kinds of webhook message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    RoomOccupied,
    RoomVacated,
    PresenceJoined,
    PresenceLeft,
    EventPublished,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::RoomOccupied,
        EventKind::RoomVacated,
        EventKind::PresenceJoined,
        EventKind::PresenceLeft,
        EventKind::EventPublished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RoomOccupied => "room.occupied",
            EventKind::RoomVacated => "room.vacated",
            EventKind::PresenceJoined => "presence.joined",
            EventKind::PresenceLeft => "presence.left",
            EventKind::EventPublished => "event.published",
        }
    }

    fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// One endpoint, checked.
#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    pub url: reqwest::Url,
    pub key: Vec<u8>,
    kinds: Vec<EventKind>,
    rooms: Option<String>,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_age: Duration,
    pub max_backlog: u64,
    /// Undelivered messages, as the writer counts them (re-read from the
    /// store by the worker, which also lowers it as it delivers).
    pub backlog: AtomicU64,
    /// A Pusher app's endpoint: Pusher's body and headers instead of
    /// Standard Webhooks'.
    pub pusher: Option<super::pusher::PusherFormat>,
}

impl Endpoint {
    fn wants(&self, kind: EventKind, room: &str) -> bool {
        self.kinds.contains(&kind)
            && self.rooms.as_deref().map_or(true, |pattern| {
                hubcast_protocol::pattern::pattern_matches(pattern, room)
            })
    }

    /// The delay before retry number `attempt` (1 for the first retry):
    /// `retry_base · 2^(attempt-1)`, capped at `retry_max`, then a random
    /// 50–100 % of that, so endpoints recovering together are not hit in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.retry_max);
        exp.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// Every configured endpoint, shared by the store (which records messages)
/// and the delivery workers.
#[derive(Debug, Default)]
pub struct Webhooks {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Woken after a commit that recorded messages, so delivery starts at once.
    pub recorded: Notify,
}

impl Webhooks {
    /// Checks the `[[webhooks]]` blocks.
    pub fn from_config(
        configs: &[WebhookConfig],
        pusher: &crate::pusher::PusherConfig,
    ) -> Result<Webhooks, String> {
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let at = |what: String| format!("webhooks[{i}]: {what}");
            let url = reqwest::Url::parse(&config.url)
                .map_err(|err| at(format!("url `{}` is not a URL: {err}", config.url)))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(at(format!(
                    "url `{}` must be http:// or https:// with a host",
                    config.url
                )));
            }
            let key = super::parse_secret(&config.secret).map_err(at)?;
            if config.events.is_empty() {
                return Err(at("events must name at least one of room.occupied, room.vacated, presence.joined, presence.left, event.published".into()));
            }
            let kinds = config
                .events
                .iter()
                .map(|name| {
                    EventKind::parse(name).ok_or_else(|| {
                        at(format!("unknown event type `{name}` (expected room.occupied, room.vacated, presence.joined, presence.left or event.published)"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if config.rooms.as_deref() == Some("") {
                return Err(at(
                    "rooms must be a room pattern such as \"market:*\"".into()
                ));
            }
            if config.timeout_ms == 0 || config.retry_base_ms == 0 || config.max_backlog == 0 {
                return Err(at(
                    "timeout_ms, retry_base_ms and max_backlog must be at least 1".into(),
                ));
            }
            if config.retry_max_ms < config.retry_base_ms || config.max_age_secs == 0 {
                return Err(at(
                    "retry_max_ms must be at least retry_base_ms, and max_age_secs at least 1"
                        .into(),
                ));
            }
            let name = config.name.clone().unwrap_or_else(|| config.url.clone());
            if endpoints.iter().any(|e| e.name == name) {
                return Err(at(format!(
                    "two webhooks are named `{name}`; give one a distinct name"
                )));
            }
            endpoints.push(Arc::new(Endpoint {
                name,
                url,
                key,
                kinds,
                rooms: config.rooms.clone(),
                timeout: Duration::from_millis(config.timeout_ms),
                retry_base: Duration::from_millis(config.retry_base_ms),
                retry_max: Duration::from_millis(config.retry_max_ms),
                max_age: Duration::from_secs(config.max_age_secs),
                max_backlog: config.max_backlog,
                backlog: AtomicU64::new(0),
                pusher: None,
            }));
        }
        for app in &pusher.apps {
            for (i, hook) in app.webhooks.iter().enumerate() {
                endpoints.push(Arc::new(pusher_endpoint(app, i, hook)?));
            }
        }
        Ok(Webhooks {
            endpoints,
            recorded: Notify::new(),
        })
    }

    /// Whether any endpoint wants `kind` for some room (lets callers skip work).
    pub fn any_wants(&self, kind: EventKind) -> bool {
        self.endpoints.iter().any(|e| e.kinds.contains(&kind))
    }

    /// The messages to record for `kind` in `room`, one per endpoint that
    /// wants it. An endpoint at its `max_backlog` gets none: the message is
    /// dead-lettered at once and counted.
    pub fn messages(
        &self,
        kind: EventKind,
        room: &str,
        ts_ms: i64,
        data: &impl Serialize,
    ) -> Vec<NewWebhook> {
        let mut body = None;
        let mut messages = Vec::new();
        for endpoint in self.endpoints.iter().filter(|e| e.wants(kind, room)) {
            if endpoint.backlog.load(Ordering::Relaxed) >= endpoint.max_backlog {
                super::tally::note_backlog_full(endpoint);
                continue;
            }
            endpoint.backlog.fetch_add(1, Ordering::Relaxed);
            let body = match &endpoint.pusher {
                None => body
                    .get_or_insert_with(|| render(kind, ts_ms, data))
                    .clone(),
                Some(format) => {
                    let value = serde_json::to_value(data).unwrap_or_default();
                    match super::pusher::render(format, kind, ts_ms, &value) {
                        Some(body) => body,
                        None => {
                            endpoint.backlog.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
            };
            messages.push(NewWebhook {
                endpoint: endpoint.name.clone(),
                room: room.to_owned(),
                msg_id: new_msg_id(),
                body,
            });
        }
        messages
    }

    /// The `client_event` messages of a Pusher client event in `room`
    /// (`stored`: the event as the room carries it) for the Pusher endpoints
    /// that want them.
    pub fn client_event(&self, room: &str, stored: &str, socket_id: &str) -> Vec<NewWebhook> {
        let ts_ms = crate::event::now_ms();
        self.pusher_messages(room, |format| {
            format.client_events.then(|| {
                super::pusher::render_client_event(format, ts_ms, room, stored, socket_id)
            })?
        })
    }

    /// The `cache_miss` messages of a subscription to the cache channel of
    /// `room` that had no event to give, for the Pusher endpoints that want them.
    pub fn cache_miss(&self, room: &str) -> Vec<NewWebhook> {
        let ts_ms = crate::event::now_ms();
        self.pusher_messages(room, |format| {
            format
                .cache_miss
                .then(|| super::pusher::render_cache_miss(format, ts_ms, room))?
        })
    }

    /// The `subscription_count` messages of `room` having `count`
    /// subscribers, for the Pusher endpoints that want them.
    pub fn subscription_count(&self, room: &str, count: usize) -> Vec<NewWebhook> {
        let ts_ms = crate::event::now_ms();
        self.pusher_messages(room, |format| {
            format
                .subscription_count
                .then(|| super::pusher::render_subscription_count(format, ts_ms, room, count))?
        })
    }

    /// One message per Pusher endpoint `render` gives a body for (`None`:
    /// it does not want this one, or `room` is no channel of its app); an
    /// endpoint at its `max_backlog` gets none and it is counted.
    fn pusher_messages(
        &self,
        room: &str,
        render: impl Fn(&super::pusher::PusherFormat) -> Option<String>,
    ) -> Vec<NewWebhook> {
        let mut messages = Vec::new();
        for endpoint in &self.endpoints {
            let Some(body) = endpoint.pusher.as_ref().and_then(&render) else {
                continue;
            };
            if endpoint.backlog.load(Ordering::Relaxed) >= endpoint.max_backlog {
                super::tally::note_backlog_full(endpoint);
                continue;
            }
            endpoint.backlog.fetch_add(1, Ordering::Relaxed);
            messages.push(NewWebhook {
                endpoint: endpoint.name.clone(),
                room: room.to_owned(),
                msg_id: new_msg_id(),
                body,
            });
        }
        messages
    }

    /// Whether any endpoint wants Pusher's `subscription_count`.
    pub fn wants_subscription_counts(&self) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.pusher.as_ref().is_some_and(|f| f.subscription_count))
    }

    /// The `event.published` messages of one committed event.
    pub fn published(
        &self,
        room: &str,
        seq: u64,
        epoch: &str,
        ts: i64,
        data: &RawValue,
    ) -> Vec<NewWebhook> {
        self.messages(
            EventKind::EventPublished,
            room,
            ts,
            &Published {
                room,
                seq,
                epoch,
                ts,
                data,
            },
        )
    }
}

/// The endpoint of webhook `i` of a Pusher app: its rooms are the app's,
/// its kinds Pusher's names mapped onto hubcast's (all of them when
/// `event_types` is empty), its retry schedule the defaults of `[[webhooks]]`.
fn pusher_endpoint(
    app: &crate::pusher::PusherAppConfig,
    i: usize,
    hook: &crate::pusher::PusherWebhookConfig,
) -> Result<Endpoint, String> {
    let at = |what: String| format!("pusher app {} webhooks[{i}]: {what}", app.id);
    let url = reqwest::Url::parse(&hook.url)
        .map_err(|err| at(format!("url `{}` is not a URL: {err}", hook.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(at(format!(
            "url `{}` must be http:// or https:// with a host",
            hook.url
        )));
    }
    let default = [
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
    ];
    // Sent only when named, as Pusher sends them only when enabled.
    let own = ["client_event", "cache_miss", "subscription_count"];
    let all: Vec<&str> = default.iter().chain(&own[1..]).copied().collect();
    let names: Vec<&str> = if hook.event_types.is_empty() {
        default.to_vec()
    } else {
        hook.event_types.iter().map(String::as_str).collect()
    };
    let mut kinds = Vec::new();
    for name in &names {
        if own.contains(name) {
            continue;
        }
        kinds.push(super::pusher::kind_of(name).ok_or_else(|| {
            at(format!(
                "unknown event type `{name}` (expected one of {})",
                all.join(", ")
            ))
        })?);
    }
    let defaults = WebhookConfig::default();
    let prefix = app.room_prefix();
    Ok(Endpoint {
        name: format!("pusher:{}:{}", app.id, hook.url),
        url,
        key: Vec::new(),
        kinds,
        rooms: Some(format!("{prefix}*")),
        timeout: Duration::from_millis(defaults.timeout_ms),
        retry_base: Duration::from_millis(defaults.retry_base_ms),
        retry_max: Duration::from_millis(defaults.retry_max_ms),
        max_age: Duration::from_secs(defaults.max_age_secs),
        max_backlog: defaults.max_backlog,
        backlog: AtomicU64::new(0),
        pusher: Some(super::pusher::PusherFormat {
            app_key: app.key.clone(),
            secret: app.secret.clone(),
            room_prefix: prefix,
            client_events: names.contains(&"client_event"),
            cache_miss: names.contains(&"cache_miss"),
            subscription_count: names.contains(&"subscription_count"),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_config(configs: &[WebhookConfig]) -> Result<Webhooks, String> {
        Webhooks::from_config(configs, &crate::pusher::PusherConfig::default())
    }

    fn config(events: &[&str]) -> WebhookConfig {
        WebhookConfig {
            url: "http://127.0.0.1:9000/hook".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn refuses_bad_blocks() {
        let unknown = from_config(&[config(&["room.opened"])]).unwrap_err();
        assert!(
            unknown.contains("unknown event type `room.opened`"),
            "{unknown}"
        );
        let mut bad_url = config(&["room.occupied"]);
        bad_url.url = "ftp://example.com/".into();
        assert!(from_config(&[bad_url]).unwrap_err().contains("http://"));
        let mut bad_secret = config(&["room.occupied"]);
        bad_secret.secret = "hunter2".into();
        assert!(from_config(&[bad_secret]).unwrap_err().contains("whsec_"));
        let twice = from_config(&[config(&["room.occupied"]), config(&["room.vacated"])]);
        assert!(twice.unwrap_err().contains("named"));
    }

    #[test]
    fn routes_by_kind_and_room_pattern() {
        let mut market = config(&["event.published"]);
        market.rooms = Some("market:*".into());
        let hooks = from_config(&[market]).unwrap();
        let data = RawValue::from_string("1".into()).unwrap();
        assert_eq!(hooks.published("market:a", 1, "e", 0, &data).len(), 1);
        assert!(hooks.published("chat:a", 1, "e", 0, &data).is_empty());
        assert!(hooks
            .messages(EventKind::RoomOccupied, "market:a", 0, &())
            .is_empty());
    }

    #[test]
    fn a_full_backlog_takes_no_more() {
        let mut small = config(&["event.published"]);
        small.max_backlog = 2;
        let hooks = from_config(&[small]).unwrap();
        let data = RawValue::from_string("1".into()).unwrap();
        let recorded: usize = (0..5)
            .map(|seq| hooks.published("r", seq, "e", 0, &data).len())
            .sum();
        assert_eq!(recorded, 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let hooks = from_config(&[config(&["room.occupied"])]).unwrap();
        let endpoint = &hooks.endpoints[0];
        for attempt in 1..30 {
            let exp = Duration::from_millis(1000 * (1u64 << (attempt - 1).min(20)))
                .min(endpoint.retry_max);
            let delay = endpoint.backoff(attempt);
            assert!(
                delay >= exp / 2 && delay <= exp,
                "attempt {attempt}: {delay:?}"
            );
        }
    }
}
