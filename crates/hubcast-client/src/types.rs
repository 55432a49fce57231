//! The values an application sees: cursors, events, resets, acks, errors,
//! connection states.

use serde_json::Value;

/// The connection state (docs/clients.md, "One connection, many rooms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Never connected.
    Idle,
    /// A connection attempt is under way.
    Connecting,
    /// The socket is open (subscriptions and queued publishes have been sent).
    Open,
    /// The socket is gone; the next attempt is scheduled.
    Reconnecting,
    /// For good: closed by the application, or a terminal close code.
    Closed,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Idle => "idle",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Open => "open",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Closed => "closed",
        }
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, with what caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub state: ConnectionState,
    pub previous: ConnectionState,
    /// The close code of the socket that went away (`reconnecting`, `closed`).
    pub code: Option<u16>,
    pub reason: Option<String>,
    /// The delay before the next attempt (`reconnecting`).
    pub delay_ms: Option<u64>,
    /// Failed attempts since the last `welcome` (`reconnecting`).
    pub attempt: Option<u32>,
    /// Why the client closed (`closed` after a terminal close code).
    pub error: Option<ClientError>,
}

/// Where a room's stream is: the room's epoch and the seq of the last event delivered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// `None` when the application gave a cursor without its epoch and no
    /// `subscribed` has named it yet.
    pub epoch: Option<String>,
    pub seq: u64,
}

/// One event, delivered at most once and in seq order.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub room: String,
    pub seq: u64,
    /// Milliseconds since the Unix epoch, set by the store.
    pub ts: i64,
    pub data: Value,
    /// The epoch of the room's log (persist `(epoch, seq)` to resume later).
    pub epoch: Option<String>,
}

impl Event {
    /// The cursor just after this event.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch.clone(),
            seq: self.seq,
        }
    }
}

/// A live-only message (`ephemeral` frame): not stored, no seq, never
/// replayed, so it moves no cursor and a reconnect does not bring it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Ephemeral {
    pub room: String,
    /// Milliseconds since the Unix epoch, by the accepting node's clock.
    pub ts: i64,
    pub data: Value,
}

/// The cursor could not be served (pruned, another epoch, ahead of the head):
/// reload your state. Delivery continues with `head + 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reset {
    pub room: String,
    pub epoch: String,
    /// The oldest retained seq, `None` when the server did not say.
    pub earliest: Option<u64>,
    pub head: u64,
    /// The cursor before the reset.
    pub previous: Option<Cursor>,
}

/// What a room subscription yields, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomUpdate {
    Event(Event),
    Reset(Reset),
    /// An error of this room (`history_unavailable`, `forbidden`,
    /// `store_unavailable`…). Delivery goes on; after a terminal close code the
    /// error is the last item and the stream ends.
    Error(ClientError),
    /// Presence of a `presence: true` subscription: the member list, a join or
    /// a leave. Not part of the event order (presence carries no seq).
    Presence(PresenceUpdate),
    /// An ephemeral message (typing indicators, cursors): delivered while the
    /// subscription is live, outside the event order (no seq).
    Ephemeral(Ephemeral),
}

/// A member of a room's presence: keyed by the token's `sub` (or a session
/// id); `info` is the token's `info` claim. The protocol's own type: the
/// frames carry it as is.
pub use hubcast_protocol::message::PresenceMember;

/// What a presence subscription (`subscribe_with_presence`) yields besides its
/// events: the full member list after every (re)subscribe, then each change.
/// `members` is always the room's list after it, sorted by `id`.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceUpdate {
    Members {
        room: String,
        members: Vec<PresenceMember>,
    },
    Join {
        room: String,
        member: PresenceMember,
        members: Vec<PresenceMember>,
    },
    Leave {
        room: String,
        member: PresenceMember,
        members: Vec<PresenceMember>,
    },
}

/// A publish acknowledged by the server: the event is durable with this seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: String,
    pub room: String,
    pub seq: u64,
}

/// An error the client surfaces: a protocol error code (`conflict`,
/// `forbidden`…) or one of the SDK's own (`closed`, `timeout`, `queue_full`,
/// `history_unavailable`, `protocol_violation`, `token_error`, and the terminal
/// close codes `unauthenticated`, `forbidden`, `policy_violation`, `frame_too_big`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ClientError {
    pub code: String,
    pub message: String,
    pub room: Option<String>,
    /// The publish id, for publish errors.
    pub id: Option<String>,
    /// The close code, for errors caused by a terminal close.
    pub close_code: Option<u16>,
    /// The room's head, with `conflict`.
    pub head: Option<u64>,
    /// The HTTP status, for history errors.
    pub status: Option<u16>,
}

impl ClientError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ClientError {
        ClientError {
            code: code.into(),
            message: message.into(),
            room: None,
            id: None,
            close_code: None,
            head: None,
            status: None,
        }
    }

    pub fn with_room(mut self, room: impl Into<String>) -> ClientError {
        self.room = Some(room.into());
        self
    }

    pub fn with_id(mut self, id: impl Into<String>) -> ClientError {
        self.id = Some(id.into());
        self
    }
}
