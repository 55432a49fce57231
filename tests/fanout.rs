//! Live fan-out: every subscriber of a room gets every event in seq order,
//! one session can hold several rooms, and `unsubscribe` stops delivery.

mod support;

use serde_json::json;
use support::{range, seqs, within, Server, Ws, FAST, PHASE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_event_in_order() {
    let server = Server::start(FAST).await;
    let room = "market:1";
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let (mut ws, subscribed) = Ws::room(&server, room, "").await;
        assert_eq!(subscribed["head"], 0);
        ws.until_caught_up(room, 0).await;
        subscribers.push(ws);
    }
    // A fourth subscriber over the multiplexed socket.
    let mut multi = Ws::connect(&server.ws_url("/v1/ws")).await;
    multi.subscribe(room, json!({})).await;
    multi.until_caught_up(room, 0).await;
    subscribers.push(multi);

    let stats = server.api().room(room).await;
    assert_eq!(stats["subscribers"], 4, "{stats}");

    let receipts = server
        .api()
        .publish_many(
            room,
            100,
            4,
            |i| json!({"price": i, "tag": format!("e{i}")}),
        )
        .await;
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        range(1, 100)
    );

    for ws in &mut subscribers {
        let events = ws.events_until(room, 0, 100).await;
        for (event, receipt) in events.iter().zip(&receipts) {
            assert_eq!(event["data"], receipt.data, "{event}");
            assert_eq!(event["ts"], receipt.ts, "{event}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_multiplexes_rooms_each_in_order() {
    let server = Server::start(FAST).await;
    let rooms = ["mux-a", "mux-b", "mux-c"];
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    for room in rooms {
        let subscribed = ws.subscribe(room, json!({})).await;
        assert!(subscribed["epoch"].is_string(), "{subscribed}");
        ws.until_caught_up(room, 0).await;
    }

    let api = server.api();
    let publisher = tokio::spawn(async move {
        for i in 0..30 {
            for room in rooms {
                api.publish(room, json!({"room": room, "i": i})).await;
            }
        }
    });

    let mut last = [0u64; 3];
    within(PHASE, "90 events over three rooms", async {
        while last.iter().any(|l| *l < 30) {
            let frame = ws.next_json().await;
            assert_eq!(frame["type"], "event", "{frame}");
            let index = rooms
                .iter()
                .position(|r| frame["room"] == *r)
                .expect("a subscribed room");
            let seq = frame["seq"].as_u64().unwrap();
            assert_eq!(seq, last[index] + 1, "{frame}");
            assert_eq!(
                frame["data"],
                json!({"room": rooms[index], "i": seq - 1}),
                "{frame}"
            );
            last[index] = seq;
        }
    })
    .await;
    within(PHASE, "the publisher", publisher).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_of_that_room_only() {
    let server = Server::start(FAST).await;
    let api = server.api();
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    for room in ["keep", "drop"] {
        ws.subscribe(room, json!({})).await;
        ws.until_caught_up(room, 0).await;
    }
    api.publish("drop", json!(1)).await;
    let events = ws.events_until("drop", 0, 1).await;
    assert_eq!(seqs(&events), [1]);

    ws.send_json(json!({"type": "unsubscribe", "room": "drop"}))
        .await;
    let answer = ws.expect_type("unsubscribed").await;
    assert_eq!(answer["room"], "drop");
    let stats = api.room("drop").await;
    assert_eq!(stats["subscribers"], 0, "{stats}");

    for i in 2..=5 {
        api.publish("drop", json!(i)).await;
    }
    api.publish("keep", json!("marker")).await;
    // The next frames must be the marker and the pong: nothing of `drop`.
    let marker = ws.next_json().await;
    assert_eq!(
        (
            marker["type"].as_str(),
            marker["room"].as_str(),
            marker["seq"].as_u64()
        ),
        (Some("event"), Some("keep"), Some(1)),
        "{marker}"
    );
    ws.send_json(json!({"type": "ping"})).await;
    ws.expect_type("pong").await;

    // A second unsubscribe is refused; resubscribing from the cursor resumes exactly.
    ws.send_json(json!({"type": "unsubscribe", "room": "drop"}))
        .await;
    let refused = ws.expect_type("error").await;
    assert_eq!(refused["code"], "not_subscribed", "{refused}");
    let epoch = api.room("drop").await["epoch"].clone();
    ws.subscribe("drop", json!({"cursor": 1, "epoch": epoch}))
        .await;
    let (events, last) = ws.until_caught_up("drop", 1).await;
    assert_eq!((seqs(&events), last), (range(2, 5), 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limits_are_answered_with_errors() {
    let server = Server::start(&format!("{FAST}[limits]\nmax_subscriptions = 2\n")).await;
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    ws.subscribe("lim-1", json!({})).await;
    ws.until_caught_up("lim-1", 0).await;

    ws.send_json(json!({"type": "subscribe", "room": "lim-1"}))
        .await;
    let again = ws.expect_type("error").await;
    assert_eq!(
        (again["code"].as_str(), again["room"].as_str()),
        (Some("already_subscribed"), Some("lim-1")),
        "{again}"
    );

    ws.subscribe("lim-2", json!({})).await;
    ws.until_caught_up("lim-2", 0).await;
    ws.send_json(json!({"type": "subscribe", "room": "lim-3"}))
        .await;
    let full = ws.expect_type("error").await;
    assert_eq!(
        (full["code"].as_str(), full["room"].as_str()),
        (Some("too_many_subscriptions"), Some("lim-3")),
        "{full}"
    );

    // The session still works for the rooms it holds.
    server.publish("lim-2", json!("still here")).await;
    let events = ws.events_until("lim-2", 0, 1).await;
    assert_eq!(events[0]["data"], "still here");
}
