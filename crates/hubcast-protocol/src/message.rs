//! WebSocket messages: parsing client messages and encoding server messages.
//! This module and [`crate::frame`] (server frames decoded, through the
//! encoder here) are the only places that know the JSON shape of frames.
//!
//! Every frame is a JSON text frame with a `type`. See docs/protocol.md.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::ErrorCode;
use crate::room::RoomName;

/// A message from a client, validated.
#[derive(Debug)]
pub enum ClientMessage {
    Subscribe(SubscribeRequest),
    Unsubscribe {
        room: RoomName,
    },
    Publish(PublishRequest),
    /// `publish_batch {id, events}`: an atomic batch, answered by one
    /// `batch_ack` or one `error`.
    PublishBatch {
        id: String,
        events: Vec<crate::batch::BatchEventRequest>,
    },
    Ping,
    /// A token for this session: the first credentials, or a refresh.
    Auth {
        token: String,
    },
    /// `presence {room, id?}`: the room's member list. `id` is echoed in the
    /// answer (and in an `error`), so a refusal is not taken for a
    /// subscription's.
    Presence {
        room: RoomName,
        id: Option<String>,
    },
}

/// `subscribe {room, cursor?, epoch?, rewind?, presence?}`: where the client
/// wants the room's stream to start, and whether it enters the room's presence.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    pub room: RoomName,
    pub cursor: Option<u64>,
    pub epoch: Option<String>,
    pub rewind: Option<u64>,
    /// Enter the room's presence and receive `join`/`leave` frames.
    pub presence: bool,
}

/// `publish {id, room, data, expected_seq?, ephemeral?}`.
#[derive(Debug)]
pub struct PublishRequest {
    pub id: String,
    pub room: RoomName,
    pub data: Box<RawValue>,
    pub expected_seq: Option<u64>,
    /// Deliver to the room's current subscribers only: not stored, no seq
    /// (the namespace must allow it; `expected_seq` is refused with it).
    pub ephemeral: bool,
}

/// A client message that could not be accepted: the `error` frame to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// The `id` of the offending message, when it had one.
    pub id: Option<String>,
    /// When a refusal is for now: how long the client should wait before it
    /// asks again (the `error` frame's `retry_after_ms`).
    pub retry_after_ms: Option<u64>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>, id: Option<&str>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
            id: id.map(str::to_owned),
            retry_after_ms: None,
        }
    }

    /// The same refusal, telling the client to wait `ms` before asking again.
    pub fn retry_after(mut self, ms: u64) -> ProtocolError {
        self.retry_after_ms = Some(ms);
        self
    }
}

/// The flat shape every client message is read into before it is checked
/// against its type. Reading into one struct (instead of a tagged enum) gives
/// precise errors ("missing field room") and lets `data` stay raw JSON.
#[derive(Deserialize)]
struct RawClientMessage<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    room: Option<String>,
    cursor: Option<u64>,
    epoch: Option<String>,
    rewind: Option<u64>,
    id: Option<String>,
    data: Option<Box<RawValue>>,
    expected_seq: Option<u64>,
    token: Option<String>,
    presence: Option<bool>,
    ephemeral: Option<bool>,
    events: Option<Vec<crate::batch::RawBatchEvent>>,
}

/// Checks that event data every JSON reader can take: the JSON grammar allows
/// numbers no double can hold (`1e999`), which many readers (serde_json,
/// and so the Rust client) refuse. Such data is refused at the door instead
/// of being stored and failing every subscriber later.
///
/// It walks the value as `serde_json::Value` would read it (same numbers, same
/// nesting limit) without building it: a publish's data is stored and sent as
/// the raw text, and building the tree cost several allocations per publish.
pub fn check_data(data: &RawValue) -> Result<(), String> {
    serde_json::from_str::<Readable>(data.get())
        .map(|_| ())
        .map_err(|err| format!("data: {err}"))
}

/// A JSON value that was read through and dropped.
struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Readable, D::Error> {
        deserializer.deserialize_any(ReadThrough)
    }
}

struct ReadThrough;

impl<'de> serde::de::Visitor<'de> for ReadThrough {
    type Value = Readable;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_str<E>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_unit<E>(self) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Readable, A::Error> {
        while items.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Readable, A::Error> {
        while entries
            .next_entry::<serde::de::IgnoredAny, Readable>()?
            .is_some()
        {}
        Ok(Readable)
    }
}

/// Why a publish with both `ephemeral` and `expected_seq` is refused.
pub const EPHEMERAL_WITH_EXPECTED_SEQ: &str =
    "`expected_seq` cannot be used with `ephemeral`: an ephemeral message gets no seq";

/// The longest `id` accepted on a publish (it doubles as the idempotency key).
pub const MAX_ID_LEN: usize = 128;

/// Parses and validates one text frame from a client.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    let raw: RawClientMessage = serde_json::from_str(text).map_err(|err| {
        let code = if err.is_data() {
            ErrorCode::BadRequest
        } else {
            ErrorCode::InvalidJson
        };
        ProtocolError::new(code, err.to_string(), None)
    })?;
    let id = raw.id.as_deref();
    let kind = raw
        .kind
        .ok_or_else(|| ProtocolError::new(ErrorCode::BadRequest, "missing field `type`", id))?;
    let room = |raw_room: Option<String>| -> Result<RoomName, ProtocolError> {
        let name = raw_room
            .ok_or_else(|| ProtocolError::new(ErrorCode::BadRequest, "missing field `room`", id))?;
        RoomName::parse(&name)
            .map_err(|err| ProtocolError::new(ErrorCode::InvalidRoom, err.to_string(), id))
    };
    match kind {
        "subscribe"
            if [raw.cursor, raw.rewind]
                .iter()
                .flatten()
                .any(|&n| n > crate::request::MAX_SEQ) =>
        {
            Err(ProtocolError::new(
                ErrorCode::BadRequest,
                format!(
                    "`cursor` and `rewind` are at most {}",
                    crate::request::MAX_SEQ
                ),
                None,
            ))
        }
        "publish"
            if raw
                .expected_seq
                .is_some_and(|n| n > crate::request::MAX_SEQ) =>
        {
            Err(ProtocolError::new(
                ErrorCode::BadRequest,
                format!("`expected_seq` is at most {}", crate::request::MAX_SEQ),
                id,
            ))
        }
        "subscribe" => Ok(ClientMessage::Subscribe(SubscribeRequest {
            room: room(raw.room)?,
            cursor: raw.cursor,
            epoch: raw.epoch,
            rewind: raw.rewind,
            presence: raw.presence.unwrap_or(false),
        })),
        "presence" => {
            let room = room(raw.room)?;
            if raw
                .id
                .as_ref()
                .is_some_and(|i| i.is_empty() || i.len() > MAX_ID_LEN)
            {
                return Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    format!("`id` must be 1 to {MAX_ID_LEN} bytes"),
                    None,
                ));
            }
            Ok(ClientMessage::Presence { room, id: raw.id })
        }
        "unsubscribe" => Ok(ClientMessage::Unsubscribe {
            room: room(raw.room)?,
        }),
        "publish" => {
            let room = room(raw.room)?;
            let msg_id = raw.id.clone().ok_or_else(|| {
                ProtocolError::new(ErrorCode::BadRequest, "missing field `id`", None)
            })?;
            // The id is the publish's idempotency key: the same rule as the
            // `Idempotency-Key` header (1 to 128 visible ASCII characters).
            if crate::request::idempotency_key(msg_id.as_bytes()).is_err() {
                return Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    format!("`id` must be 1 to {MAX_ID_LEN} visible ASCII characters"),
                    None,
                ));
            }
            let data = raw.data.ok_or_else(|| {
                ProtocolError::new(ErrorCode::BadRequest, "missing field `data`", id)
            })?;
            check_data(&data)
                .map_err(|message| ProtocolError::new(ErrorCode::BadRequest, message, id))?;
            let ephemeral = raw.ephemeral.unwrap_or(false);
            if ephemeral && raw.expected_seq.is_some() {
                return Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    EPHEMERAL_WITH_EXPECTED_SEQ,
                    id,
                ));
            }
            Ok(ClientMessage::Publish(PublishRequest {
                id: msg_id,
                room,
                data,
                expected_seq: raw.expected_seq,
                ephemeral,
            }))
        }
        "publish_batch" => {
            let msg_id = raw.id.clone().ok_or_else(|| {
                ProtocolError::new(ErrorCode::BadRequest, "missing field `id`", None)
            })?;
            if crate::request::idempotency_key(msg_id.as_bytes()).is_err() {
                return Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    format!("`id` must be 1 to {MAX_ID_LEN} visible ASCII characters"),
                    None,
                ));
            }
            let events = raw.events.ok_or_else(|| {
                ProtocolError::new(ErrorCode::BadRequest, "missing field `events`", id)
            })?;
            let events = crate::batch::check_batch(events)
                .map_err(|(code, message)| ProtocolError::new(code, message, id))?;
            Ok(ClientMessage::PublishBatch { id: msg_id, events })
        }
        "ping" => Ok(ClientMessage::Ping),
        "auth" => match raw.token {
            Some(token) if !token.is_empty() => Ok(ClientMessage::Auth { token }),
            _ => Err(ProtocolError::new(
                ErrorCode::BadRequest,
                "missing field `token`",
                id,
            )),
        },
        other => Err(ProtocolError::new(
            ErrorCode::UnknownType,
            format!("unknown message type `{}`", truncate(other, 64)),
            id,
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A message a client sends, for encoding (the Rust client). Borrowed, like
/// [`ServerMessage`]; the server reads it back with [`parse_client_message`],
/// and a test checks that every kind does, so the two cannot drift.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientRequest<'a> {
    Subscribe {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rewind: Option<u64>,
        /// Sent only when `true`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        presence: bool,
    },
    Unsubscribe {
        room: &'a str,
    },
    Publish {
        id: &'a str,
        room: &'a str,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        expected_seq: Option<u64>,
        /// Sent only when `true`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        ephemeral: bool,
    },
    PublishBatch {
        id: &'a str,
        events: &'a [crate::batch::BatchEventOut<'a>],
    },
    Ping,
    Auth {
        token: &'a str,
    },
    Presence {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl ClientRequest<'_> {
    /// Encodes the message as a text frame payload.
    pub fn encode(&self) -> String {
        // As for server messages: strings, numbers and already-valid raw JSON only.
        serde_json::to_string(self).expect("client messages always serialize")
    }
}

/// One member of a room's presence: the token's `sub` (or the session id of
/// a session without one) and the token's `info` claim, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceMember {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// One event inside a `batch` frame (the room is named once, by the batch).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BatchEvent<'a> {
    pub seq: u64,
    pub ts: i64,
    pub data: &'a RawValue,
}

/// Messages the server sends. Encoded once; event frames are shared by every
/// subscriber of a room. Borrowed, so encoding copies nothing; readers decode
/// the same frames into the owned [`crate::frame::ServerFrame`].
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Welcome {
        session: &'a str,
        heartbeat_ms: u64,
    },
    Subscribed {
        room: &'a str,
        epoch: &'a str,
        head: u64,
        /// `Some(false)` in a room that does not deliver a socket publish to
        /// its sender (the namespace's `echo = false`); absent otherwise.
        #[serde(skip_serializing_if = "Option::is_none")]
        echo: Option<bool>,
    },
    Event {
        room: &'a str,
        seq: u64,
        ts: i64,
        data: &'a RawValue,
    },
    /// A live-only message: delivered to the room's current subscribers,
    /// never stored, no seq, never replayed.
    Ephemeral {
        room: &'a str,
        ts: i64,
        data: &'a RawValue,
    },
    /// Consecutive events of one room in one frame (namespaces with `batch_ms`).
    Batch {
        room: &'a str,
        events: &'a [BatchEvent<'a>],
    },
    /// The room's members: the answer to `presence`, and the first presence
    /// frame of a `presence: true` subscription.
    Presence {
        /// The `id` of the `presence` request this answers, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        room: &'a str,
        members: &'a [PresenceMember],
    },
    /// A member entered the room (its first session did).
    Join {
        room: &'a str,
        member: &'a PresenceMember,
    },
    /// A member left the room (its last session did, or its node died).
    Leave {
        room: &'a str,
        member: &'a PresenceMember,
    },
    CaughtUp {
        room: &'a str,
        seq: u64,
    },
    Reset {
        room: &'a str,
        epoch: &'a str,
        earliest: u64,
        /// Only on a reset in the middle of a live stream (the room's log
        /// was deleted): the stream continues after this seq, not after the
        /// `head` of `subscribed`.
        #[serde(skip_serializing_if = "Option::is_none")]
        head: Option<u64>,
    },
    Unsubscribed {
        room: &'a str,
    },
    /// A socket publish was accepted: committed with `seq`, or (`ephemeral:
    /// true`, no `seq`) handed to the room's subscribers.
    Ack {
        id: &'a str,
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        ephemeral: bool,
    },
    /// A socket `publish_batch` was committed: one receipt per event, in
    /// request order.
    BatchAck {
        id: &'a str,
        events: &'a [crate::batch::BatchReceipt],
    },
    /// The session's token was accepted.
    Authenticated {
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    },
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        /// The room's head, on a `conflict`.
        #[serde(skip_serializing_if = "Option::is_none")]
        head: Option<u64>,
        /// On a batch's `conflict`: the index of the item that conflicted.
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// On a refusal that is for now: wait at least this long before
        /// asking again.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong,
}

impl ServerMessage<'_> {
    /// Encodes the message as a text frame payload.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: every field is a string, a
        // number, or already-validated raw JSON.
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// The `error` frame for a refused client message.
pub fn encode_error(err: &ProtocolError, room: Option<&str>) -> String {
    ServerMessage::Error {
        code: err.code.as_str(),
        message: &err.message,
        id: err.id.as_deref(),
        room,
        head: None,
        index: None,
        retry_after_ms: err.retry_after_ms,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_data_refuses_exactly_what_a_value_refuses() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let cases = [
            "1".to_owned(),
            "-0.5e3".to_owned(),
            "18446744073709551616".to_owned(),
            "1e308".to_owned(),
            "1e999".to_owned(),
            "-1e999".to_owned(),
            r#"{"a":[1e999]}"#.to_owned(),
            r#"{"a":{"b":null,"a":true}}"#.to_owned(),
            r#""\ud83d\ude00 \n""#.to_owned(),
            r#""\ud800""#.to_owned(),
            deep(100),
            deep(200),
            "[]".to_owned(),
            "{}".to_owned(),
        ];
        for case in cases {
            let Ok(raw) = serde_json::from_str::<Box<RawValue>>(&case) else {
                continue;
            };
            let by_value = serde_json::from_str::<serde_json::Value>(raw.get())
                .map(|_| ())
                .map_err(|e| format!("data: {e}"));
            assert_eq!(check_data(&raw), by_value, "{case}");
        }
        assert!(check_data(&serde_json::from_str::<Box<RawValue>>("1e999").unwrap()).is_err());
    }

    fn check(input: &str, expected: &str) {
        let got = match parse_client_message(input) {
            Ok(msg) => format!("{msg:?}"),
            Err(err) => format!("error {} {}", err.code, err.id.as_deref().unwrap_or("-")),
        };
        assert!(
            got.starts_with(expected),
            "{input}\n got: {got}\nwant: {expected}"
        );
    }

    #[test]
    fn client_messages() {
        check(r#"{"type":"ping"}"#, "Ping");
        check(
            r#"{"type":"publish_batch","id":"b","events":[{"room":"a","data":1}]}"#,
            "PublishBatch { id: \"b\", events: [BatchEventRequest { room: \"a\"",
        );
        check(
            r#"{"type":"publish_batch","id":"b","events":[]}"#,
            "error bad_request b",
        );
        check(
            r#"{"type":"publish_batch","id":"b","events":[{"room":"a b","data":1}]}"#,
            "error invalid_room b",
        );
        check(
            r#"{"type":"publish_batch","events":[{"room":"a","data":1}]}"#,
            "error bad_request -",
        );
        check(
            r#"{"type":"auth","token":"a.b.c"}"#,
            "Auth { token: \"a.b.c\" }",
        );
        check(r#"{"type":"auth"}"#, "error bad_request");
        check(r#"{"type":"subscribe","room":"a","cursor":3,"epoch":"e"}"#, "Subscribe(SubscribeRequest { room: \"a\", cursor: Some(3), epoch: Some(\"e\"), rewind: None");
        check(
            r#"{"type":"subscribe","room":"a","rewind":5}"#,
            "Subscribe(SubscribeRequest { room: \"a\", cursor: None, epoch: None, rewind: Some(5)",
        );
        check(r#"{"type":"subscribe","room":"a","presence":true}"#, "Subscribe(SubscribeRequest { room: \"a\", cursor: None, epoch: None, rewind: None, presence: true");
        check(
            r#"{"type":"subscribe","room":"a","presence":1}"#,
            "error bad_request",
        );
        check(
            r#"{"type":"presence","room":"a"}"#,
            "Presence { room: \"a\", id: None }",
        );
        check(
            r#"{"type":"presence","room":"a","id":"q1"}"#,
            "Presence { room: \"a\", id: Some(\"q1\") }",
        );
        check(
            r#"{"type":"presence","room":"a","id":""}"#,
            "error bad_request",
        );
        check(r#"{"type":"presence"}"#, "error bad_request");
        check(
            r#"{"type":"unsubscribe","room":"a"}"#,
            "Unsubscribe { room: \"a\" }",
        );
        check(
            r#"{"type":"publish","id":"p1","room":"a","data":{"x":[1,2]}}"#,
            "Publish(PublishRequest { id: \"p1\", room: \"a\", data: RawValue({\"x\":[1,2]})",
        );
        check(
            r#"{"type":"subscribe","room":"a","extra":true}"#,
            "Subscribe",
        );
        check(r#"not json"#, "error invalid_json");
        check(r#"{"type":"subscribe""#, "error invalid_json");
        check(r#"[1,2]"#, "error bad_request");
        check(r#"{"room":"a"}"#, "error bad_request");
        check(r#"{"type":"subscribe"}"#, "error bad_request");
        check(
            r#"{"type":"subscribe","room":"bad room"}"#,
            "error invalid_room",
        );
        check(
            r#"{"type":"subscribe","room":"a","cursor":-1}"#,
            "error bad_request",
        );
        check(
            r#"{"type":"subscribe","room":"a","cursor":"3"}"#,
            "error bad_request",
        );
        check(
            r#"{"type":"publish","room":"a","data":1}"#,
            "error bad_request -",
        );
        check(
            r#"{"type":"publish","id":"p","room":"a"}"#,
            "error bad_request p",
        );
        check(
            r#"{"type":"publish","id":"","room":"a","data":1}"#,
            "error bad_request",
        );
        check(r#"{"type":"dance","id":"x"}"#, "error unknown_type x");
        check(
            r#"{"type":"publish","id":"e","room":"a","data":1,"ephemeral":true}"#,
            "Publish(PublishRequest { id: \"e\", room: \"a\", data: RawValue(1), expected_seq: None, ephemeral: true",
        );
        check(
            r#"{"type":"publish","id":"e","room":"a","data":1,"ephemeral":true,"expected_seq":1}"#,
            "error bad_request e",
        );
        check(
            r#"{"type":"publish","id":"e","room":"a","data":1,"ephemeral":"yes"}"#,
            "error bad_request",
        );
        check(
            r#"{"type":"publish","id":"p","room":"a","data":1e999}"#,
            "error bad_request p",
        );
        check(r#"{"type":7}"#, "error bad_request");
    }

    #[test]
    fn socket_ids_and_sequence_numbers_follow_the_http_rules() {
        let refused = |text: &str| parse_client_message(text).expect_err(text).code;
        assert_eq!(
            refused(r#"{"type":"publish","id":"a b","room":"r","data":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            refused(r#"{"type":"subscribe","room":"r","cursor":9223372036854775808}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            refused(r#"{"type":"subscribe","room":"r","rewind":18446744073709551615}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            refused(
                r#"{"type":"publish","id":"k","room":"r","data":1,"expected_seq":9223372036854775808}"#
            ),
            ErrorCode::BadRequest
        );
        assert!(parse_client_message(
            r#"{"type":"subscribe","room":"r","cursor":9223372036854775807}"#
        )
        .is_ok());
    }

    #[test]
    fn every_client_request_parses_back_to_itself() {
        let data = RawValue::from_string(r#"{"x": [1, 2.5, "é"]}"#.into()).unwrap();
        let batch = [
            crate::batch::BatchEventOut {
                room: "a",
                data: &data,
                expected_seq: Some(2),
            },
            crate::batch::BatchEventOut {
                room: "b",
                data: &data,
                expected_seq: None,
            },
        ];
        let requests = [
            ClientRequest::Subscribe {
                room: "a",
                cursor: None,
                epoch: None,
                rewind: None,
                presence: false,
            },
            ClientRequest::Subscribe {
                room: "a:1",
                cursor: Some(3),
                epoch: Some("e"),
                rewind: Some(5),
                presence: true,
            },
            ClientRequest::Unsubscribe { room: "a" },
            ClientRequest::Publish {
                id: "p\"1",
                room: "a",
                data: &data,
                expected_seq: None,
                ephemeral: false,
            },
            ClientRequest::Publish {
                id: "p",
                room: "a",
                data: &data,
                expected_seq: Some(0),
                ephemeral: false,
            },
            ClientRequest::Publish {
                id: "e",
                room: "a",
                data: &data,
                expected_seq: None,
                ephemeral: true,
            },
            ClientRequest::PublishBatch {
                id: "b",
                events: &batch,
            },
            ClientRequest::Ping,
            ClientRequest::Auth { token: "a.b.c" },
            ClientRequest::Presence {
                room: "a",
                id: None,
            },
            ClientRequest::Presence {
                room: "a",
                id: Some("presence:1"),
            },
        ];
        for request in requests {
            let text = request.encode();
            let parsed = parse_client_message(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            // A new kind of request fails to compile here until it is compared.
            let same = match (request, &parsed) {
                (
                    ClientRequest::Subscribe {
                        room,
                        cursor,
                        epoch,
                        rewind,
                        presence,
                    },
                    ClientMessage::Subscribe(s),
                ) => {
                    (room, cursor, epoch, rewind, presence)
                        == (
                            s.room.as_str(),
                            s.cursor,
                            s.epoch.as_deref(),
                            s.rewind,
                            s.presence,
                        )
                }
                (ClientRequest::Unsubscribe { room }, ClientMessage::Unsubscribe { room: r }) => {
                    room == r.as_str()
                }
                (
                    ClientRequest::Publish {
                        id,
                        room,
                        data,
                        expected_seq,
                        ephemeral,
                    },
                    ClientMessage::Publish(p),
                ) => {
                    (id, room, data.get(), expected_seq, ephemeral)
                        == (
                            p.id.as_str(),
                            p.room.as_str(),
                            p.data.get(),
                            p.expected_seq,
                            p.ephemeral,
                        )
                }
                (
                    ClientRequest::PublishBatch { id, events },
                    ClientMessage::PublishBatch { id: i, events: e },
                ) => {
                    id == i
                        && events.len() == e.len()
                        && events.iter().zip(e).all(|(sent, got)| {
                            (sent.room, sent.data.get(), sent.expected_seq)
                                == (got.room.as_str(), got.data.get(), got.expected_seq)
                        })
                }
                (ClientRequest::Ping, ClientMessage::Ping) => true,
                (ClientRequest::Auth { token }, ClientMessage::Auth { token: t }) => token == t,
                (
                    ClientRequest::Presence { room, id },
                    ClientMessage::Presence { room: r, id: i },
                ) => (room, id) == (r.as_str(), i.as_deref()),
                (
                    ClientRequest::Subscribe { .. }
                    | ClientRequest::Unsubscribe { .. }
                    | ClientRequest::Publish { .. }
                    | ClientRequest::PublishBatch { .. }
                    | ClientRequest::Ping
                    | ClientRequest::Auth { .. }
                    | ClientRequest::Presence { .. },
                    _,
                ) => false,
            };
            assert!(same, "{text} parsed as {parsed:?}");
        }
        assert_eq!(
            ClientRequest::Subscribe {
                room: "a",
                cursor: None,
                epoch: None,
                rewind: None,
                presence: false
            }
            .encode(),
            r#"{"type":"subscribe","room":"a"}"#
        );
        assert_eq!(
            ClientRequest::Publish {
                id: "p",
                room: "a",
                data: &data,
                expected_seq: Some(4),
                ephemeral: false,
            }
            .encode(),
            r#"{"type":"publish","id":"p","room":"a","data":{"x": [1, 2.5, "é"]},"expected_seq":4}"#
        );
    }

    #[test]
    fn server_messages() {
        let data = RawValue::from_string(r#"{"p":0.5}"#.into()).unwrap();
        let event = ServerMessage::Event {
            room: "r",
            seq: 7,
            ts: 1000,
            data: &data,
        };
        assert_eq!(
            event.encode(),
            r#"{"type":"event","room":"r","seq":7,"ts":1000,"data":{"p":0.5}}"#
        );
        assert_eq!(ServerMessage::Pong.encode(), r#"{"type":"pong"}"#);
        assert_eq!(
            ServerMessage::Subscribed {
                room: "r",
                epoch: "e",
                head: 3,
                echo: None
            }
            .encode(),
            r#"{"type":"subscribed","room":"r","epoch":"e","head":3}"#
        );
        assert_eq!(
            ServerMessage::Subscribed {
                room: "r",
                epoch: "e",
                head: 3,
                echo: Some(false)
            }
            .encode(),
            r#"{"type":"subscribed","room":"r","epoch":"e","head":3,"echo":false}"#
        );
        assert_eq!(
            ServerMessage::CaughtUp { room: "r", seq: 3 }.encode(),
            r#"{"type":"caught_up","room":"r","seq":3}"#
        );
        let events = [
            BatchEvent {
                seq: 7,
                ts: 1000,
                data: &data,
            },
            BatchEvent {
                seq: 8,
                ts: 1001,
                data: &data,
            },
        ];
        assert_eq!(
            ServerMessage::Batch {
                room: "r",
                events: &events
            }
            .encode(),
            r#"{"type":"batch","room":"r","events":[{"seq":7,"ts":1000,"data":{"p":0.5}},{"seq":8,"ts":1001,"data":{"p":0.5}}]}"#
        );
        let alice = PresenceMember {
            id: "alice".into(),
            info: Some(serde_json::json!({"name": "A"})),
        };
        let bob = PresenceMember {
            id: "bob".into(),
            info: None,
        };
        assert_eq!(
            ServerMessage::Presence {
                id: None,
                room: "r",
                members: &[alice.clone(), bob.clone()]
            }
            .encode(),
            r#"{"type":"presence","room":"r","members":[{"id":"alice","info":{"name":"A"}},{"id":"bob"}]}"#
        );
        assert_eq!(
            ServerMessage::Presence {
                id: Some("q"),
                room: "r",
                members: &[]
            }
            .encode(),
            r#"{"type":"presence","id":"q","room":"r","members":[]}"#
        );
        assert_eq!(
            ServerMessage::Join {
                room: "r",
                member: &bob
            }
            .encode(),
            r#"{"type":"join","room":"r","member":{"id":"bob"}}"#
        );
        assert_eq!(
            ServerMessage::Leave {
                room: "r",
                member: &bob
            }
            .encode(),
            r#"{"type":"leave","room":"r","member":{"id":"bob"}}"#
        );
        let err = ProtocolError::new(ErrorCode::UnknownType, "nope", Some("i"));
        assert_eq!(
            encode_error(&err, None),
            r#"{"type":"error","code":"unknown_type","message":"nope","id":"i"}"#
        );
    }
}
