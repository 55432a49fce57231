//! The connection pool, kept within what PostgreSQL accepts.
//!
//! Every node opens up to `postgres.pool_size` connections (8 by default),
//! and PostgreSQL accepts `max_connections` in all (100 by default): enough
//! nodes on one server ask for more than it has. A pool that grows into that
//! limit gets `too many clients` (SQLSTATE 53300) for the connection it tried
//! to add, and deadpool hands that error to the caller — a publish answered
//! 503 while the node holds working connections. Here such a refusal shrinks
//! the pool to the connections it has, so the caller (and every later one)
//! waits for one of them instead of trying to open another, and the
//! configured size is tried again a minute later (someone may have raised
//! `max_connections`, or another client gone away).
//!
//! Shrinking deadpool itself matters: while a pool was capped only in front of
//! deadpool, every waiting caller kept opening connections PostgreSQL refused
//! (a backend forked and turned away each time); in the issue 22 storm on
//! 6 nodes that was a burst of refusals and a second-long stall of every
//! commit on the machine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// How long a cap learned from PostgreSQL's refusal holds before the pool
/// tries to grow to its configured size again.
const CAP_HOLD: Duration = Duration::from_secs(60);

/// A pooled connection; dereferences to the client.
pub(super) type Connection = Object;

/// Connections to PostgreSQL: deadpool's pool, shrunk to the connections
/// PostgreSQL gave when it refuses another.
#[derive(Clone)]
pub(super) struct Connections {
    pool: Pool,
    /// The configured size, restored after a cap.
    size: usize,
    /// A cap is held: one at a time.
    capped: Arc<AtomicBool>,
    /// How long a caller waits for a connection (`postgres.timeout_ms`).
    wait: Duration,
}

impl Connections {
    pub(super) fn new(pool: Pool, wait: Duration) -> Connections {
        let size = pool.status().max_size;
        Connections {
            pool,
            size,
            capped: Arc::new(AtomicBool::new(false)),
            wait,
        }
    }

    /// A connection within `postgres.timeout_ms`, or `Unavailable` saying why.
    pub(super) async fn get(&self) -> Result<Connection, StoreError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let got = tokio::time::timeout_at(deadline, self.pool.get())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "no PostgreSQL connection was free within {} ms",
                        self.wait.as_millis()
                    ))
                })?;
            match got {
                Ok(client) => return Ok(client),
                Err(err) if too_many_connections(&err) => {
                    let held = self.pool.status().size;
                    if held == 0 {
                        // Not one connection: nothing to wait for.
                        return Err(pool_unavailable(err));
                    }
                    // From now on deadpool waits for one of the held
                    // connections rather than opening another.
                    self.cap(held, &err);
                }
                Err(err) => return Err(pool_unavailable(err)),
            }
        }
    }

    /// Shrinks the pool to `held` for [`CAP_HOLD`], then gives it its
    /// configured size back. Connections in use are not cut off.
    fn cap(&self, held: usize, err: &PoolError) {
        if self.capped.swap(true, Ordering::AcqRel) {
            // Another caller's cap holds; it may be one connection larger
            // than what is left now, which only means one more refusal.
            self.pool.resize(held.min(self.pool.status().max_size));
            return;
        }
        tracing::warn!(
            connections = held,
            pool_size = self.size,
            error = %describe(err),
            "PostgreSQL refused another connection: this node uses the {held} it has for {} s \
             (raise PostgreSQL's max_connections or lower postgres.pool_size on the nodes)",
            CAP_HOLD.as_secs()
        );
        crate::metrics::get().store_pool_caps.increment(1);
        self.pool.resize(held);
        let (pool, size, capped) = (self.pool.clone(), self.size, self.capped.clone());
        tokio::spawn(async move {
            tokio::time::sleep(CAP_HOLD).await;
            if !pool.is_closed() {
                pool.resize(size);
            }
            capped.store(false, Ordering::Release);
        });
    }

    pub(super) fn close(&self) {
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
