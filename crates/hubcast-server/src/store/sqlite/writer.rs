//! The writer thread: the only read-write connection, so the single point
//! where seqs are assigned. It group-commits every write waiting in its queue
//! in one transaction with one fsync, answers each caller after the commit,
//! then reports the batch on the commit feed.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::{unavailable, Command, SqliteWork};
use crate::event::{now_ms, Event};
use crate::room::RoomName;
use crate::store::transaction::{TxDecision, TxOutcome};
use crate::store::{AppendOutcome, AppendRequest, BatchOutcome, BatchRequest, Receipt, StoreError};

/// What the writer remembers of a room between batches. It is the only writer,
/// so this cache is exact; it is dropped whenever a transaction fails.
pub(super) struct CachedRoom {
    epoch: String,
    head: u64,
    pub(super) pruned_through: u64,
    last_ts: i64,
    /// Appended to in the current batch: its `head` is written back once,
    /// at the end of the batch (the room is then in the batch's touched list).
    dirty: bool,
}

/// Rooms cached by the writer before the cache is cleared (bounds memory when
/// clients touch very many rooms).
const MAX_CACHED_ROOMS: usize = 100_000;

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) rooms: HashMap<RoomName, CachedRoom>,
    pub(super) feed: crate::store::FeedSender,
    pub(super) max_batch: usize,
    pub(super) health: Arc<super::WriterHealth>,
    /// The database's id, for new rooms' epochs.
    pub(super) instance: String,
    /// Endpoints that may want an `event.published` message, recorded in
    /// the event's own transaction.
    pub(super) webhooks: Option<Arc<crate::webhook::Webhooks>>,
}

/// A caller waiting for a write's answer.
enum Reply {
    Append(oneshot::Sender<Result<AppendOutcome, StoreError>>),
    Batch(oneshot::Sender<Result<BatchOutcome, StoreError>>),
    Transact(oneshot::Sender<Result<TxOutcome, StoreError>>),
    Webhooks(oneshot::Sender<Result<bool, StoreError>>),
}

impl Reply {
    fn fail(self, err: &StoreError) {
        let _ = match self {
            Reply::Append(reply) => reply.send(Err(err.clone())).is_ok(),
            Reply::Batch(reply) => reply.send(Err(err.clone())).is_ok(),
            Reply::Transact(reply) => reply.send(Err(err.clone())).is_ok(),
            Reply::Webhooks(reply) => reply.send(Err(err.clone())).is_ok(),
        };
    }
}

/// An answer held back until its batch commits.
enum Pending {
    Append(
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
        AppendOutcome,
    ),
    Batch(
        oneshot::Sender<Result<BatchOutcome, StoreError>>,
        BatchOutcome,
    ),
    Transact(oneshot::Sender<Result<TxOutcome, StoreError>>, TxOutcome),
    Webhooks(oneshot::Sender<Result<bool, StoreError>>, bool),
}

impl Pending {
    fn answer(self) {
        let _ = match self {
            Pending::Append(reply, outcome) => reply.send(Ok(outcome)).is_ok(),
            Pending::Batch(reply, outcome) => reply.send(Ok(outcome)).is_ok(),
            Pending::Transact(reply, outcome) => reply.send(Ok(outcome)).is_ok(),
            Pending::Webhooks(reply, recorded) => reply.send(Ok(recorded)).is_ok(),
        };
    }

    fn into_reply(self) -> Reply {
        match self {
            Pending::Append(reply, _) => Reply::Append(reply),
            Pending::Batch(reply, _) => Reply::Batch(reply),
            Pending::Transact(reply, _) => Reply::Transact(reply),
            Pending::Webhooks(reply, _) => Reply::Webhooks(reply),
        }
    }
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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
                Command::Retention {
                    policy,
                    after,
                    reply,
                } => {
                    let result = self.retention_step(&policy, &after).map_err(unavailable);
                    if result.is_err() {
                        self.rooms.clear();
                    }
                    let _ = reply.send(result);
                }
                Command::Maintain(work) => work(self),
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
        let mut recorded = false;
        let result = self.apply_writes(writes, &mut pending, &mut committed, &mut recorded);
        metrics.store_append.record(started.elapsed());
        match result {
            Ok(()) => {
                self.health.batch_committed();
                pending.into_iter().for_each(Pending::answer);
                if let (true, Some(webhooks)) = (recorded, &self.webhooks) {
                    webhooks.recorded.notify_waiters();
                }
                if !committed.is_empty() {
                    // The receiver lives as long as the node; if it is gone the
                    // node is shutting down and nobody is left to notify.
                    self.feed.announce(committed);
                }
            }
            Err((err, unanswered)) => {
                tracing::error!(error = %err, "sqlite batch failed and was rolled back");
                self.health.batch_failed(&err);
                metrics.store_errors.increment(1);
                self.rooms.clear();
                let err = unavailable(err);
                for reply in pending
                    .into_iter()
                    .map(Pending::into_reply)
                    .chain(unanswered)
                {
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
        recorded: &mut bool,
    ) -> Result<(), (rusqlite::Error, Vec<Reply>)> {
        let replies_of = |commands: Vec<Command>| -> Vec<Reply> {
            commands
                .into_iter()
                .filter_map(|command| match command {
                    Command::Append(_, reply) => Some(Reply::Append(reply)),
                    Command::AppendBatch(_, reply) => Some(Reply::Batch(reply)),
                    Command::Transact(_, reply) => Some(Reply::Transact(reply)),
                    Command::Webhooks(_, reply) => Some(Reply::Webhooks(reply)),
                    _ => None,
                })
                .collect()
        };
        let webhooks = self.webhooks.clone();
        let webhooks = webhooks.as_deref();
        let mut tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(err) => return Err((err, replies_of(writes))),
        };
        // Rooms appended to in this batch, each once (see `CachedRoom::dirty`).
        let mut touched: Vec<RoomName> = Vec::new();
        let mut writes = writes.into_iter();
        while let Some(command) = writes.next() {
            let step = match command {
                Command::Append(request, reply) => {
                    let fingerprint = request.idem_key.as_ref().map(|_| request.fingerprint());
                    let appended = append_one(
                        &tx,
                        &mut self.rooms,
                        &self.instance,
                        request,
                        fingerprint,
                        &mut touched,
                    )
                    .and_then(|(outcome, event)| {
                        *recorded |= record_published(webhooks, &tx, &outcome, &event)?;
                        Ok((outcome, event))
                    });
                    match appended {
                        Ok((outcome, event)) => {
                            committed.extend(event.map(Arc::new));
                            pending.push(Pending::Append(reply, outcome));
                            Ok(())
                        }
                        Err(err) => Err((err, Reply::Append(reply))),
                    }
                }
                Command::AppendBatch(batch, reply) => {
                    match batch_one(
                        &mut tx,
                        &mut self.rooms,
                        &self.instance,
                        webhooks,
                        batch,
                        &mut touched,
                    ) {
                        Ok((outcome, events, batch_recorded)) => {
                            *recorded |= batch_recorded;
                            committed.extend(events.into_iter().map(Arc::new));
                            pending.push(Pending::Batch(reply, outcome));
                        }
                        // Only this batch's savepoint is rolled back; the
                        // rest of the group commit goes on.
                        Err(err) => {
                            let _ = reply.send(Err(super::unavailable(err)));
                        }
                    }
                    Ok(())
                }
                Command::Transact(work, reply) => {
                    let ran =
                        transact_one(&mut tx, &mut self.rooms, &self.instance, work, &mut touched)
                            .and_then(|(outcome, event)| {
                                if let TxOutcome::Committed {
                                    receipt: Some(receipt),
                                    ..
                                } = &outcome
                                {
                                    let appended = AppendOutcome::Appended(receipt.clone());
                                    *recorded |= record_published(webhooks, &tx, &appended, &event)
                                        .map_err(TransactFailure::Db)?;
                                }
                                Ok((outcome, event))
                            });
                    match ran {
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
                    }
                }
                Command::Webhooks(write, reply) => match super::webhooks::apply(&tx, &write) {
                    Ok(wrote) => {
                        *recorded |= wrote;
                        pending.push(Pending::Webhooks(reply, wrote));
                        Ok(())
                    }
                    Err(err) => Err((err, Reply::Webhooks(reply))),
                },
                Command::Retention { .. } | Command::Maintain(_) | Command::Close(_) => Ok(()),
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
}

/// Records the `event.published` messages of a new event in the batch
/// transaction; returns whether there were any.
fn record_published(
    webhooks: Option<&crate::webhook::Webhooks>,
    conn: &Connection,
    outcome: &AppendOutcome,
    event: &Option<Event>,
) -> rusqlite::Result<bool> {
    let (Some(webhooks), AppendOutcome::Appended(receipt), Some(event)) =
        (webhooks, outcome, event)
    else {
        return Ok(false);
    };
    let messages = webhooks.published(
        event.room.as_str(),
        event.seq,
        &receipt.epoch,
        event.ts,
        &event.data,
    );
    super::webhooks::insert(conn, &messages)?;
    Ok(!messages.is_empty())
}

impl Writer {
    /// Deletes `room`'s log and gives the room a fresh epoch (see
    /// `Store::delete_room`); `None` if the room was never written.
    pub(super) fn delete_room(&mut self, room: &RoomName) -> rusqlite::Result<Option<String>> {
        let tx = self.conn.transaction()?;
        let exists = tx
            .prepare_cached("SELECT 1 FROM rooms WHERE name = ?1")?
            .exists([room.as_str()])?;
        if !exists {
            return Ok(None);
        }
        let epoch = crate::store::fresh_epoch();
        tx.prepare_cached("DELETE FROM events WHERE room = ?1")?
            .execute([room.as_str()])?;
        tx.prepare_cached(
            "UPDATE rooms SET epoch = ?1, head = 0, pruned_through = 0 WHERE name = ?2",
        )?
        .execute(params![epoch, room.as_str()])?;
        tx.commit()?;
        // The next append reloads the room (new epoch, head 0).
        self.rooms.remove(room);
        Ok(Some(epoch))
    }
}

/// Returns the writer's cached view of `room`, loading it from the database
/// and creating the room (its epoch derived from the database's `instance`)
/// if it does not exist: the first append creates a room, nothing else does.
fn cached_room<'a>(
    conn: &Connection,
    rooms: &'a mut HashMap<RoomName, CachedRoom>,
    room: &RoomName,
    instance: &str,
) -> rusqlite::Result<&'a mut CachedRoom> {
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
            None => {
                let epoch = crate::store::room_epoch(instance, room);
                conn.prepare_cached(
                    "INSERT INTO rooms (name, epoch, head, pruned_through, created_at) VALUES (?1, ?2, 0, 0, ?3)",
                )?
                .execute(params![room.as_str(), epoch, now_ms()])?;
                CachedRoom {
                    epoch,
                    head: 0,
                    pruned_through: 0,
                    last_ts: 0,
                    dirty: false,
                }
            }
        };
        rooms.insert(room.clone(), cached);
    }
    Ok(rooms.get_mut(room).expect("inserted above"))
}

/// Applies one append inside the batch transaction.
fn append_one(
    conn: &Connection,
    rooms: &mut HashMap<RoomName, CachedRoom>,
    instance: &str,
    request: AppendRequest,
    fingerprint: Option<String>,
    touched: &mut Vec<RoomName>,
) -> rusqlite::Result<(AppendOutcome, Option<Event>)> {
    #[cfg(feature = "testing")]
    crate::testing::fault_point(request.data.get(), crate::testing::WRITER_PANIC);
    let AppendRequest {
        room,
        data,
        idem_key,
        expected_seq,
        origin,
    } = request;
    let cached = cached_room(conn, rooms, &room, instance)?;
    if let Some(key) = &idem_key {
        let first = conn
            .prepare_cached(
                "SELECT seq, ts, idem_hash FROM events WHERE room = ?1 AND idem_key = ?2",
            )?
            .query_row(params![room.as_str(), key], |row| {
                Ok((
                    row.get::<_, i64>(0)? as u64,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()?;
        if let Some((seq, ts, hash)) = first {
            let receipt = Receipt {
                room,
                seq,
                epoch: cached.epoch.clone(),
                ts,
            };
            let same = hash.is_none() || hash == fingerprint;
            let outcome = if same {
                AppendOutcome::Duplicate(receipt)
            } else {
                AppendOutcome::Mismatch(receipt)
            };
            return Ok((outcome, None));
        }
    }
    if let Some(expected) = expected_seq {
        if expected != cached.head {
            return Ok((
                AppendOutcome::Conflict {
                    head: cached.head,
                    epoch: cached.epoch.clone(),
                },
                None,
            ));
        }
    }
    let seq = cached.head + 1;
    let ts = now_ms().max(cached.last_ts);
    conn.prepare_cached("INSERT INTO events (room, seq, ts, data, idem_key, idem_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![room.as_str(), seq as i64, ts, data.get(), idem_key, fingerprint])?;
    cached.head = seq;
    cached.last_ts = ts;
    if !cached.dirty {
        cached.dirty = true;
        touched.push(room.clone());
    }
    let receipt = Receipt {
        room: room.clone(),
        seq,
        epoch: cached.epoch.clone(),
        ts,
    };
    Ok((
        AppendOutcome::Appended(receipt),
        Some(Event {
            room,
            seq,
            ts,
            data,
            origin,
        }),
    ))
}

/// What the writer's cache held of a room before a batch touched it, so a
/// rolled-back batch leaves the cache exactly as the database is.
struct CachedBefore {
    room: RoomName,
    /// `(head, last_ts, dirty)`, or `None` when the room was not cached.
    state: Option<(u64, i64, bool)>,
}

/// Applies one atomic batch inside a savepoint of the group-commit
/// transaction: every event, in request order, as single appends. The
/// savepoint is released only if all were appended; otherwise (a conflict, a
/// reused key, a database error) it is rolled back alone and the cache and
/// `touched` are restored, so the rest of the group commit is unaffected.
fn batch_one(
    tx: &mut rusqlite::Transaction<'_>,
    rooms: &mut HashMap<RoomName, CachedRoom>,
    instance: &str,
    webhooks: Option<&crate::webhook::Webhooks>,
    batch: BatchRequest,
    touched: &mut Vec<RoomName>,
) -> rusqlite::Result<(BatchOutcome, Vec<Event>, bool)> {
    let (appends, fingerprint) = batch.into_appends();
    let names: Vec<RoomName> = appends.iter().map(|a| a.room.clone()).collect();
    let mut before: Vec<CachedBefore> = Vec::new();
    for room in &names {
        if !before.iter().any(|b| &b.room == room) {
            before.push(CachedBefore {
                room: room.clone(),
                state: rooms.get(room).map(|c| (c.head, c.last_ts, c.dirty)),
            });
        }
    }
    let touched_before = touched.len();
    let savepoint = tx.savepoint()?;
    let mut outcomes = Vec::with_capacity(appends.len());
    let mut events = Vec::with_capacity(appends.len());
    let mut recorded = false;
    let mut applied = Ok(());
    for request in appends {
        // Each event's `event.published` webhooks commit (or roll back) with it.
        let appended = append_one(
            &savepoint,
            rooms,
            instance,
            request,
            fingerprint.clone(),
            touched,
        )
        .and_then(|(outcome, event)| {
            recorded |= record_published(webhooks, &savepoint, &outcome, &event)?;
            Ok((outcome, event))
        });
        match appended {
            Ok((outcome, event)) => {
                let stop = matches!(
                    outcome,
                    AppendOutcome::Conflict { .. } | AppendOutcome::Mismatch(_)
                );
                outcomes.push(outcome);
                events.extend(event);
                if stop {
                    break;
                }
            }
            Err(err) => {
                applied = Err(err);
                break;
            }
        }
    }
    let outcome = match applied.map(|()| BatchOutcome::of(&names, outcomes)) {
        Ok(outcome) if outcome.commits() => match savepoint.commit() {
            Ok(()) => return Ok((outcome, events, recorded)),
            Err(err) => Err(err),
        },
        // Dropping the savepoint rolls it back.
        other => other,
    };
    // Put the cache back as the database now is.
    touched.truncate(touched_before);
    for CachedBefore { room, state } in before {
        match state {
            None => {
                rooms.remove(&room);
            }
            Some((head, last_ts, dirty)) => {
                if let Some(cached) = rooms.get_mut(&room) {
                    cached.head = head;
                    cached.last_ts = last_ts;
                    cached.dirty = dirty;
                }
            }
        }
    }
    outcome.map(|outcome| (outcome, Vec::new(), false))
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
    instance: &str,
    work: Box<dyn SqliteWork>,
    touched: &mut Vec<RoomName>,
) -> Result<(TxOutcome, Option<Event>), TransactFailure> {
    let savepoint = tx.savepoint().map_err(TransactFailure::Db)?;
    // Dropping the savepoint without `commit` rolls it back. A panicking
    // application must not take the writer thread (and every room) with it.
    let ran =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.run_sqlite(&savepoint)));
    let decision = match ran {
        Ok(result) => result.map_err(TransactFailure::App)?,
        Err(_) => {
            return Err(TransactFailure::App(StoreError::Internal(
                "the application transaction panicked".into(),
            )))
        }
    };
    match decision {
        TxDecision::Abort(answer) => Ok((TxOutcome::Aborted(answer), None)),
        TxDecision::Commit {
            event: None,
            answer,
        } => {
            savepoint.commit().map_err(TransactFailure::Db)?;
            Ok((
                TxOutcome::Committed {
                    receipt: None,
                    answer,
                },
                None,
            ))
        }
        TxDecision::Commit {
            event: Some(event),
            answer,
        } => {
            let request = AppendRequest {
                room: event.room,
                data: event.data,
                idem_key: None,
                expected_seq: None,
                origin: None,
            };
            let (outcome, event) = append_one(&savepoint, rooms, instance, request, None, touched)
                .map_err(TransactFailure::Db)?;
            savepoint.commit().map_err(TransactFailure::Db)?;
            let receipt = match outcome {
                AppendOutcome::Appended(receipt) => Some(receipt),
                _ => None,
            };
            Ok((TxOutcome::Committed { receipt, answer }, event))
        }
    }
}
