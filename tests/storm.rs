//! Connect storms: thousands of subscribes to rooms nobody has written yet,
//! all at once, as when a node dies and its clients come back on the others
//! (issue 22).
//!
//! - On PostgreSQL + NATS: three nodes whose pools have two connections and
//!   wait at most 100 ms for one. A subscription needs no store read of its
//!   own (its hub knows the room's state; starting hubs share one query), so
//!   none is refused, no room row is written, and every subscriber gets
//!   exactly the room's first event. On SQLite the same storm on one node.

mod support;

use serde_json::{json, Value};
use support::{within, Server, Ws, STEP};

/// Sockets in all, spread over the nodes, each subscribing to `ROOMS_EACH` rooms.
const SOCKETS: usize = 300;
const ROOMS_EACH: usize = 10;
/// Distinct rooms: every room gets a subscriber on every node.
const ROOMS: usize = 1000;

/// A small pool that waits only briefly: before issue 22, a storm of
/// subscribes (one store read each, one more per starting hub) queued on it
/// and the ones that waited past 100 ms were refused `store_unavailable`.
const CONFIG: &str = "[sqlite]\nsynchronous = \"normal\"\n\
                      [postgres]\npool_size = 2\ntimeout_ms = 100\n\
                      [rate_limits]\nconnects_per_ip_per_minute = 0\n";

fn room(i: usize) -> String {
    format!("storm:{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_storm_to_new_rooms_is_refused_nothing_and_delivered_exactly() {
    let first = Server::start(CONFIG).await;
    let mut nodes = vec![first];
    if nodes[0].is_cluster() {
        for _ in 0..2 {
            let peer = Server::start_peer(&nodes[0], CONFIG).await;
            nodes.push(peer);
        }
    }

    // Open every socket first, then send every subscribe without waiting
    // for any answer: the nodes get them all at once.
    let mut sockets = Vec::with_capacity(SOCKETS);
    for k in 0..SOCKETS {
        let node = &nodes[k % nodes.len()];
        sockets.push(Ws::connect(&node.ws_url("/v1/ws")).await);
    }
    // Sockets are dealt to the nodes round-robin; each run of one socket per
    // node shares a block of rooms, so every room has a subscriber on every node.
    let n_nodes = nodes.len();
    let rooms_of =
        move |k: usize| (0..ROOMS_EACH).map(move |j| (k / n_nodes * ROOMS_EACH + j) % ROOMS);
    for (k, ws) in sockets.iter_mut().enumerate() {
        for i in rooms_of(k) {
            ws.send_json(json!({"type": "subscribe", "room": room(i), "cursor": 0}))
                .await;
        }
    }

    // Every subscribe is answered `subscribed` (a fresh room: head 0) and
    // `caught_up`; none with an `error`.
    let mut refused = Vec::new();
    for ws in sockets.iter_mut() {
        let mut caught_up = 0;
        while caught_up < ROOMS_EACH {
            let frame = ws.next_json().await;
            match frame["type"].as_str() {
                Some("subscribed") => assert_eq!(frame["head"], 0, "{frame}"),
                Some("caught_up") => caught_up += 1,
                Some("error") => {
                    refused.push(frame);
                    caught_up += 1;
                }
                _ => panic!("unexpected frame during the storm: {frame}"),
            }
        }
    }
    assert!(
        refused.is_empty(),
        "{} of {} subscribes were refused, e.g. {}",
        refused.len(),
        SOCKETS * ROOMS_EACH,
        refused[0]
    );
    for node in &nodes {
        let api = node.api();
        assert_eq!(api.metric("hubcast_refusals_total").await, 0.0);
        assert_eq!(
            api.metric("hubcast_subscribe_reads_total{kind=\"issued\"}")
                .await,
            0.0,
            "a subscribe to a fresh room from cursor 0 reads nothing from the store"
        );
    }
    if let Some(cluster) = nodes[0].cluster() {
        let client = cluster.connect().await;
        let rows: i64 = client
            .query_one("SELECT count(*) FROM rooms", &[])
            .await
            .expect("count rooms")
            .get(0);
        assert_eq!(rows, 0, "subscribing created room rows");
    }

    // One event in each room, in one atomic batch; every subscriber gets
    // exactly its rooms' events, seq 1, and nothing else.
    let events: Vec<Value> = (0..ROOMS)
        .map(|i| json!({"room": room(i), "data": {"i": i}}))
        .collect();
    let api = nodes[0].api();
    let body = json!({ "events": events });
    // The small pool may be busy for a moment (a 503): retry with the key.
    let published = support::eventually("the batch publish", || async {
        let response = api
            .http
            .post(format!("{}/v1/events", api.base))
            .header("Idempotency-Key", "storm-batch")
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        (status == 201 || status == 200).then_some(status)
    })
    .await;
    assert_eq!(published, 201);
    for (k, ws) in sockets.iter_mut().enumerate() {
        let mut want: Vec<usize> = rooms_of(k).collect();
        want.sort_unstable();
        let mut got = Vec::new();
        while got.len() < ROOMS_EACH {
            let frame = within(STEP, "an event", ws.next_json()).await;
            assert_eq!(frame["type"], "event", "{frame}");
            assert_eq!(frame["seq"], 1, "{frame}");
            let i = frame["data"]["i"].as_u64().expect("i") as usize;
            assert_eq!(frame["room"], room(i), "{frame}");
            got.push(i);
        }
        got.sort_unstable();
        assert_eq!(got, want, "socket {k}");
        ws.send_json(json!({"type": "ping"})).await;
        assert_eq!(ws.next_json().await["type"], "pong", "nothing more came");
    }
}
