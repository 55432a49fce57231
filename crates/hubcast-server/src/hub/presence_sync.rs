//! A hub's presence duties: following the room's presence on the bus once
//! first used, announcing this node's members, and telling watching
//! subscribers who joined and left. The state itself is [`super::presence`].

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use super::{offer_all, presence, Hub};
use crate::bus::{PresenceKind, PresenceMember, PresenceMessage};
use crate::protocol::ServerMessage;
use crate::webhook::RoomSignal;

impl Hub {
    /// Starts following the room's presence on the bus (once per hub).
    pub(super) async fn ensure_presence(&mut self) {
        if self.presence.is_some() {
            return;
        }
        let feed = match self.bus.watch_presence(&self.room).await {
            Ok(feed) => Some(feed),
            Err(err) => {
                tracing::warn!(room = %self.room, error = %err, "presence watch failed; peers' members will be missing");
                None
            }
        };
        let presence = presence::Presence::new(
            self.bus.node_id().to_owned(),
            feed,
            self.bus.presence_settle(),
        );
        // Ask peers for their members now instead of waiting a heartbeat.
        self.bus
            .publish_presence(&self.room, presence.sync_message());
        self.presence = Some(Box::new(presence));
    }

    /// Publishes this node's members of the room.
    pub(super) fn announce(&mut self) {
        let Some(presence) = self.presence.as_mut() else {
            return;
        };
        let message = presence.state_message(&self.settings.presence, Instant::now());
        self.bus.publish_presence(&self.room, message);
    }

    /// These presence sessions stopped being subscribers.
    pub(super) fn members_left(&mut self, keys: Vec<presence::MemberKey>) {
        if keys.is_empty() {
            return;
        }
        let Some(presence) = self.presence.as_mut() else {
            return;
        };
        let mut changed = false;
        for key in &keys {
            changed |= presence.remove_local(key);
        }
        if changed {
            self.announce();
            self.presence_changed();
        }
    }

    /// Tells watchers who joined and left the merged view. A watcher whose
    /// queue refuses is dropped, which may make its member leave in turn.
    pub(super) fn presence_changed(&mut self) {
        loop {
            self.signal_members();
            let Some(presence) = self.presence.as_mut() else {
                return;
            };
            let (joined, left) = presence.diff();
            if joined.is_empty() && left.is_empty() {
                return;
            }
            let mut gone = Vec::new();
            let changes = joined
                .iter()
                .map(|member| (member, true))
                .chain(left.iter().map(|member| (member, false)));
            for (member, added) in changes {
                let room = &self.room;
                let frame: Utf8Bytes = if added {
                    ServerMessage::Join { room, member }.encode().into()
                } else {
                    ServerMessage::Leave { room, member }.encode().into()
                };
                // Encoded once for every Pusher watcher (one channel per room).
                let mut pusher_frame: Option<Utf8Bytes> = None;
                let (_, dropped) = offer_all(&mut self.subscribers, true, |sub| {
                    if !sub.watching {
                        return None;
                    }
                    Some(match &sub.pusher {
                        None => frame.clone(),
                        Some(wire) => pusher_frame
                            .get_or_insert_with(|| {
                                if added {
                                    crate::pusher::frame::member_added(&wire.channel, member)
                                } else {
                                    crate::pusher::frame::member_removed(&wire.channel, member)
                                }
                            })
                            .clone(),
                    })
                });
                gone.extend(dropped);
            }
            let Some(presence) = self.presence.as_mut() else {
                return;
            };
            let mut changed = false;
            for key in &gone {
                changed |= presence.remove_local(key);
            }
            if changed {
                self.announce();
            }
        }
    }

    /// Tells the occupancy task which members got their first session on
    /// this node, and which lost their last (the store decides, across
    /// nodes, when that is a `presence.joined` or `presence.left`).
    fn signal_members(&mut self) {
        let (Some(signals), Some(presence)) = (&self.settings.signals, self.presence.as_ref())
        else {
            return;
        };
        let mut now: std::collections::HashMap<String, PresenceMember> = presence
            .local_members()
            .map(|m| (m.id.clone(), m))
            .collect();
        self.signalled_members.retain(|id, member| {
            if now.remove(id).is_none() {
                signals.send(RoomSignal::Member(self.room.clone(), member.clone(), false));
                return false;
            }
            true
        });
        for (id, member) in now {
            signals.send(RoomSignal::Member(self.room.clone(), member.clone(), true));
            self.signalled_members.insert(id, member);
        }
    }

    pub(super) fn on_presence(&mut self, message: Arc<PresenceMessage>) {
        let Some(presence) = self.presence.as_mut() else {
            return;
        };
        if message.node == presence.node() {
            return;
        }
        match &message.kind {
            PresenceKind::Sync => {
                if presence.has_local() {
                    self.announce();
                }
            }
            PresenceKind::State { members, ttl_ms } => {
                let max = self.settings.presence.max_members;
                presence.on_remote_state(
                    message.node.clone(),
                    members.clone(),
                    *ttl_ms,
                    max,
                    Instant::now(),
                );
                self.presence_changed();
            }
        }
    }

    /// Heartbeats, expiry of silent peers, and requests waiting to settle.
    pub(super) fn on_presence_timer(&mut self) {
        let now = Instant::now();
        let Some(presence) = self.presence.as_mut() else {
            return;
        };
        let expired = presence.expire(now);
        let heartbeat = presence.heartbeat_due(now);
        if presence.settled(now) && !presence.waiting.is_empty() {
            let members = presence.members_since();
            for reply in presence.waiting.drain(..) {
                let _ = reply.send(members.clone());
            }
        }
        if presence.settled(now) && !presence.pusher_waiting.is_empty() {
            let waiting = std::mem::take(&mut presence.pusher_waiting);
            let members = presence.members();
            let mut gone = Vec::new();
            for (session, cached) in waiting {
                let Some(i) = self
                    .subscribers
                    .iter()
                    .position(|s| s.out.session_id == session)
                else {
                    continue; // It left meanwhile.
                };
                let sub = &mut self.subscribers[i];
                let Some(wire) = &sub.pusher else { continue };
                let frame = crate::pusher::frame::presence_succeeded(&wire.channel, &members);
                let queued = sub.out.offer(frame) == crate::outbound::Offer::Queued
                    && cached.map_or(true, |frame| {
                        sub.out.offer(frame) == crate::outbound::Offer::Queued
                    });
                if queued {
                    sub.watching = true;
                } else {
                    gone.extend(self.subscribers.swap_remove(i).member);
                }
            }
            self.members_left(gone);
        }
        if heartbeat {
            self.announce();
        }
        if expired {
            self.presence_changed();
        }
    }
}
