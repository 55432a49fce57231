//! The webhook outbox: messages waiting for delivery, kept in the store so
//! they survive a restart or `kill -9`. `event.published` messages are
//! inserted by the append path in the event's own transaction; occupancy and
//! presence messages with [`WebhookOutbox::record`]. The delivery worker
//! (`webhook_worker`) reads what is due and reports what happened.

use futures_util::future::BoxFuture;

use super::StoreError;
use crate::webhook::NewWebhook;

/// One undelivered message.
#[derive(Debug, Clone)]
pub struct PendingWebhook {
    pub id: i64,
    pub room: String,
    pub msg_id: String,
    pub body: String,
    /// When it was recorded (ms since the Unix epoch).
    pub created_at: i64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// What a delivery round did, written in one transaction.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    /// Delivered (2xx): removed.
    pub delivered: Vec<i64>,
    /// Failed: `(id, attempts so far, next attempt at ms, error)`.
    pub retry: Vec<(i64, u32, i64, String)>,
    /// Failed past the endpoint's `max_age`: moved to `webhook_dead_letters`.
    pub dead: Vec<(i64, String)>,
}

impl DeliveryReport {
    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty() && self.retry.is_empty() && self.dead.is_empty()
    }
}

/// What one node holds in a room: the room's occupancy (`subject` empty:
/// the node has subscribers there) or a member's presence (`subject`: the
/// member's id; the node has a presence session of it). The store is the
/// arbiter of the cluster-wide state: it keeps which nodes hold what
/// (`webhook_holders`, each row alive until `expires_at`) and what is held
/// by any (`webhook_active`), and decides each transition in one transaction
/// with its messages, so exactly one node records each.
#[derive(Debug, Clone)]
pub enum Holding {
    /// `node` holds `subject`; `messages` (`room.occupied`,
    /// `presence.joined`) are recorded if nobody held it. `info` is kept
    /// for the `presence.left` of a member whose node dies.
    Enter {
        room: String,
        subject: String,
        info: Option<String>,
        node: String,
        expires_at: i64,
        messages: Vec<NewWebhook>,
    },
    /// `node` no longer holds `subject` (`node` empty: only the check, for
    /// what a dead node held); `messages` (`room.vacated`, `presence.left`)
    /// are recorded if it was held and no node holds it any more.
    Leave {
        room: String,
        subject: String,
        node: String,
        now: i64,
        messages: Vec<NewWebhook>,
    },
    /// Keeps everything `node` holds alive until `expires_at` (its heartbeat).
    Refresh { node: String, expires_at: i64 },
}

/// Something held that no live node holds any more (its nodes died).
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub room: String,
    pub subject: String,
    pub info: Option<String>,
}

/// The store's side of webhook delivery.
pub trait WebhookOutbox: Send + Sync + 'static {
    /// Records messages in one transaction.
    fn record(&self, messages: Vec<NewWebhook>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Applies a change of what a node holds; returns whether its messages
    /// were recorded.
    fn holding(&self, change: Holding) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// What is held but by no live node any more (its nodes died or were
    /// killed): to be left.
    fn abandoned(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Abandoned>, StoreError>>;

    /// Undelivered messages of `endpoint`, oldest first per room, at most
    /// `per_room` of each of at most `rooms` rooms, leaving out every room
    /// whose oldest message is waiting for a retry later than `now_ms`
    /// (so a room's messages go out in order). A store shared by several
    /// nodes also leaves out rooms another node is delivering, and claims
    /// the returned rooms for `lease_ms` (until [`finish`](Self::finish)).
    fn due(
        &self,
        endpoint: &str,
        now_ms: i64,
        rooms: usize,
        per_room: usize,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<PendingWebhook>, StoreError>>;

    /// Writes what a delivery round did.
    fn finish(&self, report: DeliveryReport) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Undelivered messages per endpoint name.
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>>;
}
