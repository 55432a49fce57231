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

pub mod memory;
pub mod nats;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use crate::event::Event;
use crate::room::RoomName;

/// The events of one watched room, as the bus delivers them.
pub type BusFeed = mpsc::Receiver<Arc<Event>>;

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

    /// Starts delivering `room`'s events to the returned feed.
    fn watch(&self, room: &RoomName) -> BoxFuture<'_, Result<BusFeed, BusError>>;

    /// Whether the bus is reachable (for `/readyz`).
    fn check(&self) -> BoxFuture<'_, Result<(), BusError>>;

    /// Counts (re)connections of a networked bus, so the node reconciles
    /// at once after an outage instead of waiting for the next interval.
    fn reconnects(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// Events a feed may hold before the bus starts dropping for it (the hub then
/// heals the gap from the store).
pub(crate) const FEED_CAPACITY: usize = 4096;

/// Opens the bus named by `url`.
pub async fn open(url: &str, config: &crate::config::Config) -> anyhow::Result<Arc<dyn Bus>> {
    match url {
        "memory" | "memory://" => Ok(Arc::new(memory::MemoryBus::default())),
        nats if nats.starts_with("nats://") => {
            Ok(Arc::new(nats::NatsBus::connect(nats, &config.nats.subject_prefix).await?))
        }
        other => anyhow::bail!("unsupported bus `{other}`: expected `memory` or nats://HOST:PORT"),
    }
}
