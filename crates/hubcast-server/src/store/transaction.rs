//! Application transactions: an application's own writes and the event that
//! announces them, committed together (a check of a precondition included:
//! nothing can change in between), the event fanned out after the commit like
//! any other append.
//!
//! They are an extension per backend, not a method of [`Store`]: the work is
//! SQL on the backend's own connection type, which the store trait must not
//! know. An application implements [`SqliteWork`], [`PostgresWork`] or both,
//! and runs it with [`Backend::transact`] (or the backend's own `transact`).
//! An outbox table would keep backend types out too, but it makes the answer
//! asynchronous (the caller learns its seq only after a drainer ran) and on
//! SQLite it needs a second writer on the file beside the writer thread's
//! group commit; the extension runs inside that group commit instead.
//!
//! [`Store`]: super::Store

use std::sync::Arc;

use serde_json::value::RawValue;

use super::postgres::PostgresStore;
pub use super::postgres::PostgresWork;
use super::sqlite::SqliteStore;
pub use super::sqlite::SqliteWork;
use super::{Receipt, Store, StoreError};
use crate::room::RoomName;

/// An event an application transaction appends, in the same transaction.
#[derive(Debug)]
pub struct AppEvent {
    pub room: RoomName,
    pub data: Box<RawValue>,
}

/// What an application transaction decided.
#[derive(Debug)]
pub enum TxDecision {
    /// Commit the application's writes and append `event` (if any) with the
    /// room's next seq, in the same transaction.
    Commit {
        event: Option<AppEvent>,
        answer: serde_json::Value,
    },
    /// Roll back the application's writes; nothing is appended.
    Abort(serde_json::Value),
}

/// The result of an application transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum TxOutcome {
    /// Committed (with the event's receipt when there was one).
    Committed {
        receipt: Option<Receipt>,
        answer: serde_json::Value,
    },
    /// The application aborted; its writes were rolled back.
    Aborted(serde_json::Value),
}

/// The store a node runs on, with its backend type, for the applications
/// that write their own tables beside hubcast's.
#[derive(Clone)]
pub enum Backend {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl Backend {
    /// The store behind its contract.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// The webhook outbox.
    pub fn webhook_outbox(&self) -> Arc<dyn super::webhook_outbox::WebhookOutbox> {
        match self {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// Runs work written for both backends on this one.
    pub async fn transact<W: SqliteWork + PostgresWork>(
        &self,
        work: W,
    ) -> Result<TxOutcome, StoreError> {
        match self {
            Backend::Sqlite(store) => store.transact(Box::new(work)).await,
            Backend::Postgres(store) => store.transact(Box::new(work)).await,
        }
    }
}
