//! The gapless-sequence oracle: a follower that reads a room the way a
//! well-behaved client does, drops and resumes, and checks that it processes
//! every seq exactly once, in order ([`Follower`]).
//!
//! What differs between the tests that use it is a parameter: the nodes it
//! may resume on (a client behind a load balancer), when it drops its own
//! connections (random budgets), whether `batch` frames are allowed, and a
//! cursor others can watch. What every test gets is the same check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{within, STEP};

/// Follows a room: connects with its cursor (`cursor=SEQ&epoch=E`), checks
/// that every event is exactly the next seq and that the epoch never changes,
/// and resumes after any disconnect until it has processed `upto`.
///
/// By default it starts after seq 0 on one node, never drops a connection
/// itself, and fails the test on a `batch` frame. Build, then
/// [`run`](Self::run) or [`spawn`](Self::spawn).
pub struct Follower {
    /// `ws://HOST:PORT` of each node.
    nodes: Vec<String>,
    first: usize,
    room: String,
    start: u64,
    upto: u64,
    drops: Box<dyn FnMut(u32) -> Option<usize> + Send>,
    batches: bool,
    progress: Option<Arc<AtomicU64>>,
}

/// What a [`Follower`] saw.
#[derive(Debug, Default, Clone)]
pub struct Followed {
    /// Every event processed, in order, across all connections; the items
    /// of a `batch` frame as `event` frames (see [`events_in`]).
    pub events: Vec<Value>,
    /// Which node (an index into the node list) delivered each event.
    pub served_by: Vec<usize>,
    pub epoch: Option<String>,
    /// How many connections were upgraded.
    pub connections: u32,
    /// Close codes the server sent.
    pub close_codes: Vec<u16>,
    /// How many `batch` frames arrived.
    pub batches: usize,
}

impl Follower {
    /// A follower of `room` on the node at `ws_base` (`ws://127.0.0.1:PORT`),
    /// up to and including seq `upto`.
    pub fn new(ws_base: String, room: &str, upto: u64) -> Follower {
        Follower::across(vec![ws_base], 0, room, upto)
    }

    /// A client behind a load balancer: it starts on `nodes[first]`; after a
    /// disconnect it resumes on the same node, or on the next one when that
    /// node refuses the connection.
    pub fn across(nodes: Vec<String>, first: usize, room: &str, upto: u64) -> Follower {
        assert!(first < nodes.len(), "no node {first} among {nodes:?}");
        Follower {
            nodes,
            first,
            room: room.to_owned(),
            start: 0,
            upto,
            drops: Box::new(|_| None),
            batches: false,
            progress: None,
        }
    }

    /// Starts after seq `start` instead of 0.
    pub fn after(mut self, start: u64) -> Follower {
        self.start = start;
        self
    }

    /// `budget(connection)` (1 for the first connection) may return `Some(n)`:
    /// the follower then drops that connection itself after `n` events — 0:
    /// right after the upgrade; in the middle of a `batch` frame too, whose
    /// rest it never processes. Half of these drops send a close frame, half
    /// just vanish.
    pub fn drops(mut self, budget: impl FnMut(u32) -> Option<usize> + Send + 'static) -> Follower {
        self.drops = Box::new(budget);
        self
    }

    /// Accepts `batch` frames (a room of a batching namespace) and processes
    /// their events one by one.
    pub fn batches(mut self) -> Follower {
        self.batches = true;
        self
    }

    /// Stores the cursor in `progress` after every event.
    pub fn progress(mut self, progress: Arc<AtomicU64>) -> Follower {
        self.progress = Some(progress);
        self
    }

    /// [`run`](Self::run) on a task of its own.
    pub fn spawn(self) -> tokio::task::JoinHandle<Followed> {
        tokio::spawn(self.run())
    }

    /// Follows the room until it has processed `upto`.
    pub async fn run(mut self) -> Followed {
        let room = self.room.clone();
        let mut seen = Followed::default();
        let mut last = self.start;
        let mut node = self.first;
        let mut refused = 0;
        while last < self.upto {
            let mut url = format!("{}/v1/rooms/{room}/ws?cursor={last}", self.nodes[node]);
            if let Some(epoch) = &seen.epoch {
                url.push_str(&format!("&epoch={epoch}"));
            }
            let connected = within(
                STEP,
                "a follower connect",
                tokio_tungstenite::connect_async(&url),
            )
            .await;
            let Ok((mut socket, _)) = connected else {
                refused += 1;
                assert!(
                    refused < 2000,
                    "follower of {room}: no node accepts connections"
                );
                node = (node + 1) % self.nodes.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            seen.connections += 1;
            assert!(
                seen.connections < 10_000,
                "follower of {room} reconnected too often"
            );
            let budget = (self.drops)(seen.connections);
            if budget == Some(0) {
                drop(socket);
                continue;
            }
            let mut taken = 0usize;
            'connection: loop {
                let next = within(
                    STEP,
                    &format!("a frame for the follower of {room} at {last}"),
                    socket.next(),
                )
                .await;
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        if let Some(frame) = frame {
                            seen.close_codes.push(u16::from(frame.code));
                        }
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                let frame: Value = serde_json::from_str(text.as_str()).expect("frame is JSON");
                match frame["type"].as_str() {
                    Some("welcome") | Some("caught_up") => {}
                    Some("subscribed") => {
                        let epoch = frame["epoch"]
                            .as_str()
                            .expect("subscribed has an epoch")
                            .to_owned();
                        match &seen.epoch {
                            None => seen.epoch = Some(epoch),
                            Some(known) => assert_eq!(
                                known, &epoch,
                                "the epoch of {room} changed (node {node})"
                            ),
                        }
                    }
                    Some("event") | Some("batch") => {
                        if frame["type"] == "batch" {
                            assert!(self.batches, "follower of {room} on node {node}: a batch in a room that does not batch: {frame}");
                            seen.batches += 1;
                        }
                        for event in events_in(&frame, &room) {
                            let seq = event["seq"].as_u64().expect("seq");
                            assert_eq!(
                                seq,
                                last + 1,
                                "follower of {room} on node {node}: expected seq {} got {frame}",
                                last + 1
                            );
                            last = seq;
                            if let Some(progress) = &self.progress {
                                progress.store(last, Ordering::Relaxed);
                            }
                            seen.events.push(event);
                            seen.served_by.push(node);
                            taken += 1;
                            if last >= self.upto || budget.is_some_and(|b| taken >= b) {
                                break 'connection;
                            }
                        }
                    }
                    _ => panic!("follower of {room} on node {node}: unexpected frame {frame}"),
                }
            }
            if last < self.upto && budget.is_some_and(|b| taken >= b) && rand::random::<bool>() {
                // Half of the self-inflicted drops are polite, half just vanish.
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
            }
            drop(socket);
        }
        seen
    }
}

/// The events of an `event` or `batch` frame of `room`, each as an `event`
/// frame `{type, room, seq, ts, data}`. A batch is never empty and its items
/// are `{seq, ts, data}`.
pub fn events_in(frame: &Value, room: &str) -> Vec<Value> {
    assert_eq!(frame["room"], room, "{frame}");
    match frame["type"].as_str() {
        Some("event") => vec![frame.clone()],
        Some("batch") => {
            let items = frame["events"].as_array().expect("batch has events");
            assert!(!items.is_empty(), "a batch is never empty: {frame}");
            items
                .iter()
                .map(|item| {
                    assert!(item["ts"].is_i64(), "{frame}");
                    assert!(item.get("room").is_none() && item.get("type").is_none(), "batch items are {{seq,ts,data}}: {frame}");
                    json!({"type": "event", "room": room, "seq": item["seq"], "ts": item["ts"], "data": item["data"]})
                })
                .collect()
        }
        _ => panic!("not an event frame: {frame}"),
    }
}
