//! The append writers: several share one queue, and whichever is free takes
//! everything waiting (up to `max_batch`), sorts it by room (so writers lock
//! rooms in the same order and cannot deadlock) and appends it with one call
//! of `append_events`: one round trip and one commit per batch.

use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use super::{unavailable, Connections, Pending};
use crate::event::Event;
use crate::store::{AppendOutcome, AppendRequest, Receipt, StoreError};

/// Runs batches of appends. Several writers share one queue; whichever is free
/// takes everything waiting (up to `max_batch`) as one batch.
pub(super) struct Writer {
    pub(super) pool: Connections,
    pub(super) queue: Arc<Mutex<mpsc::Receiver<Pending>>>,
    /// Most one batch may take: a frozen server fails it with 503.
    pub(super) op_timeout: std::time::Duration,
    pub(super) feed: crate::store::FeedSender,
    pub(super) max_batch: usize,
    /// Endpoints that may want `event.published` messages: then a batch runs
    /// in an explicit transaction with their insert.
    pub(super) webhooks: Option<Arc<crate::webhook::Webhooks>>,
}

impl Writer {
    pub(super) async fn run(self) {
        loop {
            let mut batch = Vec::new();
            {
                let mut queue = self.queue.lock().await;
                match queue.recv().await {
                    Some(first) => batch.push(first),
                    None => return,
                }
                while batch.len() < self.max_batch {
                    match queue.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
            }
            self.commit(batch).await;
        }
    }

    async fn commit(&self, mut batch: Vec<Pending>) {
        // Lock rooms in name order (stable, so each room keeps its order).
        batch.sort_by(|a, b| a.request.room.cmp(&b.request.room));
        let metrics = crate::metrics::get();
        metrics.store_batch.record(batch.len() as f64);
        let started = std::time::Instant::now();
        // On a timeout the outcome is unknown (the statement may still commit
        // once the server answers): 503, and a retry with the same key
        // finds the first append; a commit nobody announced is healed by the
        // hubs' reconcile.
        let result = match tokio::time::timeout(
            self.op_timeout,
            append_batch(
                &self.pool,
                batch.iter().map(|p| &p.request),
                self.webhooks.as_deref(),
            ),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres did not answer within {} ms",
                self.op_timeout.as_millis()
            ))),
        };
        metrics.store_append.record(started.elapsed());
        match result {
            Ok(outcomes) => {
                let mut committed = Vec::new();
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    if let AppendOutcome::Appended(receipt) = &outcome {
                        committed.push(Arc::new(Event {
                            room: receipt.room.clone(),
                            seq: receipt.seq,
                            ts: receipt.ts,
                            data: pending.request.data,
                            origin: pending.request.origin,
                        }));
                    }
                    let _ = pending.reply.send(Ok(outcome));
                }
                if !committed.is_empty() {
                    self.feed.announce(committed);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "postgres append batch failed");
                metrics.store_errors.increment(1);
                for pending in batch {
                    let _ = pending.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Appends a batch (already sorted by room) with one call of `append_events`,
/// on a pooled connection or the given one. Returns one outcome per request.
pub(super) async fn append_batch<'a>(
    pool: &Connections,
    requests: impl Iterator<Item = &'a AppendRequest>,
    webhooks: Option<&crate::webhook::Webhooks>,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let mut client = pool.get().await?;
    match webhooks.filter(|w| w.any_wants(crate::webhook::EventKind::EventPublished)) {
        // One statement is its own transaction: one round trip.
        None => append_batch_on(&client, requests, None).await,
        Some(webhooks) => {
            let tx = client.transaction().await.map_err(unavailable)?;
            let outcomes = append_batch_on(&tx, requests, Some(webhooks)).await?;
            tx.commit().await.map_err(unavailable)?;
            webhooks.recorded.notify_waiters();
            Ok(outcomes)
        }
    }
}

/// Like [`append_batch`] on a given client (inside the caller's transaction),
/// with the `event.published` messages of `webhooks` for each new event.
pub(super) async fn append_batch_on<'a>(
    client: &impl deadpool_postgres::GenericClient,
    requests: impl Iterator<Item = &'a AppendRequest>,
    webhooks: Option<&crate::webhook::Webhooks>,
) -> Result<Vec<AppendOutcome>, StoreError> {
    append_fingerprinted_on(client, requests, None, webhooks).await
}

/// Like [`append_batch_on`], storing `fingerprint` with every keyed request
/// instead of each request's own (an atomic batch's items carry the whole
/// batch's).
pub(super) async fn append_fingerprinted_on<'a>(
    client: &impl deadpool_postgres::GenericClient,
    requests: impl Iterator<Item = &'a AppendRequest>,
    fingerprint: Option<&str>,
    webhooks: Option<&crate::webhook::Webhooks>,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let mut rooms = Vec::new();
    let mut data = Vec::new();
    let mut keys = Vec::new();
    let mut expected = Vec::new();
    let mut hashes = Vec::new();
    let mut names = Vec::new();
    let mut raw = Vec::new();
    for request in requests {
        raw.push(&request.data);
        rooms.push(request.room.as_str());
        data.push(request.data.get());
        keys.push(request.idem_key.as_deref());
        expected.push(request.expected_seq.map(|s| s as i64));
        hashes.push(request.idem_key.as_ref().map(|_| match fingerprint {
            Some(shared) => shared.to_owned(),
            None => request.fingerprint(),
        }));
        names.push(request.room.clone());
    }
    let append = client
        .prepare_cached(
            "SELECT o_idx, o_outcome, o_seq, o_ts, o_epoch, o_head FROM append_events($1, $2, $3, $4, $5) ORDER BY o_idx",
        )
        .await
        .map_err(unavailable)?;
    let rows = client
        .query(&append, &[&rooms, &data, &keys, &expected, &hashes])
        .await
        .map_err(unavailable)?;
    if rows.len() != names.len() {
        return Err(StoreError::Internal(format!(
            "append returned {} rows for {} events",
            rows.len(),
            names.len()
        )));
    }
    let mut outcomes = Vec::with_capacity(rows.len());
    for (row, room) in rows.iter().zip(names) {
        let outcome: &str = row.get(1);
        let epoch: String = row.get(4);
        let head: i64 = row.get(5);
        let receipt = || Receipt {
            room: room.clone(),
            seq: row.get::<_, i64>(2) as u64,
            epoch: epoch.clone(),
            ts: row.get(3),
        };
        outcomes.push(match outcome {
            "appended" => AppendOutcome::Appended(receipt()),
            "duplicate" => AppendOutcome::Duplicate(receipt()),
            "mismatch" => AppendOutcome::Mismatch(receipt()),
            _ => AppendOutcome::Conflict {
                head: head as u64,
                epoch: epoch.clone(),
            },
        });
    }
    if let Some(webhooks) = webhooks {
        let mut messages = Vec::new();
        for (outcome, data) in outcomes.iter().zip(&raw) {
            if let AppendOutcome::Appended(r) = outcome {
                messages.extend(webhooks.published(r.room.as_str(), r.seq, &r.epoch, r.ts, data));
            }
        }
        super::webhooks::insert(client, &messages).await?;
    }
    Ok(outcomes)
}
