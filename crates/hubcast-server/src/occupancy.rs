//! Occupancy and presence webhooks on one node: turns the hubs' signals
//! ([`RoomSignal`]) into `room.occupied`, `room.vacated`, `presence.joined`
//! and `presence.left` messages in the store's webhook outbox.
//!
//! A room is occupied when its first subscriber arrives and vacated when its
//! last has been gone for `hub.occupancy_grace_ms` (a reconnect within the
//! grace sends nothing). The rooms recorded as occupied are kept in the store
//! with the message that made them so: a node restarted after a crash
//! vacates, after the grace, every such room nobody subscribes to again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::PresenceMember;
use crate::event::now_ms;
use crate::store::webhook_outbox::{Occupancy, WebhookOutbox};
use crate::webhook::{EventKind, NewWebhook, RoomSignal, Webhooks};

/// `data` of `room.occupied` and `room.vacated`.
#[derive(Serialize)]
struct RoomData<'a> {
    room: &'a str,
}

/// `data` of `presence.joined` and `presence.left`.
#[derive(Serialize)]
struct PresenceData<'a> {
    room: &'a str,
    member: &'a PresenceMember,
}

struct Tracker {
    webhooks: Arc<Webhooks>,
    outbox: Arc<dyn WebhookOutbox>,
    grace: Duration,
    /// Rooms recorded as occupied.
    occupied: HashSet<String>,
    /// Occupied rooms with no subscriber, and when they are vacated.
    emptied: HashMap<String, Instant>,
}

/// Runs until shutdown.
pub async fn run(
    webhooks: Arc<Webhooks>,
    outbox: Arc<dyn WebhookOutbox>,
    grace: Duration,
    mut signals: mpsc::Receiver<RoomSignal>,
    shutdown: CancellationToken,
) {
    let mut tracker = Tracker {
        webhooks,
        outbox,
        grace,
        occupied: HashSet::new(),
        emptied: HashMap::new(),
    };
    // Rooms occupied before a restart: vacated after the grace unless a
    // subscriber arrives meanwhile.
    match tracker.outbox.occupied_rooms().await {
        Ok(rooms) => {
            let deadline = Instant::now() + grace;
            for room in rooms {
                tracker.emptied.insert(room.clone(), deadline);
                tracker.occupied.insert(room);
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot read the rooms recorded as occupied"),
    }
    loop {
        let next = tracker.emptied.values().min().copied();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            signal = signals.recv() => match signal {
                Some(signal) => tracker.on_signal(signal).await,
                None => return,
            },
            _ = sleep_until(next) => tracker.vacate_due().await,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Tracker {
    async fn on_signal(&mut self, signal: RoomSignal) {
        match signal {
            RoomSignal::Occupied(room, true) => {
                let name = room.as_str();
                // Back within the grace: nothing happened, as far as the app knows.
                if self.emptied.remove(name).is_some() || self.occupied.contains(name) {
                    return;
                }
                self.occupied.insert(name.to_owned());
                let messages =
                    self.messages(EventKind::RoomOccupied, name, &RoomData { room: name });
                self.record(messages, Some(Occupancy::Occupied(name.to_owned())))
                    .await;
            }
            RoomSignal::Occupied(room, false) => {
                if self.occupied.contains(room.as_str()) {
                    self.emptied
                        .insert(room.as_str().to_owned(), Instant::now() + self.grace);
                }
            }
            RoomSignal::Presence(room, member, joined) => {
                let kind = if joined {
                    EventKind::PresenceJoined
                } else {
                    EventKind::PresenceLeft
                };
                let data = PresenceData {
                    room: room.as_str(),
                    member: &member,
                };
                let messages = self.messages(kind, room.as_str(), &data);
                if !messages.is_empty() {
                    self.record(messages, None).await;
                }
            }
        }
    }

    async fn vacate_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .emptied
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room in due {
            self.emptied.remove(&room);
            self.occupied.remove(&room);
            let messages = self.messages(EventKind::RoomVacated, &room, &RoomData { room: &room });
            self.record(messages, Some(Occupancy::Vacated(room))).await;
        }
    }

    fn messages(&self, kind: EventKind, room: &str, data: &impl Serialize) -> Vec<NewWebhook> {
        self.webhooks.messages(kind, room, now_ms(), data)
    }

    /// Records, retrying while the store is unavailable (the signals wait in
    /// their queue meanwhile).
    async fn record(&self, messages: Vec<NewWebhook>, occupancy: Option<Occupancy>) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self
                .outbox
                .record(messages.clone(), occupancy.clone())
                .await
            {
                Ok(()) => return,
                Err(err) if err.is_transient() && delay < Duration::from_secs(30) => {
                    tracing::warn!(error = %err, "cannot record occupancy webhooks; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => {
                    tracing::error!(error = %err, "occupancy webhooks lost");
                    return;
                }
            }
        }
    }
}
