//! What hubs tell the occupancy task (`occupancy`): a room on this node
//! gained its first subscriber or lost its last, a presence member joined or
//! left. Sent without waiting; a full queue drops the signal and counts it,
//! so a stuck store never stalls a hub.

use tokio::sync::mpsc;

use crate::room::RoomName;
use hubcast_protocol::message::PresenceMember;

/// Signals queued before new ones are dropped.
pub const SIGNAL_QUEUE: usize = 65_536;

/// One change a hub saw.
#[derive(Debug)]
pub enum RoomSignal {
    /// The room has subscribers on this node (`true`) or none any more.
    Occupied(RoomName, bool),
    /// A member's first presence session on this node entered the room
    /// (`true`), or its last one left.
    Member(RoomName, PresenceMember, bool),
}

/// The hubs' end of the signal queues.
#[derive(Debug, Clone)]
pub struct RoomSignals {
    /// Occupancy and presence (`occupancy`); `None` when no endpoint wants them.
    occupancy: Option<mpsc::Sender<RoomSignal>>,
    /// Rooms whose subscriber count changed on this node, for the Pusher
    /// `subscription_count` webhook (`node::count_webhooks`); `None` when no
    /// endpoint wants it.
    counts: Option<mpsc::Sender<RoomName>>,
}

/// The receiving ends of [`RoomSignals`].
pub struct SignalQueues {
    pub occupancy: Option<mpsc::Receiver<RoomSignal>>,
    pub counts: Option<mpsc::Receiver<RoomName>>,
}

impl RoomSignals {
    /// New queues: for occupancy and presence signals when `occupancy`, for
    /// subscriber count changes when `counts`.
    pub fn channel(occupancy: bool, counts: bool) -> (RoomSignals, SignalQueues) {
        let (occupancy_tx, occupancy_rx) = occupancy.then(|| mpsc::channel(SIGNAL_QUEUE)).unzip();
        let (counts_tx, counts_rx) = counts.then(|| mpsc::channel(SIGNAL_QUEUE)).unzip();
        (
            RoomSignals {
                occupancy: occupancy_tx,
                counts: counts_tx,
            },
            SignalQueues {
                occupancy: occupancy_rx,
                counts: counts_rx,
            },
        )
    }

    pub fn send(&self, signal: RoomSignal) {
        let Some(occupancy) = &self.occupancy else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = occupancy.try_send(signal) {
            metrics::counter!("hubcast_webhook_signals_dropped_total").increment(1);
        }
    }

    /// Whether count changes are wanted (lets a hub skip the comparison).
    pub fn wants_counts(&self) -> bool {
        self.counts.is_some()
    }

    /// The room's subscriber count changed on this node.
    pub fn count_changed(&self, room: &RoomName) {
        let Some(counts) = &self.counts else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = counts.try_send(room.clone()) {
            metrics::counter!("hubcast_webhook_signals_dropped_total").increment(1);
        }
    }
}
