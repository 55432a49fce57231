//! The embedded store: SQLite in WAL mode.
//!
//! One writer thread owns the only read-write connection and is therefore the
//! single point where seqs are assigned. It group-commits: it takes every
//! append waiting in its queue (up to `sqlite.max_batch`), runs them in one
//! transaction with one fsync, and only then answers each caller through its
//! oneshot and reports the batch on the commit feed. Reads (replay, history)
//! run on a small pool of read-only connections on tokio's blocking threads,
//! so they never wait for the writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rusqlite::{params, Connection};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::transaction::{TxDecision, TxOutcome};
use super::webhook_outbox::{Abandoned, DeliveryReport, Holding, PendingWebhook, WebhookOutbox};
use super::{
    revocation_from_row, revocation_row, AppendOutcome, AppendRequest, BatchOutcome, BatchRequest,
    CommitFeed, Page, RetentionPolicy, Revocation, Store, StoreError,
};
use crate::config::SqliteConfig;
use crate::event::now_ms;
use crate::event::{Event, RoomState};
use crate::room::RoomName;
use crate::webhook::{NewWebhook, Webhooks};

mod readers;
mod retention;
mod schema;
mod webhooks;
mod writer;

use readers::{load_state, ReaderPool};
use schema::{migrate, Migrated, MIGRATIONS};
use writer::Writer;

/// Application work run on SQLite inside the store's own transaction (see
/// `store::transaction`). It keeps its tables in the same database file.
pub trait SqliteWork: Send + 'static {
    /// Runs on the writer thread inside a savepoint of its batch transaction
    /// (rolled back alone on `Abort` or an error).
    fn run_sqlite(self: Box<Self>, conn: &rusqlite::Connection) -> Result<TxDecision, StoreError>;
}

/// Why the SQLite store could not be opened: the path, and SQLite's own words.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the directory for the database {database}: {path} is a file, not a directory")]
    NotADirectory { database: PathBuf, path: PathBuf },
    #[error("cannot open the database {path}: {source}")]
    Access {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot set up the database {path}: {source}")]
    Setup {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this hubcast ({supported})"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        supported: usize,
    },
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    /// Bounded (`sqlite.max_queue`): a full queue refuses writes with 503.
    writer: mpsc::Sender<Command>,
    readers: Arc<ReaderPool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    health: Arc<WriterHealth>,
    /// This database's id (table `meta`): what new rooms' epochs derive from.
    instance: String,
}

/// What the writer thread tells readiness and liveness.
#[derive(Default)]
pub(super) struct WriterHealth {
    /// The thread ended without being closed (it panicked): nothing can be
    /// written any more, so the node is not alive (`/healthz` fails).
    dead: std::sync::atomic::AtomicBool,
    /// The last batch failed (a full disk, an I/O error) and none has
    /// committed since: the node is not ready (`/readyz` fails).
    failing: Mutex<Option<String>>,
}

impl WriterHealth {
    pub(super) fn batch_failed(&self, err: &rusqlite::Error) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
    }

    pub(super) fn batch_committed(&self) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if failing.is_some() {
            *failing = None;
        }
    }
}

enum Command {
    Append(
        AppendRequest,
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
    ),
    /// An atomic batch: one savepoint of the group-commit transaction.
    AppendBatch(
        BatchRequest,
        oneshot::Sender<Result<BatchOutcome, StoreError>>,
    ),
    Transact(
        Box<dyn SqliteWork>,
        oneshot::Sender<Result<TxOutcome, StoreError>>,
    ),
    Retention {
        policy: RetentionPolicy,
        after: String,
        reply: oneshot::Sender<Result<(u64, Option<String>), StoreError>>,
    },
    Webhooks(
        webhooks::WebhookWrite,
        oneshot::Sender<Result<bool, StoreError>>,
    ),
    /// A write outside the group commit (deleting a room, revocations): runs
    /// on the writer thread in its own transaction and answers itself.
    Maintain(Box<dyn FnOnce(&mut Writer) + Send>),
    Close(oneshot::Sender<()>),
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, runs migrations and
    /// starts the writer thread.
    pub async fn open(
        path: &Path,
        config: &SqliteConfig,
    ) -> Result<(SqliteStore, CommitFeed), OpenError> {
        SqliteStore::open_with_webhooks(path, config, None).await
    }

    /// [`open`](SqliteStore::open), recording an `event.published` message
    /// for each of `webhooks`' endpoints that wants one in every append's
    /// own transaction.
    pub async fn open_with_webhooks(
        path: &Path,
        config: &SqliteConfig,
        webhooks: Option<Arc<Webhooks>>,
    ) -> Result<(SqliteStore, CommitFeed), OpenError> {
        let path = path.to_path_buf();
        let config = config.clone();
        match tokio::task::spawn_blocking(move || {
            SqliteStore::open_blocking(path, config, webhooks)
        })
        .await
        {
            Ok(opened) => opened,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    fn open_blocking(
        path: PathBuf,
        config: SqliteConfig,
        webhooks: Option<Arc<Webhooks>>,
    ) -> Result<(SqliteStore, CommitFeed), OpenError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                // A file where a directory must be: name it (create_dir_all
                // would only say "File exists").
                if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
                    return Err(OpenError::NotADirectory {
                        database: path.clone(),
                        path: file.to_path_buf(),
                    });
                }
                std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        // The operating system's reason (permission denied, read-only file
        // system…), which SQLite reduces to "unable to open database file".
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| OpenError::Access {
                path: path.clone(),
                source,
            })?;
        let mut conn = Connection::open(&path).map_err(|source| OpenError::Open {
            path: path.clone(),
            source,
        })?;
        let setup = |source| OpenError::Setup {
            path: path.clone(),
            source,
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(setup)?;
        conn.pragma_update(None, "synchronous", config.synchronous.as_str())
            .map_err(setup)?;
        conn.pragma_update(None, "busy_timeout", 5000)
            .map_err(setup)?;
        match migrate(&mut conn).map_err(setup)? {
            Migrated::Ok => {}
            Migrated::TooNew(found) => {
                return Err(OpenError::TooNew {
                    path,
                    found,
                    supported: MIGRATIONS.len(),
                })
            }
        }
        let instance: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'instance'", [], |row| {
                row.get(0)
            })
            .map_err(setup)?;

        let (feed_tx, feed_rx) = crate::store::commit_feed();
        let (tx, rx) = mpsc::channel(config.max_queue.max(1));
        let health = Arc::new(WriterHealth::default());
        let writer = Writer {
            conn,
            rooms: HashMap::new(),
            feed: feed_tx,
            max_batch: config.max_batch,
            health: health.clone(),
            instance: instance.clone(),
            webhooks,
        };
        let thread_health = health.clone();
        let thread = std::thread::Builder::new()
            .name("hubcast-sqlite-writer".into())
            .spawn(move || {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run(rx))).is_err() {
                    thread_health.dead.store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::error!("the sqlite writer thread failed: no more writes; /healthz now fails so the node is restarted");
                }
            })
            .map_err(OpenError::Thread)?;
        let readers = Arc::new(ReaderPool {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: config.readers,
        });
        Ok((
            SqliteStore {
                writer: tx,
                readers,
                thread: Mutex::new(Some(thread)),
                health,
                instance,
            },
            feed_rx,
        ))
    }

    /// Runs `work` on the writer thread inside a savepoint of its batch
    /// transaction, with the append of the event it returns; the event is on
    /// the commit feed after the commit, like any other append.
    pub async fn transact(&self, work: Box<dyn SqliteWork>) -> Result<TxOutcome, StoreError> {
        self.call(|reply| Command::Transact(work, reply)).await
    }

    fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let sent = match self.writer.try_send(make(tx)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::get().writes_refused.increment(1);
                Err(StoreError::Unavailable(
                    "the write queue is full; retry shortly".into(),
                ))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::Closed),
        };
        async move {
            sent?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    /// Runs `work` on the writer thread (see [`Command::Maintain`]).
    fn maintain<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Writer) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        self.call(|reply| {
            Command::Maintain(Box::new(move |writer: &mut Writer| {
                let result = work(writer).map_err(unavailable);
                if result.is_err() {
                    writer.rooms.clear();
                }
                let _ = reply.send(result);
            }))
        })
    }

    fn read_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let readers = self.readers.clone();
        async move {
            tokio::task::spawn_blocking(move || readers.with(f))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
        }
        .boxed()
    }
}

impl Store for SqliteStore {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StoreError>> {
        self.call(|reply| Command::Append(request, reply))
    }

    fn append_batch(&self, batch: BatchRequest) -> BoxFuture<'_, Result<BatchOutcome, StoreError>> {
        self.call(|reply| Command::AppendBatch(batch, reply))
    }

    fn epoch_for(&self, room: &RoomName) -> String {
        crate::store::room_epoch(&self.instance, room)
    }

    fn room_state(&self, room: &RoomName) -> BoxFuture<'_, Result<Option<RoomState>, StoreError>> {
        let room = room.clone();
        self.read_with(move |conn| load_state(conn, &room))
    }

    fn read(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Page, StoreError>> {
        let room = room.clone();
        self.read_with(move |conn| {
            let tx = conn.transaction()?;
            let state = load_state(&tx, &room)?;
            let mut events = Vec::new();
            if state.is_some() {
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, ts, data FROM events WHERE room = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let mut rows = stmt.query(params![room.as_str(), after as i64, limit as i64])?;
                while let Some(row) = rows.next()? {
                    let data: String = row.get(2)?;
                    let data = RawValue::from_string(data).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
                    })?;
                    events.push(Event { room: room.clone(), seq: row.get::<_, i64>(0)? as u64, ts: row.get(1)?, data, origin: None });
                }
            }
            drop(tx);
            Ok(Page { state, events })
        })
    }

    fn heads(
        &self,
        rooms: Vec<RoomName>,
    ) -> BoxFuture<'_, Result<Vec<(RoomName, u64)>, StoreError>> {
        self.read_with(move |conn| {
            let mut heads = Vec::with_capacity(rooms.len());
            for chunk in rooms.chunks(500) {
                let placeholders = vec!["?"; chunk.len()].join(",");
                let sql = format!("SELECT name, head FROM rooms WHERE name IN ({placeholders})");
                let mut stmt = conn.prepare_cached(&sql)?;
                let names = chunk.iter().map(|r| r.as_str());
                let mut rows = stmt.query(rusqlite::params_from_iter(names))?;
                while let Some(row) = rows.next()? {
                    let name: String = row.get(0)?;
                    if let Ok(room) = RoomName::parse(&name) {
                        heads.push((room, row.get::<_, i64>(1)? as u64));
                    }
                }
            }
            Ok(heads)
        })
    }

    fn enforce_retention(&self, policy: RetentionPolicy) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            let mut total = 0;
            let mut after = String::new();
            loop {
                let (deleted, next) = self
                    .call(|reply| Command::Retention {
                        policy: policy.clone(),
                        after: after.clone(),
                        reply,
                    })
                    .await?;
                total += deleted;
                match next {
                    Some(name) => after = name,
                    None => return Ok(total),
                }
            }
        }
        .boxed()
    }

    fn delete_room(&self, room: &RoomName) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let room = room.clone();
        self.maintain(move |writer| writer.delete_room(&room))
    }

    fn add_revocation(&self, revocation: Revocation) -> BoxFuture<'_, Result<(), StoreError>> {
        self.maintain(move |writer| {
            let (kind, subject, issued_before, expires_at) = revocation_row(&revocation);
            writer.conn.execute(
                "INSERT INTO revocations (kind, subject, issued_before, expires_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (kind, subject) DO UPDATE SET \
                 issued_before = max(issued_before, excluded.issued_before), \
                 expires_at = max(expires_at, excluded.expires_at)",
                params![kind, subject, issued_before, expires_at, now_ms()],
            )?;
            Ok(())
        })
    }

    fn revocations(&self, now: i64) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        self.read_with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, subject, issued_before, expires_at FROM revocations WHERE expires_at > ?1 ORDER BY created_at",
            )?;
            let rows = stmt.query_map([now], |row| {
                Ok(revocation_from_row(
                    &row.get::<_, String>(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                ))
            })?;
            rows.filter_map(Result::transpose).collect()
        })
    }

    fn prune_revocations(&self, now: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.maintain(move |writer| {
            Ok(writer
                .conn
                .execute("DELETE FROM revocations WHERE expires_at <= ?1", [now])?
                as u64)
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        if !self.is_alive() {
            return async {
                Err(StoreError::Internal(
                    "the sqlite writer thread failed".into(),
                ))
            }
            .boxed();
        }
        if self.writer.is_closed() {
            return async { Err(StoreError::Closed) }.boxed();
        }
        if let Some(err) = self
            .health
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return async move {
                Err(StoreError::Unavailable(format!(
                    "writes are failing: {err}"
                )))
            }
            .boxed();
        }
        self.read_with(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
    }

    fn is_alive(&self) -> bool {
        !self.health.dead.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let (tx, rx) = oneshot::channel();
        let writer = self.writer.clone();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        async move {
            // Waits for queue room: the close goes after what is queued.
            if writer.send(Command::Close(tx)).await.is_ok() {
                let _ = rx.await;
            }
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
        .boxed()
    }
}

impl WebhookOutbox for SqliteStore {
    fn record(&self, messages: Vec<NewWebhook>) -> BoxFuture<'_, Result<(), StoreError>> {
        let recorded =
            self.call(|reply| Command::Webhooks(webhooks::WebhookWrite::Record(messages), reply));
        async move { recorded.await.map(|_| ()) }.boxed()
    }

    fn holding(&self, change: Holding) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.call(|reply| Command::Webhooks(webhooks::WebhookWrite::Holding(change), reply))
    }

    fn abandoned(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Abandoned>, StoreError>> {
        self.read_with(move |conn| webhooks::abandoned(conn, now_ms))
    }

    fn due(
        &self,
        endpoint: &str,
        now_ms: i64,
        rooms: usize,
        per_room: usize,
        _lease_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<PendingWebhook>, StoreError>> {
        // One node, one worker per endpoint: nothing to claim.
        let endpoint = endpoint.to_owned();
        self.read_with(move |conn| webhooks::due(conn, &endpoint, now_ms, rooms, per_room))
    }

    fn finish(&self, report: DeliveryReport) -> BoxFuture<'_, Result<(), StoreError>> {
        let finished =
            self.call(|reply| Command::Webhooks(webhooks::WebhookWrite::Finish(report), reply));
        async move { finished.await.map(|_| ()) }.boxed()
    }

    fn backlog(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        self.read_with(|conn| webhooks::backlog(conn))
    }
}

/// A SQLite failure as a store error: transient when the same operation may
/// succeed later (busy, locked, out of disk or memory, an I/O error),
/// permanent otherwise (a corrupt file, a row that does not decode, a
/// constraint the writer should have made impossible).
fn unavailable(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as Code;
    let transient = match &err {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            Code::DatabaseBusy
                | Code::DatabaseLocked
                | Code::DiskFull
                | Code::OutOfMemory
                | Code::SystemIoFailure
                | Code::CannotOpen
                | Code::FileLockingProtocolFailed
                | Code::ReadOnly
        ),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Internal(err.to_string())
    }
}
