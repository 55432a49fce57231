//! The write path: receipts, idempotent retries (HTTP `Idempotency-Key` and
//! the WebSocket publish `id`), optimistic concurrency with `expected_seq`, and
//! history paging.

mod support;

use serde_json::json;
use support::{range, seqs, within, Server, Ws, FAST, PHASE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_retry_with_the_same_key_is_not_appended_twice() {
    let server = Server::start(FAST).await;
    let api = server.api();
    let room = "idem-http";

    let (status, first) = api
        .post(room, &json!({"data": {"order": 1}}), Some("order-1"))
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        (first["room"].as_str(), first["seq"].as_u64()),
        (Some(room), Some(1)),
        "{first}"
    );
    assert!(
        first["epoch"].is_string() && first["ts"].is_i64(),
        "{first}"
    );

    // A true retry answers 200 with the first receipt.
    let (status, retry) = api
        .post(room, &json!({"data": {"order": 1}}), Some("order-1"))
        .await;
    assert_eq!((status, &retry), (200, &first));
    // The same key with another body is not a retry: 422, nothing appended.
    let (status, refused) = api
        .post(
            room,
            &json!({"data": {"order": "changed"}}),
            Some("order-1"),
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (422, Some("idempotency_mismatch")),
        "{refused}"
    );
    let (status, refused) = api
        .post(
            room,
            &json!({"data": {"order": 1}, "expected_seq": 0}),
            Some("order-1"),
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (422, Some("idempotency_mismatch")),
        "{refused}"
    );

    // Concurrent retries of a new key: exactly one 201, every answer the same seq.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.post(room, &json!({"data": {"order": 2}}), Some("order-2"))
                .await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(within(PHASE, "a concurrent retry", task).await.unwrap());
    }
    assert_eq!(
        answers.iter().filter(|(status, _)| *status == 201).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == 201 || *status == 200),
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|(_, receipt)| receipt == &answers[0].1),
        "{answers:?}"
    );
    assert_eq!(answers[0].1["seq"], 2);

    // The same key in another room is another event.
    let (status, other) = api
        .post("idem-http-2", &json!({"data": 0}), Some("order-1"))
        .await;
    assert_eq!((status, other["seq"].as_u64()), (201, Some(1)));

    let history = api.all_events(room).await;
    assert_eq!(seqs(&history), [1, 2]);
    assert_eq!(history[0]["data"], json!({"order": 1}));
    assert_eq!(api.room(room).await["head"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_publish_retry_with_the_same_id_is_not_appended_twice() {
    let server = Server::start(FAST).await;
    let room = "idem-ws";
    let (mut watcher, _) = Ws::room(&server, room, "").await;
    watcher.until_caught_up(room, 0).await;

    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    ws.send_json(json!({"type": "publish", "id": "p-1", "room": room, "data": {"x": 1}}))
        .await;
    let ack = ws.expect_type("ack").await;
    assert_eq!(
        (
            ack["id"].as_str(),
            ack["room"].as_str(),
            ack["seq"].as_u64()
        ),
        (Some("p-1"), Some(room), Some(1)),
        "{ack}"
    );

    // A retry after a reconnect, on a new session.
    drop(ws);
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    ws.send_json(json!({"type": "publish", "id": "p-1", "room": room, "data": {"x": 1}}))
        .await;
    assert_eq!(ws.expect_type("ack").await["seq"], 1);
    // The same id with another body is refused, not acknowledged.
    ws.send_json(json!({"type": "publish", "id": "p-1", "room": room, "data": {"x": "again"}}))
        .await;
    let refused = ws.expect_type("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["id"].as_str()),
        (Some("idempotency_mismatch"), Some("p-1")),
        "{refused}"
    );
    ws.send_json(json!({"type": "publish", "id": "p-2", "room": room, "data": {"x": 2}}))
        .await;
    assert_eq!(ws.expect_type("ack").await["seq"], 2);
    // An HTTP retry under the WebSocket id finds the same event.
    let (status, receipt) = server
        .api()
        .post(room, &json!({"data": {"x": 2}}), Some("p-2"))
        .await;
    assert_eq!((status, receipt["seq"].as_u64()), (200, Some(2)));

    let events = watcher.events_until(room, 0, 2).await;
    assert_eq!(events[0]["data"], json!({"x": 1}));
    assert_eq!(events[1]["data"], json!({"x": 2}));
    // The retry was not delivered: the next event the watcher sees is seq 3.
    server.publish(room, json!("three")).await;
    assert_eq!(seqs(&watcher.events_until(room, 2, 3).await), [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_seq_appends_only_at_that_head() {
    let server = Server::start(FAST).await;
    let api = server.api();
    let room = "occ";

    let (status, first) = api
        .post(room, &json!({"data": "a", "expected_seq": 0}), None)
        .await;
    assert_eq!(status, 201, "{first}");
    let epoch = first["epoch"].clone();
    let (status, second) = api
        .post(room, &json!({"data": "b", "expected_seq": 1}), None)
        .await;
    assert_eq!((status, second["seq"].as_u64()), (201, Some(2)), "{second}");

    let (status, conflict) = api
        .post(room, &json!({"data": "stale", "expected_seq": 1}), None)
        .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(
        (
            conflict["error"].as_str(),
            conflict["head"].as_u64(),
            &conflict["epoch"]
        ),
        (Some("conflict"), Some(2), &epoch),
        "{conflict}"
    );
    assert!(conflict["message"].is_string(), "{conflict}");

    // A stale quote over the WebSocket gets an error frame with the head.
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    ws.send_json(
        json!({"type": "publish", "id": "q", "room": room, "data": "stale", "expected_seq": 0}),
    )
    .await;
    let error = ws.expect_type("error").await;
    assert_eq!(
        (
            error["code"].as_str(),
            error["id"].as_str(),
            error["room"].as_str(),
            error["head"].as_u64()
        ),
        (Some("conflict"), Some("q"), Some(room), Some(2)),
        "{error}"
    );
    ws.send_json(
        json!({"type": "publish", "id": "r", "room": room, "data": "fresh", "expected_seq": 2}),
    )
    .await;
    assert_eq!(ws.expect_type("ack").await["seq"], 3);

    // A retry of a conditional publish that succeeded gets its receipt back,
    // not a conflict, although the head has moved past `expected_seq`.
    ws.send_json(
        json!({"type": "publish", "id": "r", "room": room, "data": "fresh", "expected_seq": 2}),
    )
    .await;
    assert_eq!(ws.expect_type("ack").await["seq"], 3);
    let (status, _) = api
        .post(
            room,
            &json!({"data": "keyed", "expected_seq": 3}),
            Some("k"),
        )
        .await;
    assert_eq!(status, 201);
    let (status, retry) = api
        .post(
            room,
            &json!({"data": "keyed", "expected_seq": 3}),
            Some("k"),
        )
        .await;
    assert_eq!((status, retry["seq"].as_u64()), (200, Some(4)), "{retry}");

    let history = api.all_events(room).await;
    assert_eq!(
        history
            .iter()
            .map(|e| e["data"].clone())
            .collect::<Vec<_>>(),
        [json!("a"), json!("b"), json!("fresh"), json!("keyed")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_with_after_and_limit() {
    let server = Server::start(&format!("{FAST}[limits]\nmax_page = 10\n")).await;
    let api = server.api();
    let room = "pages";
    let receipts = api.publish_many(room, 25, 3, |i| json!({"i": i})).await;
    let epoch = receipts[0].epoch.as_str();

    let page = api.history(room, 0, 7).await;
    assert_eq!(
        (
            page["room"].as_str(),
            page["epoch"].as_str(),
            page["head"].as_u64(),
            page["earliest"].as_u64()
        ),
        (Some(room), Some(epoch), Some(25), Some(1)),
        "{page}"
    );
    assert_eq!(seqs(page["events"].as_array().unwrap()), range(1, 7));
    for event in page["events"].as_array().unwrap() {
        let receipt = &receipts[event["seq"].as_u64().unwrap() as usize - 1];
        assert_eq!(
            (&event["data"], event["ts"].as_i64()),
            (&receipt.data, Some(receipt.ts))
        );
    }
    assert_eq!(
        seqs(api.history(room, 7, 7).await["events"].as_array().unwrap()),
        range(8, 14)
    );
    // `limit` is capped at max_page.
    assert_eq!(
        seqs(
            api.history(room, 14, 100).await["events"]
                .as_array()
                .unwrap()
        ),
        range(15, 24)
    );
    assert_eq!(
        seqs(
            api.history(room, 24, 10).await["events"]
                .as_array()
                .unwrap()
        ),
        [25]
    );
    assert!(api.history(room, 25, 10).await["events"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(api.history(room, 1000, 10).await["events"]
        .as_array()
        .unwrap()
        .is_empty());
    // Without parameters: from the start.
    let (status, page) = api.get(&format!("/v1/rooms/{room}/events")).await;
    assert_eq!(
        (status, seqs(page["events"].as_array().unwrap())),
        (200, range(1, 10))
    );

    let stats = api.room(room).await;
    assert_eq!(
        (
            stats["head"].as_u64(),
            stats["earliest"].as_u64(),
            stats["retained"].as_u64(),
            stats["subscribers"].as_u64()
        ),
        (Some(25), Some(1), Some(25), Some(0)),
        "{stats}"
    );

    // A room never written to: the epoch it will be born with, everywhere.
    let stats = api.room("never").await;
    let promised = stats["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(stats["head"].as_u64(), Some(0), "{stats}");
    let page = api.history("never", 0, 10).await;
    assert_eq!(
        (
            page["head"].as_u64(),
            page["events"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{page}"
    );
    assert_eq!(page["epoch"], promised.as_str());
    let receipt = api.publish("never", json!("first")).await;
    assert_eq!(
        receipt["epoch"],
        promised.as_str(),
        "the first publish keeps the epoch the room was shown with"
    );
}
