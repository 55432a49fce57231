//! Server frames as a reader sees them: owned and deserializable, for the Rust
//! client and for a node reading its peers' events from the bus. Every
//! event's `data` stays the raw JSON text it came as; it is never parsed into
//! a tree here.
//!
//! The server does not encode through these types. It encodes with the
//! borrowed [`ServerMessage`], so an `event` frame is written once, without a
//! copy of its data, and shared by every subscriber. Both types describe the
//! same frames: [`ServerFrame`] serializes by building the matching
//! [`ServerMessage`], and the tests decode every kind of message back to
//! itself, so the two cannot drift.
//!
//! Decoding takes one pass when `type` comes first, as it does in every frame
//! hubcast encodes. Otherwise (a frame written by hand, or re-serialized with
//! sorted keys) [`ServerFrame::decode`] reads the text twice: its `type`,
//! then its fields; a serde reader of another source reads the fields as raw
//! JSON, moves `type` to the front and decodes that. Either detour exists
//! because serde's derived internally tagged enums buffer the fields in a form
//! a `RawValue` cannot be read from.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::ReceivedErrorCode;
use crate::message::{BatchEvent, PresenceMember, ServerMessage};

/// One frame from the server (docs/protocol.md, "Server → client").
/// Decode with [`ServerFrame::decode`] (or any serde_json reader); unknown
/// fields are ignored, a frame of a known `type` with a missing or mistyped
/// field is an error.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    Welcome(WelcomeFrame),
    Subscribed(SubscribedFrame),
    Event(EventFrame),
    Ephemeral(EphemeralFrame),
    Batch(BatchFrame),
    Presence(PresenceFrame),
    Join(MemberFrame),
    Leave(MemberFrame),
    CaughtUp(CaughtUpFrame),
    Reset(ResetFrame),
    Unsubscribed(UnsubscribedFrame),
    Ack(AckFrame),
    BatchAck(BatchAckFrame),
    Authenticated(AuthenticatedFrame),
    Error(ErrorFrame),
    Pong,
    /// A `type` this version does not know (a newer server's). Readers ignore
    /// it; its other fields are not kept.
    Unknown {
        kind: String,
    },
}

/// `welcome`: the first frame of every session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WelcomeFrame {
    pub session: String,
    pub heartbeat_ms: u64,
}

/// `subscribed`: the subscription is accepted; the room's epoch and head.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscribedFrame {
    pub room: String,
    pub epoch: String,
    pub head: u64,
    /// `Some(false)` in a room that does not send a session its own publishes.
    pub echo: Option<bool>,
}

/// `event`: one event. Also the message nodes send each other on the bus.
#[derive(Debug, Clone, Deserialize)]
pub struct EventFrame {
    pub room: String,
    pub seq: u64,
    pub ts: i64,
    pub data: Box<RawValue>,
}

/// `ephemeral`: a live-only message (no seq, never stored or replayed).
/// Also what nodes send each other on the bus for one.
#[derive(Debug, Clone, Deserialize)]
pub struct EphemeralFrame {
    pub room: String,
    pub ts: i64,
    pub data: Box<RawValue>,
}

/// `batch`: consecutive live events of one room, oldest first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BatchFrame {
    pub room: String,
    pub events: Vec<BatchedEvent>,
}

/// One event of a `batch`: an `event` frame without `type` and `room`.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchedEvent {
    pub seq: u64,
    pub ts: i64,
    pub data: Box<RawValue>,
}

/// `presence`: a room's members, sorted by `id`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PresenceFrame {
    /// The `id` of the `presence` request this answers; absent on a subscription's list.
    pub id: Option<String>,
    pub room: String,
    pub members: Vec<PresenceMember>,
}

/// `join` or `leave`: a member entered or left a room's presence.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MemberFrame {
    pub room: String,
    pub member: PresenceMember,
}

/// `caught_up`: the replay is done through `seq`; what follows is live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CaughtUpFrame {
    pub room: String,
    pub seq: u64,
}

/// `reset`: the cursor cannot be served; reload, the stream goes on from the head.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResetFrame {
    pub room: String,
    pub epoch: String,
    pub earliest: u64,
    /// A live reset (the room's log was deleted): continue after this seq.
    #[serde(default)]
    pub head: Option<u64>,
}

/// `unsubscribed`: the unsubscribe took effect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UnsubscribedFrame {
    pub room: String,
}

/// `ack`: a socket publish was committed with `seq`, or (`ephemeral`, no
/// `seq`) an ephemeral publish was handed to the room's subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AckFrame {
    pub id: String,
    pub room: String,
    pub seq: Option<u64>,
    #[serde(default)]
    pub ephemeral: bool,
}

/// `batch_ack`: a socket `publish_batch` was committed; receipts in request order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchAckFrame {
    pub id: String,
    pub events: Vec<crate::batch::BatchReceipt>,
}

/// `authenticated`: the `auth` message's token was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuthenticatedFrame {
    pub sub: Option<String>,
    pub exp: Option<u64>,
}

/// `error`: a message was refused (or a session's token expired).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorFrame {
    pub code: ReceivedErrorCode,
    pub message: String,
    /// The publish or presence request this refuses.
    pub id: Option<String>,
    pub room: Option<String>,
    /// The room's head, with `conflict`.
    pub head: Option<u64>,
    /// With a batch's `conflict`: the index of the item that conflicted.
    pub index: Option<usize>,
}

impl ServerFrame {
    /// Decodes one text frame. One pass when `type` comes first (every frame
    /// hubcast encodes); else two over the text: its `type`, then its fields.
    pub fn decode(text: &str) -> Result<ServerFrame, serde_json::Error> {
        let type_first = text
            .trim_start()
            .strip_prefix('{')
            .is_some_and(|rest| rest.trim_start().starts_with("\"type\""));
        if type_first {
            return serde_json::from_str(text);
        }
        #[derive(Deserialize)]
        struct Tag {
            #[serde(rename = "type")]
            kind: Kind,
        }
        let tag: Tag = serde_json::from_str(text)?;
        let mut fields = serde_json::Deserializer::from_str(text);
        let frame = tag.kind.read(&mut fields)?;
        fields.end()?;
        Ok(frame)
    }

    /// Encodes the frame as the server would (an `Unknown` frame as just its `type`).
    pub fn encode(&self) -> String {
        // As `ServerMessage::encode`: every field is a string, a number, or raw JSON.
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

impl PartialEq for EventFrame {
    /// Raw data compares as text.
    fn eq(&self, other: &EventFrame) -> bool {
        (&self.room, self.seq, self.ts, self.data.get())
            == (&other.room, other.seq, other.ts, other.data.get())
    }
}

impl PartialEq for EphemeralFrame {
    /// Raw data compares as text.
    fn eq(&self, other: &EphemeralFrame) -> bool {
        (&self.room, self.ts, self.data.get()) == (&other.room, other.ts, other.data.get())
    }
}

impl PartialEq for BatchedEvent {
    /// Raw data compares as text.
    fn eq(&self, other: &BatchedEvent) -> bool {
        (self.seq, self.ts, self.data.get()) == (other.seq, other.ts, other.data.get())
    }
}

impl Serialize for ServerFrame {
    /// Through [`ServerMessage`], the server's encoder: one definition of the JSON shape.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let batch: Vec<BatchEvent<'_>>;
        let message = match self {
            ServerFrame::Welcome(f) => ServerMessage::Welcome {
                session: &f.session,
                heartbeat_ms: f.heartbeat_ms,
            },
            ServerFrame::Subscribed(f) => ServerMessage::Subscribed {
                room: &f.room,
                epoch: &f.epoch,
                head: f.head,
                echo: f.echo,
            },
            ServerFrame::Event(f) => ServerMessage::Event {
                room: &f.room,
                seq: f.seq,
                ts: f.ts,
                data: &f.data,
            },
            ServerFrame::Ephemeral(f) => ServerMessage::Ephemeral {
                room: &f.room,
                ts: f.ts,
                data: &f.data,
            },
            ServerFrame::Batch(f) => {
                batch = f
                    .events
                    .iter()
                    .map(|e| BatchEvent {
                        seq: e.seq,
                        ts: e.ts,
                        data: &e.data,
                    })
                    .collect();
                ServerMessage::Batch {
                    room: &f.room,
                    events: &batch,
                }
            }
            ServerFrame::Presence(f) => ServerMessage::Presence {
                id: f.id.as_deref(),
                room: &f.room,
                members: &f.members,
            },
            ServerFrame::Join(f) => ServerMessage::Join {
                room: &f.room,
                member: &f.member,
            },
            ServerFrame::Leave(f) => ServerMessage::Leave {
                room: &f.room,
                member: &f.member,
            },
            ServerFrame::CaughtUp(f) => ServerMessage::CaughtUp {
                room: &f.room,
                seq: f.seq,
            },
            ServerFrame::Reset(f) => ServerMessage::Reset {
                room: &f.room,
                epoch: &f.epoch,
                earliest: f.earliest,
                head: f.head,
            },
            ServerFrame::Unsubscribed(f) => ServerMessage::Unsubscribed { room: &f.room },
            ServerFrame::Ack(f) => ServerMessage::Ack {
                id: &f.id,
                room: &f.room,
                seq: f.seq,
                ephemeral: f.ephemeral,
            },
            ServerFrame::BatchAck(f) => ServerMessage::BatchAck {
                id: &f.id,
                events: &f.events,
            },
            ServerFrame::Authenticated(f) => ServerMessage::Authenticated {
                sub: f.sub.as_deref(),
                exp: f.exp,
            },
            ServerFrame::Error(f) => ServerMessage::Error {
                code: f.code.as_str(),
                message: &f.message,
                id: f.id.as_deref(),
                room: f.room.as_deref(),
                head: f.head,
                index: f.index,
            },
            ServerFrame::Pong => ServerMessage::Pong,
            ServerFrame::Unknown { kind } => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("type", kind)?;
                return map.end();
            }
        };
        message.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ServerFrame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ServerFrame, D::Error> {
        deserializer.deserialize_map(FrameVisitor)
    }
}

/// The `type` of a frame.
enum Kind {
    Welcome,
    Subscribed,
    Event,
    Ephemeral,
    Batch,
    Presence,
    Join,
    Leave,
    CaughtUp,
    Reset,
    Unsubscribed,
    Ack,
    BatchAck,
    Authenticated,
    Error,
    Pong,
    Unknown(String),
}

impl Kind {
    fn parse(kind: &str) -> Kind {
        match kind {
            "welcome" => Kind::Welcome,
            "subscribed" => Kind::Subscribed,
            "event" => Kind::Event,
            "ephemeral" => Kind::Ephemeral,
            "batch" => Kind::Batch,
            "presence" => Kind::Presence,
            "join" => Kind::Join,
            "leave" => Kind::Leave,
            "caught_up" => Kind::CaughtUp,
            "reset" => Kind::Reset,
            "unsubscribed" => Kind::Unsubscribed,
            "ack" => Kind::Ack,
            "batch_ack" => Kind::BatchAck,
            "authenticated" => Kind::Authenticated,
            "error" => Kind::Error,
            "pong" => Kind::Pong,
            other => Kind::Unknown(other.to_owned()),
        }
    }

    /// Reads the frame's fields (all of them, or the rest after `type`) as this kind's.
    fn read<'de, D: Deserializer<'de>>(self, fields: D) -> Result<ServerFrame, D::Error> {
        Ok(match self {
            Kind::Welcome => ServerFrame::Welcome(Deserialize::deserialize(fields)?),
            Kind::Subscribed => ServerFrame::Subscribed(Deserialize::deserialize(fields)?),
            Kind::Event => ServerFrame::Event(Deserialize::deserialize(fields)?),
            Kind::Ephemeral => ServerFrame::Ephemeral(Deserialize::deserialize(fields)?),
            Kind::Batch => ServerFrame::Batch(Deserialize::deserialize(fields)?),
            Kind::Presence => ServerFrame::Presence(Deserialize::deserialize(fields)?),
            Kind::Join => ServerFrame::Join(Deserialize::deserialize(fields)?),
            Kind::Leave => ServerFrame::Leave(Deserialize::deserialize(fields)?),
            Kind::CaughtUp => ServerFrame::CaughtUp(Deserialize::deserialize(fields)?),
            Kind::Reset => ServerFrame::Reset(Deserialize::deserialize(fields)?),
            Kind::Unsubscribed => ServerFrame::Unsubscribed(Deserialize::deserialize(fields)?),
            Kind::Ack => ServerFrame::Ack(Deserialize::deserialize(fields)?),
            Kind::BatchAck => ServerFrame::BatchAck(Deserialize::deserialize(fields)?),
            Kind::Authenticated => ServerFrame::Authenticated(Deserialize::deserialize(fields)?),
            Kind::Error => ServerFrame::Error(Deserialize::deserialize(fields)?),
            Kind::Pong => {
                IgnoredAny::deserialize(fields)?;
                ServerFrame::Pong
            }
            Kind::Unknown(kind) => {
                IgnoredAny::deserialize(fields)?;
                ServerFrame::Unknown { kind }
            }
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Kind, D::Error> {
        Ok(Kind::parse(&Text::deserialize(deserializer)?.0))
    }
}

/// A string that borrows from the input when it can (a key, a `type`).
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text<'de>, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = ServerFrame;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a server frame (a JSON object with a `type`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerFrame, A::Error> {
        let Some(first) = map.next_key::<Text<'de>>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first.0 == "type" {
            let kind: Kind = map.next_value()?;
            return kind.read(MapAccessDeserializer::new(map));
        }
        // `type` is not first: read every field raw, put `type` first, decode again.
        let mut fields: Vec<(String, Box<RawValue>)> =
            vec![(first.0.into_owned(), map.next_value()?)];
        while let Some(key) = map.next_key::<String>()? {
            fields.push((key, map.next_value()?));
        }
        let at = fields
            .iter()
            .position(|(key, _)| key == "type")
            .ok_or_else(|| de::Error::missing_field("type"))?;
        let kind = fields.remove(at);
        let mut text = String::with_capacity(
            fields
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 32,
        );
        for (key, value) in std::iter::once(&kind).chain(&fields) {
            text.push(if text.is_empty() { '{' } else { ',' });
            text.push_str(&serde_json::to_string(key).map_err(de::Error::custom)?);
            text.push(':');
            text.push_str(value.get());
        }
        text.push('}');
        serde_json::from_str(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::codes::ErrorCode;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    /// The frame with `type` moved last, every value kept as its raw text.
    fn type_last(text: &str) -> String {
        let fields: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(text).unwrap();
        let body: Vec<String> = fields
            .iter()
            .filter(|(key, _)| *key != "type")
            .chain(fields.get_key_value("type"))
            .map(|(key, value)| format!("{}:{}", serde_json::to_string(key).unwrap(), value.get()))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// Every kind of message the server encodes, with its optional fields both ways.
    fn every_message(data: &RawValue, members: &[PresenceMember]) -> Vec<String> {
        let events = [
            BatchEvent {
                seq: 7,
                ts: 1000,
                data,
            },
            BatchEvent {
                seq: 8,
                ts: -1,
                data,
            },
        ];
        let batch_receipts = [
            crate::batch::BatchReceipt {
                room: "a".into(),
                seq: 3,
            },
            crate::batch::BatchReceipt {
                room: "b".into(),
                seq: 1,
            },
        ];
        let messages = [
            ServerMessage::Welcome {
                session: "s1",
                heartbeat_ms: 15_000,
            },
            ServerMessage::Subscribed {
                room: "r",
                epoch: "e",
                head: 3,
                echo: None,
            },
            ServerMessage::Subscribed {
                room: "r",
                epoch: "e",
                head: 0,
                echo: Some(false),
            },
            ServerMessage::Event {
                room: "r:1",
                seq: 7,
                ts: 1_732_400_000_000,
                data,
            },
            ServerMessage::Ephemeral {
                room: "r:1",
                ts: 1_732_400_000_000,
                data,
            },
            ServerMessage::Batch {
                room: "r",
                events: &events,
            },
            ServerMessage::Presence {
                id: None,
                room: "r",
                members,
            },
            ServerMessage::Presence {
                id: Some("presence:1"),
                room: "r",
                members: &[],
            },
            ServerMessage::Join {
                room: "r",
                member: &members[0],
            },
            ServerMessage::Leave {
                room: "r",
                member: &members[1],
            },
            ServerMessage::CaughtUp {
                room: "r",
                seq: u64::MAX,
            },
            ServerMessage::Reset {
                room: "r",
                epoch: "e2",
                earliest: 4,
                head: None,
            },
            ServerMessage::Reset {
                room: "r",
                epoch: "e3",
                earliest: 1,
                head: Some(0),
            },
            ServerMessage::Unsubscribed { room: "r" },
            ServerMessage::Ack {
                id: "p\"1",
                room: "r",
                seq: Some(9),
                ephemeral: false,
            },
            ServerMessage::Ack {
                id: "e1",
                room: "r",
                seq: None,
                ephemeral: true,
            },
            ServerMessage::Authenticated {
                sub: Some("alice"),
                exp: Some(1_900_000_000),
            },
            ServerMessage::Authenticated {
                sub: None,
                exp: None,
            },
            ServerMessage::Error {
                code: "conflict",
                message: "head is 4",
                id: Some("p1"),
                room: Some("r"),
                head: Some(4),
                index: Some(2),
            },
            ServerMessage::Error {
                code: "a_newer_code",
                message: "",
                id: None,
                room: None,
                head: None,
                index: None,
            },
            ServerMessage::BatchAck {
                id: "b1",
                events: &batch_receipts,
            },
            ServerMessage::Pong,
        ];
        // A new kind of message fails to compile here until it has a name,
        // and the test below until it has a sample.
        let name = |message: &ServerMessage| match message {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Subscribed { .. } => "subscribed",
            ServerMessage::Event { .. } => "event",
            ServerMessage::Ephemeral { .. } => "ephemeral",
            ServerMessage::Batch { .. } => "batch",
            ServerMessage::Presence { .. } => "presence",
            ServerMessage::Join { .. } => "join",
            ServerMessage::Leave { .. } => "leave",
            ServerMessage::CaughtUp { .. } => "caught_up",
            ServerMessage::Reset { .. } => "reset",
            ServerMessage::Unsubscribed { .. } => "unsubscribed",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::BatchAck { .. } => "batch_ack",
            ServerMessage::Authenticated { .. } => "authenticated",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Pong => "pong",
        };
        let named: BTreeSet<&str> = messages.iter().map(name).collect();
        assert_eq!(
            named.len(),
            16,
            "a sample of every kind of message: {named:?}"
        );
        messages.iter().map(ServerMessage::encode).collect()
    }

    #[test]
    fn every_server_message_decodes_to_the_same_frame() {
        let data = raw(r#"{"p": 0.5, "big": 18446744073709551616, "s": "\u00e9\n", "z": [1e999]}"#);
        let members = [
            PresenceMember {
                id: "alice".into(),
                info: Some(serde_json::json!({"name": "A"})),
            },
            PresenceMember {
                id: "bob".into(),
                info: None,
            },
        ];
        for text in every_message(&data, &members) {
            let frame = ServerFrame::decode(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(!matches!(frame, ServerFrame::Unknown { .. }), "{text}");
            assert_eq!(frame.encode(), text, "decoded and encoded again");
            let reordered = type_last(&text);
            assert_eq!(
                ServerFrame::decode(&reordered).unwrap(),
                frame,
                "{reordered}"
            );
            assert_eq!(
                serde_json::from_slice::<ServerFrame>(reordered.as_bytes()).unwrap(),
                frame,
                "{reordered}"
            );
        }
    }

    #[test]
    fn decoded_fields() {
        let text = r#"{"type":"event","room":"r","seq":7,"ts":5,"data":{"b": 1,  "a":[true]}}"#;
        let ServerFrame::Event(event) = ServerFrame::decode(text).unwrap() else {
            panic!()
        };
        assert_eq!(
            (event.room.as_str(), event.seq, event.ts, event.data.get()),
            ("r", 7, 5, r#"{"b": 1,  "a":[true]}"#)
        );
        let text = r#"{"data":{"b": 1,  "a":[true]},"room":"r","seq":7,"ts":5,"extra":{"x":1},"type":"ev\u0065nt"}"#;
        let ServerFrame::Event(late) = ServerFrame::decode(text).unwrap() else {
            panic!()
        };
        assert_eq!(late, event, "type last, escaped, an unknown field");
        let ServerFrame::Error(error) =
            ServerFrame::decode(r#"{"type":"error","code":"teapot","message":"m","room":"r"}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                error.code.as_str(),
                error.code.known(),
                error.room.as_deref()
            ),
            ("teapot", None, Some("r"))
        );
        let ServerFrame::Error(error) = ServerFrame::decode(
            r#"{"type":"error","code":"conflict","message":"m","id":"p","head":4}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (error.code, error.head),
            (ReceivedErrorCode::Known(ErrorCode::Conflict), Some(4))
        );
        assert_eq!(
            ServerFrame::decode(r#"{"type":"pong","x":[1,{"y":2}]}"#).unwrap(),
            ServerFrame::Pong
        );
        let ServerFrame::Subscribed(subscribed) =
            ServerFrame::decode(r#"{"type":"subscribed","room":"r","epoch":"e","head":0}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(subscribed.echo, None);
    }

    #[test]
    fn unknown_types_pass_and_malformed_frames_do_not() {
        for text in [
            r#"{"type":"something_new","room":"r","seq":99}"#,
            r#"{"seq":"x","type":"something_new","data":{"a":[]}}"#,
        ] {
            assert_eq!(
                ServerFrame::decode(text).unwrap(),
                ServerFrame::Unknown {
                    kind: "something_new".into()
                },
                "{text}"
            );
        }
        assert_eq!(
            ServerFrame::Unknown { kind: "new".into() }.encode(),
            r#"{"type":"new"}"#
        );
        for text in [
            "{not json",
            "[1,2]",
            "\"event\"",
            "{}",
            r#"{"room":"r","seq":1}"#,
            r#"{"type":7}"#,
            r#"{"type":"event","room":"r","seq":1,"ts":1}"#,
            r#"{"type":"event","room":"r","seq":-1,"ts":1,"data":1}"#,
            r#"{"type":"event","room":"r","seq":1.5,"ts":1,"data":1}"#,
            r#"{"room":"r","seq":1,"ts":1,"type":"event"}"#,
            r#"{"type":"batch","room":"r","events":{"seq":6,"ts":6,"data":6}}"#,
            r#"{"type":"batch","room":"r","events":[{"seq":6,"ts":6}]}"#,
            r#"{"type":"subscribed","room":"r","epoch":"e"}"#,
            r#"{"type":"error","message":"m"}"#,
            r#"{"type":"presence","room":"r","members":[{"info":1}]}"#,
            r#"{"type":"event","room":"r","seq":1,"ts":1,"data":1"#,
        ] {
            assert!(ServerFrame::decode(text).is_err(), "{text}");
        }
    }
}
