//! How a starting hub learns its room's state (epoch, head, earliest): one
//! store query for every hub that starts at about the same time.
//!
//! A connect storm starts thousands of hubs at once; a read per hub would
//! queue thousands of single-row queries on a pool of a few connections and
//! fail the ones that wait longer than the pool's timeout. Instead a hub asks
//! the node's loader, which takes every request waiting when it is free and
//! answers them all from one [`Store::states`] query (group commit, for
//! reads). A failed query is retried with a backoff, never reported to the
//! hubs: they wait, and so do the subscribers waiting on them, in a queue
//! bounded by the number of rooms being started.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::event::RoomState;
use crate::room::RoomName;
use crate::store::Store;

/// Most rooms in one query.
const MAX_BATCH: usize = 1000;
/// Requests waiting for the loader before a hub waits to send its own.
const QUEUE: usize = 4096;
/// The longest pause between two tries of a failing query.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

type Request = (RoomName, oneshot::Sender<RoomState>);

/// The node's loader of room states. Cloning shares it.
#[derive(Clone)]
pub struct StateLoader {
    requests: mpsc::Sender<Request>,
}

impl StateLoader {
    /// Starts the loader's task on `store`; it ends when every clone is dropped.
    pub fn start(store: Arc<dyn Store>) -> StateLoader {
        let (requests, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        StateLoader { requests }
    }

    /// The room's state, or for a room never written the state it will have
    /// (see [`Store::subscribe_state`]). Waits as long as the store fails;
    /// `None` only if the loader has stopped.
    pub async fn load(&self, room: &RoomName) -> Option<RoomState> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((room.clone(), reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn run(store: Arc<dyn Store>, mut requests: mpsc::Receiver<Request>) {
    static GATE: crate::metrics::LogGate = crate::metrics::LogGate::new();
    let metrics = crate::metrics::get();
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        let mut backoff = Duration::from_millis(50);
        loop {
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            // A hub that stopped waiting (it was dropped) needs no answer.
            batch.retain(|(_, reply)| !reply.is_closed());
            if batch.is_empty() {
                break;
            }
            let rooms = batch.iter().map(|(room, _)| room.clone()).collect();
            metrics.state_loads.increment(1);
            match store.states(rooms).await {
                Ok(states) => {
                    let states: HashMap<RoomName, RoomState> = states.into_iter().collect();
                    for (room, reply) in batch.drain(..) {
                        let state = states.get(&room).cloned().unwrap_or_else(|| RoomState {
                            epoch: store.epoch_for(&room),
                            head: 0,
                            earliest: 1,
                        });
                        let _ = reply.send(state);
                    }
                    break;
                }
                Err(err) => {
                    metrics.state_load_failures.increment(1);
                    if let Some(suppressed) = GATE.admit() {
                        tracing::warn!(error = %err, rooms = batch.len(), suppressed, "cannot read room states; hubs wait and it is retried");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
