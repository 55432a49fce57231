//! The Pusher wire format (protocol 7): the client messages a Pusher socket
//! sends, and every frame it is sent. Only this module knows these JSON
//! shapes, as only the protocol crate knows hubcast's.
//!
//! How a room's event becomes a Pusher event: an event whose data is an
//! object with a string `event` and a `data` (what the Pusher HTTP API and
//! client events store, and what a hubcast publisher writes to reach
//! pusher-js) is that Pusher event, its `data` sent as a string (a JSON
//! string as it is, any other value as its JSON text); its optional
//! `socket_id` is the Pusher connection excluded from it, its `user_id` the
//! sender of a client event on a presence channel. Any other data arrives
//! as the event [`FOREIGN_EVENT`] with the whole data as its JSON text.

use std::borrow::Cow;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::PresenceMember;

/// The Pusher event name of room data that does not name its own event.
pub const FOREIGN_EVENT: &str = "hubcast:event";

/// A message from a Pusher client.
#[derive(Debug)]
pub enum ClientMessage {
    Ping,
    Pong,
    Subscribe {
        channel: String,
        auth: Option<String>,
        channel_data: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    Signin {
        auth: String,
        user_data: String,
    },
    /// A `client-` event to relay on `channel`.
    ClientEvent {
        event: String,
        channel: String,
        data: Box<RawValue>,
    },
}

impl PartialEq for ClientMessage {
    /// Equal when their Debug forms are: `RawValue` has no `PartialEq`, and
    /// its Debug form is its JSON text (for tests).
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

/// Why a client message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message is not JSON with an `event`: {0}")]
    Malformed(String),
    #[error("{0} needs a `data` object with {1}")]
    Missing(&'static str, &'static str),
    #[error("unknown event `{0}`")]
    Unknown(String),
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
struct SubscribeData {
    channel: Option<String>,
    auth: Option<String>,
    channel_data: Option<String>,
}

#[derive(Deserialize, Default)]
struct SigninData {
    auth: Option<String>,
    user_data: Option<String>,
}

/// `data` as an object, whether sent as one or as a JSON string holding one
/// (some clients stringify `data` both ways).
fn data_object<T: for<'de> Deserialize<'de> + Default>(data: Option<&RawValue>) -> T {
    let Some(data) = data else {
        return T::default();
    };
    if let Ok(value) = serde_json::from_str::<T>(data.get()) {
        return value;
    }
    serde_json::from_str::<String>(data.get())
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

impl ClientMessage {
    pub fn parse(text: &str) -> Result<ClientMessage, FrameError> {
        let raw: RawMessage =
            serde_json::from_str(text).map_err(|err| FrameError::Malformed(err.to_string()))?;
        let data = raw.data.as_deref();
        match raw.event.as_ref() {
            "pusher:ping" => Ok(ClientMessage::Ping),
            "pusher:pong" => Ok(ClientMessage::Pong),
            "pusher:subscribe" => {
                let d: SubscribeData = data_object(data);
                Ok(ClientMessage::Subscribe {
                    channel: d
                        .channel
                        .ok_or(FrameError::Missing("pusher:subscribe", "a channel"))?,
                    auth: d.auth,
                    channel_data: d.channel_data,
                })
            }
            "pusher:unsubscribe" => {
                let d: SubscribeData = data_object(data);
                Ok(ClientMessage::Unsubscribe {
                    channel: d
                        .channel
                        .ok_or(FrameError::Missing("pusher:unsubscribe", "a channel"))?,
                })
            }
            "pusher:signin" => {
                let d: SigninData = data_object(data);
                match (d.auth, d.user_data) {
                    (Some(auth), Some(user_data)) => Ok(ClientMessage::Signin { auth, user_data }),
                    _ => Err(FrameError::Missing("pusher:signin", "auth and user_data")),
                }
            }
            event if event.starts_with("client-") => Ok(ClientMessage::ClientEvent {
                event: event.to_owned(),
                channel: raw
                    .channel
                    .ok_or(FrameError::Missing("a client event", "a channel"))?,
                data: raw
                    .data
                    .unwrap_or_else(|| RawValue::from_string("null".into()).expect("valid JSON")),
            }),
            other => Err(FrameError::Unknown(other.to_owned())),
        }
    }
}

/// What a room stores for a Pusher event (HTTP API triggers, client events):
/// see the module doc.
#[derive(Serialize)]
pub struct StoredEvent<'a> {
    pub event: &'a str,
    pub data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
}

impl StoredEvent<'_> {
    pub fn to_raw(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).expect("a stored Pusher event serializes")
    }
}

#[derive(Deserialize)]
struct StoredShape<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    socket_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
}

/// A room's event (or ephemeral message) as a Pusher frame on `channel`,
/// and the socket id it must not be sent to. Encoded once per event and
/// shared by every Pusher subscriber, as hubcast's own frames are.
pub fn encode_event(channel: &str, data: &RawValue) -> (Utf8Bytes, Option<String>) {
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'a str,
        channel: &'a str,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<&'a str>,
    }
    let shape = serde_json::from_str::<StoredShape>(data.get())
        .ok()
        .filter(|s| s.event.is_some() && s.data.is_some());
    let (event, payload, socket_id, user_id) = match &shape {
        Some(s) => (
            s.event.as_deref().unwrap_or(FOREIGN_EVENT),
            s.data.unwrap_or(data),
            s.socket_id.as_deref(),
            s.user_id.as_deref(),
        ),
        None => (FOREIGN_EVENT, data, None, None),
    };
    let as_string;
    let payload = if payload.get().starts_with('"') {
        payload
    } else {
        as_string = string_value(payload.get());
        &*as_string
    };
    let frame = serde_json::to_string(&Frame {
        event,
        channel,
        data: payload,
        user_id,
    })
    .expect("a Pusher frame serializes");
    (frame.into(), socket_id.map(str::to_owned))
}

/// `text` as a JSON string value.
fn string_value(text: &str) -> Box<RawValue> {
    serde_json::value::to_raw_value(text).expect("a string serializes")
}

fn frame(event: &str, channel: Option<&str>, data: Option<&RawValue>) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    }
    serde_json::to_string(&Frame {
        event,
        channel,
        data,
    })
    .expect("a Pusher frame serializes")
    .into()
}

/// `data` serialized, then wrapped as a JSON string (Pusher sends the data
/// of its own events as strings).
fn stringified(data: &impl Serialize) -> Box<RawValue> {
    string_value(&serde_json::to_string(data).expect("frame data serializes"))
}

pub fn connection_established(socket_id: &str, activity_timeout: u64) -> Utf8Bytes {
    let data = serde_json::json!({"socket_id": socket_id, "activity_timeout": activity_timeout});
    frame(
        "pusher:connection_established",
        None,
        Some(&stringified(&data)),
    )
}

pub fn pong() -> Utf8Bytes {
    frame("pusher:pong", None, Some(&string_value("{}")))
}

pub fn ping() -> Utf8Bytes {
    frame("pusher:ping", None, Some(&string_value("{}")))
}

/// `pusher:error` (`code` may be absent, as Pusher sends for some refusals).
pub fn error(code: Option<u16>, message: &str) -> Utf8Bytes {
    let data = serde_json::json!({"code": code, "message": message});
    frame("pusher:error", None, Some(&to_raw(&data)))
}

/// `pusher:subscription_error` on `channel`, as pusher-js surfaces it on the
/// channel (`status` as an HTTP status: 401 refused auth, 400 bad request).
pub fn subscription_error(channel: &str, status: u16, message: &str) -> Utf8Bytes {
    let kind = if status == 401 || status == 403 {
        "AuthError"
    } else {
        "SubscriptionError"
    };
    let data = serde_json::json!({"type": kind, "error": message, "status": status});
    frame(
        "pusher:subscription_error",
        Some(channel),
        Some(&to_raw(&data)),
    )
}

/// `pusher_internal:subscription_succeeded` of a channel without presence.
pub fn subscription_succeeded(channel: &str) -> Utf8Bytes {
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        Some(&string_value("{}")),
    )
}

/// `pusher_internal:subscription_succeeded` of a presence channel, with
/// its members.
pub fn presence_succeeded(channel: &str, members: &[PresenceMember]) -> Utf8Bytes {
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let hash: serde_json::Map<String, serde_json::Value> = members
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                m.info.clone().unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    let data = serde_json::json!({"presence": {"ids": ids, "hash": hash, "count": ids.len()}});
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        Some(&stringified(&data)),
    )
}

pub fn member_added(channel: &str, member: &PresenceMember) -> Utf8Bytes {
    let data = serde_json::json!({"user_id": member.id, "user_info": member.info});
    frame(
        "pusher_internal:member_added",
        Some(channel),
        Some(&stringified(&data)),
    )
}

pub fn member_removed(channel: &str, member: &PresenceMember) -> Utf8Bytes {
    let data = serde_json::json!({"user_id": member.id});
    frame(
        "pusher_internal:member_removed",
        Some(channel),
        Some(&stringified(&data)),
    )
}

pub fn cache_miss(channel: &str) -> Utf8Bytes {
    frame("pusher:cache_miss", Some(channel), None)
}

pub fn signin_success(user_data: &str) -> Utf8Bytes {
    let data = serde_json::json!({"user_data": user_data});
    frame("pusher:signin_success", None, Some(&stringified(&data)))
}

fn to_raw(value: &serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("JSON serializes")
}

/// A presence `channel_data` (`{"user_id": …, "user_info": …}`) as the
/// member it enters: a numeric `user_id` becomes its decimal text.
pub fn presence_member(channel_data: &str) -> Option<PresenceMember> {
    let value: serde_json::Value = serde_json::from_str(channel_data).ok()?;
    Some(PresenceMember {
        id: id_text(value.get("user_id")?)?,
        info: value
            .get("user_info")
            .filter(|info| !info.is_null())
            .cloned(),
    })
}

/// The `id` of a signed-in user's `user_data`.
pub fn user_id(user_data: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(user_data).ok()?;
    id_text(value.get("id")?)
}

/// A user id as Pusher treats it: a non-empty string, or a number as text.
fn id_text(id: &serde_json::Value) -> Option<String> {
    match id {
        serde_json::Value::String(id) if !id.is_empty() => Some(id.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.into()).unwrap()
    }

    fn check_event(data: &str, expected: &str, excluded: Option<&str>) {
        let (frame, socket) = encode_event("c", &raw(data));
        assert_eq!(frame.as_str(), expected, "{data}");
        assert_eq!(socket.as_deref(), excluded, "{data}");
    }

    #[test]
    fn room_events_as_pusher_events() {
        check_event(
            r#"{"event":"e","data":"{\"a\":1}"}"#,
            r#"{"event":"e","channel":"c","data":"{\"a\":1}"}"#,
            None,
        );
        check_event(
            r#"{"event":"e","data":{"a":1},"socket_id":"1.2"}"#,
            r#"{"event":"e","channel":"c","data":"{\"a\":1}"}"#,
            Some("1.2"),
        );
        check_event(
            r#"{"event":"client-x","data":"hi","user_id":"u"}"#,
            r#"{"event":"client-x","channel":"c","data":"hi","user_id":"u"}"#,
            None,
        );
        check_event(
            r#"{"price":3}"#,
            r#"{"event":"hubcast:event","channel":"c","data":"{\"price\":3}"}"#,
            None,
        );
        check_event(
            "7",
            r#"{"event":"hubcast:event","channel":"c","data":"7"}"#,
            None,
        );
        check_event(
            r#"{"event":"e"}"#,
            r#"{"event":"hubcast:event","channel":"c","data":"{\"event\":\"e\"}"}"#,
            None,
        );
    }

    #[test]
    fn client_messages() {
        use ClientMessage::*;
        let check = |text: &str, expected: Result<ClientMessage, FrameError>| {
            assert_eq!(ClientMessage::parse(text), expected, "{text}");
        };
        check(r#"{"event":"pusher:ping","data":{}}"#, Ok(Ping));
        check(
            r#"{"event":"pusher:subscribe","data":{"channel":"private-a","auth":"k:s"}}"#,
            Ok(Subscribe {
                channel: "private-a".into(),
                auth: Some("k:s".into()),
                channel_data: None,
            }),
        );
        check(
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#,
            Ok(Subscribe {
                channel: "a".into(),
                auth: None,
                channel_data: None,
            }),
        );
        check(
            r#"{"event":"pusher:subscribe","data":{}}"#,
            Err(FrameError::Missing("pusher:subscribe", "a channel")),
        );
        check(
            r#"{"event":"pusher:unsubscribe","data":{"channel":"a"}}"#,
            Ok(Unsubscribe {
                channel: "a".into(),
            }),
        );
        check(
            r#"{"event":"nope"}"#,
            Err(FrameError::Unknown("nope".into())),
        );
        assert!(matches!(
            ClientMessage::parse("[1]"),
            Err(FrameError::Malformed(_))
        ));
        match ClientMessage::parse(r#"{"event":"client-t","channel":"private-a","data":{"x":1}}"#) {
            Ok(ClientEvent {
                event,
                channel,
                data,
            }) => {
                assert_eq!(
                    (event.as_str(), channel.as_str(), data.get()),
                    ("client-t", "private-a", r#"{"x":1}"#)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn presence_members_and_frames() {
        let member = presence_member(r#"{"user_id":10,"user_info":{"name":"A"}}"#).unwrap();
        assert_eq!(member.id, "10");
        assert_eq!(presence_member(r#"{"user_id":"u"}"#).unwrap().info, None);
        assert_eq!(presence_member(r#"{"user_info":{}}"#), None);
        assert_eq!(user_id(r#"{"id":"42","name":"x"}"#).as_deref(), Some("42"));
        assert_eq!(
            presence_succeeded("presence-a", std::slice::from_ref(&member)).as_str(),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"presence-a","data":"{\"presence\":{\"count\":1,\"hash\":{\"10\":{\"name\":\"A\"}},\"ids\":[\"10\"]}}"}"#
        );
        assert_eq!(
            member_removed("presence-a", &member).as_str(),
            r#"{"event":"pusher_internal:member_removed","channel":"presence-a","data":"{\"user_id\":\"10\"}"}"#
        );
        assert_eq!(
            connection_established("1.2", 120).as_str(),
            r#"{"event":"pusher:connection_established","data":"{\"activity_timeout\":120,\"socket_id\":\"1.2\"}"}"#
        );
    }
}
