//! Pusher-format webhooks: the endpoints of `[[pusher.apps]] webhooks`,
//! delivered by the same durable, retried, per-room-ordered machinery as
//! Standard Webhooks, with Pusher's body and headers:
//! `{"time_ms": …, "events": [{"name": "channel_occupied", "channel": …}]}`,
//! `X-Pusher-Key` and `X-Pusher-Signature` (hex HMAC-SHA256 of the body with
//! the app's secret), as the Pusher server libraries' `webhook()` verifies.
//! Bodies are rendered when recorded, like the others, so a retry sends the
//! same bytes.

use serde_json::{json, Value};

use super::EventKind;
use crate::pusher::channel::channel_of;

/// How an endpoint of a Pusher app signs and names things.
#[derive(Debug, Clone)]
pub struct PusherFormat {
    pub app_key: String,
    pub secret: String,
    /// The app's room prefix: its channels are the rooms under it.
    pub room_prefix: String,
    /// It wants `client_event`s.
    pub client_events: bool,
    /// It wants `cache_miss`.
    pub cache_miss: bool,
    /// It wants `subscription_count`.
    pub subscription_count: bool,
}

/// The Pusher name of a hubcast webhook kind (`None`: Pusher has none).
pub fn pusher_name(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::RoomOccupied => Some("channel_occupied"),
        EventKind::RoomVacated => Some("channel_vacated"),
        EventKind::PresenceJoined => Some("member_added"),
        EventKind::PresenceLeft => Some("member_removed"),
        EventKind::EventPublished => None,
    }
}

/// The hubcast kind of a Pusher webhook name (`client_event` is its own).
pub fn kind_of(name: &str) -> Option<EventKind> {
    EventKind::ALL
        .into_iter()
        .find(|kind| pusher_name(*kind) == Some(name))
}

/// The body of an occupancy or presence message in Pusher's format; `data`
/// is the hubcast message's data (`room`, and `member` for presence).
/// `None` for a room that is no channel of the app.
pub fn render(format: &PusherFormat, kind: EventKind, ts_ms: i64, data: &Value) -> Option<String> {
    let name = pusher_name(kind)?;
    let channel = channel_of(data.get("room")?.as_str()?, &format.room_prefix)?;
    let mut event = json!({"name": name, "channel": channel});
    if let Some(id) = data.pointer("/member/id") {
        event["user_id"] = id.clone();
    }
    Some(body(ts_ms, event))
}

/// The body of a `client_event`: `stored` is the client event as its room
/// carries it (`pusher::frame::StoredEvent`).
pub fn render_client_event(
    format: &PusherFormat,
    ts_ms: i64,
    room: &str,
    stored: &str,
    socket_id: &str,
) -> Option<String> {
    let channel = channel_of(room, &format.room_prefix)?;
    let stored: Value = serde_json::from_str(stored).ok()?;
    let data = match stored.get("data")? {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut event = json!({
        "name": "client_event",
        "channel": channel,
        "event": stored.get("event")?,
        "data": data,
        "socket_id": socket_id,
    });
    if let Some(user) = stored.get("user_id") {
        event["user_id"] = user.clone();
    }
    Some(body(ts_ms, event))
}

/// The body of a `cache_miss`: a subscriber of the cache channel of `room`
/// found no event to get.
pub fn render_cache_miss(format: &PusherFormat, ts_ms: i64, room: &str) -> Option<String> {
    let channel = channel_of(room, &format.room_prefix)?;
    Some(body(
        ts_ms,
        json!({"name": "cache_miss", "channel": channel}),
    ))
}

/// The body of a `subscription_count`: the channel of `room` has `count`
/// subscribers across the cluster.
pub fn render_subscription_count(
    format: &PusherFormat,
    ts_ms: i64,
    room: &str,
    count: usize,
) -> Option<String> {
    let channel = channel_of(room, &format.room_prefix)?;
    Some(body(
        ts_ms,
        json!({"name": "subscription_count", "channel": channel, "subscription_count": count}),
    ))
}

fn body(ts_ms: i64, event: Value) -> String {
    json!({"time_ms": ts_ms, "events": [event]}).to_string()
}

/// The `X-Pusher-Key` and `X-Pusher-Signature` headers of `body`.
pub fn headers(format: &PusherFormat, body: &str) -> [(&'static str, String); 2] {
    [
        ("x-pusher-key", format.app_key.clone()),
        (
            "x-pusher-signature",
            crate::pusher::auth::sign(&format.secret, body),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format() -> PusherFormat {
        PusherFormat {
            app_key: "k".into(),
            secret: "s".into(),
            room_prefix: "pusher:a:".into(),
            client_events: true,
            cache_miss: true,
            subscription_count: true,
        }
    }

    #[test]
    fn renders_pusher_bodies() {
        let f = format();
        assert_eq!(
            render(
                &f,
                EventKind::RoomOccupied,
                5,
                &json!({"room": "pusher:a:x:2Cy"})
            )
            .as_deref(),
            Some(r#"{"events":[{"channel":"x,y","name":"channel_occupied"}],"time_ms":5}"#)
        );
        assert_eq!(
            render(
                &f,
                EventKind::PresenceLeft,
                5,
                &json!({"room": "pusher:a:presence-p", "member": {"id": "u1"}})
            )
            .as_deref(),
            Some(
                r#"{"events":[{"channel":"presence-p","name":"member_removed","user_id":"u1"}],"time_ms":5}"#
            )
        );
        assert_eq!(
            render(&f, EventKind::RoomOccupied, 5, &json!({"room": "other"})),
            None
        );
        assert_eq!(
            render(
                &f,
                EventKind::EventPublished,
                5,
                &json!({"room": "pusher:a:x"})
            ),
            None
        );
        assert_eq!(
            render_cache_miss(&f, 5, "pusher:a:cache-c").as_deref(),
            Some(r#"{"events":[{"channel":"cache-c","name":"cache_miss"}],"time_ms":5}"#)
        );
        assert_eq!(
            render_subscription_count(&f, 5, "pusher:a:c:2Cd", 3).as_deref(),
            Some(
                r#"{"events":[{"channel":"c,d","name":"subscription_count","subscription_count":3}],"time_ms":5}"#
            )
        );
        assert_eq!(render_subscription_count(&f, 5, "other", 3), None);
        assert_eq!(
            render_client_event(
                &f,
                5,
                "pusher:a:private-c",
                r#"{"event":"client-t","data":{"x":1},"user_id":"u"}"#,
                "1.2"
            )
            .as_deref(),
            Some(
                r#"{"events":[{"channel":"private-c","data":"{\"x\":1}","event":"client-t","name":"client_event","socket_id":"1.2","user_id":"u"}],"time_ms":5}"#
            )
        );
        assert_eq!(kind_of("member_added"), Some(EventKind::PresenceJoined));
        assert_eq!(kind_of("client_event"), None);
    }
}
