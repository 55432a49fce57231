//! Retention on the writer thread: a step prunes up to `RETENTION_CHUNK`
//! rooms in one transaction, so one step never holds the writer long, and
//! moves each room's `pruned_through` with its deletes.

use rusqlite::params;

use super::writer::Writer;
use crate::event::now_ms;
use crate::room::RoomName;
use crate::store::RetentionPolicy;

/// Rooms scanned per retention step, so one step never holds the writer long.
pub(super) const RETENTION_CHUNK: usize = 500;

impl Writer {
    /// One retention step over up to `RETENTION_CHUNK` rooms named after `after`.
    pub(super) fn retention_step(
        &mut self,
        policy: &RetentionPolicy,
        after: &str,
    ) -> rusqlite::Result<(u64, Option<String>)> {
        let tx = self.conn.transaction()?;
        let mut rooms: Vec<(String, u64, u64)> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT name, head, pruned_through FROM rooms WHERE name > ?1 AND head > pruned_through ORDER BY name LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![after, RETENTION_CHUNK as i64])?;
            while let Some(row) = rows.next()? {
                rooms.push((
                    row.get(0)?,
                    row.get::<_, i64>(1)? as u64,
                    row.get::<_, i64>(2)? as u64,
                ));
            }
        }
        let mut deleted = 0;
        for (name, head, pruned_through) in &rooms {
            let (max_events, max_age_ms) = policy.limits_for(name);
            let cutoff_ts = if max_age_ms > 0 {
                Some(now_ms() - max_age_ms as i64)
            } else {
                None
            };
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
                if let Some(cached) = RoomName::parse(name)
                    .ok()
                    .and_then(|r| self.rooms.get_mut(&r))
                {
                    cached.pruned_through = prune_to;
                }
            }
        }
        tx.commit()?;
        let next = if rooms.len() == RETENTION_CHUNK {
            rooms.last().map(|r| r.0.clone())
        } else {
            None
        };
        Ok((deleted, next))
    }
}
