//! The event: one appended message of a room's log.

use serde_json::value::RawValue;

use crate::room::RoomName;

/// One committed event. `data` is kept as the JSON text the publisher sent, so
/// it is never parsed into a tree or re-encoded on its way to subscribers.
#[derive(Debug, Clone)]
pub struct Event {
    pub room: RoomName,
    /// Position in the room's log: 1, 2, 3 … with no gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, set by the store, never decreasing
    /// within a room.
    pub ts: i64,
    pub data: Box<RawValue>,
    /// The session on this node that published it over its socket, so a hub
    /// of a namespace with `echo = false` can skip that session. Never stored
    /// and never sent to other nodes (the publisher's session is on this one).
    pub origin: Option<u64>,
}

/// A live-only message (`"ephemeral": true`, or a namespace with
/// `ephemeral = "only"`): delivered to the room's current subscribers on
/// every node, never stored, so it has no seq and is never replayed.
#[derive(Debug, Clone)]
pub struct EphemeralMessage {
    pub room: RoomName,
    /// Milliseconds since the Unix epoch, by the accepting node's clock.
    pub ts: i64,
    pub data: Box<RawValue>,
    /// The publishing session on this node, as [`Event::origin`] (echo).
    pub origin: Option<u64>,
}

/// Where a room's log stands, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    /// Random id the log was born with; changes only if the log is recreated.
    pub epoch: String,
    /// Seq of the newest event, 0 for an empty log.
    pub head: u64,
    /// Seq of the oldest retained event; `head + 1` when nothing is retained.
    pub earliest: u64,
}

impl RoomState {
    /// Number of events still retained.
    pub fn retained(&self) -> u64 {
        self.head + 1 - self.earliest
    }

    /// Whether a client that has processed up to `cursor` can be served
    /// exactly from this log (everything after it is still retained).
    pub fn can_serve(&self, cursor: u64) -> bool {
        cursor <= self.head && cursor + 1 >= self.earliest
    }
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_service() {
        let state = RoomState {
            epoch: "e".into(),
            head: 10,
            earliest: 4,
        };
        assert!(state.can_serve(3));
        assert!(state.can_serve(10));
        assert!(!state.can_serve(2));
        assert!(!state.can_serve(11));
        assert_eq!(state.retained(), 7);
        let empty = RoomState {
            epoch: "e".into(),
            head: 0,
            earliest: 1,
        };
        assert!(empty.can_serve(0));
        assert_eq!(empty.retained(), 0);
        let pruned = RoomState {
            epoch: "e".into(),
            head: 5,
            earliest: 6,
        };
        assert!(pruned.can_serve(5));
        assert!(!pruned.can_serve(4));
    }
}
