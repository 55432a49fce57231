//! The store reads subscriptions cannot avoid (a replay page, the state of a
//! room whose hub cannot judge a cursor), shared and queued.
//!
//! A reconnect storm brings a room's subscribers back at once, mostly with
//! the same cursor: subscriptions that ask for the same read while it is in
//! flight share it (one query, one answer for all). Reads wait for one of a
//! few permits (fewer than the store's connections, so publishes always find
//! one) instead of all waiting in the connection pool, where the ones that
//! waited longest would fail after the pool's timeout; a transient failure is
//! tried again while the subscription waits. Only a queue past its bound, or
//! a store that keeps failing, refuses: `store_unavailable`, which clients
//! retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::{Page, Store, StoreError};
use crate::event::RoomState;
use crate::room::RoomName;

/// Reads waiting for a permit before more are refused.
pub const MAX_WAITING: usize = 16_384;
/// How long a read keeps trying a store that fails transiently.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    State(RoomName),
    Page(RoomName, u64, usize),
}

type Answer = Result<Arc<Page>, StoreError>;
type InFlight = Shared<BoxFuture<'static, Answer>>;

/// The node's shared subscription reads.
pub struct Reads {
    store: Arc<dyn Store>,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    in_flight: Mutex<HashMap<Key, InFlight>>,
}

impl Reads {
    /// Reads of `store`, at most `concurrency` at a time.
    pub fn new(store: Arc<dyn Store>, concurrency: usize) -> Reads {
        Reads {
            store,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// [`Store::subscribe_state`], shared with concurrent asks for the same room.
    pub async fn state(&self, room: &RoomName) -> Result<RoomState, StoreError> {
        let page = self.shared(Key::State(room.clone())).await?;
        page.state
            .clone()
            .ok_or_else(|| StoreError::Internal("a state read returned no state".into()))
    }

    /// [`Store::read`], shared with concurrent asks for the same page.
    pub async fn page(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
    ) -> Result<Arc<Page>, StoreError> {
        self.shared(Key::Page(room.clone(), after, limit)).await
    }

    async fn shared(&self, key: Key) -> Answer {
        let read = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match in_flight.get(&key) {
                Some(read) => {
                    crate::metrics::get().reads_shared.increment(1);
                    read.clone()
                }
                None => {
                    if self.waiting.load(Ordering::Relaxed) >= MAX_WAITING {
                        return Err(StoreError::Unavailable(
                            "too many store reads are waiting; retry shortly".into(),
                        ));
                    }
                    crate::metrics::get().reads_issued.increment(1);
                    let read = self.issue(key.clone()).shared();
                    in_flight.insert(key.clone(), read.clone());
                    read
                }
            }
        };
        let guard = Forget {
            reads: self,
            key,
            read,
        };
        guard.read.clone().await
    }

    fn issue(&self, key: Key) -> BoxFuture<'static, Answer> {
        let (store, permits, waiting) = (
            self.store.clone(),
            self.permits.clone(),
            self.waiting.clone(),
        );
        async move {
            waiting.fetch_add(1, Ordering::Relaxed);
            let permit = permits.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            let _permit = permit.map_err(|_| StoreError::Closed)?;
            let deadline = tokio::time::Instant::now() + PATIENCE;
            let mut backoff = Duration::from_millis(50);
            loop {
                let answer = match &key {
                    Key::State(room) => store.subscribe_state(room).await.map(|state| Page {
                        state: Some(state),
                        events: Vec::new(),
                    }),
                    Key::Page(room, after, limit) => store.read(room, *after, *limit).await,
                };
                match answer {
                    Ok(page) => return Ok(Arc::new(page)),
                    Err(StoreError::Unavailable(_))
                        if tokio::time::Instant::now() + backoff < deadline =>
                    {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        .boxed()
    }
}

/// Forgets an in-flight read when a sharer stops waiting for it, answered
/// or not: later asks read anew, and a read nobody waits for any more is not
/// left unpolled in the map holding its permit (the sharers still waiting
/// hold it and drive it to its end).
struct Forget<'a> {
    reads: &'a Reads,
    key: Key,
    read: InFlight,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .reads
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if in_flight
            .get(&self.key)
            .is_some_and(|read| read.ptr_eq(&self.read))
        {
            in_flight.remove(&self.key);
        }
    }
}
