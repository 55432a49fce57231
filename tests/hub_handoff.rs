//! Property test of the replay → live hand-off: random interleavings of
//! concurrent publishes, subscribes from random cursors, disconnects and
//! resumes. Every subscriber must see exactly `cursor+1 ..= head`, in order,
//! with nothing missing and nothing doubled — across hub tails, store replay,
//! and hubs hibernating and restarting mid-test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use hubcast_server::store::AppendRequest;
use hubcast_server::testing::join;
use hubcast_server::testing::Node;
use hubcast_server::testing::{Outbound, SessionControl};
use hubcast_server::Config;
use hubcast_server::RoomName;
use proptest::prelude::*;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
enum Op {
    /// Publish this many events concurrently with what follows.
    Publish(u8),
    /// A new subscriber starting this far behind the head.
    Subscribe { behind: u8, slow: bool },
    /// Disconnect subscriber `i % n` (drops whatever it has not read).
    Disconnect(usize),
    /// Reconnect subscriber `i % n` from its cursor.
    Resume(usize),
    /// Let the other tasks run for a moment.
    Pause(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..40).prop_map(Op::Publish),
        2 => (0u8..60, any::<bool>()).prop_map(|(behind, slow)| Op::Subscribe { behind, slow }),
        1 => any::<usize>().prop_map(Op::Disconnect),
        1 => any::<usize>().prop_map(Op::Resume),
        1 => (0u8..5).prop_map(Op::Pause),
    ]
}

/// One simulated client: what it has processed, in order, over all its connections.
struct Subscriber {
    seen: Arc<Mutex<Vec<u64>>>,
    start: u64,
    slow: bool,
    connection: Option<(Arc<SessionControl>, tokio::task::JoinHandle<()>, u64)>,
}

struct World {
    node: Arc<Node>,
    room: RoomName,
    next_session: u64,
    subscribers: Vec<Subscriber>,
    publishers: Vec<tokio::task::JoinHandle<()>>,
    published: u64,
}

impl World {
    async fn connect(&mut self, index: usize) {
        self.next_session += 1;
        let session_id = self.next_session;
        let sub = &mut self.subscribers[index];
        let after = sub
            .seen
            .lock()
            .unwrap()
            .last()
            .copied()
            .unwrap_or(sub.start);
        let control = Arc::new(SessionControl::default());
        let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(64);
        let out = Outbound::new(session_id, tx, control.clone());
        let seen = sub.seen.clone();
        let slow = sub.slow;
        let reader_control = control.clone();
        let reader = tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    frame = rx.recv() => frame,
                    _ = reader_control.token.cancelled() => None,
                };
                let Some(frame) = frame else { return };
                // As the session's writer does: a join waiting for queue room is told.
                reader_control.frames_drained();
                let value: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
                if value["type"] == "event" {
                    seen.lock().unwrap().push(value["seq"].as_u64().unwrap());
                }
                if slow {
                    tokio::task::yield_now().await;
                }
            }
        });
        let node = self.node.clone();
        let hubs = self.node.hubs.clone();
        let room = self.room.clone();
        // Join concurrently with everything else, as a session would.
        let joiner_out = out.clone();
        tokio::spawn(async move {
            let _ = join(&node.reads, &hubs, &joiner_out, &room, after, 4).await;
        });
        sub.connection = Some((control, reader, session_id));
    }

    async fn disconnect(&mut self, index: usize) {
        if let Some((control, reader, session_id)) = self.subscribers[index].connection.take() {
            control.token.cancel();
            let _ = reader.await;
            if let Some(hub) = self.node.hubs.get(&self.room) {
                hub.unsubscribe(session_id).await;
            }
        }
    }

    fn publish(&mut self, count: u8) {
        for _ in 0..count {
            self.published += 1;
            let store = self.node.store.clone();
            let room = self.room.clone();
            let data = RawValue::from_string(format!("{{\"n\":{}}}", self.published)).unwrap();
            self.publishers.push(tokio::spawn(async move {
                store
                    .append(AppendRequest {
                        room,
                        data,
                        idem_key: None,
                        expected_seq: None,
                        origin: None,
                    })
                    .await
                    .unwrap();
            }));
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.store = hubcast_server::config::StoreUrl::Sqlite(dir.path().join("hubcast.db"));
    config.sqlite.synchronous = hubcast_server::config::Synchronous::Normal;
    config.hub.tail = 4;
    config.hub.idle_ms = 5;
    config.hub.reconcile_ms = 50;
    let node = Node::start(config, CancellationToken::new()).await.unwrap();
    let room = RoomName::parse("prop").unwrap();
    let mut world = World {
        node,
        room,
        next_session: 0,
        subscribers: Vec::new(),
        publishers: Vec::new(),
        published: 0,
    };

    for op in ops {
        match op {
            Op::Publish(count) => world.publish(count),
            Op::Subscribe { behind, slow } => {
                let head = world
                    .node
                    .store
                    .subscribe_state(&world.room)
                    .await
                    .unwrap()
                    .head;
                let start = head.saturating_sub(behind as u64);
                world.subscribers.push(Subscriber {
                    seen: Default::default(),
                    start,
                    slow,
                    connection: None,
                });
                let index = world.subscribers.len() - 1;
                world.connect(index).await;
            }
            Op::Disconnect(i) if !world.subscribers.is_empty() => {
                let index = i % world.subscribers.len();
                world.disconnect(index).await;
            }
            Op::Resume(i) if !world.subscribers.is_empty() => {
                let index = i % world.subscribers.len();
                if world.subscribers[index].connection.is_none() {
                    world.connect(index).await;
                }
            }
            Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms as u64)).await,
            _ => {}
        }
    }
    for publisher in std::mem::take(&mut world.publishers) {
        publisher.await.unwrap();
    }
    let head = world.published;
    // Reconnect everyone so every subscriber must reach the head.
    for index in 0..world.subscribers.len() {
        if world.subscribers[index].connection.is_none() {
            world.connect(index).await;
        }
    }
    for index in 0..world.subscribers.len() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let sub = &world.subscribers[index];
            if sub
                .seen
                .lock()
                .unwrap()
                .last()
                .copied()
                .unwrap_or(sub.start)
                >= head
            {
                break;
            }
            let seen = sub.seen.lock().unwrap().clone();
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscriber {index} from {} stalled at {:?} of {head}",
                sub.start,
                seen.last()
            );
            // A client cut as a slow consumer (4009) resumes from its cursor.
            let cut = sub
                .connection
                .as_ref()
                .and_then(|(control, _, _)| control.close_reason());
            if let Some((code, _)) = cut {
                assert_eq!(code, 4009, "only slow-consumer cuts are expected");
                world.disconnect(index).await;
                world.connect(index).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sub = &world.subscribers[index];
        let seen = sub.seen.lock().unwrap().clone();
        let expected: Vec<u64> = (sub.start + 1..=head).collect();
        assert_eq!(
            seen, expected,
            "subscriber {index} (start {}, slow {})",
            sub.start, sub.slow
        );
    }
    for index in 0..world.subscribers.len() {
        world.disconnect(index).await;
    }
    world.node.shutdown.cancel();
    world.node.store.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_subscriber_sees_exactly_cursor_to_head(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(ops));
    }
}
