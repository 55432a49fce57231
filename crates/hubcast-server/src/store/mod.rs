//! The store: the authoritative, append-only log of every room.
//!
//! # Contract
//! Every implementation keeps these promises, checked by the shared contract
//! tests in `store::contract`:
//! - `append` assigns the room's next `seq` (1, 2, 3 … gapless) inside a
//!   transaction and returns only after the commit is durable.
//! - An append with an idempotency key already present in the room appends
//!   nothing: it returns the first append's receipt as a duplicate when its
//!   data and `expected_seq` are the first's (a true retry), as a mismatch
//!   otherwise.
//! - An append with `expected_seq` other than the head appends nothing and
//!   returns [`AppendOutcome::Conflict`].
//! - After each commit the store sends the committed events on its commit feed,
//!   never before the commit. One store writer reports a room's events in seq
//!   order; a store with several writers (PostgreSQL: the append writers, the
//!   application transactions and the outbox drainer each report after their
//!   own commit) may report two commits of one room in either order. The
//!   feed is a prompt, not the order: its consumer orders by seq (the hub fills
//!   a gap from the store and drops what it already delivered).
//! - Reads see only committed events.
//!
//! Application transactions (an application's own writes and its event in one
//! database transaction) are not part of this trait, which knows no backend
//! types: each backend offers them itself (see [`transaction`]).

pub mod postgres;
pub mod sqlite;
pub mod transaction;

#[cfg(test)]
mod contract;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::config::Namespaces;
use crate::event::{Event, RoomState};
use crate::room::RoomName;

/// Committed events as the store reports them (see the contract for order).
pub type CommitFeed = mpsc::Receiver<Vec<Arc<Event>>>;

/// Committed batches the feed holds before the store drops (and counts) the
/// next announcement instead of growing without bound; hubs heal a dropped
/// one from the store (gap fill, reconcile).
pub const COMMIT_FEED_CAPACITY: usize = 1024;

/// The store's end of its commit feed.
#[derive(Clone)]
pub struct FeedSender(mpsc::Sender<Vec<Arc<Event>>>);

impl FeedSender {
    /// Announces a committed batch, never waiting: a full feed drops it.
    pub fn announce(&self, batch: Vec<Arc<Event>>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.0.try_send(batch) {
            crate::metrics::get().feed_dropped.increment(1);
        }
        // Closed: the node is shutting down and nobody is left to notify.
    }
}

/// A new commit feed.
pub fn commit_feed() -> (FeedSender, CommitFeed) {
    let (tx, rx) = mpsc::channel(COMMIT_FEED_CAPACITY);
    (FeedSender(tx), rx)
}

/// One publish, as the write path hands it to the store.
#[derive(Debug)]
pub struct AppendRequest {
    pub room: RoomName,
    pub data: Box<RawValue>,
    /// Idempotency key: a retry with the same key returns the first receipt.
    pub idem_key: Option<String>,
    /// Append only if the room's head is this seq.
    pub expected_seq: Option<u64>,
    /// The publishing session (socket publishes), carried to the committed
    /// [`Event::origin`]; not stored.
    pub origin: Option<u64>,
}

impl AppendRequest {
    /// What a retry must repeat for its key to count as the same publish:
    /// a SHA-256 over `expected_seq` and the data as sent, stored with the
    /// key (the room is part of the key's scope already).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        match self.expected_seq {
            Some(seq) => hash.update(seq.to_string().as_bytes()),
            None => hash.update(b"-"),
        }
        hash.update(b"\n");
        hash.update(self.data.get().as_bytes());
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What every event must satisfy to be appended, whichever way it arrives
/// (an HTTP or socket publish, the application outbox): the node's and its
/// namespace's size limit, numbers a double can hold, and an idempotency key
/// of 1 to 128 visible ASCII characters. An outbox row that fails is moved to
/// `outbox_rejected` with the reason, never fanned out.
#[derive(Debug, Clone)]
pub struct EventRules {
    pub max_event_bytes: usize,
    pub namespaces: Namespaces,
}

impl EventRules {
    /// The rules of `config`.
    pub fn of(config: &crate::config::Config) -> EventRules {
        EventRules {
            max_event_bytes: config.limits.max_event_bytes,
            namespaces: Namespaces::new(&config.namespaces),
        }
    }

    /// Why an event would be refused, if it would be.
    pub fn check(
        &self,
        room: &RoomName,
        data: &RawValue,
        idem_key: Option<&str>,
    ) -> Result<(), String> {
        let max = self
            .namespaces
            .for_room(room)
            .max_event_bytes(self.max_event_bytes);
        if data.get().len() > max {
            return Err(format!(
                "event data is {} bytes, over the {max}-byte limit",
                data.get().len()
            ));
        }
        hubcast_protocol::message::check_data(data)?;
        if let Some(key) = idem_key {
            hubcast_protocol::request::idempotency_key(key.as_bytes())
                .map_err(|(_, message)| format!("the idempotency key: {message}"))?;
        }
        Ok(())
    }
}

/// What the publisher is told about a committed event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Receipt {
    #[schema(value_type = crate::http::openapi::RoomNameDoc)]
    pub room: RoomName,
    /// The event's seq in the room: 1, 2, 3 … gapless.
    #[schema(minimum = 1)]
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// Milliseconds since the Unix epoch, set by the store.
    pub ts: i64,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// A new event was appended.
    Appended(Receipt),
    /// The idempotency key was seen before with the same request; this is the
    /// first append's receipt.
    Duplicate(Receipt),
    /// The idempotency key was seen before with a different body or
    /// `expected_seq`; nothing was appended. The first append's receipt.
    Mismatch(Receipt),
    /// `expected_seq` did not match; nothing was appended.
    Conflict { head: u64, epoch: String },
}

/// A page of a room's log.
#[derive(Debug, Default)]
pub struct Page {
    /// `None` when the room has never been written to.
    pub state: Option<RoomState>,
    pub events: Vec<Event>,
}

/// How much of each room's log to keep.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    /// Keep at most this many events per room (0: no limit).
    pub max_events: u64,
    /// Prune events older than this many milliseconds (0: no limit).
    pub max_age_ms: u64,
    /// Namespaces with their own limits; the longest matching prefix wins.
    pub namespaces: Namespaces,
}

impl RetentionPolicy {
    /// The same limits for every room.
    pub fn uniform(max_events: u64, max_age_ms: u64) -> RetentionPolicy {
        RetentionPolicy {
            max_events,
            max_age_ms,
            namespaces: Namespaces::default(),
        }
    }

    /// `(max_events, max_age_ms)` for `room` (0: no limit).
    pub fn limits_for(&self, room: &str) -> (u64, u64) {
        self.namespaces
            .for_room(room)
            .retention(self.max_events, self.max_age_ms)
    }

    /// Whether any room can have anything to prune.
    pub fn is_active(&self) -> bool {
        self.max_events > 0 || self.max_age_ms > 0 || self.namespaces.any_prunes()
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Transient: the store cannot be reached, is overloaded, timed out, or
    /// refused the operation for now; the same request may succeed later
    /// (503 with `Retry-After`; SDKs retry).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Permanent: a corrupt row, an impossible outcome, a bug. Retrying the
    /// same request cannot help (500; SDKs do not retry).
    #[error("store error: {0}")]
    Internal(String),
    /// The store is shutting down and takes no more writes.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// The error code a client is told: transient errors are
    /// `store_unavailable` (503), permanent ones `internal` (500).
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            StoreError::Unavailable(_) | StoreError::Closed => crate::ErrorCode::StoreUnavailable,
            StoreError::Internal(_) => crate::ErrorCode::Internal,
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Internal(_))
    }
}

/// The authoritative log. See the module docs for the contract.
pub trait Store: Send + Sync + 'static {
    /// Appends one event (or returns the duplicate's receipt, or a conflict).
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StoreError>>;

    /// The epoch `room`'s log is born with when its first event is appended:
    /// derived from the store's instance id and the room's name, so a
    /// subscriber to a room nobody has written yet learns the epoch the room
    /// will have, and subscribing writes nothing (no empty rows for anyone
    /// holding a pattern grant to create). Rooms created before this rule
    /// keep their random epochs.
    fn epoch_for(&self, room: &RoomName) -> String;

    /// The room's state, or for a room never written the state it will have
    /// (its [`epoch_for`](Store::epoch_for), an empty log). Writes nothing.
    fn subscribe_state(&self, room: &RoomName) -> BoxFuture<'_, Result<RoomState, StoreError>> {
        let room = room.clone();
        Box::pin(async move {
            Ok(self.room_state(&room).await?.unwrap_or_else(|| RoomState {
                epoch: self.epoch_for(&room),
                head: 0,
                earliest: 1,
            }))
        })
    }

    /// The room's state, or `None` if it was never created.
    fn room_state(&self, room: &RoomName) -> BoxFuture<'_, Result<Option<RoomState>, StoreError>>;

    /// Up to `limit` retained events with `seq > after`, in order, and the
    /// room's state read in the same snapshot.
    fn read(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Page, StoreError>>;

    /// Heads of the given rooms in one query (rooms never created are left out).
    fn heads(
        &self,
        rooms: Vec<RoomName>,
    ) -> BoxFuture<'_, Result<Vec<(RoomName, u64)>, StoreError>>;

    /// Prunes events outside the policy; returns how many were deleted.
    fn enforce_retention(&self, policy: RetentionPolicy) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Whether the store answers and its writes succeed (for `/readyz`).
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Whether the store can still ever write (for `/healthz`): `false` once
    /// an unrecoverable part of it failed, so the node should be restarted.
    fn is_alive(&self) -> bool {
        true
    }

    /// Finishes pending commits and stops accepting writes.
    fn close(&self) -> BoxFuture<'_, ()>;
}

pub use transaction::Backend;

/// The epoch of a room created in the store whose instance id is `instance`:
/// the first 16 hex digits of SHA-256(instance ":" room). PostgreSQL's
/// `append_events` computes the same (store/postgres/migration_3.sql).
pub fn room_epoch(instance: &str, room: &RoomName) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(instance.as_bytes())
        .chain_update(b":")
        .chain_update(room.as_str().as_bytes())
        .finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Sqlite(#[from] sqlite::OpenError),
    #[error(transparent)]
    Postgres(#[from] postgres::OpenError),
}

/// Opens the store `config.store` names, runs its migrations, and returns it
/// with its commit feed.
pub async fn open(config: &crate::config::Config) -> Result<(Backend, CommitFeed), OpenError> {
    match &config.store {
        crate::config::StoreUrl::Sqlite(path) => {
            let (store, feed) = sqlite::SqliteStore::open(path, &config.sqlite).await?;
            Ok((Backend::Sqlite(Arc::new(store)), feed))
        }
        crate::config::StoreUrl::Postgres(url) => {
            let (store, feed) =
                postgres::PostgresStore::open(url, &config.postgres, EventRules::of(config))
                    .await?;
            Ok((Backend::Postgres(Arc::new(store)), feed))
        }
    }
}
