//! Occupancy and presence webhooks: turns the hubs' signals ([`RoomSignal`])
//! into `room.occupied`, `room.vacated`, `presence.joined` and
//! `presence.left` messages in the store's webhook outbox.
//!
//! Both are cluster-wide, with the store as the arbiter ([`Holding`]): this
//! node says when it holds a room (has subscribers there) or a member (has a
//! presence session of it) and when it stops (once its last subscriber or
//! session has been gone for `hub.occupancy_grace_ms`, so a reconnect to any
//! node within it sends nothing); the store records `room.occupied` /
//! `presence.joined` when the first node holds it and `room.vacated` /
//! `presence.left` when the last one stops, each in the transaction that
//! decides it, so exactly one node records each. Every
//! `presence.heartbeat_ms` the node refreshes what it holds for
//! `presence.ttl_ms` and leaves what only dead nodes held: a killed node's
//! rooms and members leave after the TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::PresenceMember;
use crate::event::now_ms;
use crate::store::webhook_outbox::{Holding, WebhookOutbox};
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
    /// This node's id (the bus's), its name in `webhook_holders`.
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
    /// What this node stopped holding — `(room, subject)`: a room whose
    /// last subscriber left, a member whose last session left — and when it
    /// lets go (unless it is back first), with the member to report.
    emptied: HashMap<(String, String), (Instant, Option<PresenceMember>)>,
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
        let next = tracker.emptied.values().map(|(at, _)| *at).min();
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

/// The subject of a room's occupancy in `webhook_holders`.
const OCCUPANCY: &str = "";

impl Tracker {
    async fn on_signal(&mut self, signal: RoomSignal) {
        match signal {
            RoomSignal::Occupied(room, true) => {
                let key = (room.as_str().to_owned(), OCCUPANCY.to_owned());
                // Back within the grace: this node never left.
                if self.emptied.remove(&key).is_some() {
                    return;
                }
                let messages = self.room_messages(EventKind::RoomOccupied, &key.0);
                self.enter(&key.0, OCCUPANCY, None, messages).await;
            }
            RoomSignal::Occupied(room, false) => {
                let deadline = Instant::now() + self.settings.grace;
                let key = (room.as_str().to_owned(), OCCUPANCY.to_owned());
                self.emptied.insert(key, (deadline, None));
            }
            RoomSignal::Member(room, member, true) => {
                let key = (room.as_str().to_owned(), member.id.clone());
                if self.emptied.remove(&key).is_some() {
                    return;
                }
                let messages = self.member_messages(EventKind::PresenceJoined, &key.0, &member);
                let info = member.info.as_ref().map(|info| info.to_string());
                self.enter(&key.0, &key.1, info, messages).await;
            }
            RoomSignal::Member(room, member, false) => {
                let deadline = Instant::now() + self.settings.grace;
                let key = (room.as_str().to_owned(), member.id.clone());
                self.emptied.insert(key, (deadline, Some(member)));
            }
        }
    }

    async fn leave_due(&mut self) {
        let now = Instant::now();
        let mut due: Vec<(String, String)> = self
            .emptied
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(key, _)| key.clone())
            .collect();
        // Members leave before their room is vacated.
        due.sort_by_key(|(_, subject)| subject.as_str() == OCCUPANCY);
        for key in due {
            let Some((_, member)) = self.emptied.remove(&key) else {
                continue;
            };
            let (room, subject) = key;
            let messages = match &member {
                Some(member) => self.member_messages(EventKind::PresenceLeft, &room, member),
                None => self.room_messages(EventKind::RoomVacated, &room),
            };
            let node = self.settings.node.clone();
            self.leave(&room, &subject, node, messages).await;
        }
    }

    async fn enter(
        &self,
        room: &str,
        subject: &str,
        info: Option<String>,
        messages: Vec<NewWebhook>,
    ) {
        self.apply(Holding::Enter {
            room: room.to_owned(),
            subject: subject.to_owned(),
            info,
            node: self.settings.node.clone(),
            expires_at: now_ms() + self.settings.ttl.as_millis() as i64,
            messages,
        })
        .await;
    }

    async fn leave(&self, room: &str, subject: &str, node: String, messages: Vec<NewWebhook>) {
        self.apply(Holding::Leave {
            room: room.to_owned(),
            subject: subject.to_owned(),
            node,
            now: now_ms(),
            messages,
        })
        .await;
    }

    /// Keeps what this node holds alive, and leaves what only dead nodes held.
    async fn heartbeat(&self) {
        let now = now_ms();
        self.apply(Holding::Refresh {
            node: self.settings.node.clone(),
            expires_at: now + self.settings.ttl.as_millis() as i64,
        })
        .await;
        match self.outbox.abandoned(now).await {
            Ok(abandoned) => {
                for held in abandoned {
                    let messages = if held.subject == OCCUPANCY {
                        self.room_messages(EventKind::RoomVacated, &held.room)
                    } else {
                        let member = PresenceMember {
                            id: held.subject.clone(),
                            info: held.info.and_then(|info| serde_json::from_str(&info).ok()),
                        };
                        self.member_messages(EventKind::PresenceLeft, &held.room, &member)
                    };
                    self.leave(&held.room, &held.subject, String::new(), messages)
                        .await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot look for what dead nodes held"),
        }
    }

    fn room_messages(&self, kind: EventKind, room: &str) -> Vec<NewWebhook> {
        self.webhooks
            .messages(kind, room, now_ms(), &RoomData { room })
    }

    fn member_messages(
        &self,
        kind: EventKind,
        room: &str,
        member: &PresenceMember,
    ) -> Vec<NewWebhook> {
        self.webhooks
            .messages(kind, room, now_ms(), &PresenceData { room, member })
    }

    /// Applies a change, retrying while the store is unavailable (the
    /// signals wait in their queue meanwhile).
    async fn apply(&self, change: Holding) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.outbox.holding(change.clone()).await {
                Ok(_) => return,
                Err(err) if err.is_transient() && delay < Duration::from_secs(30) => {
                    tracing::warn!(error = %err, "cannot record an occupancy or presence change; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => {
                    tracing::error!(error = %err, "an occupancy or presence change was lost");
                    return;
                }
            }
        }
    }
}
