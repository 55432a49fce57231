//! The PostgreSQL schema: migrations applied in order under an advisory lock,
//! so nodes that start together do not race, each recorded in
//! `<schema>.migrations`. The SQL lives in `.sql` files beside this one.

use tokio_postgres::NoTls;

use super::{outbox_channel, OpenError};

/// Schema migrations, applied in order. Migration 1 is three files run as
/// one: the tables, the append function, the outbox; migration 2 adds the
/// idempotency fingerprint; migration 3 the instance id new rooms' epochs
/// derive from; migration 4 the webhook outbox; migration 5 the token
/// revocations; migration 6 the one-statement common append.
const MIGRATIONS: &[&[&str]] = &[
    &[
        include_str!("schema.sql"),
        include_str!("append_events.sql"),
        include_str!("outbox.sql"),
    ],
    &[include_str!("migration_2.sql")],
    &[include_str!("migration_3.sql")],
    &[include_str!("migration_4.sql")],
    &[include_str!("migration_5.sql")],
    &[include_str!("migration_6.sql")],
];

/// Runs the migrations; returns the database's instance id.
pub(super) async fn migrate(
    config: &tokio_postgres::Config,
    schema: &str,
) -> Result<String, OpenError> {
    let (mut client, connection) = config.connect(NoTls).await.map_err(OpenError::Connect)?;
    let driver = tokio::spawn(connection);
    migrate_on(&mut client, schema).await?;
    let instance: String = client
        .query_one(
            &format!("SELECT value FROM {schema}.meta WHERE key = 'instance'"),
            &[],
        )
        .await?
        .get(0);
    drop(client);
    let _ = driver.await;
    Ok(instance)
}

async fn migrate_on(client: &mut tokio_postgres::Client, schema: &str) -> Result<(), OpenError> {
    let tx = client.transaction().await?;
    // Serializes migrations of this schema across nodes starting together.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('hubcast-migrate:' || $1))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
    ))
    .await?;
    let applied: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.migrations"),
            &[],
        )
        .await?
        .get(0);
    let applied = applied as usize;
    if applied > MIGRATIONS.len() {
        return Err(OpenError::TooNew {
            found: applied,
            supported: MIGRATIONS.len(),
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let sql = migration
            .concat()
            .replace("{channel}", &outbox_channel(schema));
        tx.batch_execute(&format!("SET LOCAL search_path = {schema}; {sql}"))
            .await?;
        tx.execute(
            &format!("INSERT INTO {schema}.migrations (version) VALUES ($1)"),
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
