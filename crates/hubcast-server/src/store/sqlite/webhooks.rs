//! The webhook outbox on SQLite (see `store::webhook_outbox`): writes run on
//! the writer thread inside its batch transaction, reads on the reader pool.

use rusqlite::{params, Connection};

use crate::event::now_ms;
use crate::store::webhook_outbox::{Abandoned, DeliveryReport, Holding, PendingWebhook};
use crate::webhook::NewWebhook;

/// Dead letters kept; older ones are deleted as new ones arrive.
const MAX_DEAD_LETTERS: i64 = 10_000;

/// What the writer thread does for webhooks.
pub(super) enum WebhookWrite {
    Record(Vec<NewWebhook>),
    Holding(Holding),
    Finish(DeliveryReport),
}

pub(super) fn insert(conn: &Connection, messages: &[NewWebhook]) -> rusqlite::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO webhook_outbox (endpoint, room, msg_id, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for m in messages {
        stmt.execute(params![m.endpoint, m.room, m.msg_id, m.body, now])?;
    }
    Ok(())
}

/// Applies a write; returns whether it recorded messages.
pub(super) fn apply(conn: &Connection, write: &WebhookWrite) -> rusqlite::Result<bool> {
    match write {
        WebhookWrite::Record(messages) => {
            insert(conn, messages)?;
            Ok(!messages.is_empty())
        }
        WebhookWrite::Holding(change) => holding(conn, change),
        WebhookWrite::Finish(report) => finish(conn, report).map(|()| false),
    }
}

fn holding(conn: &Connection, change: &Holding) -> rusqlite::Result<bool> {
    match change {
        Holding::Enter {
            room,
            subject,
            info,
            node,
            expires_at,
            messages,
        } => {
            conn.prepare_cached(
                "INSERT INTO webhook_holders (room, subject, node, expires_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (room, subject, node) DO UPDATE SET expires_at = excluded.expires_at",
            )?
            .execute(params![room, subject, node, expires_at])?;
            let entered = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO webhook_active (room, subject, info, since) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![room, subject, info, now_ms()])?;
            if entered == 1 {
                insert(conn, messages)?;
            }
            Ok(entered == 1 && !messages.is_empty())
        }
        Holding::Leave {
            room,
            subject,
            node,
            now,
            messages,
        } => {
            conn.prepare_cached(
                "DELETE FROM webhook_holders WHERE room = ?1 AND subject = ?2 AND (node = ?3 OR expires_at <= ?4)",
            )?
            .execute(params![room, subject, node, now])?;
            let live: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM webhook_holders WHERE room = ?1 AND subject = ?2",
                )?
                .query_row([room, subject], |row| row.get(0))?;
            if live > 0 {
                return Ok(false);
            }
            let left = conn
                .prepare_cached("DELETE FROM webhook_active WHERE room = ?1 AND subject = ?2")?
                .execute([room, subject])?;
            if left == 1 {
                insert(conn, messages)?;
            }
            Ok(left == 1 && !messages.is_empty())
        }
        Holding::Refresh { node, expires_at } => {
            conn.prepare_cached("UPDATE webhook_holders SET expires_at = ?2 WHERE node = ?1")?
                .execute(params![node, expires_at])?;
            Ok(false)
        }
    }
}

fn finish(conn: &Connection, report: &DeliveryReport) -> rusqlite::Result<()> {
    let mut delete = conn.prepare_cached("DELETE FROM webhook_outbox WHERE id = ?1")?;
    for id in &report.delivered {
        delete.execute([id])?;
    }
    let mut retry = conn.prepare_cached(
        "UPDATE webhook_outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE id = ?1",
    )?;
    for (id, attempts, next, error) in &report.retry {
        retry.execute(params![id, attempts, next, error])?;
    }
    if !report.dead.is_empty() {
        let mut bury = conn.prepare_cached(
            "INSERT OR REPLACE INTO webhook_dead_letters \
             (id, endpoint, room, msg_id, body, created_at, attempts, last_error, dead_at) \
             SELECT id, endpoint, room, msg_id, body, created_at, attempts + 1, ?2, ?3 \
             FROM webhook_outbox WHERE id = ?1",
        )?;
        for (id, error) in &report.dead {
            bury.execute(params![id, error, now_ms()])?;
            delete.execute([id])?;
        }
        conn.prepare_cached(
            "DELETE FROM webhook_dead_letters WHERE id <= (SELECT max(id) FROM webhook_dead_letters) - ?1",
        )?
        .execute([MAX_DEAD_LETTERS])?;
    }
    Ok(())
}

pub(super) fn due(
    conn: &Connection,
    endpoint: &str,
    now: i64,
    rooms: usize,
    per_room: usize,
) -> rusqlite::Result<Vec<PendingWebhook>> {
    let ready: Vec<String> = conn
        .prepare_cached(
            "SELECT w.room FROM webhook_outbox w \
             JOIN (SELECT min(id) AS head FROM webhook_outbox WHERE endpoint = ?1 GROUP BY room) h \
             ON w.id = h.head WHERE w.next_attempt_at <= ?2 ORDER BY w.id LIMIT ?3",
        )?
        .query_map(params![endpoint, now, rooms as i64], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, room, msg_id, body, created_at, attempts FROM webhook_outbox \
         WHERE endpoint = ?1 AND room = ?2 ORDER BY id LIMIT ?3",
    )?;
    let mut pending = Vec::new();
    for room in ready {
        let rows = stmt.query_map(params![endpoint, room, per_room as i64], |row| {
            Ok(PendingWebhook {
                id: row.get(0)?,
                room: row.get(1)?,
                msg_id: row.get(2)?,
                body: row.get(3)?,
                created_at: row.get(4)?,
                attempts: row.get::<_, i64>(5)? as u32,
            })
        })?;
        for row in rows {
            pending.push(row?);
        }
    }
    Ok(pending)
}

pub(super) fn backlog(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    conn.prepare_cached("SELECT endpoint, count(*) FROM webhook_outbox GROUP BY endpoint")?
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
        .collect()
}

pub(super) fn abandoned(conn: &Connection, now: i64) -> rusqlite::Result<Vec<Abandoned>> {
    conn.prepare_cached(
        "SELECT a.room, a.subject, a.info FROM webhook_active a WHERE NOT EXISTS \
         (SELECT 1 FROM webhook_holders h WHERE h.room = a.room AND h.subject = a.subject AND h.expires_at > ?1) \
         ORDER BY a.room, a.subject",
    )?
    .query_map([now], |row| {
        Ok(Abandoned {
            room: row.get(0)?,
            subject: row.get(1)?,
            info: row.get(2)?,
        })
    })?
    .collect()
}
