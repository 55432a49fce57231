//! The cluster store: PostgreSQL, shared by every node.
//!
//! Seq assignment is a row lock on `rooms`, taken inside one server-side
//! function (`append_events`) that appends a whole batch in one statement: one
//! round trip and one commit for every append waiting when a writer picks up
//! work (group commit). A few writers run at once so different rooms commit in
//! parallel; each batch is sorted by room so writers always lock rooms in the
//! same order and cannot deadlock. Every table lives in its own schema
//! (`postgres.schema`, default `hubcast`), set as the connections' search path.

mod connections;
mod outbox;
mod schema;
mod webhooks;
mod writer;

use connections::{Connection, Connections};
use schema::migrate;
use writer::Writer;
use writer::{append_batch_on, append_fingerprinted_on};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::NoTls;

use super::transaction::{TxDecision, TxOutcome};
use super::{
    revocation_from_row, revocation_row, AppendOutcome, AppendRequest, BatchOutcome, BatchRequest,
    CommitFeed, Page, RetentionPolicy, Revocation, Store, StoreError,
};
use crate::config::PostgresConfig;
use crate::event::{now_ms, Event, RoomState};
use crate::room::RoomName;

/// The NOTIFY channel the outbox trigger signals, per schema.
pub fn outbox_channel(schema: &str) -> String {
    format!("hubcast_outbox_{schema}")
}

/// Application work run on PostgreSQL inside the store's own transaction (see
/// `store::transaction`). Its tables live in the store's schema, which is the
/// connections' search path.
pub trait PostgresWork: Send + 'static {
    /// Runs inside a transaction on a pooled connection; lock what it checks
    /// (`SELECT … FOR UPDATE`).
    fn run_postgres<'a>(
        self: Box<Self>,
        tx: &'a tokio_postgres::Transaction<'_>,
    ) -> BoxFuture<'a, Result<TxDecision, StoreError>>;
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Connections,
    /// `None` once closed; dropping the sender lets the writers drain and stop.
    /// Bounded (`postgres.max_queue`): a full queue refuses appends with 503.
    queue: std::sync::Mutex<Option<mpsc::Sender<Pending>>>,
    /// Most any one operation may take (`postgres.statement_timeout_ms`).
    op_timeout: Duration,
    /// The database's id (table `meta`): what new rooms' epochs derive from.
    instance: String,
    closed: tokio_util::sync::CancellationToken,
    writers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// For the events of application transactions ([`PostgresStore::transact`]).
    feed: crate::store::FeedSender,
    /// Endpoints whose `event.published` messages every append records in
    /// its own transaction.
    webhooks: Option<Arc<crate::webhook::Webhooks>>,
}

struct Pending {
    pub(super) request: AppendRequest,
    pub(super) reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// A PostgreSQL failure as a store error: transient when the same operation
/// may succeed later (no connection, the server shutting down or out of
/// resources, a statement timeout, a serialization failure or deadlock, a
/// lock not available), permanent otherwise (bad data, a constraint or a
/// statement the store should never send).
fn unavailable(err: tokio_postgres::Error) -> StoreError {
    let transient = match err.code() {
        None => true, // I/O, closed connection, timeout: no server verdict
        Some(state) => {
            let code = state.code();
            ["08", "53", "57", "40", "55P03", "58"]
                .iter()
                .any(|prefix| code.starts_with(prefix))
        }
    };
    let message = match err.as_db_error() {
        Some(db) => format!("{err}: {}", db.message()),
        None => match std::error::Error::source(&err) {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        },
    };
    if transient {
        StoreError::Unavailable(message)
    } else {
        StoreError::Internal(message)
    }
}

/// Why the PostgreSQL store could not be opened. The sources carry the
/// server's own message (`database "x" does not exist`, …).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("postgres.schema `{0}` must be lowercase letters, digits and underscores")]
    Schema(String),
    #[error("invalid postgres url")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot connect to postgres")]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot migrate the postgres schema")]
    Migrate(#[from] tokio_postgres::Error),
    #[error("the postgres schema has version {found}, newer than this hubcast ({supported})")]
    TooNew { found: usize, supported: usize },
    #[error("cannot build the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
}

/// A connection config for `url` whose sessions use `schema`.
pub fn connect_config(url: &str, schema: &str) -> Result<tokio_postgres::Config, OpenError> {
    if !schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || schema.is_empty()
    {
        return Err(OpenError::Schema(schema.to_owned()));
    }
    let mut config = tokio_postgres::Config::from_str(url).map_err(OpenError::Url)?;
    config.options(format!("-c search_path={schema}"));
    config.application_name("hubcast");
    config.connect_timeout(Duration::from_secs(3));
    // A dead peer or path is noticed by the kernel within about a minute
    // even on an idle pooled connection.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    Ok(config)
}

impl PostgresStore {
    /// Runs `work` in one transaction on a pooled connection with the append
    /// of the event it returns (through the same server-side function as every
    /// append); the event is on the commit feed after `COMMIT`.
    pub async fn transact(&self, work: Box<dyn PostgresWork>) -> Result<TxOutcome, StoreError> {
        self.bounded(async move {
            if self.closed.is_cancelled() {
                return Err(StoreError::Closed);
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(unavailable)?;
            // An error or an abort drops `tx`, which rolls it back.
            match work.run_postgres(&tx).await? {
                TxDecision::Abort(answer) => Ok(TxOutcome::Aborted(answer)),
                TxDecision::Commit {
                    event: None,
                    answer,
                } => {
                    tx.commit().await.map_err(unavailable)?;
                    Ok(TxOutcome::Committed {
                        receipt: None,
                        answer,
                    })
                }
                TxDecision::Commit {
                    event: Some(event),
                    answer,
                } => {
                    // The same server-side function as every append: the
                    // room's row lock assigns the seq inside this transaction.
                    let request = AppendRequest {
                        room: event.room,
                        data: event.data,
                        idem_key: None,
                        expected_seq: None,
                        origin: None,
                    };
                    let outcome =
                        append_batch_on(&tx, std::iter::once(&request), self.webhooks.as_deref())
                            .await?;
                    tx.commit().await.map_err(unavailable)?;
                    let receipt = match outcome.into_iter().next() {
                        Some(AppendOutcome::Appended(receipt)) => receipt,
                        other => {
                            return Err(StoreError::Internal(format!(
                                "unexpected append outcome {other:?}"
                            )))
                        }
                    };
                    let event = Event {
                        room: receipt.room.clone(),
                        seq: receipt.seq,
                        ts: receipt.ts,
                        data: request.data,
                        origin: None,
                    };
                    self.feed.announce(vec![Arc::new(event)]);
                    Ok(TxOutcome::Committed {
                        receipt: Some(receipt),
                        answer,
                    })
                }
            }
        })
        .await
    }

    /// Connects, runs migrations, and starts the writers (and the outbox
    /// drainer when enabled).
    /// `rules` are what outbox rows must satisfy (those of every publish).
    pub async fn open(
        url: &str,
        config: &PostgresConfig,
        rules: crate::store::EventRules,
    ) -> Result<(PostgresStore, CommitFeed), OpenError> {
        PostgresStore::open_with_webhooks(url, config, rules, None).await
    }

    /// [`open`](PostgresStore::open), recording an `event.published` message
    /// for each of `webhooks`' endpoints that wants one in every append's
    /// own transaction.
    pub async fn open_with_webhooks(
        url: &str,
        config: &PostgresConfig,
        rules: crate::store::EventRules,
        webhooks: Option<Arc<crate::webhook::Webhooks>>,
    ) -> Result<(PostgresStore, CommitFeed), OpenError> {
        let pg_config = connect_config(url, &config.schema)?;
        let instance = migrate(&pg_config, &config.schema).await?;
        let manager = Manager::from_config(
            pg_config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(Duration::from_millis(config.timeout_ms));
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: timeout,
                create: timeout,
                recycle: timeout,
            })
            .build()?;
        let pool = Connections::new(pool, Duration::from_millis(config.timeout_ms));
        let (feed_tx, feed_rx) = crate::store::commit_feed();
        let (queue_tx, queue_rx) = mpsc::channel(config.max_queue.max(1));
        let queue_rx = Arc::new(Mutex::new(queue_rx));
        let mut writers = Vec::new();
        for _ in 0..config.writers.max(1) {
            let writer = Writer {
                pool: pool.clone(),
                queue: queue_rx.clone(),
                op_timeout: Duration::from_millis(config.statement_timeout_ms.max(1)),
                feed: feed_tx.clone(),
                max_batch: config.max_batch,
                webhooks: webhooks.clone(),
            };
            writers.push(tokio::spawn(writer.run()));
        }
        let closed = tokio_util::sync::CancellationToken::new();
        if config.outbox {
            let drainer = outbox::Drainer::new(
                pool.clone(),
                pg_config,
                &config.schema,
                feed_tx.clone(),
                config.outbox_poll_ms,
                rules,
                webhooks.clone(),
            );
            tokio::spawn(drainer.run(closed.clone()));
        }
        let store = PostgresStore {
            pool,
            queue: std::sync::Mutex::new(Some(queue_tx)),
            op_timeout: Duration::from_millis(config.statement_timeout_ms.max(1)),
            instance,
            closed,
            writers: std::sync::Mutex::new(writers),
            feed: feed_tx,
            webhooks,
        };
        Ok((store, feed_rx))
    }

    /// `op` within `postgres.statement_timeout_ms`: a frozen or partitioned
    /// server (the kernel still acknowledges, nothing answers) fails the
    /// operation with 503 instead of holding its caller for minutes.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres did not answer within {} ms",
                self.op_timeout.as_millis()
            ))),
        }
    }

    /// One page (500 rooms, by name after `after`) of a retention pass: the
    /// events it deleted, and the last room's name when more may follow.
    ///
    /// The page's rooms come with the `ts` of their oldest retained event
    /// (one index lookup each, in the same query), so a room with nothing
    /// expired costs no query of its own; `ts` never decreases within a
    /// room, so the expired events are a prefix.
    async fn retention_page(
        &self,
        policy: &RetentionPolicy,
        after: &str,
    ) -> Result<(u64, Option<String>), StoreError> {
        const PAGE: usize = 500;
        let mut client = self.client().await?;
        let rooms = client
            .query(
                "SELECT r.name, r.head, r.pruned_through, r.epoch, e.ts
                 FROM rooms r LEFT JOIN events e ON e.room = r.name AND e.seq = r.pruned_through + 1
                 WHERE r.name > $1 AND r.head > r.pruned_through ORDER BY r.name LIMIT 500",
                &[&after],
            )
            .await
            .map_err(unavailable)?;
        let mut deleted = 0;
        for row in &rooms {
            let (name, head, pruned): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            let epoch: String = row.get(3);
            let oldest_ts: Option<i64> = row.get(4);
            let (max_events, max_age_ms) = policy.limits_for(&name);
            let mut prune_to = pruned;
            if max_events > 0 && head - pruned > max_events as i64 {
                prune_to = head - max_events as i64;
            }
            let cutoff = (max_age_ms > 0).then(|| now_ms() - max_age_ms as i64);
            if let (Some(cutoff), Some(oldest)) = (cutoff, oldest_ts) {
                if oldest < cutoff {
                    let expired: Option<i64> = client
                        .query_one(
                            "SELECT max(seq) FROM events WHERE room = $1 AND seq > $2 AND ts < $3",
                            &[&name, &prune_to, &cutoff],
                        )
                        .await
                        .map_err(unavailable)?
                        .get(0);
                    prune_to = prune_to.max(expired.unwrap_or(0));
                }
            }
            if prune_to > pruned {
                // One transaction: a reader never sees the events gone
                // while `earliest` still promises them.
                // The epoch guards against a room deleted (and
                // restarted at seq 1) since it was read above.
                let tx = client.transaction().await.map_err(unavailable)?;
                let moved = tx
                    .execute(
                        "UPDATE rooms SET pruned_through = $2 WHERE name = $1 AND pruned_through < $2 AND epoch = $3",
                        &[&name, &prune_to, &epoch],
                    )
                    .await
                    .map_err(unavailable)?;
                let removed = if moved == 0 {
                    0
                } else {
                    tx.execute(
                        "DELETE FROM events WHERE room = $1 AND seq <= $2",
                        &[&name, &prune_to],
                    )
                    .await
                    .map_err(unavailable)?
                };
                tx.commit().await.map_err(unavailable)?;
                deleted += removed;
            }
        }
        let next = match rooms.last() {
            Some(last) if rooms.len() == PAGE => Some(last.get(0)),
            _ => None,
        };
        Ok((deleted, next))
    }

    async fn client(&self) -> Result<Connection, StoreError> {
        self.pool.get().await
    }
}

impl Store for PostgresStore {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match queue
            .as_ref()
            .map(|queue| queue.try_send(Pending { request, reply }))
        {
            Some(Ok(())) => Ok(()),
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                crate::metrics::get().writes_refused.increment(1);
                Err(StoreError::Unavailable(
                    "the write queue is full; retry shortly".into(),
                ))
            }
            Some(Err(mpsc::error::TrySendError::Closed(_))) | None => Err(StoreError::Closed),
        };
        drop(queue);
        async move {
            sent?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    fn append_batch(&self, batch: BatchRequest) -> BoxFuture<'_, Result<BatchOutcome, StoreError>> {
        self.bounded(async move {
            if self.closed.is_cancelled() {
                return Err(StoreError::Closed);
            }
            let (appends, fingerprint) = batch.into_appends();
            let names: Vec<RoomName> = appends.iter().map(|a| a.room.clone()).collect();
            // Rooms are locked in name order, as the group-commit writers
            // lock them, so a batch and a writer cannot deadlock; the sort is
            // stable, so each room keeps the request order.
            let mut order: Vec<usize> = (0..appends.len()).collect();
            order.sort_by(|&a, &b| appends[a].room.cmp(&appends[b].room));
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(unavailable)?;
            let sorted = append_fingerprinted_on(
                &tx,
                order.iter().map(|&i| &appends[i]),
                fingerprint.as_deref(),
                self.webhooks.as_deref(),
            )
            .await?;
            let mut outcomes: Vec<Option<AppendOutcome>> = vec![None; appends.len()];
            for (&index, outcome) in order.iter().zip(sorted) {
                outcomes[index] = Some(outcome);
            }
            let outcomes = outcomes
                .into_iter()
                .map(|o| o.expect("one outcome per item"));
            let outcome = BatchOutcome::of(&names, outcomes.collect());
            if !outcome.commits() {
                // Dropping `tx` rolls it back: no room changed.
                return Ok(outcome);
            }
            tx.commit().await.map_err(unavailable)?;
            if let Some(webhooks) = &self.webhooks {
                webhooks.recorded.notify_waiters();
            }
            if let BatchOutcome::Appended(receipts) = &outcome {
                let events = appends
                    .into_iter()
                    .zip(receipts)
                    .map(|(append, receipt)| {
                        Arc::new(Event {
                            room: append.room,
                            seq: receipt.seq,
                            ts: receipt.ts,
                            data: append.data,
                            origin: append.origin,
                        })
                    })
                    .collect();
                self.feed.announce(events);
            }
            Ok(outcome)
        })
        .boxed()
    }

    fn epoch_for(&self, room: &RoomName) -> String {
        crate::store::room_epoch(&self.instance, room)
    }

    fn room_state(&self, room: &RoomName) -> BoxFuture<'_, Result<Option<RoomState>, StoreError>> {
        let room = room.clone();
        self.bounded(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT epoch, head, pruned_through FROM rooms WHERE name = $1")
                .await
                .map_err(unavailable)?;
            let row = client
                .query_opt(&statement, &[&room.as_str()])
                .await
                .map_err(unavailable)?;
            Ok(row.map(|row| state_of(row.get(0), row.get(1), row.get(2))))
        })
        .boxed()
    }

    fn read(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Page, StoreError>> {
        let room = room.clone();
        self.bounded(async move {
            let client = self.client().await?;
            // One statement, so the room's state and its events come from one snapshot.
            let statement = client
                .prepare_cached(
                    "SELECT r.epoch, r.head, r.pruned_through, e.seq, e.ts, e.data::text
                     FROM rooms r
                     LEFT JOIN LATERAL (
                         SELECT seq, ts, data FROM events WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3
                     ) e ON true
                     WHERE r.name = $1
                     ORDER BY e.seq",
                )
                .await
                .map_err(unavailable)?;
            let rows = client
                .query(&statement, &[&room.as_str(), &(after as i64), &(limit as i64)])
                .await
                .map_err(unavailable)?;
            let Some(first) = rows.first() else { return Ok(Page::default()) };
            let state = state_of(first.get(0), first.get(1), first.get(2));
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let Some(seq) = row.get::<_, Option<i64>>(3) else { continue };
                let data: String = row.get(5);
                let data = RawValue::from_string(data).map_err(|e| StoreError::Internal(format!("stored event data is not JSON: {e}")))?;
                events.push(Event { room: room.clone(), seq: seq as u64, ts: row.get(4), data, origin: None });
            }
            Ok(Page { state: Some(state), events })
        })
        .boxed()
    }

    fn states(
        &self,
        rooms: Vec<RoomName>,
    ) -> BoxFuture<'_, Result<Vec<(RoomName, RoomState)>, StoreError>> {
        self.bounded(async move {
            let client = self.client().await?;
            let names: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
            let statement = client
                .prepare_cached(
                    "SELECT name, epoch, head, pruned_through FROM rooms WHERE name = ANY($1)",
                )
                .await
                .map_err(unavailable)?;
            let rows = client
                .query(&statement, &[&names])
                .await
                .map_err(unavailable)?;
            Ok(rows
                .into_iter()
                .filter_map(|row| {
                    let room = RoomName::parse(row.get::<_, &str>(0)).ok()?;
                    Some((room, state_of(row.get(1), row.get(2), row.get(3))))
                })
                .collect())
        })
        .boxed()
    }

    fn enforce_retention(&self, policy: RetentionPolicy) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            let mut after = String::new();
            let mut deleted = 0;
            // A page at a time, each within the statement timeout: a pass over
            // many rooms is many pages, not one operation that can never finish
            // in time (it did not, at 6,000 rooms, on a busy server).
            loop {
                let (removed, next) = self.bounded(self.retention_page(&policy, &after)).await?;
                deleted += removed;
                match next {
                    Some(last) => after = last,
                    None => return Ok(deleted),
                }
            }
        }
        .boxed()
    }

    fn delete_room(&self, room: &RoomName) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let room = room.clone();
        self.bounded(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(unavailable)?;
            // The row lock `append_events` takes: no append interleaves.
            let found = tx
                .query_opt(
                    "SELECT 1 FROM rooms WHERE name = $1 FOR UPDATE",
                    &[&room.as_str()],
                )
                .await
                .map_err(unavailable)?;
            if found.is_none() {
                return Ok(None);
            }
            let epoch = crate::store::fresh_epoch();
            tx.execute("DELETE FROM events WHERE room = $1", &[&room.as_str()])
                .await
                .map_err(unavailable)?;
            tx.execute(
                "UPDATE rooms SET epoch = $2, head = 0, pruned_through = 0 WHERE name = $1",
                &[&room.as_str(), &epoch],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(Some(epoch))
        })
        .boxed()
    }

    fn add_revocation(&self, revocation: Revocation) -> BoxFuture<'_, Result<(), StoreError>> {
        self.bounded(async move {
            let client = self.client().await?;
            let (kind, subject, issued_before, expires_at) = revocation_row(&revocation);
            client
                .execute(
                    "INSERT INTO revocations (kind, subject, issued_before, expires_at, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, subject) DO UPDATE SET
                     issued_before = GREATEST(revocations.issued_before, EXCLUDED.issued_before),
                     expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at)",
                    &[&kind, &subject, &issued_before, &expires_at, &now_ms()],
                )
                .await
                .map_err(unavailable)?;
            Ok(())
        })
        .boxed()
    }

    fn revocations(&self, now: i64) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        self.bounded(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT kind, subject, issued_before, expires_at FROM revocations
                     WHERE expires_at > $1 ORDER BY created_at",
                    &[&now],
                )
                .await
                .map_err(unavailable)?;
            Ok(rows
                .into_iter()
                .filter_map(|row| {
                    revocation_from_row(row.get::<_, &str>(0), row.get(1), row.get(2), row.get(3))
                })
                .collect())
        })
        .boxed()
    }

    fn prune_revocations(&self, now: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.bounded(async move {
            let client = self.client().await?;
            client
                .execute("DELETE FROM revocations WHERE expires_at <= $1", &[&now])
                .await
                .map_err(unavailable)
        })
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.bounded(async move {
            if self.closed.is_cancelled() {
                return Err(StoreError::Closed);
            }
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(unavailable)?;
            Ok(())
        })
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.closed.cancel();
        // Dropping the sender lets each writer finish what is queued and stop.
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|e| e.into_inner()));
        async move {
            for writer in writers {
                if tokio::time::timeout(Duration::from_secs(5), writer)
                    .await
                    .is_err()
                {
                    tracing::warn!("a postgres writer did not finish in time");
                }
            }
            self.pool.close();
        }
        .boxed()
    }
}

fn state_of(epoch: String, head: i64, pruned_through: i64) -> RoomState {
    RoomState {
        epoch,
        head: head as u64,
        earliest: pruned_through as u64 + 1,
    }
}
