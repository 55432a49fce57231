//! Metrics: Prometheus exposition through `metrics-exporter-prometheus`, and
//! the few live numbers `/v1/stats` reads back.
//!
//! Every handle is created once ([`get`]) and kept, so the hot path increments
//! an atomic instead of looking a name up. Histograms have explicit buckets.
//! Names follow Prometheus conventions: `hubcast_…_total` for counters,
//! `_seconds` and `_bytes` for units.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for latencies, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets for connection lifetimes, from 1 s to 1 day.
const DURATION_BUCKETS: &[f64] = &[
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];
/// Buckets for batch sizes.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// An admin route's action, as the `action` label of `hubcast_admin_actions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    Presence,
    Disconnect,
    Revoke,
    ListRevocations,
    DeleteRoom,
}

impl AdminAction {
    const ALL: [AdminAction; 5] = [
        AdminAction::Presence,
        AdminAction::Disconnect,
        AdminAction::Revoke,
        AdminAction::ListRevocations,
        AdminAction::DeleteRoom,
    ];

    /// The label, also the `action` field of the admin log line.
    pub fn label(self) -> &'static str {
        match self {
            AdminAction::Presence => "presence",
            AdminAction::Disconnect => "disconnect",
            AdminAction::Revoke => "revoke",
            AdminAction::ListRevocations => "list_revocations",
            AdminAction::DeleteRoom => "delete_room",
        }
    }
}

/// Why a session ended, as the `reason` label of `hubcast_connections_closed_total`.
#[derive(Debug, Clone, Copy)]
pub enum CloseReason {
    Client,
    SlowConsumer,
    HeartbeatTimeout,
    TooBig,
    Policy,
    Restart,
    Unauthenticated,
    Forbidden,
    RateLimited,
    OverCapacity,
    Disconnected,
    TokenRevoked,
    Error,
}

impl CloseReason {
    const ALL: [CloseReason; 13] = [
        CloseReason::Client,
        CloseReason::SlowConsumer,
        CloseReason::HeartbeatTimeout,
        CloseReason::TooBig,
        CloseReason::Policy,
        CloseReason::Restart,
        CloseReason::Unauthenticated,
        CloseReason::Forbidden,
        CloseReason::RateLimited,
        CloseReason::OverCapacity,
        CloseReason::Disconnected,
        CloseReason::TokenRevoked,
        CloseReason::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::TooBig => "too_big",
            CloseReason::Policy => "policy",
            CloseReason::Restart => "restart",
            CloseReason::Unauthenticated => "unauthenticated",
            CloseReason::Forbidden => "forbidden",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::OverCapacity => "over_capacity",
            CloseReason::Disconnected => "disconnected",
            CloseReason::TokenRevoked => "token_revoked",
            CloseReason::Error => "error",
        }
    }

    /// The reason for a close code the server sent (`None`: the client closed).
    pub fn from_code(code: Option<u16>) -> CloseReason {
        use crate::protocol::codes::close;
        match code {
            None => CloseReason::Client,
            Some(close::SLOW_CONSUMER) => CloseReason::SlowConsumer,
            Some(close::HEARTBEAT_TIMEOUT) => CloseReason::HeartbeatTimeout,
            Some(close::TOO_BIG) => CloseReason::TooBig,
            Some(close::POLICY) => CloseReason::Policy,
            Some(close::RESTART) | Some(close::GOING_AWAY) => CloseReason::Restart,
            Some(close::UNAUTHENTICATED) => CloseReason::Unauthenticated,
            Some(close::FORBIDDEN) => CloseReason::Forbidden,
            Some(close::RATE_LIMITED) => CloseReason::RateLimited,
            Some(close::TRY_AGAIN_LATER) => CloseReason::OverCapacity,
            Some(close::DISCONNECTED) => CloseReason::Disconnected,
            Some(close::TOKEN_REVOKED) => CloseReason::TokenRevoked,
            Some(_) => CloseReason::Error,
        }
    }
}

/// Every metric handle, created once.
pub struct Metrics {
    pub connections: Gauge,
    /// The SSE streams among `connections`.
    pub sse_connections: Gauge,
    /// The Pusher protocol sockets among `connections`.
    pub pusher_connections: Gauge,
    pub connections_opened: Counter,
    pub connections_refused: Counter,
    closed: [Counter; 13],
    pub connection_duration: Histogram,
    pub subscriptions: Gauge,
    pub hubs: Gauge,
    pub events_published: Counter,
    pub ephemeral_published: Counter,
    pub ephemeral_dropped: Counter,
    pub publish_conflicts: Counter,
    pub publish_duplicates: Counter,
    pub deliveries: Counter,
    pub bytes_out: Counter,
    pub bytes_in: Counter,
    pub messages_in: Counter,
    pub client_errors: Counter,
    pub delivery_latency: Histogram,
    pub broadcast_duration: Histogram,
    pub store_append: Histogram,
    pub store_batch: Histogram,
    pub store_errors: Counter,
    pub store_pool_caps: Counter,
    pub replays: Counter,
    pub replayed_events: Counter,
    pub gap_fills: Counter,
    pub reconciles: Counter,
    pub reconcile_queries: Counter,
    pub reconcile_rooms: Counter,
    pub reconcile_heads: Counter,
    pub reconcile_heads_behind: Counter,
    pub state_loads: Counter,
    pub state_load_failures: Counter,
    pub reads_issued: Counter,
    pub reads_shared: Counter,
    pub bus_published: Counter,
    pub bus_received: Counter,
    pub bus_errors: Counter,
    pub bus_dropped: Counter,
    pub slow_broadcasts: Counter,
    pub hub_panics: Counter,
    /// Admin actions by `action` (see [`AdminAction`]).
    admin_actions: [Counter; 5],
    pub feed_dropped: Counter,
    pub writes_refused: Counter,
    /// Live totals `/v1/stats` reads (the exporter's handles are write-only).
    pub totals: Totals,
}

/// Plain counters kept beside the exported ones, for `/v1/stats`.
#[derive(Default)]
pub struct Totals {
    pub connections: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
}

impl Totals {
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.connections.load(Ordering::Relaxed),
            self.published.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
        )
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle,
/// or `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("hubcast_connection_duration_seconds".into()),
                        DURATION_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("hubcast_store_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                });
            let handle = match builder {
                Ok(builder) => builder.install_recorder().ok(),
                Err(err) => {
                    tracing::error!(error = %err, "invalid metric buckets");
                    None
                }
            };
            describe();
            handle
        })
        .clone()
}

/// The metric handles. Call [`install`] first or they record nothing.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        connections: gauge!("hubcast_connections"),
        sse_connections: gauge!("hubcast_sse_connections"),
        pusher_connections: gauge!("hubcast_pusher_connections"),
        connections_opened: counter!("hubcast_connections_opened_total"),
        connections_refused: counter!("hubcast_connections_refused_total"),
        closed: CloseReason::ALL
            .map(|r| counter!("hubcast_connections_closed_total", "reason" => r.label())),
        connection_duration: histogram!("hubcast_connection_duration_seconds"),
        subscriptions: gauge!("hubcast_subscriptions"),
        hubs: gauge!("hubcast_hubs"),
        events_published: counter!("hubcast_events_published_total"),
        ephemeral_published: counter!("hubcast_ephemeral_published_total"),
        ephemeral_dropped: counter!("hubcast_ephemeral_dropped_total"),
        publish_conflicts: counter!("hubcast_publish_conflicts_total"),
        publish_duplicates: counter!("hubcast_publish_duplicates_total"),
        deliveries: counter!("hubcast_deliveries_total"),
        bytes_out: counter!("hubcast_sent_bytes_total"),
        bytes_in: counter!("hubcast_received_bytes_total"),
        messages_in: counter!("hubcast_messages_received_total"),
        client_errors: counter!("hubcast_client_errors_total"),
        delivery_latency: histogram!("hubcast_delivery_latency_seconds"),
        broadcast_duration: histogram!("hubcast_broadcast_duration_seconds"),
        store_append: histogram!("hubcast_store_append_seconds"),
        store_batch: histogram!("hubcast_store_batch_size"),
        store_errors: counter!("hubcast_store_errors_total"),
        store_pool_caps: counter!("hubcast_store_pool_caps_total"),
        replays: counter!("hubcast_replays_total"),
        replayed_events: counter!("hubcast_replayed_events_total"),
        gap_fills: counter!("hubcast_gap_fills_total"),
        reconciles: counter!("hubcast_reconciles_total"),
        reconcile_queries: counter!("hubcast_reconcile_queries_total"),
        reconcile_rooms: counter!("hubcast_reconcile_rooms_total"),
        reconcile_heads: counter!("hubcast_reconcile_heads_total"),
        reconcile_heads_behind: counter!("hubcast_reconcile_heads_behind_total"),
        state_loads: counter!("hubcast_room_state_queries_total"),
        state_load_failures: counter!("hubcast_room_state_query_failures_total"),
        reads_issued: counter!("hubcast_subscribe_reads_total", "kind" => "issued"),
        reads_shared: counter!("hubcast_subscribe_reads_total", "kind" => "shared"),
        bus_published: counter!("hubcast_bus_messages_total", "direction" => "out"),
        bus_received: counter!("hubcast_bus_messages_total", "direction" => "in"),
        bus_errors: counter!("hubcast_bus_errors_total"),
        bus_dropped: counter!("hubcast_bus_dropped_total"),
        slow_broadcasts: counter!("hubcast_slow_broadcasts_total"),
        hub_panics: counter!("hubcast_hub_panics_total"),
        admin_actions: AdminAction::ALL
            .map(|a| counter!("hubcast_admin_actions_total", "action" => a.label())),
        feed_dropped: counter!("hubcast_commit_feed_dropped_total"),
        writes_refused: counter!("hubcast_store_writes_refused_total"),
        totals: Totals::default(),
    })
}

impl Metrics {
    pub fn closed(&self, reason: CloseReason) -> &Counter {
        &self.closed[reason as usize]
    }

    /// The counter of one kind of admin action.
    pub fn admin_action(&self, action: AdminAction) -> &Counter {
        &self.admin_actions[action as usize]
    }
}

fn describe() {
    describe_gauge!(
        "hubcast_connections",
        "Sessions open now (WebSocket and Server-Sent Events)"
    );
    describe_gauge!(
        "hubcast_sse_connections",
        "Server-Sent Event streams open now (also counted in hubcast_connections)"
    );
    describe_gauge!(
        "hubcast_pusher_connections",
        "Pusher protocol sockets (/app/{key}) open now (also counted in hubcast_connections)"
    );
    describe_counter!(
        "hubcast_connections_opened_total",
        "WebSocket sessions established"
    );
    describe_counter!(
        "hubcast_connections_refused_total",
        "WebSocket upgrades refused (node stopping, bad request)"
    );
    describe_counter!(
        "hubcast_connections_closed_total",
        "WebSocket sessions ended, by reason"
    );
    describe_histogram!(
        "hubcast_connection_duration_seconds",
        Unit::Seconds,
        "How long sessions lasted"
    );
    describe_gauge!(
        "hubcast_subscriptions",
        "Room subscriptions held by sessions now"
    );
    describe_gauge!("hubcast_hubs", "Rooms with a hub on this node now");
    describe_counter!(
        "hubcast_events_published_total",
        "Events committed by this node"
    );
    describe_counter!(
        "hubcast_ephemeral_published_total",
        "Ephemeral messages accepted by this node (never stored)"
    );
    describe_counter!(
        "hubcast_ephemeral_dropped_total",
        "Ephemeral frames not queued to a session whose queue was half full (the session is not cut)"
    );
    describe_counter!(
        "hubcast_publish_conflicts_total",
        "Publishes refused by expected_seq"
    );
    describe_counter!(
        "hubcast_publish_duplicates_total",
        "Publishes answered from an earlier idempotency key"
    );
    describe_counter!(
        "hubcast_deliveries_total",
        "Event frames queued to sessions"
    );
    describe_counter!(
        "hubcast_sent_bytes_total",
        Unit::Bytes,
        "Bytes of event frames queued to sessions"
    );
    describe_counter!(
        "hubcast_received_bytes_total",
        Unit::Bytes,
        "Bytes of messages received from clients"
    );
    describe_counter!(
        "hubcast_messages_received_total",
        "Messages received from clients"
    );
    describe_counter!(
        "hubcast_client_errors_total",
        "Client messages answered with an error"
    );
    describe_histogram!(
        "hubcast_delivery_latency_seconds",
        Unit::Seconds,
        "From commit (event ts) to the hub's broadcast"
    );
    describe_histogram!(
        "hubcast_broadcast_duration_seconds",
        Unit::Seconds,
        "Time a hub takes to offer one event to all subscribers"
    );
    describe_histogram!(
        "hubcast_store_append_seconds",
        Unit::Seconds,
        "Time of one append batch in the store"
    );
    describe_histogram!(
        "hubcast_store_batch_size",
        "Appends per store batch (group commit)"
    );
    describe_counter!("hubcast_store_errors_total", "Store operations that failed");
    describe_counter!(
        "hubcast_store_pool_caps_total",
        "Times PostgreSQL refused another connection (max_connections) and the pool was capped at the connections it had"
    );
    describe_counter!(
        "hubcast_replays_total",
        "Subscriptions that replayed from the store"
    );
    describe_counter!(
        "hubcast_replayed_events_total",
        "Events replayed from the store"
    );
    describe_counter!(
        "hubcast_gap_fills_total",
        "Gaps a hub filled from the store"
    );
    describe_counter!(
        "hubcast_reconciles_total",
        "Reconciles that found a hub behind the store"
    );
    describe_counter!(
        "hubcast_reconcile_queries_total",
        "Store queries the full reconcile made (one per full reconcile with hubs)"
    );
    describe_counter!(
        "hubcast_reconcile_rooms_total",
        "Rooms whose state the periodic reconcile read from the store"
    );
    describe_counter!(
        "hubcast_reconcile_heads_total",
        "Room heads heard from peers (each node's rooms appended to in the last reconcile interval)"
    );
    describe_counter!(
        "hubcast_reconcile_heads_behind_total",
        "Peers' room heads a hub here had not delivered yet (a lost or late notification)"
    );
    describe_counter!(
        "hubcast_room_state_queries_total",
        "Store queries that told starting hubs their rooms' states (one per batch of rooms)"
    );
    describe_counter!(
        "hubcast_room_state_query_failures_total",
        "Room state queries that failed and were retried (the hubs waited)"
    );
    describe_counter!(
        "hubcast_subscribe_reads_total",
        "Store reads of subscriptions (replay pages, cursors a hub could not judge): issued, or shared with a subscription that asked the same"
    );
    describe_counter!("hubcast_bus_messages_total", "Bus messages, by direction");
    describe_counter!(
        "hubcast_bus_dropped_total",
        "Outgoing bus messages dropped because the bus could not keep up (NATS unreachable); peers heal by reconcile"
    );
    describe_counter!("hubcast_bus_errors_total", "Bus operations that failed");
    describe_counter!(
        "hubcast_slow_broadcasts_total",
        "Broadcasts slower than hub.slow_broadcast_ms"
    );
    describe_counter!(
        "hubcast_hub_panics_total",
        "Room hubs that failed; their subscribers were closed with 1012 to resume"
    );
    describe_counter!(
        "hubcast_admin_actions_total",
        "Admin API actions taken on this node, by action"
    );
    describe_counter!(
        "hubcast_commit_feed_dropped_total",
        "Committed batches not announced because the commit feed was full (hubs heal them from the store)"
    );
    describe_histogram!(
        "hubcast_hook_duration_seconds",
        Unit::Seconds,
        "Time of one call to an auth hook (connect, subscribe, publish), by hook"
    );
    describe_counter!(
        "hubcast_hook_calls_total",
        "Auth hook calls, by hook and outcome (allowed, unauthenticated, forbidden, timeout, connect_error, server_error, bad_status, invalid_answer)"
    );
    describe_counter!(
        "hubcast_hook_cache_hits_total",
        "Subscribe and publish hook decisions answered from the cache, by hook"
    );
    describe_counter!(
        "hubcast_store_writes_refused_total",
        "Writes refused with 503 because the store's write queue was full"
    );
}

/// Counts a refusal and logs it, at most once a second across the node (with
/// the number suppressed since the last line), so an attack cannot flood the log.
pub fn note_refusal(reason: &'static str, ip: IpAddr, detail: &str) {
    static GATE: LogGate = LogGate::new();
    metrics::counter!("hubcast_refusals_total", "reason" => reason).increment(1);
    if let Some(suppressed) = GATE.admit() {
        tracing::warn!(reason, client = %ip, detail, suppressed, "refused");
    }
}

/// Lets one log line a second through, so a flood of failures cannot flood
/// the log; counts the lines it held back.
#[derive(Default)]
pub struct LogGate {
    last_ms: std::sync::atomic::AtomicI64,
    suppressed: AtomicU64,
}

impl LogGate {
    pub const fn new() -> LogGate {
        LogGate {
            last_ms: std::sync::atomic::AtomicI64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be
    /// written now; `None` (and one more suppressed) otherwise.
    pub fn admit(&self) -> Option<u64> {
        let now = crate::event::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now - last >= 1000
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
