//! The cluster bus: NATS core pub/sub.
//!
//! After commit a node publishes each event to `<prefix>.room.<room>`, as the
//! very `event` frame its sessions get (one encoder, [`encode_event`]; peers
//! read it back as a [`ServerFrame::Event`], one definition of the shape); every
//! node with a hub for that room has subscribed to that subject and delivers
//! it. Local hubs are fed directly (the connection is `no_echo`), so a node's
//! own events never wait for a round trip through NATS. NATS core is at most
//! once; that is enough here because hubs heal gaps from the store and
//! reconcile on an interval and at once after every reconnect.
//!
//! # Presence across nodes
//! Presence goes over the same connection, on `<prefix>.presence.<room>`:
//! a node with members in a room publishes its *whole* member list of that
//! room (JSON [`PresenceMessage`]) on every change and every
//! `presence.heartbeat_ms`, with a `ttl_ms`; a node that starts following a
//! room sends `sync` and its peers answer with their lists. Receivers keep
//! each node's list until it is replaced or its TTL runs out, so the members
//! of a killed node leave within `ttl_ms` (the hub does the expiry).
//!
//! # Control
//! Admin actions go to `<prefix>.control` as JSON [`ControlMessage`]s; the
//! connection is `no_echo`, so only the other nodes get them (the acting node
//! applied it already, see `bus`).
//!
//! # Counts
//! A node asks its peers for their subscriber counts with one request on
//! `<prefix>.counts` (JSON [`CountQuery`], a fresh inbox as its reply
//! subject); each peer answers there with its [`NodeCounts`]. The asker
//! knows how many answers to wait for from hellos: every node publishes its
//! id on `<prefix>.nodes` when it connects and every [`HELLO_EVERY`], and
//! answers a newcomer's hello with its own, so each node knows its live
//! peers (those heard within [`PEER_TTL`]). It waits until each of them has
//! answered, at most [`COUNTS_WAIT`]: a node killed within the last
//! `PEER_TTL` makes queries wait that long, and a node too slow to answer
//! is left out of that one answer.
//!
//! Why heartbeats over core NATS rather than a JetStream KV bucket with a TTL:
//! presence is ephemeral, so it needs no storage; NATS 2.9 has no per-key TTL
//! (only a bucket-wide `max_age`), and an entry aged out by `max_age` vanishes
//! without telling watchers (no delete marker), so the "node died → its
//! members leave" signal would need a timer on every receiver anyway; and
//! JetStream would become a new requirement of the cluster. Full-state
//! messages make loss harmless (the next one repairs it) and keep the cost at
//! one small message per (node, room with members) per heartbeat; rooms
//! without presence send nothing.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::memory::MemoryBus;
use super::{
    Bus, BusError, BusFeed, BusMessage, ControlFeed, ControlMessage, CountQuery, CountQueryFeed,
    NodeCounts, PresenceFeed, PresenceMessage, CONTROL_FEED_CAPACITY, FEED_CAPACITY,
    PRESENCE_FEED_CAPACITY,
};
use crate::event::{EphemeralMessage, Event};
use crate::protocol::{encode_ephemeral, encode_event, ServerFrame};
use crate::room::RoomName;

pub struct NatsBus {
    client: async_nats::Client,
    prefix: String,
    local: MemoryBus,
    /// Bounded in events (`nats.max_queue`): while NATS is unreachable the
    /// publish task stalls, and past the bound new events are dropped and
    /// counted (peers' hubs heal them by reconcile) instead of growing memory.
    /// Ephemeral messages share it, so one task publishes in order.
    outgoing: mpsc::Sender<BusMessage>,
    reconnects: watch::Receiver<u64>,
    node: String,
    /// Presence announcements and control messages, in order. Bounded like
    /// `outgoing`; a dropped announcement is repaired by the next heartbeat,
    /// a dropped revocation by the peers' reload.
    presence_out: mpsc::Sender<(String, bytes::Bytes)>,
    /// The other nodes, by id, with when each was last heard (see *Counts*).
    peers: Peers,
}

type Peers = Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>;

/// How often a node says hello on `<prefix>.nodes`.
pub const HELLO_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A peer not heard for this long is presumed gone.
pub const PEER_TTL: std::time::Duration = std::time::Duration::from_secs(15);

/// The longest a count query waits for its peers' answers.
pub const COUNTS_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The subject of count queries: `<prefix>.counts`.
pub fn counts_subject(prefix: &str) -> String {
    format!("{prefix}.counts")
}

/// The subject of the nodes' hellos: `<prefix>.nodes`.
pub fn nodes_subject(prefix: &str) -> String {
    format!("{prefix}.nodes")
}

/// Says hello on connect and every [`HELLO_EVERY`], answers a newcomer's
/// hello with one, and keeps `peers` (see *Counts*).
async fn hellos(client: async_nats::Client, prefix: String, node: String, peers: Peers) {
    let subject = nodes_subject(&prefix);
    let mut hellos = loop {
        match client.subscribe(subject.clone()).await {
            Ok(subscription) => break subscription,
            Err(err) => {
                tracing::warn!(error = %err, "cannot follow the nodes' hellos; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let hello = bytes::Bytes::from(node.clone());
    let mut every = tokio::time::interval(HELLO_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let _ = client.publish(subject.clone(), hello.clone()).await;
            }
            message = hellos.next() => {
                let Some(message) = message else { return };
                let Ok(id) = std::str::from_utf8(&message.payload) else { continue };
                if id == node {
                    continue;
                }
                let new = peers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_owned(), std::time::Instant::now())
                    .is_none();
                if new {
                    let _ = client.publish(subject.clone(), hello.clone()).await;
                }
            }
        }
    }
}

/// How long a hub that starts following a room's presence waits for its
/// peers' `sync` answers before answering a `presence` request.
const PRESENCE_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// The presence subject for a room: `<prefix>.presence.<room>` (escaped as in [`subject`]).
pub fn presence_subject(prefix: &str, room: &RoomName) -> String {
    let events = subject(prefix, room);
    format!(
        "{prefix}.presence.{}",
        &events[prefix.len() + ".room.".len()..]
    )
}

/// The subject of admin actions every node applies: `<prefix>.control`.
pub fn control_subject(prefix: &str) -> String {
    format!("{prefix}.control")
}

/// The subject for a room. Room names may hold `.` (the subject token
/// separator) and `=`; both are escaped (`=2E`, `=3D`) so the mapping is
/// one-to-one and a room is always exactly one token.
pub fn subject(prefix: &str, room: &RoomName) -> String {
    let mut subject = String::with_capacity(prefix.len() + room.len() + 8);
    subject.push_str(prefix);
    subject.push_str(".room.");
    for c in room.chars() {
        match c {
            '.' => subject.push_str("=2E"),
            '=' => subject.push_str("=3D"),
            c => subject.push(c),
        }
    }
    subject
}

/// How long a node waits for NATS at start before saying it cannot reach it.
const FIRST_CONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The client retries its first connect in the background (so a node starts
/// while NATS is down): say so at start, or an unreachable bus URL would go
/// unnoticed while events reach other nodes only through reconcile.
fn warn_while_unreachable(client: async_nats::Client, url: String) {
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_CONNECT_GRACE).await;
        if client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!(
                "cannot reach nats at {url} (still retrying): until it answers, other nodes \
                 learn of this node's events only by reconciling with the store"
            );
        }
    });
}

impl NatsBus {
    pub async fn connect(
        url: &str,
        config: &crate::config::NatsConfig,
    ) -> Result<NatsBus, super::OpenError> {
        let prefix = config.subject_prefix.as_str();
        let (reconnect_tx, reconnects) = watch::channel(0u64);
        let client = async_nats::ConnectOptions::new()
            .no_echo()
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let reconnect_tx = reconnect_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("nats connected");
                            reconnect_tx.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("nats disconnected; reconciling from the store")
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|source| super::OpenError::Nats {
                url: url.to_owned(),
                source,
            })?;
        warn_while_unreachable(client.clone(), url.to_owned());
        let (outgoing, rx) = mpsc::channel(config.max_queue);
        tokio::spawn(publish_loop(client.clone(), prefix.to_owned(), rx));
        let node = super::new_node_id();
        let (presence_out, presence_rx) = mpsc::channel(PRESENCE_OUT_CAPACITY);
        tokio::spawn(presence_publish_loop(client.clone(), presence_rx));
        let peers = Peers::default();
        tokio::spawn(hellos(
            client.clone(),
            prefix.to_owned(),
            node.clone(),
            peers.clone(),
        ));
        Ok(NatsBus {
            peers,
            presence_out,
            client,
            prefix: prefix.to_owned(),
            local: MemoryBus::with_node_id(node.clone()),
            outgoing,
            reconnects,
            node,
        })
    }
}

/// The longest `watch` waits for the server to confirm a new subscription.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl NatsBus {
    /// Returns once the NATS server has processed what this connection sent
    /// before (the subscription `watch` just asked for): a request on a
    /// subject nobody serves is answered "no responders" by the server, in
    /// order with the connection's earlier commands. So a hub's room is
    /// followed before its first subscriber is told it is subscribed, and a
    /// message another node publishes after that (a Pusher client event
    /// triggered the moment `subscription_succeeded` arrived) is routed
    /// here. Bounded by [`CONFIRM_WAIT`], and skipped while disconnected.
    async fn confirm_subscriptions(&self) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let probe = format!("{}.probe.{}", self.prefix, self.node);
        let _ = tokio::time::timeout(
            CONFIRM_WAIT,
            self.client.request(probe, bytes::Bytes::new()),
        )
        .await;
    }
}

/// Presence announcements waiting to be published before new ones are dropped.
const PRESENCE_OUT_CAPACITY: usize = 1024;

/// Publishes committed events (and ephemeral messages) in order, one task
/// so per-room order holds. Both go out as the frame sessions get.
async fn publish_loop(
    client: async_nats::Client,
    prefix: String,
    mut messages: mpsc::Receiver<BusMessage>,
) {
    while let Some(message) = messages.recv().await {
        let frame = match &message {
            BusMessage::Event(event) => encode_event(event),
            BusMessage::Ephemeral(ephemeral) => encode_ephemeral(ephemeral),
        };
        let payload = bytes::Bytes::from(frame.as_str().to_owned());
        let metrics = crate::metrics::get();
        metrics.bus_published.increment(1);
        let room = message.room();
        if let Err(err) = client.publish(subject(&prefix, room), payload).await {
            metrics.bus_errors.increment(1);
            tracing::warn!(%room, error = %err, "nats publish failed; peers will reconcile events (ephemeral messages are lost)");
        }
    }
}

/// Publishes presence messages in order. Best effort: a failure is repaired
/// by the next heartbeat.
async fn presence_publish_loop(
    client: async_nats::Client,
    mut messages: mpsc::Receiver<(String, bytes::Bytes)>,
) {
    while let Some((subject, payload)) = messages.recv().await {
        if let Err(err) = client.publish(subject, payload).await {
            crate::metrics::get().bus_errors.increment(1);
            tracing::debug!(error = %err, "nats presence publish failed; the next heartbeat repairs it");
        }
    }
}

impl Bus for NatsBus {
    fn publish(&self, events: Vec<Arc<Event>>) {
        self.local.publish(events.clone());
        for event in events {
            if self.outgoing.try_send(BusMessage::Event(event)).is_err() {
                crate::metrics::get().bus_dropped.increment(1);
            }
        }
    }

    fn publish_ephemeral(&self, message: Arc<EphemeralMessage>) {
        self.local.publish_ephemeral(message.clone());
        if self
            .outgoing
            .try_send(BusMessage::Ephemeral(message))
            .is_err()
        {
            crate::metrics::get().bus_dropped.increment(1);
        }
    }

    fn watch(&self, room: &RoomName) -> BoxFuture<'_, Result<BusFeed, BusError>> {
        let room = room.clone();
        async move {
            let (tx, rx) = mpsc::channel(FEED_CAPACITY);
            let subscription = self
                .client
                .subscribe(subject(&self.prefix, &room))
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            self.local.add_watcher(&room, tx.clone());
            self.confirm_subscriptions().await;
            tokio::spawn(forward(subscription, tx, move |payload| {
                let message = match serde_json::from_slice(payload).ok()? {
                    ServerFrame::Event(frame) if frame.room == room.as_str() => {
                        BusMessage::Event(Arc::new(Event {
                            room: room.clone(),
                            seq: frame.seq,
                            ts: frame.ts,
                            data: frame.data,
                            origin: None,
                        }))
                    }
                    ServerFrame::Ephemeral(frame) if frame.room == room.as_str() => {
                        BusMessage::Ephemeral(Arc::new(EphemeralMessage {
                            room: room.clone(),
                            ts: frame.ts,
                            data: frame.data,
                            origin: None,
                        }))
                    }
                    _ => return None,
                };
                crate::metrics::get().bus_received.increment(1);
                Some(message)
            }));
            Ok(rx)
        }
        .boxed()
    }

    fn carries_heads(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BusError>> {
        let state = self.client.connection_state();
        async move {
            match state {
                async_nats::connection::State::Connected => Ok(()),
                other => Err(BusError::Unavailable(
                    format!("nats is {other:?}").to_lowercase(),
                )),
            }
        }
        .boxed()
    }

    fn reconnects(&self) -> Option<watch::Receiver<u64>> {
        Some(self.reconnects.clone())
    }

    fn node_id(&self) -> &str {
        &self.node
    }

    fn publish_presence(&self, room: &RoomName, message: PresenceMessage) {
        let payload = match serde_json::to_vec(&message) {
            Ok(payload) => bytes::Bytes::from(payload),
            Err(_) => return,
        };
        self.local.publish_presence(room, message);
        // One task publishes them in order: a node's later state must not be
        // overtaken by an earlier one (a stale list would live until its TTL).
        if self
            .presence_out
            .try_send((presence_subject(&self.prefix, room), payload))
            .is_err()
        {
            crate::metrics::get().bus_dropped.increment(1);
        }
    }

    fn watch_presence(&self, room: &RoomName) -> BoxFuture<'_, Result<PresenceFeed, BusError>> {
        let room = room.clone();
        async move {
            let (tx, rx) = mpsc::channel(PRESENCE_FEED_CAPACITY);
            let subscription = self
                .client
                .subscribe(presence_subject(&self.prefix, &room))
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            self.local.add_presence_watcher(&room, tx.clone());
            tokio::spawn(forward(subscription, tx, |payload| {
                serde_json::from_slice::<PresenceMessage>(payload)
                    .ok()
                    .map(Arc::new)
            }));
            Ok(rx)
        }
        .boxed()
    }

    fn presence_settle(&self) -> std::time::Duration {
        PRESENCE_SETTLE
    }

    fn publish_control(&self, message: ControlMessage) {
        let Ok(payload) = serde_json::to_vec(&message) else {
            return;
        };
        if self
            .presence_out
            .try_send((control_subject(&self.prefix), bytes::Bytes::from(payload)))
            .is_err()
        {
            crate::metrics::get().bus_dropped.increment(1);
        }
    }

    fn ask_counts(&self, query: CountQuery) -> BoxFuture<'_, Vec<NodeCounts>> {
        async move {
            let Ok(payload) = serde_json::to_vec(&query) else {
                return Vec::new();
            };
            let now = std::time::Instant::now();
            let mut expected: std::collections::HashSet<String> = {
                let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                peers.retain(|_, heard| now.duration_since(*heard) < PEER_TTL);
                peers.keys().cloned().collect()
            };
            if expected.is_empty() {
                return Vec::new();
            }
            let inbox = self.client.new_inbox();
            let mut replies = match self.client.subscribe(inbox.clone()).await {
                Ok(replies) => replies,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot ask the other nodes for their counts");
                    return Vec::new();
                }
            };
            if let Err(err) = self
                .client
                .publish_with_reply(counts_subject(&self.prefix), inbox, payload.into())
                .await
            {
                tracing::warn!(error = %err, "cannot ask the other nodes for their counts");
                return Vec::new();
            }
            let mut answers = Vec::new();
            let deadline = tokio::time::Instant::now() + COUNTS_WAIT;
            while !expected.is_empty() {
                let reply = match tokio::time::timeout_at(deadline, replies.next()).await {
                    Ok(Some(reply)) => reply,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::debug!(
                            missing = expected.len(),
                            "peers did not answer a count query in time"
                        );
                        break;
                    }
                };
                let Ok(counts) = serde_json::from_slice::<NodeCounts>(&reply.payload) else {
                    crate::metrics::get().bus_errors.increment(1);
                    continue;
                };
                expected.remove(&counts.node);
                answers.push(counts);
            }
            let _ = replies.unsubscribe().await;
            answers
        }
        .boxed()
    }

    fn watch_count_queries(&self) -> BoxFuture<'_, Result<CountQueryFeed, BusError>> {
        async move {
            let (tx, rx) = mpsc::channel(CONTROL_FEED_CAPACITY);
            let mut subscription = self
                .client
                .subscribe(counts_subject(&self.prefix))
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            let client = self.client.clone();
            tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    let (Some(reply), Ok(query)) = (
                        message.reply,
                        serde_json::from_slice::<CountQuery>(&message.payload),
                    ) else {
                        crate::metrics::get().bus_errors.increment(1);
                        continue;
                    };
                    let (answer, answered) = tokio::sync::oneshot::channel();
                    if tx.try_send((query, answer)).is_err() {
                        if tx.is_closed() {
                            break;
                        }
                        continue; // Too many at once: this one goes unanswered.
                    }
                    let client = client.clone();
                    tokio::spawn(async move {
                        let Ok(counts) = answered.await else { return };
                        let Ok(payload) = serde_json::to_vec(&counts) else {
                            return;
                        };
                        let _ = client.publish(reply, payload.into()).await;
                    });
                }
                let _ = subscription.unsubscribe().await;
            });
            Ok(rx)
        }
        .boxed()
    }

    fn watch_control(&self) -> BoxFuture<'_, Result<ControlFeed, BusError>> {
        async move {
            let (tx, rx) = mpsc::channel(CONTROL_FEED_CAPACITY);
            let subscription = self
                .client
                .subscribe(control_subject(&self.prefix))
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            tokio::spawn(forward(subscription, tx, |payload| {
                serde_json::from_slice::<ControlMessage>(payload)
                    .ok()
                    .map(Arc::new)
            }));
            Ok(rx)
        }
        .boxed()
    }
}

/// Feeds a watcher from a NATS subscription until the watcher is dropped,
/// then unsubscribes. Messages `decode` refuses are counted and skipped; a full
/// feed drops (the hub heals the gap from the store, presence from the next
/// heartbeat).
async fn forward<T>(
    mut subscription: async_nats::Subscriber,
    feed: mpsc::Sender<T>,
    decode: impl Fn(&[u8]) -> Option<T>,
) {
    loop {
        tokio::select! {
            _ = feed.closed() => break,
            message = subscription.next() => {
                let Some(message) = message else { break };
                match decode(&message.payload) {
                    Some(item) => {
                        let _ = feed.try_send(item);
                    }
                    None => {
                        crate::metrics::get().bus_errors.increment(1);
                        tracing::warn!(subject = %message.subject, "ignoring malformed bus message");
                    }
                }
            }
        }
    }
    let _ = subscription.unsubscribe().await;
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    #[test]
    fn subjects_escape_dots_and_equals() {
        let room = |s| RoomName::parse(s).unwrap();
        assert_eq!(
            subject("hubcast", &room("market:42")),
            "hubcast.room.market:42"
        );
        assert_eq!(
            subject("hubcast", &room("chat.general")),
            "hubcast.room.chat=2Egeneral"
        );
        assert_eq!(subject("t1", &room("a=2E")), "t1.room.a=3D2E");
        assert_ne!(subject("p", &room("a.b")), subject("p", &room("a=2Eb")));
        assert_eq!(
            presence_subject("hubcast", &room("chat.general")),
            "hubcast.presence.chat=2Egeneral"
        );
    }

    #[test]
    fn a_published_event_reads_back_as_itself() {
        let data = RawValue::from_string(r#"{"p": [0.5, "é"]}"#.into()).unwrap();
        let event = Event {
            room: RoomName::parse("market:42").unwrap(),
            seq: 7,
            ts: 1000,
            data,
            origin: None,
        };
        let payload = encode_event(&event);
        let Ok(ServerFrame::Event(frame)) =
            serde_json::from_slice::<ServerFrame>(payload.as_str().as_bytes())
        else {
            panic!("{}", payload.as_str())
        };
        assert_eq!(
            (frame.room.as_str(), frame.seq, frame.ts, frame.data.get()),
            ("market:42", 7, 1000, event.data.get())
        );
    }
}
