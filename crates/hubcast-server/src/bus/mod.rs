//! The bus: how nodes tell each other "room R has new events".
//!
//! # Contract
//! - `publish` is best effort and never blocks: it is called after commit, and
//!   a lost notification is healed by the hub (gap fill on the next event, or
//!   the periodic reconcile against the store), never by the bus.
//! - `watch(room)` returns a feed of every event published for `room` after the
//!   call returns, in the order each publisher published them. A feed that
//!   falls behind may drop events; the hub notices the gap and fills it.
//! - A node watches only rooms it has hubs for; dropping the feed unwatches.
//!
//! The in-memory bus is not a shortcut around this: a single node publishes
//! through it and its hubs read from it exactly as cluster nodes do.
//!
//! # Ephemeral messages
//! `publish_ephemeral` carries a live-only message to the same feeds as the
//! room's events, as a [`BusMessage::Ephemeral`]. Unlike an event it is never
//! healed: nothing stores it, so a dropped one is gone (at most once, as
//! documented for ephemeral messages).
//!
//! # Presence
//! The same holds for presence: a hub that follows its room's presence
//! `watch_presence`s it and `publish_presence`s its node's members; a node
//! ignores its own messages (same `node_id`). On the memory bus there are no
//! other nodes, so a hub only ever hears itself; on NATS it hears its peers.
//! Presence messages are ephemeral and best effort: each carries a node's
//! *whole* member list of the room, so a lost one is repaired by the next
//! (sent on every change and every `presence.heartbeat_ms`), and a node not
//! heard from for its `ttl_ms` is presumed dead (see `hub::presence`).
//!
//! # Control
//! Admin actions that must reach every node (disconnect a user, a
//! revocation, a deleted room) are [`ControlMessage`]s. The node that takes
//! the action applies it itself, then `publish_control`s it to the *other*
//! nodes, which apply it from their `watch_control` feed: one code path
//! (`admin::apply`), and the acting node answers its caller only after the
//! action took effect on it. The memory bus has no other nodes, so it
//! delivers nothing. Control messages are best effort like the rest: a
//! revocation lost on the way is still applied by every node's periodic
//! reload from the store; a lost disconnect or room deletion is not repeated
//! (a deleted room's hubs also notice the head going back at reconcile).

//!
//! # Counts
//! How many subscribers a room has across the cluster (the Pusher API's
//! `subscription_count`, occupancy and channel list) is nobody's state: each
//! node's hubs know their own. A node that needs the cluster's numbers
//! `ask_counts` every other node ([`CountQuery`]: the rooms under a prefix,
//! or named ones) and adds its own; the others answer from their
//! `watch_count_queries` feed (`node::answer_count_queries`). The answers
//! are gathered for a short, bounded wait: on NATS until every peer the bus
//! knows to be alive has answered (nodes say hello on start and every few
//! seconds), at most [`nats::COUNTS_WAIT`]. A node that does not answer in
//! time is left out of that answer (counted as 0), never waited for longer.
//! The memory bus has no peers: its answer is empty at once.

pub mod memory;
pub mod nats;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use crate::event::{EphemeralMessage, Event};
use crate::room::RoomName;

/// The messages of one watched room, as the bus delivers them.
pub type BusFeed = mpsc::Receiver<BusMessage>;

/// What a room's feed carries.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A committed event (a lost one is healed from the store).
    Event(Arc<Event>),
    /// A live-only message (a lost one is gone).
    Ephemeral(Arc<EphemeralMessage>),
}

impl BusMessage {
    pub fn room(&self) -> &RoomName {
        match self {
            BusMessage::Event(event) => &event.room,
            BusMessage::Ephemeral(message) => &message.room,
        }
    }
}

/// The presence messages of one watched room.
pub type PresenceFeed = mpsc::Receiver<Arc<PresenceMessage>>;

/// The control messages of other nodes.
pub type ControlFeed = mpsc::Receiver<Arc<ControlMessage>>;

/// An admin action every node applies (see *Control*).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Close every session of `user` (a token's `sub`) with `code`.
    Disconnect {
        user: String,
        code: u16,
        reason: String,
    },
    /// Refuse the tokens it covers and close their sessions.
    Revoke {
        revocation: crate::auth::revocation::Revocation,
    },
    /// The room's log was deleted; it continues with a new, empty log of `epoch`.
    RoomDeleted { room: String, epoch: String },
    /// The heads of the rooms the sender appended to in its last
    /// `hub.reconcile_ms` (see `node::publish_heads`): a hub behind one of
    /// them lost a notification on the way and fills the gap from the store.
    Heads { heads: Vec<(String, u64)> },
}

/// A question to every node about its subscribers (see *Counts*).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CountQuery {
    /// Rooms whose names start with this.
    pub prefix: String,
    /// Only these rooms (full names, each under `prefix`); empty: every room
    /// under `prefix` that has subscribers on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
}

impl CountQuery {
    /// Whether `room` is one this query asks about.
    pub fn asks(&self, room: &str) -> bool {
        room.starts_with(&self.prefix)
            && (self.rooms.is_empty() || self.rooms.iter().any(|r| r == room))
    }
}

/// One node's answer to a [`CountQuery`]: its subscribers of each room it
/// has some in.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeCounts {
    /// The answering node ([`Bus::node_id`]).
    pub node: String,
    pub rooms: std::collections::HashMap<String, usize>,
}

/// Count queries from other nodes, each with where its answer goes.
pub type CountQueryFeed = mpsc::Receiver<(CountQuery, tokio::sync::oneshot::Sender<NodeCounts>)>;

/// What one node says about one room's presence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PresenceMessage {
    /// The sending node ([`Bus::node_id`]).
    pub node: String,
    #[serde(flatten)]
    pub kind: PresenceKind,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PresenceKind {
    /// All of the sender's members of the room (empty: it has none now).
    /// Valid for `ttl_ms` unless repeated.
    State {
        members: Vec<AnnouncedMember>,
        ttl_ms: u64,
    },
    /// The sender just started following the room: peers with members there
    /// answer with their `State` at once.
    Sync,
}

pub use crate::protocol::PresenceMember;

/// A member as a node announces it: with when the session whose `info` it
/// carries entered, so every node picks the same (latest) info for a member
/// with sessions on several nodes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnnouncedMember {
    #[serde(flatten)]
    pub member: PresenceMember,
    /// Milliseconds since the Unix epoch (0 from a node that does not say).
    #[serde(default)]
    pub entered_ms: i64,
    /// When the member's oldest session on the sending node entered (ms
    /// since the Unix epoch; `None` from a node that does not say: then
    /// `entered_ms`). The admin presence route reports it as `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
}

/// Why a bus operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Node-to-node notification of committed events. See the module contract.
pub trait Bus: Send + Sync + 'static {
    /// Announces committed events (in seq order per room). Never blocks.
    fn publish(&self, events: Vec<Arc<Event>>);

    /// Announces an ephemeral message to every node watching its room (this
    /// one included). Best effort; never blocks; never touches the store.
    fn publish_ephemeral(&self, message: Arc<EphemeralMessage>);

    /// Starts delivering `room`'s events and ephemeral messages to the returned feed.
    fn watch(&self, room: &RoomName) -> BoxFuture<'_, Result<BusFeed, BusError>>;

    /// Whether the bus is reachable (for `/readyz`).
    fn check(&self) -> BoxFuture<'_, Result<(), BusError>>;

    /// Counts (re)connections of a networked bus, so the node reconciles
    /// at once after an outage instead of waiting for the next interval.
    fn reconnects(&self) -> Option<watch::Receiver<u64>> {
        None
    }

    /// This node's id on the bus (random per process).
    fn node_id(&self) -> &str;

    /// Announces a presence message for `room` to every node following it
    /// (this one included; it ignores its own). Best effort; never blocks.
    fn publish_presence(&self, room: &RoomName, message: PresenceMessage);

    /// Starts delivering `room`'s presence messages to the returned feed.
    fn watch_presence(&self, room: &RoomName) -> BoxFuture<'_, Result<PresenceFeed, BusError>>;

    /// Tells every other node of an admin action. Best effort; never blocks.
    fn publish_control(&self, message: ControlMessage);

    /// The control messages other nodes publish. A node calls it once.
    fn watch_control(&self) -> BoxFuture<'_, Result<ControlFeed, BusError>>;

    /// Whether peers' [`ControlMessage::Heads`] reach this node now (a
    /// connected networked bus), so the full reconcile against the store
    /// may run every `hub.full_reconcile_every` intervals instead of every one.
    fn carries_heads(&self) -> bool {
        false
    }

    /// Asks every other node for its subscriber counts (see *Counts*): the
    /// answers that came within the bus's wait. Never fails: a node that
    /// cannot be asked or does not answer is missing from the result.
    fn ask_counts(&self, _query: CountQuery) -> BoxFuture<'_, Vec<NodeCounts>> {
        Box::pin(async { Vec::new() })
    }

    /// The count queries other nodes ask this one. A node calls it once.
    fn watch_count_queries(&self) -> BoxFuture<'_, Result<CountQueryFeed, BusError>> {
        Box::pin(async {
            // No other nodes: a feed that ends at once.
            let (_, rx) = mpsc::channel(1);
            Ok(rx)
        })
    }

    /// How long a hub that just started following a room's presence waits for
    /// its peers' answers before it answers a `presence` request (zero when
    /// there are no peers).
    fn presence_settle(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A random node id for the bus.
pub(crate) fn new_node_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Control messages the feed may hold before the bus drops for it.
pub(crate) const CONTROL_FEED_CAPACITY: usize = 1024;

/// Presence messages a feed may hold before the bus drops for it (the next
/// heartbeat repairs whatever was dropped).
pub(crate) const PRESENCE_FEED_CAPACITY: usize = 256;

/// Events a feed may hold before the bus starts dropping for it (the hub then
/// heals the gap from the store).
pub(crate) const FEED_CAPACITY: usize = 4096;

/// Why a bus could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot connect to nats at {url}: {source}")]
    Nats {
        url: String,
        source: async_nats::ConnectError,
    },
}

/// Opens the bus `config.bus` names.
pub async fn open(config: &crate::config::Config) -> Result<Arc<dyn Bus>, OpenError> {
    match &config.bus {
        crate::config::BusUrl::Memory => Ok(Arc::new(memory::MemoryBus::default())),
        crate::config::BusUrl::Nats(url) => {
            Ok(Arc::new(nats::NatsBus::connect(url, &config.nats).await?))
        }
    }
}
