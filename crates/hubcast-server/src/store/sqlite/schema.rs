//! The SQLite schema: migrations, applied in order, with `PRAGMA
//! user_version` recording how many ran.

use rusqlite::Connection;

/// Schema migrations, applied in order.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("migration_2.sql"),
    include_str!("migration_3.sql"),
    include_str!("migration_4.sql"),
    include_str!("migration_5.sql"),
];

/// What [`migrate`] found.
pub(super) enum Migrated {
    Ok,
    /// The file's schema version is newer than this build knows.
    TooNew(usize),
}

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<Migrated> {
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
