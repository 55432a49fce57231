//! The wire protocol. Messages, frames, request shapes and codes live in the
//! `hubcast-protocol` crate (shared with the Rust client and the fuzz
//! targets); this module adds the server's frame encoders, which produce the
//! shared `Utf8Bytes` a hub hands to every subscriber. The server encodes with
//! the borrowed `ServerMessage`; it decodes a frame (`ServerFrame`) only where
//! a peer's event comes back from the bus.

use axum::extract::ws::Utf8Bytes;

pub use hubcast_protocol::message::*;
pub use hubcast_protocol::{batch, codes, request, ServerFrame};

use crate::event::{EphemeralMessage, Event};

/// The `event` frame for one event, encoded once and shared by all subscribers.
pub fn encode_event(event: &Event) -> Utf8Bytes {
    ServerMessage::Event {
        room: &event.room,
        seq: event.seq,
        ts: event.ts,
        data: &event.data,
    }
    .encode()
    .into()
}

/// The `ephemeral` frame for one message, encoded once and shared.
pub fn encode_ephemeral(message: &EphemeralMessage) -> Utf8Bytes {
    ServerMessage::Ephemeral {
        room: &message.room,
        ts: message.ts,
        data: &message.data,
    }
    .encode()
    .into()
}

/// The `error` frame for a refused client message.
pub fn encode_error(err: &ProtocolError, room: Option<&str>) -> Utf8Bytes {
    hubcast_protocol::message::encode_error(err, room).into()
}
