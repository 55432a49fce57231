//! The webhook outbox on PostgreSQL (see `store::webhook_outbox`). Several
//! nodes drain it: [`due`](WebhookOutbox::due) claims rooms by leasing each
//! one's oldest row (`FOR UPDATE SKIP LOCKED`, then `lease_until`), so one
//! node at a time delivers a room, in order; a node that dies mid-round
//! leaves the lease to expire and another node sends again (at least once).

use deadpool_postgres::GenericClient;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{unavailable, PostgresStore};
use crate::event::now_ms;
use crate::store::webhook_outbox::{
    Abandoned, DeliveryReport, Holding, PendingWebhook, WebhookOutbox,
};
use crate::store::StoreError;
use crate::webhook::NewWebhook;

/// Dead letters kept; older ones are deleted as new ones arrive.
const MAX_DEAD_LETTERS: i64 = 10_000;

/// Inserts messages with one statement (inside the caller's transaction).
pub(super) async fn insert(
    client: &impl GenericClient,
    messages: &[NewWebhook],
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let endpoints: Vec<&str> = messages.iter().map(|m| m.endpoint.as_str()).collect();
    let rooms: Vec<&str> = messages.iter().map(|m| m.room.as_str()).collect();
    let ids: Vec<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
    client
        .execute(
            "INSERT INTO webhook_outbox (endpoint, room, msg_id, body, created_at) \
             SELECT e, r, m, b, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
             WITH ORDINALITY AS t(e, r, m, b, n) ORDER BY n",
            &[&endpoints, &rooms, &ids, &bodies, &now_ms()],
        )
        .await
        .map_err(unavailable)?;
    Ok(())
}

impl PostgresStore {
    /// Wakes this node's delivery workers after a commit that recorded messages.
    fn wake_workers(&self, recorded: bool) {
        if let (true, Some(webhooks)) = (recorded, &self.webhooks) {
            webhooks.recorded.notify_waiters();
        }
    }
}

impl WebhookOutbox for PostgresStore {
    fn record(&self, messages: Vec<NewWebhook>) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.bounded(async {
                let client = self.client().await?;
                insert(&client, &messages).await?;
                self.wake_workers(!messages.is_empty());
                Ok(())
            })
            .await
        }
        .boxed()
    }

    fn holding(&self, change: Holding) -> BoxFuture<'_, Result<bool, StoreError>> {
        async move {
            self.bounded(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(unavailable)?;
                let recorded = match &change {
                    Holding::Enter {
                        room,
                        subject,
                        info,
                        node,
                        expires_at,
                        messages,
                    } => {
                        tx.execute(
                            "INSERT INTO webhook_holders (room, subject, node, expires_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (room, subject, node) DO UPDATE SET expires_at = excluded.expires_at",
                            &[room, subject, node, expires_at],
                        )
                        .await
                        .map_err(unavailable)?;
                        // Waits for a node leaving it concurrently: then it is
                        // entered again, after its leave.
                        let entered = tx
                            .execute(
                                "INSERT INTO webhook_active (room, subject, info, since) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT DO NOTHING",
                                &[room, subject, info, &now_ms()],
                            )
                            .await
                            .map_err(unavailable)?;
                        if entered == 1 {
                            insert(&tx, messages).await?;
                        }
                        entered == 1 && !messages.is_empty()
                    }
                    Holding::Leave {
                        room,
                        subject,
                        node,
                        now,
                        messages,
                    } => {
                        // The active row's lock serializes the decision across nodes.
                        let active = tx
                            .query_opt(
                                "SELECT room FROM webhook_active WHERE room = $1 AND subject = $2 FOR UPDATE",
                                &[room, subject],
                            )
                            .await
                            .map_err(unavailable)?;
                        tx.execute(
                            "DELETE FROM webhook_holders WHERE room = $1 AND subject = $2 \
                             AND (node = $3 OR expires_at <= $4)",
                            &[room, subject, node, now],
                        )
                        .await
                        .map_err(unavailable)?;
                        let live: i64 = tx
                            .query_one(
                                "SELECT count(*) FROM webhook_holders WHERE room = $1 AND subject = $2",
                                &[room, subject],
                            )
                            .await
                            .map_err(unavailable)?
                            .get(0);
                        if active.is_some() && live == 0 {
                            tx.execute(
                                "DELETE FROM webhook_active WHERE room = $1 AND subject = $2",
                                &[room, subject],
                            )
                            .await
                            .map_err(unavailable)?;
                            insert(&tx, messages).await?;
                            !messages.is_empty()
                        } else {
                            false
                        }
                    }
                    Holding::Refresh { node, expires_at } => {
                        tx.execute(
                            "UPDATE webhook_holders SET expires_at = $2 WHERE node = $1",
                            &[node, expires_at],
                        )
                        .await
                        .map_err(unavailable)?;
                        false
                    }
                };
                tx.commit().await.map_err(unavailable)?;
                self.wake_workers(recorded);
                Ok(recorded)
            })
            .await
        }
        .boxed()
    }

    fn abandoned(&self, now: i64) -> BoxFuture<'_, Result<Vec<Abandoned>, StoreError>> {
        async move {
            self.bounded(async {
                let client = self.client().await?;
                let rows = client
                    .query(
                        "SELECT a.room, a.subject, a.info FROM webhook_active a WHERE NOT EXISTS \
                         (SELECT 1 FROM webhook_holders h WHERE h.room = a.room AND h.subject = a.subject \
                         AND h.expires_at > $1) ORDER BY a.room, a.subject",
                        &[&now],
                    )
                    .await
                    .map_err(unavailable)?;
                Ok(rows
                    .iter()
                    .map(|row| Abandoned {
                        room: row.get(0),
                        subject: row.get(1),
                        info: row.get(2),
                    })
                    .collect())
            })
            .await
        }
        .boxed()
    }

    fn due(
        &self,
        endpoint: &str,
        now: i64,
        rooms: usize,
        per_room: usize,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<PendingWebhook>, StoreError>> {
        let endpoint = endpoint.to_owned();
        async move {
            self.bounded(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(unavailable)?;
                let heads = tx
                    .query(
                        "SELECT w.id, w.room FROM webhook_outbox w \
                         JOIN (SELECT min(id) AS head FROM webhook_outbox WHERE endpoint = $1 GROUP BY room) h \
                         ON w.id = h.head \
                         WHERE w.next_attempt_at <= $2 AND w.lease_until <= $2 \
                         ORDER BY w.id LIMIT $3 FOR UPDATE OF w SKIP LOCKED",
                        &[&endpoint, &now, &(rooms as i64)],
                    )
                    .await
                    .map_err(unavailable)?;
                let ids: Vec<i64> = heads.iter().map(|row| row.get(0)).collect();
                let claimed: Vec<String> = heads.iter().map(|row| row.get(1)).collect();
                tx.execute(
                    "UPDATE webhook_outbox SET lease_until = $2 WHERE id = ANY($1)",
                    &[&ids, &(now + lease_ms)],
                )
                .await
                .map_err(unavailable)?;
                let rows = tx
                    .query(
                        "SELECT id, room, msg_id, body, created_at, attempts FROM ( \
                           SELECT *, row_number() OVER (PARTITION BY room ORDER BY id) AS n \
                           FROM webhook_outbox WHERE endpoint = $1 AND room = ANY($2)) w \
                         WHERE n <= $3 ORDER BY id",
                        &[&endpoint, &claimed, &(per_room as i64)],
                    )
                    .await
                    .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                Ok(rows
                    .iter()
                    .map(|row| PendingWebhook {
                        id: row.get(0),
                        room: row.get(1),
                        msg_id: row.get(2),
                        body: row.get(3),
                        created_at: row.get(4),
                        attempts: row.get::<_, i32>(5) as u32,
                    })
                    .collect())
            })
            .await
        }
        .boxed()
    }

    fn finish(&self, report: DeliveryReport) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.bounded(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(unavailable)?;
                let dead: Vec<i64> = report.dead.iter().map(|(id, _)| *id).collect();
                let dead_errors: Vec<&str> = report.dead.iter().map(|(_, e)| e.as_str()).collect();
                if !dead.is_empty() {
                    tx.execute(
                        "INSERT INTO webhook_dead_letters \
                         (id, endpoint, room, msg_id, body, created_at, attempts, last_error, dead_at) \
                         SELECT w.id, w.endpoint, w.room, w.msg_id, w.body, w.created_at, w.attempts + 1, d.error, $3 \
                         FROM webhook_outbox w JOIN unnest($1::bigint[], $2::text[]) AS d(id, error) ON w.id = d.id \
                         ON CONFLICT (id) DO NOTHING",
                        &[&dead, &dead_errors, &now_ms()],
                    )
                    .await
                    .map_err(unavailable)?;
                    tx.execute(
                        "DELETE FROM webhook_dead_letters WHERE id <= (SELECT max(id) FROM webhook_dead_letters) - $1",
                        &[&MAX_DEAD_LETTERS],
                    )
                    .await
                    .map_err(unavailable)?;
                }
                let gone: Vec<i64> = report.delivered.iter().copied().chain(dead).collect();
                tx.execute("DELETE FROM webhook_outbox WHERE id = ANY($1)", &[&gone])
                    .await
                    .map_err(unavailable)?;
                let ids: Vec<i64> = report.retry.iter().map(|r| r.0).collect();
                let attempts: Vec<i32> = report.retry.iter().map(|r| r.1 as i32).collect();
                let next: Vec<i64> = report.retry.iter().map(|r| r.2).collect();
                let errors: Vec<&str> = report.retry.iter().map(|r| r.3.as_str()).collect();
                tx.execute(
                    "UPDATE webhook_outbox w SET attempts = r.attempts, next_attempt_at = r.next, \
                     last_error = r.error, lease_until = 0 \
                     FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::text[]) AS r(id, attempts, next, error) \
                     WHERE w.id = r.id",
                    &[&ids, &attempts, &next, &errors],
                )
                .await
                .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)
            })
            .await
        }
        .boxed()
    }

    fn backlog(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        async move {
            self.bounded(async {
                let client = self.client().await?;
                let rows = client
                    .query(
                        "SELECT endpoint, count(*) FROM webhook_outbox GROUP BY endpoint",
                        &[],
                    )
                    .await
                    .map_err(unavailable)?;
                Ok(rows
                    .iter()
                    .map(|row| (row.get(0), row.get::<_, i64>(1) as u64))
                    .collect())
            })
            .await
        }
        .boxed()
    }
}
