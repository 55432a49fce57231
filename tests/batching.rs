//! Batching: rooms of a namespace with `batch_ms` get their live events as
//! `batch {room, events:[{seq,ts,data}…]}` frames. A batch is sent when it
//! holds `batch_max` events or its window ends; replay stays single `event`
//! frames. Followers that drop their connections (mid-batch too) and resume
//! from their cursors still see every seq exactly once, in order.

mod support;

use serde_json::{json, Value};
use support::follower::events_in;
use support::{range, seqs, within, Follower, Server, Ws, PHASE};

const CONFIG: &str = r#"
[sqlite]
synchronous = "normal"

# A window that never ends within a test: batches go out at batch_max only.
[[namespaces]]
prefix = "full:"
batch_ms = 600000
batch_max = 64

# Small batches, short window.
[[namespaces]]
prefix = "fast:"
batch_ms = 5
batch_max = 16

# Only the window sends these.
[[namespaces]]
prefix = "window:"
batch_ms = 20
batch_max = 1000
"#;

/// The events of one frame (`event` or `batch`) as `(seq, data)`.
fn events_of(frame: &Value, room: &str) -> Vec<(u64, Value)> {
    events_in(frame, room)
        .into_iter()
        .map(|e| (e["seq"].as_u64().expect("seq"), e["data"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_is_sent_when_it_reaches_batch_max() {
    let server = Server::start(CONFIG).await;
    let room = "full:1";
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    ws.subscribe(room, json!({})).await;
    ws.expect_type("caught_up").await;
    let api = server.api();
    for n in 0..128 {
        api.publish(room, json!({"n": n})).await;
    }
    // 128 events, batch_max 64, a window that does not end: exactly two
    // frames of 64, encoded in order.
    for batch in 0..2u64 {
        let frame = ws.expect_type("batch").await;
        let events = events_of(&frame, room);
        let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, range(batch * 64 + 1, batch * 64 + 64), "{frame}");
        for (seq, data) in events {
            assert_eq!(data, json!({"n": seq - 1}));
        }
    }
    // Nothing beyond two full batches: whatever the hub had queued for this
    // session would arrive before the answer to a ping.
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        ws.next_json().await["type"],
        "pong",
        "nothing beyond two full batches"
    );
    // A resume from a cursor is served as single events (replay), then live.
    let mut late = Ws::connect(&server.ws_url("/v1/ws")).await;
    late.subscribe(room, json!({"cursor": 100})).await;
    let (events, last) = late.until_caught_up(room, 100).await;
    assert_eq!(events.len(), 28);
    assert_eq!(last, 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_sends_a_partial_batch() {
    let server = Server::start(CONFIG).await;
    let room = "window:1";
    let (mut ws, _) = Ws::room(&server, room, "").await;
    ws.expect_type("caught_up").await;
    for n in 1..=3u64 {
        server.publish(room, json!({"n": n})).await;
        // Whatever the timing, the seqs arrive in order within a bounded wait.
        let mut got = Vec::new();
        while got.last().map(|(seq, _)| *seq) != Some(n) {
            let frame = ws.next_json().await;
            assert_eq!(
                frame["type"], "batch",
                "live events of a batching room come in batches: {frame}"
            );
            got.extend(events_of(&frame, room));
        }
        assert_eq!(got.last().map(|(_, d)| d.clone()), Some(json!({"n": n})));
    }
    // A room outside the namespaces is unaffected.
    let (mut plain, _) = Ws::room(&server, "plain", "").await;
    plain.expect_type("caught_up").await;
    server.publish("plain", json!(1)).await;
    assert_eq!(plain.expect_type("event").await["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_keep_order_and_exactly_once_through_reconnects() {
    const TOTAL: u64 = 3000;
    let server = Server::start(CONFIG).await;
    let room = "fast:reconnects";
    // Followers that process events one by one like an SDK and drop their
    // connections after a random number of events (so sometimes in the middle
    // of a batch), resuming from their cursors.
    let followers: Vec<_> = (0..4)
        .map(|_| {
            Follower::new(server.ws_url(""), room, TOTAL)
                .batches()
                .drops(|_| Some(rand::random_range(1..301)))
                .spawn()
        })
        .collect();
    // Publish in order so that data n is seq n, while the followers come and go.
    let api = server.api();
    let publisher = tokio::spawn(async move {
        for n in 1..=TOTAL {
            let receipt = api.publish(room, json!({"n": n})).await;
            assert_eq!(
                receipt["seq"], n,
                "one publisher: seq follows the publish order"
            );
        }
    });
    within(PHASE, "the publisher", publisher)
        .await
        .expect("publisher");
    let mut batches = 0;
    for follower in followers {
        let seen = within(PHASE, "a follower", follower)
            .await
            .expect("follower");
        assert_eq!(
            seqs(&seen.events),
            range(1, TOTAL),
            "every seq exactly once, in order"
        );
        for event in &seen.events {
            assert_eq!(event["data"], json!({"n": event["seq"]}), "data of {event}");
        }
        assert!(
            seen.connections > 1,
            "the follower never reconnected; the test proves nothing"
        );
        batches += seen.batches;
    }
    assert!(batches > 0, "no batch frame was seen");
}
