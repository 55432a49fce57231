//! The connection pool, kept within what PostgreSQL accepts.
//!
//! Every node opens up to `postgres.pool_size` connections (16 by default),
//! and PostgreSQL accepts `max_connections` in all (100 by default, three of
//! them reserved): six nodes on a stock server ask for more than it has. A
//! pool that grows into that limit gets `too many clients` (SQLSTATE 53300)
//! for the connection it tried to add, and deadpool hands that error to the
//! caller — a publish answered 503 while the node holds a dozen working
//! connections. Here such a refusal caps the pool at the connections it has,
//! the caller waits for one of them instead, and the configured size is tried
//! again a minute later (someone may have raised `max_connections`, or
//! another client gone away).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// How long a cap learned from PostgreSQL's refusal holds before the pool
/// tries to grow to its configured size again.
const CAP_HOLD: Duration = Duration::from_secs(60);

/// Connections to PostgreSQL: deadpool's pool behind a semaphore of its own,
/// whose permits shrink to the connections PostgreSQL gave when it refuses
/// another.
#[derive(Clone)]
pub(super) struct Connections {
    pool: Pool,
    slots: Arc<Semaphore>,
    /// A cap is being applied or held: one at a time.
    capped: Arc<AtomicBool>,
    /// How long a caller waits for a connection (`postgres.timeout_ms`).
    wait: Duration,
}

/// A pooled connection and its slot; dereferences to the client.
pub(super) struct Connection {
    client: Object,
    _slot: OwnedSemaphorePermit,
}

impl std::ops::Deref for Connection {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.client
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.client
    }
}

impl Connections {
    pub(super) fn new(pool: Pool, wait: Duration) -> Connections {
        let size = pool.status().max_size;
        Connections {
            pool,
            slots: Arc::new(Semaphore::new(size)),
            capped: Arc::new(AtomicBool::new(false)),
            wait,
        }
    }

    /// A connection within `postgres.timeout_ms`, or `Unavailable` saying why.
    pub(super) async fn get(&self) -> Result<Connection, StoreError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "no PostgreSQL connection was free within {} ms",
                        self.wait.as_millis()
                    ))
                })?
                .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
            match self.pool.get().await {
                Ok(client) => {
                    return Ok(Connection {
                        client,
                        _slot: slot,
                    })
                }
                Err(err) if too_many_connections(&err) => {
                    drop(slot);
                    let held = self.pool.status().size;
                    if held == 0 {
                        // Not one connection: nothing to wait for.
                        return Err(pool_unavailable(err));
                    }
                    self.cap(held, &err);
                    // Wait for a held connection (or for the cap to apply).
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(pool_unavailable(err));
                    }
                }
                Err(err) => return Err(pool_unavailable(err)),
            }
        }
    }

    /// Takes the slots above `held` out of use for [`CAP_HOLD`], then gives
    /// them back. The excess is taken as callers return connections, so
    /// nothing in flight is cut off.
    fn cap(&self, held: usize, err: &PoolError) {
        if self.capped.swap(true, Ordering::AcqRel) {
            return;
        }
        let configured = self.pool.status().max_size;
        let excess = configured.saturating_sub(held);
        tracing::warn!(
            connections = held,
            pool_size = configured,
            error = %describe(err),
            "PostgreSQL refused another connection: this node uses the {held} it has for {} s \
             (raise PostgreSQL's max_connections or lower postgres.pool_size on the nodes)",
            CAP_HOLD.as_secs()
        );
        crate::metrics::get().store_pool_caps.increment(1);
        let slots = self.slots.clone();
        let capped = self.capped.clone();
        tokio::spawn(async move {
            let Ok(taken) = slots.clone().acquire_many_owned(excess as u32).await else {
                return;
            };
            taken.forget();
            tokio::time::sleep(CAP_HOLD).await;
            slots.add_permits(excess);
            capped.store(false, Ordering::Release);
        });
    }

    pub(super) fn close(&self) {
        self.slots.close();
        self.pool.close();
    }
}

fn too_many_connections(err: &PoolError) -> bool {
    matches!(err, PoolError::Backend(e) if e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS))
}

/// A pool failure (no connection within the timeout, or none could be made),
/// with PostgreSQL's own words: deadpool's message alone is
/// `Error occurred while creating a new object: db error`.
pub(super) fn pool_unavailable(err: PoolError) -> StoreError {
    StoreError::Unavailable(describe(&err))
}

/// An error and its sources, `: `-separated.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_keeps_every_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("db error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Outer(std::io::Error::other("sorry, too many clients already"));
        assert_eq!(describe(&err), "db error: sorry, too many clients already");
    }
}
