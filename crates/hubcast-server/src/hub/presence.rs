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

use crate::bus::{AnnouncedMember, PresenceFeed, PresenceKind, PresenceMember, PresenceMessage};
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
        PresenceSettings {
            max_members: 1000,
            heartbeat: Duration::from_secs(5),
            ttl: Duration::from_secs(15),
        }
    }
}

/// The longest TTL believed from a peer (a bad peer cannot pin members forever).
const MAX_TTL: Duration = Duration::from_secs(600);

/// One of this node's sessions of a member.
struct LocalSession {
    session: u64,
    entered_ms: i64,
    info: Option<serde_json::Value>,
}

struct LocalMember {
    /// This node's sessions of the member in the room, oldest first.
    sessions: Vec<LocalSession>,
}

impl LocalMember {
    /// The member's info on this node: its latest session's.
    fn latest(&self) -> Option<&LocalSession> {
        self.sessions.last()
    }
}

/// A subscriber's place in its room's presence: the member and the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MemberKey {
    pub(super) id: String,
    pub(super) session: u64,
}

struct Remote {
    members: Vec<AnnouncedMember>,
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
    pub(super) waiting: Vec<oneshot::Sender<Vec<(PresenceMember, i64)>>>,
    /// When this node next re-announces its members (while it has some).
    next_heartbeat: Option<Instant>,
    /// Pusher subscribers (by session) waiting for the settled member list
    /// before their `subscription_succeeded`, each with what follows it (a
    /// cache channel's last event or `pusher:cache_miss`).
    pub(super) pusher_waiting: Vec<(u64, Option<axum::extract::ws::Utf8Bytes>)>,
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
            pusher_waiting: Vec::new(),
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

    /// Session `session` of `member` entered. Its info becomes the member's
    /// (the latest session's info wins: a newer token carries fresher claims).
    pub(super) fn add_local(&mut self, member: &PresenceMember, session: u64) {
        let entry = self.local.entry(member.id.clone()).or_insert(LocalMember {
            sessions: Vec::new(),
        });
        // Never before the member's previous entry, so "latest" is the order
        // of entry even if the clock steps back.
        let entered_ms = entry
            .latest()
            .map_or(i64::MIN, |s| s.entered_ms)
            .max(crate::event::now_ms());
        entry.sessions.push(LocalSession {
            session,
            entered_ms,
            info: member.info.clone(),
        });
    }

    /// A session left; whether the member's info or membership on this node
    /// changed (so peers and watchers must hear of it).
    pub(super) fn remove_local(&mut self, key: &MemberKey) -> bool {
        let Some(entry) = self.local.get_mut(&key.id) else {
            return false;
        };
        let Some(i) = entry.sessions.iter().position(|s| s.session == key.session) else {
            return false;
        };
        let was_latest = i + 1 == entry.sessions.len();
        entry.sessions.remove(i);
        if entry.sessions.is_empty() {
            self.local.remove(&key.id);
            return true;
        }
        was_latest
    }

    /// This node's members, each with its latest session's info.
    pub(super) fn local_members(&self) -> impl Iterator<Item = PresenceMember> + '_ {
        self.local.iter().filter_map(|(id, m)| {
            m.latest().map(|s| PresenceMember {
                id: id.clone(),
                info: s.info.clone(),
            })
        })
    }

    pub(super) fn has_local(&self) -> bool {
        !self.local.is_empty()
    }

    /// This node's announcement: all its members of the room.
    pub(super) fn state_message(
        &mut self,
        settings: &PresenceSettings,
        now: Instant,
    ) -> PresenceMessage {
        let members = self
            .local
            .iter()
            .filter_map(|(id, m)| m.latest().map(|s| (id, m, s)))
            .map(|(id, m, s)| AnnouncedMember {
                member: PresenceMember {
                    id: id.clone(),
                    info: s.info.clone(),
                },
                entered_ms: s.entered_ms,
                since_ms: m.sessions.first().map(|s| s.entered_ms),
            })
            .collect();
        self.next_heartbeat = (!self.local.is_empty()).then(|| now + settings.heartbeat);
        PresenceMessage {
            node: self.node.clone(),
            kind: PresenceKind::State {
                members,
                ttl_ms: settings.ttl.as_millis() as u64,
            },
        }
    }

    pub(super) fn sync_message(&self) -> PresenceMessage {
        PresenceMessage {
            node: self.node.clone(),
            kind: PresenceKind::Sync,
        }
    }

    /// Takes a peer's announcement.
    pub(super) fn on_remote_state(
        &mut self,
        node: String,
        mut members: Vec<AnnouncedMember>,
        ttl_ms: u64,
        max: usize,
        now: Instant,
    ) {
        if members.is_empty() {
            self.remote.remove(&node);
            return;
        }
        members.truncate(max);
        let ttl = Duration::from_millis(ttl_ms).min(MAX_TTL);
        self.remote.insert(
            node,
            Remote {
                members,
                expires: now + ttl,
            },
        );
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
        let settle = (!self.waiting.is_empty() || !self.pusher_waiting.is_empty())
            .then_some(self.settle_until);
        [self.next_heartbeat, expiry, settle]
            .into_iter()
            .flatten()
            .min()
    }

    /// Recomputes the merged view; returns who joined and who left since
    /// watchers were last told. A member's info is that of its latest
    /// session on any node (by entry time, ties to the greater node id, so
    /// every node picks the same). A changed info of a member already in the
    /// view is not a join: it shows in the next `presence` list.
    pub(super) fn diff(&mut self) -> (Vec<PresenceMember>, Vec<PresenceMember>) {
        // id → (entered_ms, node, info) of the member's latest session.
        let mut latest: BTreeMap<&str, (i64, &str, &Option<serde_json::Value>)> = BTreeMap::new();
        let local = self.local.iter().filter_map(|(id, m)| {
            m.latest()
                .map(|s| (id.as_str(), s.entered_ms, self.node.as_str(), &s.info))
        });
        let remote = self.remote.iter().flat_map(|(node, r)| {
            r.members.iter().map(move |m| {
                (
                    m.member.id.as_str(),
                    m.entered_ms,
                    node.as_str(),
                    &m.member.info,
                )
            })
        });
        for (id, at, node, info) in local.chain(remote) {
            match latest.get(id) {
                Some(&(best_at, best_node, _)) if (best_at, best_node) >= (at, node) => {}
                _ => {
                    latest.insert(id, (at, node, info));
                }
            }
        }
        let merged: BTreeMap<String, Option<serde_json::Value>> = latest
            .into_iter()
            .map(|(id, (_, _, info))| (id.to_owned(), info.clone()))
            .collect();
        let joined = merged
            .iter()
            .filter(|(id, _)| !self.view.contains_key(*id))
            .map(|(id, info)| PresenceMember {
                id: id.clone(),
                info: info.clone(),
            })
            .collect();
        let left = self
            .view
            .iter()
            .filter(|(id, _)| !merged.contains_key(*id))
            .map(|(id, info)| PresenceMember {
                id: id.clone(),
                info: info.clone(),
            })
            .collect();
        self.view = merged;
        (joined, left)
    }

    /// Every member, by id.
    pub(super) fn members(&self) -> Vec<PresenceMember> {
        self.view
            .iter()
            .map(|(id, info)| PresenceMember {
                id: id.clone(),
                info: info.clone(),
            })
            .collect()
    }

    /// Every member, by id, with when it entered the room (ms since the Unix
    /// epoch): its oldest session's entry on any node, as far as the nodes
    /// report it.
    pub(super) fn members_since(&self) -> Vec<(PresenceMember, i64)> {
        let mut since: HashMap<&str, i64> = HashMap::new();
        let local = self
            .local
            .iter()
            .filter_map(|(id, m)| m.sessions.first().map(|s| (id.as_str(), s.entered_ms)));
        let remote = self.remote.values().flat_map(|r| {
            r.members
                .iter()
                .map(|m| (m.member.id.as_str(), m.since_ms.unwrap_or(m.entered_ms)))
        });
        for (id, at) in local.chain(remote) {
            let entry = since.entry(id).or_insert(at);
            *entry = (*entry).min(at);
        }
        self.members()
            .into_iter()
            .map(|member| {
                let at = since.get(member.id.as_str()).copied().unwrap_or(0);
                (member, at)
            })
            .collect()
    }

    /// The `presence` frame a `presence: true` subscriber starts with.
    pub(super) fn snapshot(&self, room: &RoomName) -> Utf8Bytes {
        ServerMessage::Presence {
            id: None,
            room,
            members: &self.members(),
        }
        .encode()
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, name: &str) -> PresenceMember {
        PresenceMember {
            id: id.into(),
            info: Some(serde_json::json!({ "name": name })),
        }
    }

    fn announced(id: &str, name: &str, entered_ms: i64) -> AnnouncedMember {
        AnnouncedMember {
            member: member(id, name),
            entered_ms,
            since_ms: None,
        }
    }

    fn infos(presence: &Presence) -> Vec<(String, String)> {
        presence
            .members()
            .into_iter()
            .map(|m| {
                (
                    m.id,
                    m.info
                        .and_then(|i| i["name"].as_str().map(str::to_owned))
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_members_info_is_its_latest_session_on_any_node() {
        let now = Instant::now();
        let mut presence = Presence::new("node-b".into(), None, Duration::ZERO);
        presence.add_local(&member("alice", "local"), 1);
        let local_entry = presence.local["alice"]
            .latest()
            .map(|s| s.entered_ms)
            .unwrap();
        presence.diff();
        assert_eq!(infos(&presence), [("alice".into(), "local".into())]);

        // A peer's session that entered later wins; an earlier one does not.
        presence.on_remote_state(
            "node-a".into(),
            vec![announced("alice", "older", local_entry - 1)],
            1000,
            10,
            now,
        );
        presence.diff();
        assert_eq!(infos(&presence), [("alice".into(), "local".into())]);
        presence.on_remote_state(
            "node-a".into(),
            vec![announced("alice", "newer", local_entry + 1)],
            1000,
            10,
            now,
        );
        let (joined, left) = presence.diff();
        assert!(
            joined.is_empty() && left.is_empty(),
            "an info change is no join or leave"
        );
        assert_eq!(infos(&presence), [("alice".into(), "newer".into())]);

        // Entered at the same millisecond: the greater node id, on every node.
        presence.on_remote_state(
            "node-a".into(),
            vec![announced("alice", "same-ms", local_entry)],
            1000,
            10,
            now,
        );
        presence.diff();
        assert_eq!(
            infos(&presence),
            [("alice".into(), "local".into())],
            "node-b > node-a"
        );

        // Removing the latest of two local sessions brings back the earlier one's info.
        presence.on_remote_state("node-a".into(), Vec::new(), 1000, 10, now);
        presence.add_local(&member("alice", "second"), 2);
        presence.diff();
        assert_eq!(infos(&presence), [("alice".into(), "second".into())]);
        assert!(
            presence.remove_local(&MemberKey {
                id: "alice".into(),
                session: 2
            }),
            "the info changed"
        );
        presence.diff();
        assert_eq!(infos(&presence), [("alice".into(), "local".into())]);
        presence.add_local(&member("alice", "third"), 3);
        assert!(
            !presence.remove_local(&MemberKey {
                id: "alice".into(),
                session: 1
            }),
            "an older session leaving changes nothing"
        );
        assert!(
            presence.remove_local(&MemberKey {
                id: "alice".into(),
                session: 3
            }),
            "the last session leaving"
        );
        presence.diff();
        assert!(infos(&presence).is_empty());
    }
}
