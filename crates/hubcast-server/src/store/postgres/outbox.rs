//! Draining the application outbox (PostgreSQL only).
//!
//! An application commits its own state and a row in `outbox` in one
//! transaction. Every node drains the outbox: it locks a page of rows with
//! `FOR UPDATE SKIP LOCKED` (so nodes never take the same row), appends them to
//! their rooms' logs and deletes them in the same transaction, so each row is
//! appended exactly once. Each row's idempotency key (its own, or
//! `outbox:<id>`) makes even a retried page harmless. LISTEN/NOTIFY on a
//! dedicated, unpooled connection is the wake-up; polling every
//! `postgres.outbox_poll_ms` is the guarantee.

use std::sync::Arc;
use std::time::Duration;

use super::Connections;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{append_batch_on, outbox_channel, unavailable};
use super::{AppendOutcome, AppendRequest, StoreError};
use crate::event::Event;
use crate::room::RoomName;

/// Rows taken per drain transaction.
const PAGE: i64 = 256;

pub struct Drainer {
    pool: Connections,
    listen_config: tokio_postgres::Config,
    channel: String,
    feed: crate::store::FeedSender,
    poll: Duration,
    wake: Arc<Notify>,
    /// What a row must satisfy to be appended (the same as a publish).
    rules: crate::store::EventRules,
    /// Endpoints whose `event.published` messages are recorded with each row's event.
    webhooks: Option<Arc<crate::webhook::Webhooks>>,
}

impl Drainer {
    pub fn new(
        pool: Connections,
        listen_config: tokio_postgres::Config,
        schema: &str,
        feed: crate::store::FeedSender,
        poll_ms: u64,
        rules: crate::store::EventRules,
        webhooks: Option<Arc<crate::webhook::Webhooks>>,
    ) -> Drainer {
        Drainer {
            rules,
            webhooks,
            pool,
            listen_config,
            channel: outbox_channel(schema),
            feed,
            poll: Duration::from_millis(poll_ms.max(10)),
            wake: Arc::new(Notify::new()),
        }
    }

    pub async fn run(self, stop: CancellationToken) {
        let listener = tokio::spawn(listen(
            self.listen_config.clone(),
            self.channel.clone(),
            self.wake.clone(),
            stop.clone(),
        ));
        loop {
            loop {
                match self.drain_page().await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::warn!(error = %err, "outbox drain failed; retrying at the next poll");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        listener.abort();
    }

    /// Moves one page of outbox rows into their rooms' logs; returns how many.
    async fn drain_page(&self) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let rows = tx
            .query(
                "SELECT id, room, data::text, idem_key FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&PAGE],
            )
            .await
            .map_err(unavailable)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut requests = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.get(0);
            let room: String = row.get(1);
            let data: String = row.get(2);
            let key: Option<String> = row.get(3);
            ids.push(id);
            let checked = match (RoomName::parse(&room), RawValue::from_string(data)) {
                (Ok(room), Ok(data)) => match self.rules.check(&room, &data, key.as_deref()) {
                    Ok(()) => Ok((room, data)),
                    Err(reason) => Err(reason),
                },
                (Err(err), _) => Err(err.to_string()),
                (_, Err(err)) => Err(format!("data is not JSON: {err}")),
            };
            let (room, data) = match checked {
                Ok(checked) => checked,
                Err(reason) => {
                    tracing::error!(
                        id,
                        room,
                        reason,
                        "outbox row rejected: moved to outbox_rejected"
                    );
                    tx.execute(
                        "INSERT INTO outbox_rejected (id, room, data, idem_key, created_at, reason)
                         SELECT id, room, data, idem_key, created_at, $2 FROM outbox WHERE id = $1",
                        &[&id, &reason],
                    )
                    .await
                    .map_err(unavailable)?;
                    continue;
                }
            };
            let idem_key = Some(key.unwrap_or_else(|| format!("outbox:{id}")));
            requests.push(AppendRequest {
                room,
                data,
                idem_key,
                expected_seq: None,
                origin: None,
            });
        }
        // Lock rooms in name order like the writers do (stable: rows of one
        // room keep their outbox order).
        requests.sort_by(|a, b| a.room.cmp(&b.room));
        let outcomes = append_batch_on(&tx, requests.iter(), self.webhooks.as_deref()).await?;
        tx.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let committed: Vec<Arc<Event>> = requests
            .into_iter()
            .zip(outcomes)
            .filter_map(|(request, outcome)| match outcome {
                AppendOutcome::Appended(receipt) => Some(Arc::new(Event {
                    room: receipt.room,
                    seq: receipt.seq,
                    ts: receipt.ts,
                    data: request.data,
                    origin: None,
                })),
                _ => None,
            })
            .collect();
        if !committed.is_empty() {
            self.feed.announce(committed);
        }
        Ok(ids.len())
    }
}

/// Keeps a LISTEN connection open (reconnecting with backoff) and wakes the
/// drainer on every notification.
async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let statement = format!("LISTEN {channel}");
                let listen = client.batch_execute(&statement);
                // The LISTEN only completes while the connection is polled.
                let mut listen = std::pin::pin!(listen);
                let mut listening = false;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        done = &mut listen, if !listening => {
                            if done.is_err() { break; }
                            listening = true;
                            backoff = Duration::from_millis(100);
                            // Rows may have arrived while we were not listening.
                            wake.notify_one();
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        },
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "outbox listener cannot connect"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
