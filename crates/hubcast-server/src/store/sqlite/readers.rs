//! Reads: a small pool of read-only connections used on tokio's blocking
//! threads, so replay and history never wait for the writer.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::unavailable;
use crate::event::RoomState;
use crate::room::RoomName;
use crate::store::StoreError;

pub(super) fn load_state(
    conn: &Connection,
    room: &RoomName,
) -> rusqlite::Result<Option<RoomState>> {
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

/// Read-only connections, reused across reads.
pub(super) struct ReaderPool {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) max_idle: usize,
}

impl ReaderPool {
    /// Runs `f` on a pooled read-only connection (blocking; call from a
    /// blocking thread). The lock is a std one: it is held only to pop or push.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI;
                let conn = Connection::open_with_flags(&self.path, flags).map_err(unavailable)?;
                conn.pragma_update(None, "busy_timeout", 5000)
                    .map_err(unavailable)?;
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
