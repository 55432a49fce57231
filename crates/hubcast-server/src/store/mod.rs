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
//! - `append_batch` applies a batch's events as single appends, in request
//!   order, inside one transaction, and commits only if every one of them was
//!   appended: one conflict (or a reused batch key) leaves every room as it
//!   was. A batch is never split across commits.
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
pub mod webhook_outbox;

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

/// Several publishes to one or more rooms, appended atomically: all of them
/// in one transaction, or none (`POST /v1/events`, a socket `publish_batch`).
#[derive(Debug)]
pub struct BatchRequest {
    /// In request order; within a room this is the order of their seqs.
    pub events: Vec<BatchItem>,
    /// One idempotency key for the whole batch.
    pub idem_key: Option<String>,
    /// The publishing session (socket publishes); see [`AppendRequest::origin`].
    pub origin: Option<u64>,
}

/// One event of a [`BatchRequest`].
#[derive(Debug)]
pub struct BatchItem {
    pub room: RoomName,
    pub data: Box<RawValue>,
    /// Append the batch only if the room's head is this seq when this item
    /// comes to be appended (earlier items of the batch count).
    pub expected_seq: Option<u64>,
}

impl BatchRequest {
    /// What a retry must repeat for the batch key to count as the same batch:
    /// a SHA-256 over every item's room, `expected_seq` and data as sent.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"batch\n");
        for item in &self.events {
            hash.update(item.room.as_str().as_bytes());
            hash.update(b"\n");
            match item.expected_seq {
                Some(seq) => hash.update(seq.to_string().as_bytes()),
                None => hash.update(b"-"),
            }
            hash.update(b"\n");
            hash.update(item.data.get().as_bytes());
            hash.update(b"\n");
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The batch as single appends, each with the idempotency key stored for
    /// it (see [`batch_item_key`]) and the fingerprint of the whole batch.
    pub fn into_appends(self) -> (Vec<AppendRequest>, Option<String>) {
        let fingerprint = self.idem_key.as_ref().map(|_| self.fingerprint());
        let key = self.idem_key;
        let origin = self.origin;
        let appends = self
            .events
            .into_iter()
            .enumerate()
            .map(|(index, item)| AppendRequest {
                room: item.room,
                data: item.data,
                idem_key: key.as_deref().map(|key| batch_item_key(key, index)),
                expected_seq: item.expected_seq,
                origin,
            })
            .collect();
        (appends, fingerprint)
    }
}

/// The idempotency key stored with item `index` of a batch whose key is
/// `key`: `"{key} {index}"`. Client keys are visible ASCII without spaces, so
/// a batch item's key can never collide with a single publish's.
pub fn batch_item_key(key: &str, index: usize) -> String {
    format!("{key} {index}")
}

/// The result of an atomic batch append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every event was appended; receipts in request order.
    Appended(Vec<Receipt>),
    /// The batch key was used before for the same batch: the first append's
    /// receipts, nothing appended.
    Duplicate(Vec<Receipt>),
    /// The batch key was used before for another batch (or retention pruned
    /// part of the first one); nothing appended.
    Mismatch,
    /// Item `index` expected another head of `room`; nothing appended.
    Conflict {
        index: usize,
        room: RoomName,
        head: u64,
        epoch: String,
    },
}

impl BatchOutcome {
    /// The batch's outcome from its items' outcomes as single appends (in
    /// request order), evaluated inside the batch's transaction: commit it
    /// only if this is [`BatchOutcome::Appended`].
    pub fn of(rooms: &[RoomName], outcomes: Vec<AppendOutcome>) -> BatchOutcome {
        let mut appended = Vec::with_capacity(outcomes.len());
        let mut duplicates = Vec::new();
        let mut mismatch = false;
        for (index, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                AppendOutcome::Appended(receipt) => appended.push(receipt),
                AppendOutcome::Duplicate(receipt) => duplicates.push(receipt),
                AppendOutcome::Mismatch(_) => mismatch = true,
                AppendOutcome::Conflict { head, epoch } => {
                    return BatchOutcome::Conflict {
                        index,
                        room: rooms[index].clone(),
                        head,
                        epoch,
                    }
                }
            }
        }
        match (mismatch, appended.is_empty(), duplicates.is_empty()) {
            (false, _, true) => BatchOutcome::Appended(appended),
            (false, true, false) => BatchOutcome::Duplicate(duplicates),
            // Some items' keys were found and some not: their events were
            // pruned since, so this cannot be answered as the first batch.
            _ => BatchOutcome::Mismatch,
        }
    }

    /// Whether the batch's transaction is committed.
    pub fn commits(&self) -> bool {
        matches!(self, BatchOutcome::Appended(_))
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

    /// Appends every event of `batch` in one transaction, or none of them
    /// (see [`BatchOutcome`]); durable when it returns `Appended`. Events are
    /// on the commit feed after the commit, like any append's.
    fn append_batch(&self, batch: BatchRequest) -> BoxFuture<'_, Result<BatchOutcome, StoreError>>;

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

    /// Deletes the room's log (`DELETE /v1/rooms/{room}`): its events, and
    /// their idempotency keys, are gone, and the room goes on with an empty
    /// log (head 0) under a new random epoch — never the deleted log's, nor
    /// the one derived from the name ([`epoch_for`](Store::epoch_for)) — so
    /// a cursor into the deleted log can only get `reset`. Returns the new
    /// epoch, or `None` for a room never written (nothing to delete).
    fn delete_room(&self, room: &RoomName) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// Stores a revocation durably. One of the same token or user already
    /// stored is widened (the later `issued_before` and `expires_at` win).
    fn add_revocation(&self, revocation: Revocation) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Every revocation that has not expired at `now` (seconds since the epoch).
    fn revocations(&self, now: i64) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>>;

    /// Deletes the revocations expired at `now`; returns how many.
    fn prune_revocations(&self, now: i64) -> BoxFuture<'_, Result<u64, StoreError>>;

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

pub use crate::auth::revocation::Revocation;

/// A new random epoch, for a log recreated after a deletion: 16 hex digits,
/// like [`room_epoch`]'s, from another space (the chance of meeting the
/// derived or an earlier epoch is 2^-64).
pub fn fresh_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A revocation as both stores keep it: `(kind, subject, issued_before, expires_at)`.
pub(crate) fn revocation_row(revocation: &Revocation) -> (&'static str, &str, Option<i64>, i64) {
    match revocation {
        Revocation::Token { jti, expires_at } => ("jti", jti, None, *expires_at),
        Revocation::User {
            user,
            issued_before,
            expires_at,
        } => ("user", user, Some(*issued_before), *expires_at),
    }
}

/// A revocation read back from its row (`None` for a kind this build does not know).
pub(crate) fn revocation_from_row(
    kind: &str,
    subject: String,
    issued_before: Option<i64>,
    expires_at: i64,
) -> Option<Revocation> {
    match (kind, issued_before) {
        ("jti", _) => Some(Revocation::Token {
            jti: subject,
            expires_at,
        }),
        ("user", Some(issued_before)) => Some(Revocation::User {
            user: subject,
            issued_before,
            expires_at,
        }),
        _ => None,
    }
}

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
    open_with_webhooks(config, None).await
}

/// [`open`], with the endpoints whose `event.published` messages the append
/// path records in each event's own transaction.
pub async fn open_with_webhooks(
    config: &crate::config::Config,
    webhooks: Option<Arc<crate::webhook::Webhooks>>,
) -> Result<(Backend, CommitFeed), OpenError> {
    match &config.store {
        crate::config::StoreUrl::Sqlite(path) => {
            let (store, feed) =
                sqlite::SqliteStore::open_with_webhooks(path, &config.sqlite, webhooks).await?;
            Ok((Backend::Sqlite(Arc::new(store)), feed))
        }
        crate::config::StoreUrl::Postgres(url) => {
            let (store, feed) = postgres::PostgresStore::open_with_webhooks(
                url,
                &config.postgres,
                EventRules::of(config),
                webhooks,
            )
            .await?;
            Ok((Backend::Postgres(Arc::new(store)), feed))
        }
    }
}
