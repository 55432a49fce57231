//! The node's hubs, one per room with subscribers, found by room name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{HubHandle, HubSettings, StateLoader};
use crate::bus::Bus;
use crate::room::RoomName;
use crate::store::Store;

/// The registry of running hubs. Cloning shares it.
#[derive(Clone)]
pub struct Hubs {
    inner: Arc<Inner>,
}

struct Inner {
    /// A std mutex: held only for map lookups and edits, never across an await.
    hubs: Mutex<HashMap<RoomName, HubHandle>>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    settings: HubSettings,
    next_id: AtomicU64,
    loader: StateLoader,
}

impl Hubs {
    /// The registry of a node; its hubs learn their rooms' states through
    /// one [`StateLoader`] on `store`. Starts a task: call within a runtime.
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, settings: HubSettings) -> Hubs {
        Hubs {
            inner: Arc::new(Inner {
                hubs: Mutex::new(HashMap::new()),
                loader: StateLoader::start(store.clone()),
                store,
                bus,
                settings,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The room's hub, started if the room has none on this node.
    pub fn get_or_spawn(&self, room: &RoomName) -> HubHandle {
        let mut hubs = self.inner.hubs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = hubs.get(room) {
            return handle.clone();
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = super::spawn(
            id,
            room.clone(),
            self.inner.store.clone(),
            self.inner.bus.clone(),
            self.inner.settings.clone(),
            self.clone(),
            self.inner.loader.clone(),
        );
        hubs.insert(room.clone(), handle.clone());
        handle
    }

    /// The room's hub if it has one on this node.
    pub fn get(&self, room: &RoomName) -> Option<HubHandle> {
        self.inner
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room)
            .cloned()
    }

    /// Forgets a stale handle (its hub stopped) so the next lookup starts a new one.
    pub fn forget(&self, room: &RoomName, id: u64) {
        self.remove_if_current(room, id);
    }

    /// Removes the room's hub if it is still the one with `id`.
    pub(crate) fn remove_if_current(&self, room: &RoomName, id: u64) -> bool {
        let mut hubs = self.inner.hubs.lock().unwrap_or_else(|e| e.into_inner());
        match hubs.get(room) {
            Some(handle) if handle.id == id => {
                hubs.remove(room);
                true
            }
            _ => false,
        }
    }

    /// Every running hub, for reconciliation and stats.
    pub fn snapshot(&self) -> Vec<(RoomName, HubHandle)> {
        let hubs = self.inner.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.iter()
            .map(|(room, handle)| (room.clone(), handle.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
