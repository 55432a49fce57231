//! The core's boundary: the [`Output`]s it asks its driver to carry out, the
//! [`HistoryResult`]s it gets back, and [`Io`], the outbox every part of the
//! core writes to (outputs in order, frames for the open socket, timers,
//! request ids). Rooms, publishes and presence requests write here rather than
//! through the core, so none of them needs a reference back to it.

use std::collections::VecDeque;

use hubcast_protocol::codes::sdk;
use hubcast_protocol::ClientRequest;
use serde_json::Value;

use super::timers::Timers;
use crate::types::{Ack, ClientError, PresenceMember, PresenceUpdate, RoomUpdate, StateChange};

/// What the core asks its driver to do, or tells the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a WebSocket to `url`; report [`super::Core::on_open`], frames and the close with `gen`.
    Connect {
        gen: u64,
        url: String,
    },
    /// Send this text frame on socket `gen`.
    Send {
        gen: u64,
        text: String,
    },
    /// Drop socket `gen` (closing it with `code` when given; `None`: it is already closed).
    CloseSocket {
        gen: u64,
        code: Option<u16>,
        reason: String,
    },
    /// `GET url` (the history route); answer with [`super::Core::on_history`].
    HistoryGet {
        req: u64,
        room: String,
        after: u64,
        limit: u64,
        url: String,
        authorization: Option<String>,
    },
    /// Call the token provider; answer with [`super::Core::on_token`].
    GetToken {
        req: u64,
    },
    /// Something for a room subscription.
    Room {
        sub: u64,
        update: RoomUpdate,
    },
    /// Presence of a `presence: true` subscription (member list, join, leave).
    Presence {
        sub: u64,
        update: PresenceUpdate,
    },
    /// A presence request ([`super::Core::request_presence`]) was answered.
    PresenceResult {
        key: u64,
        result: Result<Vec<PresenceMember>, ClientError>,
    },
    /// The subscription ended (unsubscribed, client closed, or a terminal close: `error`).
    RoomEnd {
        sub: u64,
        error: Option<ClientError>,
    },
    /// An error surfaced on the client (room errors too, once).
    Error(ClientError),
    /// A publish settled.
    Published {
        key: u64,
        result: Result<Ack, ClientError>,
    },
    /// An atomic batch publish settled: every receipt, in request order.
    BatchPublished {
        key: u64,
        result: Result<Vec<Ack>, ClientError>,
    },
    State(StateChange),
    Welcome {
        session: String,
        heartbeat_ms: u64,
    },
    Authenticated {
        sub: Option<String>,
        exp: Option<u64>,
    },
}

/// A history answer.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryResult {
    Response { status: u16, body: Value },
    NetworkError(String),
}

#[derive(Debug, Default)]
pub(super) struct Io {
    outputs: VecDeque<Output>,
    pub timers: Timers,
    /// The socket frames go out on: set while the connection is open.
    open: Option<u64>,
    next_req: u64,
}

impl Io {
    pub fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    pub fn take(&mut self) -> Vec<Output> {
        self.outputs.drain(..).collect()
    }

    /// The open socket's generation (`None`: no socket is open).
    pub fn open(&self) -> Option<u64> {
        self.open
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    pub fn set_open(&mut self, gen: Option<u64>) {
        self.open = gen;
    }

    /// Sends a message on the open socket; `false` if none is open.
    pub fn send(&mut self, request: ClientRequest) -> bool {
        self.send_text(|| request.encode())
    }

    /// Sends an encoded message on the open socket; `false` if none is open.
    pub fn send_text(&mut self, text: impl FnOnce() -> String) -> bool {
        match self.open {
            Some(gen) => {
                self.emit(Output::Send { gen, text: text() });
                true
            }
            None => false,
        }
    }

    /// A fresh id for a history or token request.
    pub fn new_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// The server sent something the protocol does not allow: surfaced, and ignored.
    pub fn protocol_violation(&mut self, what: &str) {
        let message = format!("the server sent {what}; ignored");
        self.emit(Output::Error(ClientError::new(
            sdk::PROTOCOL_VIOLATION,
            message,
        )));
    }
}
