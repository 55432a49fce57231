//! A small Rust client that keeps the client's half of the guarantee: it
//! resumes from its cursor after any disconnect, drops duplicates, and never
//! delivers out of order. Used by `hubcast sub` and `hubcast pub`.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::codes::close;
use crate::room::RoomName;

/// What a client has processed of a room: `(epoch, seq)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: Option<String>,
    pub seq: Option<u64>,
}

/// What the follower reports to its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The next event of the room, exactly once and in order.
    Event { seq: u64, ts: i64, data: Value },
    /// The cursor could not be served (pruned or another epoch): reload state.
    /// The stream continues live from `head`.
    Reset { epoch: String, earliest: u64, head: u64 },
    /// Replay is done; what follows is live.
    CaughtUp { seq: u64 },
}

#[derive(Deserialize)]
struct ServerFrame {
    #[serde(rename = "type")]
    kind: String,
    seq: Option<u64>,
    ts: Option<i64>,
    data: Option<Value>,
    epoch: Option<String>,
    head: Option<u64>,
    earliest: Option<u64>,
    code: Option<String>,
    message: Option<String>,
}

/// Why following stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("server closed the connection with {code}: {reason}")]
    Closed { code: u16, reason: String },
    #[error("server refused the subscription: {0}")]
    Refused(String),
}

/// Turns `http://host:port` into the room's WebSocket URL for `cursor`.
pub fn room_socket_url(base: &str, room: &RoomName, cursor: &Cursor) -> String {
    let base = base.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    let mut url = format!("{ws_base}/v1/rooms/{room}/ws");
    let mut sep = '?';
    if let Some(seq) = cursor.seq {
        url.push_str(&format!("{sep}cursor={seq}"));
        sep = '&';
    }
    if let Some(epoch) = &cursor.epoch {
        url.push_str(&format!("{sep}epoch={epoch}"));
    }
    url
}

/// Follows `room` from `cursor`, calling `on_update` for each update until it
/// returns `false`. Reconnects with backoff (at once after 1012/1001) and
/// resumes from the cursor; stops on a terminal close code.
pub async fn follow(
    base: &str,
    room: &RoomName,
    mut cursor: Cursor,
    mut on_update: impl FnMut(&Update, &Cursor) -> bool,
) -> Result<(), FollowError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let url = room_socket_url(base, room, &cursor);
        let (mut socket, _) = match tokio_tungstenite::connect_async(&url).await {
            Ok(connected) => connected,
            Err(err) => {
                tracing::info!(error = %err, "connect failed; retrying in {backoff:?}");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let mut close_code = None;
        let mut announced_head = 0;
        while let Some(message) = socket.next().await {
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => {
                    if let Some(frame) = frame {
                        let code = u16::from(frame.code);
                        if !close::should_reconnect(code) {
                            return Err(FollowError::Closed { code, reason: frame.reason.to_string() });
                        }
                        close_code = Some(code);
                    }
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            };
            let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else { continue };
            let update = match frame.kind.as_str() {
                "subscribed" => {
                    backoff = Duration::from_millis(100);
                    announced_head = frame.head.unwrap_or(0);
                    if frame.epoch.is_some() && cursor.epoch.is_none() {
                        cursor.epoch = frame.epoch.clone();
                        cursor.seq.get_or_insert(frame.head.unwrap_or(0));
                    }
                    None
                }
                "reset" => {
                    // A reset continues live from the head `subscribed` announced.
                    let epoch = frame.epoch.unwrap_or_default();
                    cursor.epoch = Some(epoch.clone());
                    cursor.seq = Some(announced_head);
                    Some(Update::Reset { epoch, earliest: frame.earliest.unwrap_or(0), head: announced_head })
                }
                "event" => match (frame.seq, cursor.seq) {
                    (Some(seq), Some(last)) if seq <= last => None, // duplicate
                    (Some(seq), Some(last)) if seq > last + 1 => {
                        tracing::warn!(seq, last, "gap in the stream; resubscribing from the cursor");
                        break;
                    }
                    (Some(seq), _) => {
                        cursor.seq = Some(seq);
                        Some(Update::Event { seq, ts: frame.ts.unwrap_or(0), data: frame.data.unwrap_or(Value::Null) })
                    }
                    (None, _) => None,
                },
                "caught_up" => frame.seq.map(|seq| Update::CaughtUp { seq }),
                "error" => {
                    let message = format!("{}: {}", frame.code.unwrap_or_default(), frame.message.unwrap_or_default());
                    return Err(FollowError::Refused(message));
                }
                _ => None,
            };
            if let Some(update) = update {
                if !on_update(&update, &cursor) {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
            }
        }
        let _ = socket.close(None).await;
        let immediate = matches!(close_code, Some(close::RESTART) | Some(close::GOING_AWAY));
        if !immediate {
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// Full jitter: a random wait between zero and `max`.
fn jitter(max: Duration) -> Duration {
    max.mul_f64(rand::random::<f64>())
}

/// Publishes one event over HTTP; returns the status and the JSON answer.
pub async fn publish(
    http: &reqwest::Client,
    base: &str,
    room: &RoomName,
    data: &Value,
    idempotency_key: Option<&str>,
    expected_seq: Option<u64>,
) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/v1/rooms/{room}/events", base.trim_end_matches('/'));
    let mut body = serde_json::json!({ "data": data });
    if let Some(expected) = expected_seq {
        body["expected_seq"] = expected.into();
    }
    let mut request = http.post(url).json(&body);
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let answer = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, answer))
}
