//! `echo = false` namespaces: a socket publish is delivered to every
//! subscriber of the room except the session that sent it (which has its
//! `ack {id, room, seq}`). Others get it; the sender's stream skips exactly
//! its own seqs, and a resume from a cursor that counts them as delivered has
//! no duplicate and no gap. Rooms outside such a namespace still echo.

mod support;

use serde_json::{json, Value};
use support::{Server, Ws};

const CONFIG: &str = r#"
[sqlite]
synchronous = "normal"

[[namespaces]]
prefix = "quiet:"
echo = false

# Batches of 4 (the window never ends within a test).
[[namespaces]]
prefix = "quietbatch:"
echo = false
batch_ms = 600000
batch_max = 4
"#;

/// The seqs of an `event` or `batch` frame.
fn seqs_of(frame: &Value) -> Vec<u64> {
    match frame["type"].as_str() {
        Some("event") => vec![frame["seq"].as_u64().expect("seq")],
        Some("batch") => frame["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect(),
        _ => panic!("not an event frame: {frame}"),
    }
}

/// Publishes over the socket and returns the ack's seq; event frames that
/// arrive before the ack are returned too.
async fn publish(ws: &mut Ws, room: &str, id: &str) -> (u64, Vec<u64>) {
    ws.send_json(
        json!({"type": "publish", "id": id, "room": room, "data": {"from": "sender", "id": id}}),
    )
    .await;
    let mut seen = Vec::new();
    loop {
        let frame = ws.next_json().await;
        match frame["type"].as_str() {
            Some("ack") => {
                assert_eq!(
                    (&frame["id"], &frame["room"]),
                    (&json!(id), &json!(room)),
                    "{frame}"
                );
                return (frame["seq"].as_u64().expect("ack seq"), seen);
            }
            _ => seen.extend(seqs_of(&frame)),
        }
    }
}

/// Event seqs until (and including) `upto`, skipping acks.
async fn seqs_until(ws: &mut Ws, upto: u64) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    while seen.last().map_or(true, |&last| last < upto) {
        let frame = ws.next_json().await;
        if frame["type"] != "ack" {
            seen.extend(seqs_of(&frame));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sender_does_not_get_its_own_event_and_resumes_without_gap_or_duplicate() {
    let server = Server::start(CONFIG).await;
    let api = server.api();
    let room = "quiet:chat";

    let mut sender = Ws::connect(&server.ws_url("/v1/ws")).await;
    let subscribed = sender.subscribe(room, json!({"cursor": 0})).await;
    assert_eq!(
        subscribed["echo"], false,
        "a no-echo room says so: {subscribed}"
    );
    assert_eq!(sender.expect_type("caught_up").await["seq"], 0);
    let (mut other, subscribed) = Ws::room(&server, room, "?cursor=0").await;
    assert_eq!(subscribed["echo"], false, "{subscribed}");
    other.until_caught_up(room, 0).await;

    // Own publish 1, someone else's 2, own 3, someone else's 4.
    let (one, early) = publish(&mut sender, room, "p-1").await;
    assert_eq!(one, 1);
    api.publish(room, json!({"from": "http"})).await;
    let (three, more) = publish(&mut sender, room, "p-3").await;
    assert_eq!(three, 3);
    api.publish(room, json!({"from": "http"})).await;
    let mut sender_seqs = early;
    sender_seqs.extend(more);
    if sender_seqs.last() != Some(&4) {
        sender_seqs.extend(seqs_until(&mut sender, 4).await);
    }
    assert_eq!(
        sender_seqs,
        [2, 4],
        "the sender gets everything but its own seqs"
    );
    assert_eq!(
        seqs_until(&mut other, 4).await,
        [1, 2, 3, 4],
        "everyone else gets every seq"
    );

    // The sender counts its acked seqs as delivered: its cursor is 4, and a
    // resume from there replays nothing and continues live.
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    drop(sender);
    let (mut resumed, _) = Ws::room(&server, room, &format!("?cursor=4&epoch={epoch}")).await;
    assert_eq!(resumed.expect_type("caught_up").await["seq"], 4);
    api.publish(room, json!({"from": "http"})).await;
    assert_eq!(seqs_of(&resumed.next_json().await), [5]);
    // A publish of the resumed session is skipped for it too; an HTTP one is not.
    let (six, early) = publish(&mut resumed, room, "p-6").await;
    assert_eq!((six, early), (6, vec![]));
    api.publish(room, json!({"from": "http"})).await;
    assert_eq!(seqs_until(&mut resumed, 7).await, [7]);
    assert_eq!(seqs_until(&mut other, 7).await, [5, 6, 7]);

    // A retry of an acked id is answered with the same seq and appends nothing.
    let (again, early) = publish(&mut resumed, room, "p-6").await;
    assert_eq!((again, early), (6, vec![]));
    assert_eq!(api.room(room).await["head"], 7);

    // A room outside the namespace echoes, and its `subscribed` says nothing.
    let echo_room = "loud:chat";
    let mut loud = Ws::connect(&server.ws_url("/v1/ws")).await;
    let subscribed = loud.subscribe(echo_room, json!({"cursor": 0})).await;
    assert!(subscribed.get("echo").is_none(), "{subscribed}");
    loud.expect_type("caught_up").await;
    let (seq, early) = publish(&mut loud, echo_room, "e-1").await;
    assert_eq!(seq, 1);
    if early.is_empty() {
        assert_eq!(
            seqs_until(&mut loud, 1).await,
            [1],
            "echo rooms deliver to the sender"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_reaches_the_sender_without_its_own_events() {
    let server = Server::start(CONFIG).await;
    let api = server.api();
    let room = "quietbatch:ticks";
    let mut sender = Ws::connect(&server.ws_url("/v1/ws")).await;
    sender.subscribe(room, json!({"cursor": 0})).await;
    sender.expect_type("caught_up").await;
    let (mut other, _) = Ws::room(&server, room, "?cursor=0").await;
    other.until_caught_up(room, 0).await;

    // Seqs 1 and 2 from the sender, 3 and 4 over HTTP: one batch of four.
    assert_eq!(publish(&mut sender, room, "b-1").await, (1, vec![]));
    assert_eq!(publish(&mut sender, room, "b-2").await, (2, vec![]));
    api.publish(room, json!({"n": 3})).await;
    api.publish(room, json!({"n": 4})).await;
    let batch = other.expect_type("batch").await;
    assert_eq!(seqs_of(&batch), [1, 2, 3, 4]);
    let batch = sender.expect_type("batch").await;
    assert_eq!(
        seqs_of(&batch),
        [3, 4],
        "the sender's batch leaves out its own events: {batch}"
    );

    // A batch of only the sender's events is not sent to it at all.
    for (i, id) in ["b-5", "b-6", "b-7", "b-8"].into_iter().enumerate() {
        assert_eq!(publish(&mut sender, room, id).await, (5 + i as u64, vec![]));
    }
    assert_eq!(seqs_of(&other.expect_type("batch").await), [5, 6, 7, 8]);
    api.publish(room, json!({"n": 9})).await;
    api.publish(room, json!({"n": 10})).await;
    api.publish(room, json!({"n": 11})).await;
    api.publish(room, json!({"n": 12})).await;
    assert_eq!(seqs_of(&sender.expect_type("batch").await), [9, 10, 11, 12]);
}
