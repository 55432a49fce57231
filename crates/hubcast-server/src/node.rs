//! The node: one `hubcast serve` process's shared state and background tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, CountQuery, NodeCounts};
use crate::config::Config;
use crate::hub::{HubSettings, Hubs};
use crate::room::RoomName;
use crate::store::{CommitFeed, RetentionPolicy, Store};
use crate::webhook::EventKind;

/// Everything request handlers and sessions share.
pub struct Node {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// The same store with its backend type, for application transactions.
    pub backend: crate::store::Backend,
    pub bus: Arc<dyn Bus>,
    pub hubs: Hubs,
    /// The store reads subscriptions cannot avoid, shared and queued.
    pub reads: crate::store::reads::Reads,
    pub auth: crate::auth::Auth,
    /// Every namespace's rules, resolved per room.
    pub namespaces: crate::namespace::Namespaces,
    pub limits: Arc<crate::limits::Limits>,
    /// Cancelled when the node begins its graceful shutdown.
    pub shutdown: CancellationToken,
    /// Tracks session tasks so shutdown can wait for them to close.
    pub sessions: TaskTracker,
    /// The live sessions that hold a token, for disconnects and revocations.
    pub roster: crate::roster::Roster,
    pub started: Instant,
    /// Renders `/metrics`; `None` if another recorder owns this process.
    pub prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Per-second samples of the totals, for `/v1/stats`.
    pub samples: crate::stats::Samples,
    next_session: AtomicU64,
    /// Random per-process prefix that keeps session ids unique across restarts.
    session_prefix: u32,
    /// The `[[webhooks]]` endpoints (and the Pusher apps'), if any.
    pub webhooks: Option<Arc<crate::webhook::Webhooks>>,
    /// The `[[pusher.apps]]` (none: the Pusher routes answer 404).
    pub pusher: crate::pusher::Apps,
}

impl Node {
    /// Opens the store and the bus and starts the node's background tasks.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<Arc<Node>, crate::ServeError> {
        let prometheus = crate::metrics::install();
        let auth =
            crate::auth::Auth::from_config(&config.auth, &config.namespaces, config.insecure)?;
        let limits = crate::limits::Limits::new(&config.rate_limits);
        let namespaces = crate::namespace::Namespaces::new(&config.namespaces);
        let pusher = crate::pusher::Apps::from_config(&config.pusher)
            .map_err(crate::config::ConfigError::Check)?;
        let webhooks = crate::webhook::Webhooks::from_config(&config.webhooks, &config.pusher)
            .map_err(crate::config::ConfigError::Check)?;
        let webhooks = (!webhooks.endpoints.is_empty()).then(|| Arc::new(webhooks));
        let (backend, commits) =
            crate::store::open_with_webhooks(&config, webhooks.clone()).await?;
        let store = backend.store();
        let outbox = backend.webhook_outbox();
        let signal_kinds = [
            EventKind::RoomOccupied,
            EventKind::RoomVacated,
            EventKind::PresenceJoined,
            EventKind::PresenceLeft,
        ];
        let (signals, signal_queues) = match &webhooks {
            Some(hooks) => {
                let occupancy = signal_kinds.iter().any(|k| hooks.any_wants(*k));
                let counts = hooks.wants_subscription_counts();
                let (signals, queues) = crate::webhook::RoomSignals::channel(occupancy, counts);
                ((occupancy || counts).then_some(signals), Some(queues))
            }
            None => (None, None),
        };
        let bus = crate::bus::open(&config).await?;
        let hubs = Hubs::new(
            store.clone(),
            bus.clone(),
            HubSettings {
                tail: config.hub.tail,
                idle: Duration::from_millis(config.hub.idle_ms),
                slow_broadcast: Duration::from_millis(config.hub.slow_broadcast_ms),
                max_subscribers: config.rate_limits.max_subscribers_per_room,
                presence: crate::hub::PresenceSettings {
                    max_members: config.presence.max_members,
                    heartbeat: Duration::from_millis(config.presence.heartbeat_ms),
                    ttl: Duration::from_millis(config.presence.ttl_ms),
                },
                namespaces: namespaces.clone(),
                signals,
            },
        );
        let reads = crate::store::reads::Reads::new(store.clone(), read_concurrency(&config));
        let node = Arc::new(Node {
            config,
            reads,
            store,
            backend,
            bus,
            hubs,
            auth,
            namespaces,
            limits,
            shutdown,
            sessions: TaskTracker::new(),
            roster: crate::roster::Roster::default(),
            started: Instant::now(),
            prometheus,
            samples: crate::stats::Samples::default(),
            next_session: AtomicU64::new(1),
            session_prefix: rand::random(),
            webhooks: webhooks.clone(),
            pusher,
        });
        if let Some(webhooks) = webhooks {
            crate::webhook_worker::start(webhooks.clone(), outbox.clone(), node.shutdown.clone());
            let queues = signal_queues.unwrap_or(crate::webhook::SignalQueues {
                occupancy: None,
                counts: None,
            });
            if let Some(counts) = queues.counts {
                tokio::spawn(count_webhooks(node.clone(), webhooks.clone(), counts));
            }
            if let Some(queue) = queues.occupancy {
                let settings = crate::occupancy::OccupancySettings {
                    node: node.bus.node_id().to_owned(),
                    grace: Duration::from_millis(node.config.hub.occupancy_grace_ms),
                    heartbeat: Duration::from_millis(node.config.presence.heartbeat_ms),
                    ttl: Duration::from_millis(node.config.presence.ttl_ms),
                };
                tokio::spawn(crate::occupancy::run(
                    webhooks,
                    outbox,
                    settings,
                    queue,
                    node.shutdown.clone(),
                ));
            }
        }
        tokio::spawn(forward_commits(
            commits,
            node.bus.clone(),
            Duration::from_millis(node.config.hub.reconcile_ms.max(10)),
        ));
        tokio::spawn(reconcile(node.clone()));
        tokio::spawn(retention(node.clone()));
        tokio::spawn(housekeeping(node.clone()));
        Ok(node)
    }

    /// The largest event `room` accepts: its namespace's limit, never above
    /// the node-wide `limits.max_event_bytes` (which also sizes frames and bodies).
    pub fn max_event_bytes(&self, room: &crate::room::RoomName) -> usize {
        let node_max = self.config.limits.max_event_bytes;
        self.namespaces.for_room(room).max_event_bytes(node_max)
    }

    /// Whether a publish to `room` that asked for `ephemeral` (or not) is
    /// ephemeral, by the room's namespace; refused where it is not allowed.
    /// HTTP and socket publishes both ask here.
    pub fn resolve_ephemeral(
        &self,
        room: &crate::room::RoomName,
        asked: bool,
        expected_seq: Option<u64>,
    ) -> Result<bool, (crate::protocol::codes::ErrorCode, String)> {
        use crate::protocol::codes::ErrorCode;
        let ephemeral = self.namespaces.for_room(room).ephemeral(asked).map_err(|()| {
            (
                ErrorCode::EphemeralNotAllowed,
                format!("room {room} does not take ephemeral messages (its namespace's `ephemeral` option is off)"),
            )
        })?;
        if ephemeral && expected_seq.is_some() {
            return Err((
                ErrorCode::BadRequest,
                crate::protocol::EPHEMERAL_WITH_EXPECTED_SEQ.to_owned(),
            ));
        }
        Ok(ephemeral)
    }

    /// Hands an ephemeral message to every node's subscribers of its room,
    /// through the bus only: no store write, no seq. Returns its `ts`.
    pub fn publish_ephemeral(
        &self,
        room: crate::room::RoomName,
        data: Box<serde_json::value::RawValue>,
        origin: Option<u64>,
    ) -> i64 {
        let ts = crate::event::now_ms();
        crate::metrics::get().ephemeral_published.increment(1);
        self.bus
            .publish_ephemeral(Arc::new(crate::event::EphemeralMessage {
                room,
                ts,
                data,
                origin,
            }));
        ts
    }

    /// The node's numbers right now.
    pub fn sample(&self) -> crate::stats::Sample {
        let (connections, published, delivered) = crate::metrics::get().totals.read();
        crate::stats::Sample {
            t: crate::event::now_ms(),
            connections,
            rooms: self.hubs.len() as u64,
            published,
            delivered,
        }
    }

    /// This process's random session prefix: a Pusher `socket_id` is
    /// `{prefix}.{session id}`, unique across the cluster as Pusher needs.
    pub fn session_prefix(&self) -> u32 {
        self.session_prefix
    }

    /// A new session's id, unique on this node and unlikely to repeat elsewhere.
    pub fn next_session_id(&self) -> (u64, String) {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        (n, format!("{:08x}-{n}", self.session_prefix))
    }

    /// This node's subscribers of the rooms `query` asks about (those with
    /// any), as its hubs count them now.
    pub fn local_counts(&self, query: &CountQuery) -> NodeCounts {
        let rooms = match query.rooms.as_slice() {
            [] => self
                .hubs
                .snapshot()
                .into_iter()
                .filter(|(room, _)| query.asks(room))
                .map(|(room, hub)| (room.to_string(), hub.subscribers()))
                .filter(|(_, n)| *n > 0)
                .collect(),
            rooms => rooms
                .iter()
                .filter(|room| query.asks(room))
                .filter_map(|room| {
                    let hub = self.hubs.get(&crate::room::RoomName::parse(room).ok()?)?;
                    Some((room.clone(), hub.subscribers())).filter(|(_, n)| *n > 0)
                })
                .collect(),
        };
        NodeCounts {
            node: self.bus.node_id().to_owned(),
            rooms,
        }
    }

    /// The cluster's subscribers of the rooms `query` asks about (those
    /// with any): this node's, plus what every other node answers over the
    /// bus within its short wait (see `bus`, *Counts*).
    pub async fn cluster_counts(&self, query: CountQuery) -> HashMap<String, usize> {
        let mut counts = self.local_counts(&query).rooms;
        for answer in self.bus.ask_counts(query).await {
            for (room, n) in answer.rooms {
                *counts.entry(room).or_default() += n;
            }
        }
        counts
    }
}

/// Pusher's `subscription_count` webhook: once a room's subscriber count
/// on this node has changed and stayed for `hub.occupancy_grace_ms`, asks
/// the cluster's count (`Node::cluster_counts`) and records it when it
/// differs from the last this node recorded for the room. Each node whose
/// subscribers changed reports the cluster's count after its change, so
/// two nodes changing at once may both record the same count.
async fn count_webhooks(
    node: Arc<Node>,
    webhooks: Arc<crate::webhook::Webhooks>,
    mut changes: tokio::sync::mpsc::Receiver<crate::room::RoomName>,
) {
    let settle = Duration::from_millis(node.config.hub.occupancy_grace_ms);
    let outbox = node.backend.webhook_outbox();
    let mut due: HashMap<crate::room::RoomName, tokio::time::Instant> = HashMap::new();
    let mut recorded: HashMap<String, usize> = HashMap::new();
    loop {
        let next = due.values().min().copied();
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Some(room) => {
                    due.insert(room, tokio::time::Instant::now() + settle);
                }
                None => return,
            },
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = tokio::time::Instant::now();
                let rooms: Vec<_> = due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(room, _)| room.clone())
                    .collect();
                for room in rooms {
                    due.remove(&room);
                    let counts = node
                        .cluster_counts(CountQuery {
                            prefix: room.to_string(),
                            rooms: vec![room.to_string()],
                        })
                        .await;
                    let count = counts.get(room.as_str()).copied().unwrap_or(0);
                    let before = if count == 0 {
                        recorded.remove(room.as_str())
                    } else {
                        recorded.insert(room.to_string(), count)
                    };
                    if before.unwrap_or(0) == count {
                        continue;
                    }
                    let messages = webhooks.subscription_count(room.as_str(), count);
                    if messages.is_empty() {
                        continue;
                    }
                    if let Err(err) = outbox.record(messages).await {
                        tracing::warn!(%room, error = %err, "cannot record a subscription_count webhook");
                    }
                }
            }
        }
    }
}

/// Answers the other nodes' count queries from this node's hubs, until the
/// node stops.
pub async fn answer_count_queries(node: &Arc<Node>) {
    let mut queries = match node.bus.watch_count_queries().await {
        Ok(queries) => queries,
        Err(err) => {
            tracing::warn!(error = %err, "cannot answer other nodes' count queries; their subscription counts will miss this node");
            return;
        }
    };
    let node = node.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                query = queries.recv() => match query {
                    Some((query, answer)) => {
                        let _ = answer.send(node.local_counts(&query));
                    }
                    None => return,
                },
                _ = node.shutdown.cancelled() => return,
            }
        }
    });
}

/// How many subscription reads run at once: fewer than the connections the
/// store has (PostgreSQL: the pool less the append writers, so publishes
/// always find a connection; SQLite: its readers).
fn read_concurrency(config: &Config) -> usize {
    match config.store {
        crate::config::StoreUrl::Postgres(_) => config
            .postgres
            .pool_size
            .saturating_sub(config.postgres.writers)
            .max(1),
        crate::config::StoreUrl::Sqlite(_) => config.sqlite.readers.max(1),
    }
}

/// Tells the bus about each committed batch, in commit order, and every
/// `hub.reconcile_ms` tells the other nodes the heads of the rooms this node
/// appended to meanwhile ([`publish_heads`]).
async fn forward_commits(mut commits: CommitFeed, bus: Arc<dyn Bus>, every: Duration) {
    let metrics = crate::metrics::get();
    // Heads of this interval, and of the last one: an interval's heads are
    // sent one interval late, so the events themselves (on their own subjects,
    // through their own queue) have arrived and no hub reads the store for a
    // gap that is not one.
    let mut heads: HashMap<RoomName, u64> = HashMap::new();
    let mut last_interval: HashMap<RoomName, u64> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = commits.recv() => {
                let Some(batch) = batch else { return };
                metrics.events_published.increment(batch.len() as u64);
                metrics
                    .totals
                    .published
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for event in &batch {
                    let head = heads.entry(event.room.clone()).or_default();
                    *head = (*head).max(event.seq);
                }
                bus.publish(batch);
            }
            _ = tick.tick() => {
                publish_heads(bus.as_ref(), &mut last_interval);
                std::mem::swap(&mut last_interval, &mut heads);
            }
        }
    }
}

/// Rooms in one [`ControlMessage::Heads`](crate::bus::ControlMessage::Heads)
/// (~40 bytes each: well under NATS's 1 MB message limit).
const HEADS_PER_MESSAGE: usize = 4096;

/// Sends `heads` (rooms appended to, the interval before last) to the other
/// nodes, and forgets them. A notification lost on the bus is then noticed
/// within one interval by a message whose size follows this node's writes,
/// instead of by every node reading every room it follows from the store
/// every interval (6 nodes × 6,000 rooms were 36,000 rows a second of
/// PostgreSQL's and ~10% of each node's CPU in the issue 22 storm).
fn publish_heads(bus: &dyn Bus, heads: &mut HashMap<RoomName, u64>) {
    if heads.is_empty() {
        return;
    }
    let all: Vec<(String, u64)> = heads
        .drain()
        .map(|(room, head)| (room.as_str().to_owned(), head))
        .collect();
    for chunk in all.chunks(HEADS_PER_MESSAGE) {
        bus.publish_control(crate::bus::ControlMessage::Heads {
            heads: chunk.to_vec(),
        });
    }
}

/// A peer's [`ControlMessage::Heads`](crate::bus::ControlMessage::Heads):
/// the hubs here that are behind one of them fill their gap.
pub(crate) fn heads_heard(node: &Node, heads: &[(String, u64)]) {
    let metrics = crate::metrics::get();
    metrics.reconcile_heads.increment(heads.len() as u64);
    for (room, head) in heads {
        let Ok(room) = RoomName::parse(room) else {
            continue;
        };
        if let Some(hub) = node.hubs.get(&room) {
            if hub.heard_head(*head) {
                metrics.reconcile_heads_behind.increment(1);
            }
        }
    }
}

/// Compares each hub's view with the store's state of its room (one query
/// for all rooms) so a lost notification delays an event by at most one
/// interval. Only the hubs whose view differs are told (in a steady cluster,
/// the few with an event in flight), so thousands of rooms cost one query and
/// no hub a wake-up. While peers' heads reach this node ([`Bus::carries_heads`])
/// they heal lost notifications, and this full comparison runs only every
/// `hub.full_reconcile_every` intervals; on one node, or while NATS is away,
/// every interval; after a bus outage, at once.
async fn reconcile(node: Arc<Node>) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(node.config.hub.reconcile_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let full_every = u64::from(node.config.hub.full_reconcile_every.max(1));
    let mut reconnects = node.bus.reconnects();
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                ticks += 1;
                if node.bus.carries_heads() && ticks % full_every != 0 {
                    continue;
                }
            }
            // After a bus outage, reconcile at once.
            Some(_) = changed(&mut reconnects) => {}
            _ = node.shutdown.cancelled() => return,
        }
        let hubs = node.hubs.snapshot();
        if hubs.is_empty() {
            continue;
        }
        let rooms: Vec<_> = hubs.iter().map(|(room, _)| room.clone()).collect();
        crate::metrics::get().reconcile_queries.increment(1);
        crate::metrics::get()
            .reconcile_rooms
            .increment(rooms.len() as u64);
        match node.store.states(rooms).await {
            Ok(states) => {
                let handles: std::collections::HashMap<_, _> = hubs.into_iter().collect();
                for (room, state) in states {
                    if let Some(hub) = handles.get(&room).filter(|hub| hub.differs(&state)) {
                        hub.reconcile(state);
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "reconcile could not read room states"),
        }
    }
}

async fn changed(watch: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Option<()> {
    match watch {
        Some(watch) => watch.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// Enforces the retention policy every `retention.interval_ms`.
async fn retention(node: Arc<Node>) {
    let policy = RetentionPolicy {
        max_events: node.config.retention.max_events,
        max_age_ms: node.config.retention.max_age_secs.saturating_mul(1000),
        namespaces: node.namespaces.clone(),
    };
    if !policy.is_active() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(
        node.config.retention.interval_ms.max(10),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = node.shutdown.cancelled() => return,
        }
        match node.store.enforce_retention(policy.clone()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "retention pruned events"),
            Err(err) => tracing::warn!(error = %err, "retention failed"),
        }
    }
}

/// Every second: a sample of the totals for `/v1/stats`; every ten, the rate
/// limiters' idle keys pruned; every five, the Prometheus recorder's upkeep.
async fn housekeeping(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = node.shutdown.cancelled() => return,
        }
        node.samples.push(node.sample());
        n += 1;
        if n % 10 == 0 {
            node.limits.prune();
        }
        if n % 5 == 0 {
            if let Some(prometheus) = &node.prometheus {
                prometheus.run_upkeep();
            }
        }
    }
}
