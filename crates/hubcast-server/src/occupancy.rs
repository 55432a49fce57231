//! Occupancy and presence webhooks: turns the hubs' signals ([`RoomSignal`])
//! into `room.occupied`, `room.vacated`, `presence.joined` and
//! `presence.left` messages in the store's webhook outbox.
//!
//! Occupancy is cluster-wide, with the store as the arbiter
//! ([`RoomOccupancy`]): this node says when it has subscribers in a room
//! (`Enter`) and, once its last one has been gone for
//! `hub.occupancy_grace_ms`, that it has none (`Leave`); the store records
//! `room.occupied` when the first node enters and `room.vacated` when the
//! last leaves, each in the transaction that decides it, so exactly one node
//! records each. A reconnect within the grace (on any node) sends nothing.
//! Every `presence.heartbeat_ms` the node refreshes its rooms for
//! `presence.ttl_ms` and vacates rooms whose nodes all stopped refreshing
//! (killed): a dead node's occupancy ends after the TTL, as its presence does.
//!
//! Presence messages are per node: each node reports the changes its hubs see.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::PresenceMember;
use crate::event::now_ms;
use crate::store::webhook_outbox::{RoomOccupancy, WebhookOutbox};
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

/// How the occupancy task runs.
pub struct OccupancySettings {
    /// This node's id (the bus's), its name in `webhook_room_nodes`.
    pub node: String,
    pub grace: Duration,
    /// How often this node refreshes its rooms and looks for abandoned ones.
    pub heartbeat: Duration,
    /// How long a room stays held by a node that stopped refreshing.
    pub ttl: Duration,
}

struct Tracker {
    webhooks: Arc<Webhooks>,
    outbox: Arc<dyn WebhookOutbox>,
    settings: OccupancySettings,
    /// Rooms whose last subscriber on this node left, and when this node
    /// leaves them (unless a subscriber arrives first).
    emptied: HashMap<String, Instant>,
}

/// Runs until shutdown.
pub async fn run(
    webhooks: Arc<Webhooks>,
    outbox: Arc<dyn WebhookOutbox>,
    settings: OccupancySettings,
    mut signals: mpsc::Receiver<RoomSignal>,
    shutdown: CancellationToken,
) {
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = Tracker {
        webhooks,
        outbox,
        settings,
        emptied: HashMap::new(),
    };
    loop {
        let next = tracker.emptied.values().min().copied();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            signal = signals.recv() => match signal {
                Some(signal) => tracker.on_signal(signal).await,
                None => return,
            },
            _ = sleep_until(next) => tracker.leave_due().await,
            _ = heartbeat.tick() => tracker.heartbeat().await,
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
                // Back within the grace: this node never left.
                if self.emptied.remove(room.as_str()).is_some() {
                    return;
                }
                let room = room.as_str().to_owned();
                let messages = self.messages(EventKind::RoomOccupied, &room);
                let expires_at = now_ms() + self.settings.ttl.as_millis() as i64;
                let node = self.settings.node.clone();
                self.apply(RoomOccupancy::Enter {
                    room,
                    node,
                    expires_at,
                    messages,
                })
                .await;
            }
            RoomSignal::Occupied(room, false) => {
                self.emptied.insert(
                    room.as_str().to_owned(),
                    Instant::now() + self.settings.grace,
                );
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
                let messages = self.webhooks.messages(kind, room.as_str(), now_ms(), &data);
                if !messages.is_empty() {
                    self.record(messages).await;
                }
            }
        }
    }

    async fn leave_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .emptied
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room in due {
            self.emptied.remove(&room);
            let node = self.settings.node.clone();
            self.leave(room, node).await;
        }
    }

    async fn leave(&self, room: String, node: String) {
        let messages = self.messages(EventKind::RoomVacated, &room);
        self.apply(RoomOccupancy::Leave {
            room,
            node,
            now: now_ms(),
            messages,
        })
        .await;
    }

    /// Keeps this node's rooms alive, and vacates the rooms dead nodes held.
    async fn heartbeat(&self) {
        let now = now_ms();
        self.apply(RoomOccupancy::Refresh {
            node: self.settings.node.clone(),
            expires_at: now + self.settings.ttl.as_millis() as i64,
        })
        .await;
        match self.outbox.abandoned_rooms(now).await {
            Ok(rooms) => {
                for room in rooms {
                    self.leave(room, String::new()).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot look for abandoned rooms"),
        }
    }

    fn messages(&self, kind: EventKind, room: &str) -> Vec<NewWebhook> {
        self.webhooks
            .messages(kind, room, now_ms(), &RoomData { room })
    }

    /// Applies an occupancy change, retrying while the store is unavailable
    /// (the signals wait in their queue meanwhile).
    async fn apply(&self, change: RoomOccupancy) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.outbox.occupancy(change.clone()).await {
                Ok(_) => return,
                Err(err) if err.is_transient() && delay < Duration::from_secs(30) => {
                    tracing::warn!(error = %err, "cannot record an occupancy change; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => {
                    tracing::error!(error = %err, "an occupancy change was lost");
                    return;
                }
            }
        }
    }

    async fn record(&self, messages: Vec<NewWebhook>) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.outbox.record(messages.clone()).await {
                Ok(()) => return,
                Err(err) if err.is_transient() && delay < Duration::from_secs(30) => {
                    tracing::warn!(error = %err, "cannot record presence webhooks; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => {
                    tracing::error!(error = %err, "presence webhooks lost");
                    return;
                }
            }
        }
    }
}
