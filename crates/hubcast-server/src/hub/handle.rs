//! The handle to a running hub: the commands its actor acts on, and what a
//! subscriber is told when it asks to join.

use tokio::sync::{mpsc, oneshot};

use crate::bus::PresenceMember;
use crate::event::RoomState;
use crate::outbound::Outbound;

/// A cloneable handle to a running hub.
#[derive(Debug, Clone)]
pub struct HubHandle {
    pub(crate) id: u64,
    pub(super) commands: mpsc::Sender<HubCommand>,
    pub(super) subscriber_count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The room's subscriber cap on this node (0: none).
    pub(super) max_subscribers: usize,
    /// The hub's view of its room (see `Hub::view`).
    pub(super) view: tokio::sync::watch::Receiver<Option<RoomState>>,
}

/// Messages a hub acts on.
#[derive(Debug)]
pub enum HubCommand {
    /// Add a subscriber that has processed the room up to `after`; with a
    /// `member`, it also enters the room's presence and watches it.
    Subscribe {
        out: Outbound,
        after: u64,
        member: Option<PresenceMember>,
        /// A Pusher connection (it gets Pusher frames); `None`: hubcast's protocol.
        pusher: Option<std::sync::Arc<super::PusherWire>>,
        reply: oneshot::Sender<Joined>,
    },
    /// The room's member list (the session encodes it with its request's id).
    Presence {
        reply: oneshot::Sender<Vec<(PresenceMember, i64)>>,
    },
    /// Remove a subscriber; the reply is sent once it will get no more frames.
    Unsubscribe {
        session_id: u64,
        done: oneshot::Sender<()>,
    },
    /// The room's log was deleted; it goes on under `epoch` from seq 1.
    LogDeleted {
        epoch: String,
    },
    /// The store's state of the room, which differs from the hub's view
    /// (periodic reconcile).
    Reconcile {
        state: RoomState,
    },
    Stats {
        reply: oneshot::Sender<HubStats>,
    },
}

/// The answer to a subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The subscriber is live: everything after `after` up to the hub's head
    /// was queued, followed by `caught_up`.
    Live,
    /// The hub's tail does not reach back to `after`: replay from the store up
    /// to at least `head`, then subscribe again.
    NeedStore { head: u64 },
    /// The room has `max_subscribers` subscribers on this node already.
    Full,
    /// The room's presence has `presence.max_members` members already.
    PresenceFull,
}

/// A hub's numbers, for room stats.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubStats {
    pub subscribers: usize,
    pub last_seq: u64,
}

/// Why a hub could not be reached.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("hub has stopped")]
pub struct HubGone;

impl HubHandle {
    /// Whether the room is at its subscriber cap on this node (as of the
    /// hub's last step). A subscription is refused on this before it is told
    /// `subscribed`; the hub's own check at the join stays the exact one.
    pub fn is_full(&self) -> bool {
        self.max_subscribers > 0
            && self
                .subscriber_count
                .load(std::sync::atomic::Ordering::Relaxed)
                >= self.max_subscribers
    }

    /// The room's subscribers on this node, as of the hub's last step.
    pub fn subscribers(&self) -> usize {
        self.subscriber_count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Subscribes `out` from `after` (see [`Joined`]); with a `member`, the
    /// subscriber also enters the room's presence and gets `presence`, `join`, `leave`.
    pub async fn subscribe_as(
        &self,
        out: Outbound,
        after: u64,
        member: Option<PresenceMember>,
        pusher: Option<std::sync::Arc<super::PusherWire>>,
    ) -> Result<Joined, HubGone> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(HubCommand::Subscribe {
                out,
                after,
                member,
                pusher,
                reply,
            })
            .await
            .map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }

    /// The room's members, sorted by id.
    pub async fn presence(&self) -> Result<Vec<PresenceMember>, HubGone> {
        let members = self.presence_since().await?;
        Ok(members.into_iter().map(|(member, _)| member).collect())
    }

    /// The room's members, sorted by id, each with when it entered (ms
    /// since the Unix epoch).
    pub async fn presence_since(&self) -> Result<Vec<(PresenceMember, i64)>, HubGone> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(HubCommand::Presence { reply })
            .await
            .map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }

    /// Tells the hub its room's log was deleted (see [`HubCommand::LogDeleted`]).
    pub async fn log_deleted(&self, epoch: String) {
        let _ = self.commands.send(HubCommand::LogDeleted { epoch }).await;
    }

    /// Removes the session; when this returns the hub will not offer it
    /// another frame (a stopped hub offers nothing anyway).
    pub async fn unsubscribe(&self, session_id: u64) {
        let (done, rx) = oneshot::channel();
        if self
            .commands
            .send(HubCommand::Unsubscribe { session_id, done })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// The room's state as this hub knows it: its epoch, the last seq it
    /// delivered, the earliest seq the store holds. Waits while the hub reads
    /// it at its start (every subscriber of a starting room shares that one
    /// read); a subscription needs no store read of its own.
    pub async fn state(&self) -> Result<RoomState, HubGone> {
        let mut view = self.view.clone();
        let state = view.wait_for(Option::is_some).await.map_err(|_| HubGone)?;
        state.clone().ok_or(HubGone)
    }

    /// Whether the store's `state` of the room differs from the hub's view
    /// (`false` while the hub is still reading it).
    pub fn differs(&self, state: &RoomState) -> bool {
        self.view
            .borrow()
            .as_ref()
            .is_some_and(|known| known != state)
    }

    /// Tells the hub that a peer appended its room up to `head` (a
    /// [`ControlMessage::Heads`](crate::bus::ControlMessage::Heads)): a hub
    /// that has not delivered that far fills the gap from the store, as for
    /// an event seen past a gap. Returns whether the hub was behind.
    pub fn heard_head(&self, head: u64) -> bool {
        let state = match self.view.borrow().as_ref() {
            Some(known) if known.head < head => RoomState {
                epoch: known.epoch.clone(),
                head,
                earliest: known.earliest,
            },
            _ => return false,
        };
        self.reconcile(state);
        true
    }

    /// Tells the hub the store's state; never waits (a full mailbox means
    /// the hub is busy and will be told again next interval).
    pub fn reconcile(&self, state: RoomState) {
        let _ = self.commands.try_send(HubCommand::Reconcile { state });
    }

    pub async fn stats(&self) -> Result<HubStats, HubGone> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(HubCommand::Stats { reply })
            .await
            .map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }
}
