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
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{
    AppendOutcome, AppendRequest, CommitFeed, Page, Receipt, RetentionPolicy, Store, StoreError,
};
use super::transaction::{TxDecision, TxOutcome};
use crate::config::SqliteConfig;
use crate::event::{new_epoch, now_ms, Event, RoomState};
use crate::room::RoomName;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        epoch TEXT NOT NULL,
        head INTEGER NOT NULL,
        -- Highest seq deleted by retention; the log starts at pruned_through + 1.
        pruned_through INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE events (
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        data TEXT NOT NULL,
        idem_key TEXT,
        PRIMARY KEY (room, seq)
    );
    CREATE UNIQUE INDEX events_idem_key ON events (room, idem_key) WHERE idem_key IS NOT NULL;
"#];

/// Rooms scanned per retention step, so one step never holds the writer long.
const RETENTION_CHUNK: usize = 500;

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
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot set up the database {path}: {source}")]
    Setup { path: PathBuf, source: rusqlite::Error },
    #[error("the database {path} has schema version {found}, newer than this hubcast ({supported})")]
    TooNew { path: PathBuf, found: usize, supported: usize },
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    writer: mpsc::UnboundedSender<Command>,
    readers: Arc<ReaderPool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum Command {
    Append(AppendRequest, oneshot::Sender<Result<AppendOutcome, StoreError>>),
    EnsureRoom(RoomName, oneshot::Sender<Result<RoomState, StoreError>>),
    Transact(Box<dyn SqliteWork>, oneshot::Sender<Result<TxOutcome, StoreError>>),
    Retention { policy: RetentionPolicy, after: String, reply: oneshot::Sender<Result<(u64, Option<String>), StoreError>> },
    Close(oneshot::Sender<()>),
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, runs migrations and
    /// starts the writer thread.
    pub async fn open(path: &Path, config: &SqliteConfig) -> Result<(SqliteStore, CommitFeed), OpenError> {
        let path = path.to_path_buf();
        let config = config.clone();
        match tokio::task::spawn_blocking(move || SqliteStore::open_blocking(path, config)).await {
            Ok(opened) => opened,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    fn open_blocking(path: PathBuf, config: SqliteConfig) -> Result<(SqliteStore, CommitFeed), OpenError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir { path: dir.to_path_buf(), source })?;
            }
        }
        let mut conn = Connection::open(&path).map_err(|source| OpenError::Open { path: path.clone(), source })?;
        let setup = |source| OpenError::Setup { path: path.clone(), source };
        conn.pragma_update(None, "journal_mode", "WAL").map_err(setup)?;
        conn.pragma_update(None, "synchronous", config.synchronous.as_str()).map_err(setup)?;
        conn.pragma_update(None, "busy_timeout", 5000).map_err(setup)?;
        match migrate(&mut conn).map_err(setup)? {
            Migrated::Ok => {}
            Migrated::TooNew(found) => return Err(OpenError::TooNew { path, found, supported: MIGRATIONS.len() }),
        }

        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer { conn, rooms: HashMap::new(), feed: feed_tx, max_batch: config.max_batch };
        let thread = std::thread::Builder::new()
            .name("hubcast-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(OpenError::Thread)?;
        let readers = Arc::new(ReaderPool { path, idle: Mutex::new(Vec::new()), max_idle: config.readers });
        Ok((SqliteStore { writer: tx, readers, thread: Mutex::new(Some(thread)) }, feed_rx))
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
        let sent = self.writer.send(make(tx));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
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

    fn ensure_room(&self, room: &RoomName) -> BoxFuture<'_, Result<RoomState, StoreError>> {
        let room = room.clone();
        let readers = self.readers.clone();
        let existing = {
            let room = room.clone();
            tokio::task::spawn_blocking(move || readers.with(move |conn| load_state(conn, &room)))
        };
        let create = self.call(move |reply| Command::EnsureRoom(room, reply));
        async move {
            // Most rooms exist already: answer from a reader and leave the
            // writer alone; only a new room costs a write.
            if let Ok(Ok(Some(state))) = existing.await {
                return Ok(state);
            }
            create.await
        }
        .boxed()
    }

    fn room_state(&self, room: &RoomName) -> BoxFuture<'_, Result<Option<RoomState>, StoreError>> {
        let room = room.clone();
        self.read_with(move |conn| load_state(conn, &room))
    }

    fn read(&self, room: &RoomName, after: u64, limit: usize) -> BoxFuture<'_, Result<Page, StoreError>> {
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

    fn heads(&self, rooms: Vec<RoomName>) -> BoxFuture<'_, Result<Vec<(RoomName, u64)>, StoreError>> {
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
                    .call(|reply| Command::Retention { policy: policy.clone(), after: after.clone(), reply })
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

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        if self.writer.is_closed() {
            return async { Err(StoreError::Closed) }.boxed();
        }
        self.read_with(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let (tx, rx) = oneshot::channel();
        let sent = self.writer.send(Command::Close(tx)).is_ok();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        async move {
            if sent {
                let _ = rx.await;
            }
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
        .boxed()
    }
}

/// What [`migrate`] found.
enum Migrated {
    Ok,
    /// The file's schema version is newer than this build knows.
    TooNew(usize),
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<Migrated> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Ok(Migrated::TooNew(version));
    }
    for migration in &MIGRATIONS[version..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(Migrated::Ok)
}

fn load_state(conn: &Connection, room: &RoomName) -> rusqlite::Result<Option<RoomState>> {
    conn.prepare_cached("SELECT epoch, head, pruned_through FROM rooms WHERE name = ?1")?
        .query_row([room.as_str()], |row| {
            Ok(RoomState {
                epoch: row.get(0)?,
                head: row.get::<_, i64>(1)? as u64,
                earliest: row.get::<_, i64>(2)? as u64 + 1,
            })
        })
        .optional()
}

fn unavailable(err: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// Read-only connections, reused across reads.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl ReaderPool {
    /// Runs `f` on a pooled read-only connection (blocking; call from a
    /// blocking thread). The lock is a std one: it is held only to pop or push.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
                let conn = Connection::open_with_flags(&self.path, flags).map_err(unavailable)?;
                conn.pragma_update(None, "busy_timeout", 5000).map_err(unavailable)?;
                conn
            }
        };
        let result = f(&mut conn).map_err(unavailable);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        result
    }
}

/// What the writer remembers of a room between batches. It is the only writer,
/// so this cache is exact; it is dropped whenever a transaction fails.
struct CachedRoom {
    epoch: String,
    head: u64,
    pruned_through: u64,
    last_ts: i64,
    /// Appended to in the current batch: its `head` is written back once,
    /// at the end of the batch (the room is then in the batch's touched list).
    dirty: bool,
}

/// Rooms cached by the writer before the cache is cleared (bounds memory when
/// clients touch very many rooms).
const MAX_CACHED_ROOMS: usize = 100_000;

struct Writer {
    conn: Connection,
    rooms: HashMap<RoomName, CachedRoom>,
    feed: mpsc::UnboundedSender<Vec<Arc<Event>>>,
    max_batch: usize,
}

/// A caller waiting for a write's answer.
enum Reply {
    Append(oneshot::Sender<Result<AppendOutcome, StoreError>>),
    Ensure(oneshot::Sender<Result<RoomState, StoreError>>),
    Transact(oneshot::Sender<Result<TxOutcome, StoreError>>),
}

impl Reply {
    fn fail(self, err: &StoreError) {
        let _ = match self {
            Reply::Append(reply) => reply.send(Err(err.clone())).is_ok(),
            Reply::Ensure(reply) => reply.send(Err(err.clone())).is_ok(),
            Reply::Transact(reply) => reply.send(Err(err.clone())).is_ok(),
        };
    }
}

/// An answer held back until its batch commits.
enum Pending {
    Append(oneshot::Sender<Result<AppendOutcome, StoreError>>, AppendOutcome),
    Ensure(oneshot::Sender<Result<RoomState, StoreError>>, RoomState),
    Transact(oneshot::Sender<Result<TxOutcome, StoreError>>, TxOutcome),
}

impl Pending {
    fn answer(self) {
        let _ = match self {
            Pending::Append(reply, outcome) => reply.send(Ok(outcome)).is_ok(),
            Pending::Ensure(reply, state) => reply.send(Ok(state)).is_ok(),
            Pending::Transact(reply, outcome) => reply.send(Ok(outcome)).is_ok(),
        };
    }

    fn into_reply(self) -> Reply {
        match self {
            Pending::Append(reply, _) => Reply::Append(reply),
            Pending::Ensure(reply, _) => Reply::Ensure(reply),
            Pending::Transact(reply, _) => Reply::Transact(reply),
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            if let Some(closed) = self.process(batch) {
                let _ = closed.send(());
                return;
            }
        }
    }

    /// Runs one batch; returns the close request if the batch held one.
    fn process(&mut self, batch: Vec<Command>) -> Option<oneshot::Sender<()>> {
        let mut writes = Vec::with_capacity(batch.len());
        let mut close = None;
        for command in batch {
            match command {
                Command::Retention { policy, after, reply } => {
                    let result = self.retention_step(&policy, &after).map_err(unavailable);
                    if result.is_err() {
                        self.rooms.clear();
                    }
                    let _ = reply.send(result);
                }
                Command::Close(reply) => close = Some(reply),
                write => writes.push(write),
            }
        }
        if !writes.is_empty() {
            self.commit_writes(writes);
        }
        close
    }

    /// Commits the writes of one batch, then answers every caller and reports
    /// the new events on the commit feed — in that order, never before.
    fn commit_writes(&mut self, writes: Vec<Command>) {
        if self.rooms.len() > MAX_CACHED_ROOMS {
            self.rooms.clear();
        }
        let mut pending = Vec::with_capacity(writes.len());
        let mut committed = Vec::new();
        let metrics = crate::metrics::get();
        metrics.store_batch.record(writes.len() as f64);
        let started = std::time::Instant::now();
        let result = self.apply_writes(writes, &mut pending, &mut committed);
        metrics.store_append.record(started.elapsed());
        match result {
            Ok(()) => {
                pending.into_iter().for_each(Pending::answer);
                if !committed.is_empty() {
                    // The receiver lives as long as the node; if it is gone the
                    // node is shutting down and nobody is left to notify.
                    let _ = self.feed.send(committed);
                }
            }
            Err((err, unanswered)) => {
                tracing::error!(error = %err, "sqlite batch failed and was rolled back");
                metrics.store_errors.increment(1);
                self.rooms.clear();
                let err = unavailable(err);
                for reply in pending.into_iter().map(Pending::into_reply).chain(unanswered) {
                    reply.fail(&err);
                }
            }
        }
    }

    /// Applies the writes in one transaction. On failure returns the error and
    /// the callers not yet answered, so every caller still gets an answer.
    fn apply_writes(
        &mut self,
        writes: Vec<Command>,
        pending: &mut Vec<Pending>,
        committed: &mut Vec<Arc<Event>>,
    ) -> Result<(), (rusqlite::Error, Vec<Reply>)> {
        let replies_of = |commands: Vec<Command>| -> Vec<Reply> {
            commands
                .into_iter()
                .filter_map(|command| match command {
                    Command::Append(_, reply) => Some(Reply::Append(reply)),
                    Command::EnsureRoom(_, reply) => Some(Reply::Ensure(reply)),
                    Command::Transact(_, reply) => Some(Reply::Transact(reply)),
                    _ => None,
                })
                .collect()
        };
        let mut tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(err) => return Err((err, replies_of(writes))),
        };
        // Rooms appended to in this batch, each once (see `CachedRoom::dirty`).
        let mut touched: Vec<RoomName> = Vec::new();
        let mut writes = writes.into_iter();
        while let Some(command) = writes.next() {
            let step = match command {
                Command::Append(request, reply) => match append_one(&tx, &mut self.rooms, request, &mut touched) {
                    Ok((outcome, event)) => {
                        committed.extend(event.map(Arc::new));
                        pending.push(Pending::Append(reply, outcome));
                        Ok(())
                    }
                    Err(err) => Err((err, Reply::Append(reply))),
                },
                Command::EnsureRoom(room, reply) => match cached_room(&tx, &mut self.rooms, &room, true) {
                    Ok(Some(cached)) => {
                        let state = RoomState {
                            epoch: cached.epoch.clone(),
                            head: cached.head,
                            earliest: cached.pruned_through + 1,
                        };
                        pending.push(Pending::Ensure(reply, state));
                        Ok(())
                    }
                    Ok(None) => Err((rusqlite::Error::QueryReturnedNoRows, Reply::Ensure(reply))),
                    Err(err) => Err((err, Reply::Ensure(reply))),
                },
                Command::Transact(work, reply) => match transact_one(&mut tx, &mut self.rooms, work, &mut touched) {
                    Ok((outcome, event)) => {
                        committed.extend(event.map(Arc::new));
                        pending.push(Pending::Transact(reply, outcome));
                        Ok(())
                    }
                    // The application's own failure: its savepoint is rolled
                    // back, the rest of the batch goes on.
                    Err(TransactFailure::App(err)) => {
                        let _ = reply.send(Err(err));
                        Ok(())
                    }
                    Err(TransactFailure::Db(err)) => Err((err, Reply::Transact(reply))),
                },
                Command::Retention { .. } | Command::Close(_) => Ok(()),
            };
            if let Err((err, failed)) = step {
                let mut unanswered = vec![failed];
                unanswered.extend(replies_of(writes.collect()));
                return Err((err, unanswered));
            }
        }
        for room in &touched {
            if let Some(cached) = self.rooms.get_mut(room) {
                cached.dirty = false;
                let updated = tx
                    .prepare_cached("UPDATE rooms SET head = ?1 WHERE name = ?2")
                    .and_then(|mut stmt| stmt.execute(params![cached.head as i64, room.as_str()]));
                if let Err(err) = updated {
                    return Err((err, Vec::new()));
                }
            }
        }
        tx.commit().map_err(|err| (err, Vec::new()))
    }

    /// One retention step over up to `RETENTION_CHUNK` rooms named after `after`.
    fn retention_step(&mut self, policy: &RetentionPolicy, after: &str) -> rusqlite::Result<(u64, Option<String>)> {
        let tx = self.conn.transaction()?;
        let mut rooms: Vec<(String, u64, u64)> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT name, head, pruned_through FROM rooms WHERE name > ?1 AND head > pruned_through ORDER BY name LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![after, RETENTION_CHUNK as i64])?;
            while let Some(row) = rows.next()? {
                rooms.push((row.get(0)?, row.get::<_, i64>(1)? as u64, row.get::<_, i64>(2)? as u64));
            }
        }
        let mut deleted = 0;
        for (name, head, pruned_through) in &rooms {
            let (max_events, max_age_ms) = policy.limits_for(name);
            let cutoff_ts = if max_age_ms > 0 { Some(now_ms() - max_age_ms as i64) } else { None };
            let mut prune_to = *pruned_through;
            if max_events > 0 && head - pruned_through > max_events {
                prune_to = head - max_events;
            }
            if let Some(cutoff) = cutoff_ts {
                // ts never decreases within a room, so the expired events are a
                // prefix of the log: walk it from the oldest and stop at the
                // first young one.
                let mut stmt = tx.prepare_cached(
                    "SELECT seq FROM events WHERE room = ?1 AND seq > ?2 AND ts < ?3 ORDER BY seq",
                )?;
                let mut rows = stmt.query(params![name, prune_to as i64, cutoff])?;
                let mut expected = prune_to + 1;
                while let Some(row) = rows.next()? {
                    let seq = row.get::<_, i64>(0)? as u64;
                    if seq != expected {
                        break;
                    }
                    prune_to = seq;
                    expected += 1;
                }
            }
            if prune_to > *pruned_through {
                deleted += tx
                    .prepare_cached("DELETE FROM events WHERE room = ?1 AND seq <= ?2")?
                    .execute(params![name, prune_to as i64])? as u64;
                tx.prepare_cached("UPDATE rooms SET pruned_through = ?1 WHERE name = ?2")?
                    .execute(params![prune_to as i64, name])?;
                if let Some(cached) = RoomName::parse(name).ok().and_then(|r| self.rooms.get_mut(&r)) {
                    cached.pruned_through = prune_to;
                }
            }
        }
        tx.commit()?;
        let next = if rooms.len() == RETENTION_CHUNK { rooms.last().map(|r| r.0.clone()) } else { None };
        Ok((deleted, next))
    }
}

/// Returns the writer's cached view of `room`, loading it from the database
/// and, when `create` is set, creating the room if it does not exist.
fn cached_room<'a>(
    conn: &Connection,
    rooms: &'a mut HashMap<RoomName, CachedRoom>,
    room: &RoomName,
    create: bool,
) -> rusqlite::Result<Option<&'a mut CachedRoom>> {
    if !rooms.contains_key(room) {
        let loaded = conn
            .prepare_cached(
                "SELECT r.epoch, r.head, r.pruned_through, \
                 (SELECT ts FROM events e WHERE e.room = r.name AND e.seq = r.head) \
                 FROM rooms r WHERE r.name = ?1",
            )?
            .query_row([room.as_str()], |row| {
                Ok(CachedRoom {
                    epoch: row.get(0)?,
                    head: row.get::<_, i64>(1)? as u64,
                    pruned_through: row.get::<_, i64>(2)? as u64,
                    last_ts: row.get::<_, Option<i64>>(3)?.unwrap_or(0),
                    dirty: false,
                })
            })
            .optional()?;
        let cached = match loaded {
            Some(cached) => cached,
            None if create => {
                let epoch = new_epoch();
                conn.prepare_cached(
                    "INSERT INTO rooms (name, epoch, head, pruned_through, created_at) VALUES (?1, ?2, 0, 0, ?3)",
                )?
                .execute(params![room.as_str(), epoch, now_ms()])?;
                CachedRoom { epoch, head: 0, pruned_through: 0, last_ts: 0, dirty: false }
            }
            None => return Ok(None),
        };
        rooms.insert(room.clone(), cached);
    }
    Ok(rooms.get_mut(room))
}

/// Applies one append inside the batch transaction.
fn append_one(
    conn: &Connection,
    rooms: &mut HashMap<RoomName, CachedRoom>,
    request: AppendRequest,
    touched: &mut Vec<RoomName>,
) -> rusqlite::Result<(AppendOutcome, Option<Event>)> {
    let AppendRequest { room, data, idem_key, expected_seq, origin } = request;
    let cached = cached_room(conn, rooms, &room, true)?.expect("created when missing");
    if let Some(key) = &idem_key {
        let first = conn
            .prepare_cached("SELECT seq, ts FROM events WHERE room = ?1 AND idem_key = ?2")?
            .query_row(params![room.as_str(), key], |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)?)))
            .optional()?;
        if let Some((seq, ts)) = first {
            let receipt = Receipt { room, seq, epoch: cached.epoch.clone(), ts };
            return Ok((AppendOutcome::Duplicate(receipt), None));
        }
    }
    if let Some(expected) = expected_seq {
        if expected != cached.head {
            return Ok((AppendOutcome::Conflict { head: cached.head, epoch: cached.epoch.clone() }, None));
        }
    }
    let seq = cached.head + 1;
    let ts = now_ms().max(cached.last_ts);
    conn.prepare_cached("INSERT INTO events (room, seq, ts, data, idem_key) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![room.as_str(), seq as i64, ts, data.get(), idem_key])?;
    cached.head = seq;
    cached.last_ts = ts;
    if !cached.dirty {
        cached.dirty = true;
        touched.push(room.clone());
    }
    let receipt = Receipt { room: room.clone(), seq, epoch: cached.epoch.clone(), ts };
    Ok((AppendOutcome::Appended(receipt), Some(Event { room, seq, ts, data, origin })))
}

/// Why one application transaction failed.
enum TransactFailure {
    /// The application's work failed; only its savepoint is rolled back.
    App(StoreError),
    /// Appending its event failed; the whole batch is rolled back.
    Db(rusqlite::Error),
}

/// Runs one application transaction inside a savepoint of the batch
/// transaction, appending its event (with the seq the writer assigns) before
/// the savepoint is released.
fn transact_one(
    tx: &mut rusqlite::Transaction<'_>,
    rooms: &mut HashMap<RoomName, CachedRoom>,
    work: Box<dyn SqliteWork>,
    touched: &mut Vec<RoomName>,
) -> Result<(TxOutcome, Option<Event>), TransactFailure> {
    let savepoint = tx.savepoint().map_err(TransactFailure::Db)?;
    // Dropping the savepoint without `commit` rolls it back. A panicking
    // application must not take the writer thread (and every room) with it.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.run_sqlite(&savepoint)));
    let decision = match ran {
        Ok(result) => result.map_err(TransactFailure::App)?,
        Err(_) => return Err(TransactFailure::App(StoreError::Unavailable("the application transaction panicked".into()))),
    };
    match decision {
        TxDecision::Abort(answer) => Ok((TxOutcome::Aborted(answer), None)),
        TxDecision::Commit { event: None, answer } => {
            savepoint.commit().map_err(TransactFailure::Db)?;
            Ok((TxOutcome::Committed { receipt: None, answer }, None))
        }
        TxDecision::Commit { event: Some(event), answer } => {
            let request = AppendRequest { room: event.room, data: event.data, idem_key: None, expected_seq: None, origin: None };
            let (outcome, event) = append_one(&savepoint, rooms, request, touched).map_err(TransactFailure::Db)?;
            savepoint.commit().map_err(TransactFailure::Db)?;
            let receipt = match outcome {
                AppendOutcome::Appended(receipt) => Some(receipt),
                _ => None,
            };
            Ok((TxOutcome::Committed { receipt, answer }, event))
        }
    }
}
