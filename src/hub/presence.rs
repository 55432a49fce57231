//! Presence: who is in a room, kept by the room's hub.
//!
//! A room's presence state exists only once something on this node uses it (a
//! `presence: true` subscription or a `presence` request): until then the hub
//! holds `None` and pays nothing. Members are keyed by the token's `sub` (or
//! the session id), so a user with several sessions is one member: it joins
//! with its first session and leaves with its last.
//!
//! The merged view is this node's members plus what every peer node last
//! announced on the bus (see `bus::nats` for why full-state heartbeats with
//! a TTL). Watchers are told the differences as `join` and `leave` frames.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::bus::{PresenceFeed, PresenceKind, PresenceMember, PresenceMessage};
use crate::protocol::ServerMessage;
use crate::room::RoomName;

/// Presence settings of every hub (the `[presence]` section).
#[derive(Debug, Clone)]
pub struct PresenceSettings {
    /// Most members of a room's presence.
    pub max_members: usize,
    /// How often this node re-announces its members of a room.
    pub heartbeat: Duration,
    /// How long a peer's announcement stays valid.
    pub ttl: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        PresenceSettings { max_members: 1000, heartbeat: Duration::from_secs(5), ttl: Duration::from_secs(15) }
    }
}

/// The longest TTL believed from a peer (a bad peer cannot pin members forever).
const MAX_TTL: Duration = Duration::from_secs(600);

struct LocalMember {
    info: Option<serde_json::Value>,
    /// This node's sessions of the member in the room.
    sessions: usize,
}

struct Remote {
    members: Vec<PresenceMember>,
    expires: Instant,
}

/// One room's presence on this node.
pub(super) struct Presence {
    pub(super) feed: Option<PresenceFeed>,
    node: String,
    local: HashMap<String, LocalMember>,
    remote: HashMap<String, Remote>,
    /// The merged view watchers have been told about.
    view: BTreeMap<String, Option<serde_json::Value>>,
    /// Until then, `presence` requests wait for peers' answers to our `sync`.
    settle_until: Instant,
    pub(super) waiting: Vec<oneshot::Sender<Utf8Bytes>>,
    /// When this node next re-announces its members (while it has some).
    next_heartbeat: Option<Instant>,
}

impl Presence {
    pub(super) fn new(node: String, feed: Option<PresenceFeed>, settle: Duration) -> Presence {
        Presence {
            feed,
            node,
            local: HashMap::new(),
            remote: HashMap::new(),
            view: BTreeMap::new(),
            settle_until: Instant::now() + settle,
            waiting: Vec::new(),
            next_heartbeat: None,
        }
    }

    pub(super) fn node(&self) -> &str {
        &self.node
    }

    pub(super) fn is_member(&self, id: &str) -> bool {
        self.view.contains_key(id) || self.local.contains_key(id)
    }

    pub(super) fn len(&self) -> usize {
        self.view.len()
    }

    pub(super) fn settled(&self, now: Instant) -> bool {
        now >= self.settle_until
    }

    /// A session of `member` entered.
    pub(super) fn add_local(&mut self, member: &PresenceMember) {
        let entry = self.local.entry(member.id.clone()).or_insert(LocalMember { info: member.info.clone(), sessions: 0 });
        entry.sessions += 1;
    }

    /// A session of `id` left; whether that was its last on this node.
    pub(super) fn remove_local(&mut self, id: &str) -> bool {
        match self.local.get_mut(id) {
            Some(entry) if entry.sessions > 1 => {
                entry.sessions -= 1;
                false
            }
            Some(_) => {
                self.local.remove(id);
                true
            }
            None => false,
        }
    }

    pub(super) fn has_local(&self) -> bool {
        !self.local.is_empty()
    }

    /// This node's announcement: all its members of the room.
    pub(super) fn state_message(&mut self, settings: &PresenceSettings, now: Instant) -> PresenceMessage {
        let members = self.local.iter().map(|(id, m)| PresenceMember { id: id.clone(), info: m.info.clone() }).collect();
        self.next_heartbeat = (!self.local.is_empty()).then(|| now + settings.heartbeat);
        PresenceMessage {
            node: self.node.clone(),
            kind: PresenceKind::State { members, ttl_ms: settings.ttl.as_millis() as u64 },
        }
    }

    pub(super) fn sync_message(&self) -> PresenceMessage {
        PresenceMessage { node: self.node.clone(), kind: PresenceKind::Sync }
    }

    /// Takes a peer's announcement.
    pub(super) fn on_remote_state(&mut self, node: String, mut members: Vec<PresenceMember>, ttl_ms: u64, max: usize, now: Instant) {
        if members.is_empty() {
            self.remote.remove(&node);
            return;
        }
        members.truncate(max);
        let ttl = Duration::from_millis(ttl_ms).min(MAX_TTL);
        self.remote.insert(node, Remote { members, expires: now + ttl });
    }

    /// Forgets peers not heard from within their TTL; whether any was.
    pub(super) fn expire(&mut self, now: Instant) -> bool {
        let before = self.remote.len();
        self.remote.retain(|_, remote| remote.expires > now);
        self.remote.len() != before
    }

    /// Whether a heartbeat is due.
    pub(super) fn heartbeat_due(&self, now: Instant) -> bool {
        self.next_heartbeat.is_some_and(|at| at <= now)
    }

    /// The next moment something must happen: a heartbeat, a peer's expiry,
    /// or the end of the settle window with requests waiting.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let expiry = self.remote.values().map(|r| r.expires).min();
        let settle = (!self.waiting.is_empty()).then_some(self.settle_until);
        [self.next_heartbeat, expiry, settle].into_iter().flatten().min()
    }

    /// Recomputes the merged view; returns who joined and who left since
    /// watchers were last told.
    pub(super) fn diff(&mut self) -> (Vec<PresenceMember>, Vec<PresenceMember>) {
        let mut merged: BTreeMap<String, Option<serde_json::Value>> = BTreeMap::new();
        for (id, member) in &self.local {
            merged.insert(id.clone(), member.info.clone());
        }
        for remote in self.remote.values() {
            for member in &remote.members {
                merged.entry(member.id.clone()).or_insert_with(|| member.info.clone());
            }
        }
        let joined = merged
            .iter()
            .filter(|(id, _)| !self.view.contains_key(*id))
            .map(|(id, info)| PresenceMember { id: id.clone(), info: info.clone() })
            .collect();
        let left = self
            .view
            .iter()
            .filter(|(id, _)| !merged.contains_key(*id))
            .map(|(id, info)| PresenceMember { id: id.clone(), info: info.clone() })
            .collect();
        self.view = merged;
        (joined, left)
    }

    /// The `presence` frame: every member, by id.
    pub(super) fn snapshot(&self, room: &RoomName) -> Utf8Bytes {
        let members: Vec<PresenceMember> =
            self.view.iter().map(|(id, info)| PresenceMember { id: id.clone(), info: info.clone() }).collect();
        ServerMessage::Presence { room, members: &members }.encode().into()
    }
}
