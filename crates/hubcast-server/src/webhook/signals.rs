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

/// The hubs' end of the signal queue.
#[derive(Debug, Clone)]
pub struct RoomSignals(mpsc::Sender<RoomSignal>);

impl RoomSignals {
    /// A new queue.
    pub fn channel() -> (RoomSignals, mpsc::Receiver<RoomSignal>) {
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        (RoomSignals(tx), rx)
    }

    pub fn send(&self, signal: RoomSignal) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.0.try_send(signal) {
            metrics::counter!("hubcast_webhook_signals_dropped_total").increment(1);
        }
    }
}
