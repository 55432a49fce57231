//! The in-process bus for a single node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::{
    Bus, BusError, BusFeed, BusMessage, ControlFeed, ControlMessage, PresenceFeed, PresenceMessage,
    FEED_CAPACITY, PRESENCE_FEED_CAPACITY,
};
use crate::event::{EphemeralMessage, Event};
use crate::room::RoomName;

/// Delivers each published event to the feeds watching its room.
pub struct MemoryBus {
    /// A std mutex: held only to look up or edit the map, never across an await.
    watchers: Mutex<HashMap<RoomName, Vec<mpsc::Sender<BusMessage>>>>,
    /// Presence feeds per room (same rules).
    presence: Mutex<HashMap<RoomName, Vec<mpsc::Sender<Arc<PresenceMessage>>>>>,
    /// Keeps the control feeds open: a single node has no peers to hear from.
    control: Mutex<Vec<mpsc::Sender<Arc<ControlMessage>>>>,
    node: String,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::with_node_id(super::new_node_id())
    }
}

impl MemoryBus {
    pub(crate) fn with_node_id(node: String) -> MemoryBus {
        MemoryBus {
            watchers: Mutex::default(),
            presence: Mutex::default(),
            control: Mutex::default(),
            node,
        }
    }

    /// Delivers `room`'s presence messages to `feed` until its receiver is dropped.
    pub(crate) fn add_presence_watcher(
        &self,
        room: &RoomName,
        feed: mpsc::Sender<Arc<PresenceMessage>>,
    ) {
        if let Ok(mut watchers) = self.presence.lock() {
            let feeds = watchers.entry(room.clone()).or_default();
            feeds.retain(|feed| !feed.is_closed());
            feeds.push(feed);
        }
    }

    /// Delivers `room`'s events to `feed` until its receiver is dropped.
    pub(crate) fn add_watcher(&self, room: &RoomName, feed: mpsc::Sender<BusMessage>) {
        if let Ok(mut watchers) = self.watchers.lock() {
            let feeds = watchers.entry(room.clone()).or_default();
            feeds.retain(|feed| !feed.is_closed());
            feeds.push(feed);
        }
    }
}

/// Offers `message` to every feed watching its room; a full feed drops it.
fn offer(watchers: &mut HashMap<RoomName, Vec<mpsc::Sender<BusMessage>>>, message: BusMessage) {
    let Some(feeds) = watchers.get_mut(message.room()) else {
        return;
    };
    feeds.retain(|feed| match feed.try_send(message.clone()) {
        Ok(()) | Err(TrySendError::Full(_)) => true,
        Err(TrySendError::Closed(_)) => false,
    });
    if feeds.is_empty() {
        watchers.remove(message.room());
    }
}

impl Bus for MemoryBus {
    fn publish(&self, events: Vec<Arc<Event>>) {
        let Ok(mut watchers) = self.watchers.lock() else {
            return;
        };
        for event in events {
            offer(&mut watchers, BusMessage::Event(event));
        }
    }

    fn publish_ephemeral(&self, message: Arc<EphemeralMessage>) {
        if let Ok(mut watchers) = self.watchers.lock() {
            offer(&mut watchers, BusMessage::Ephemeral(message));
        }
    }

    fn watch(&self, room: &RoomName) -> BoxFuture<'_, Result<BusFeed, BusError>> {
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        self.add_watcher(room, tx);
        async move { Ok(rx) }.boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BusError>> {
        async { Ok(()) }.boxed()
    }

    fn node_id(&self) -> &str {
        &self.node
    }

    fn publish_presence(&self, room: &RoomName, message: PresenceMessage) {
        let Ok(mut watchers) = self.presence.lock() else {
            return;
        };
        let Some(feeds) = watchers.get_mut(room) else {
            return;
        };
        let message = Arc::new(message);
        feeds.retain(|feed| match feed.try_send(message.clone()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Closed(_)) => false,
        });
        if feeds.is_empty() {
            watchers.remove(room);
        }
    }

    fn watch_presence(&self, room: &RoomName) -> BoxFuture<'_, Result<PresenceFeed, BusError>> {
        let (tx, rx) = mpsc::channel(PRESENCE_FEED_CAPACITY);
        self.add_presence_watcher(room, tx);
        async move { Ok(rx) }.boxed()
    }

    /// No other node to tell: the acting node has applied it already.
    fn publish_control(&self, _message: ControlMessage) {}

    fn watch_control(&self) -> BoxFuture<'_, Result<ControlFeed, BusError>> {
        let (tx, rx) = mpsc::channel(1);
        if let Ok(mut control) = self.control.lock() {
            control.push(tx);
        }
        async move { Ok(rx) }.boxed()
    }
}
