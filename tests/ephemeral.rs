//! Ephemeral messages: delivered live to a room's current subscribers (on
//! every node), never stored, no seq, never replayed, no cursor moved; refused
//! where the namespace does not allow them; the same size limit as events.
//! The store's side is checked through what it says: history, the room's
//! head, and the count of store batches in `/metrics`.

mod support;

use serde_json::{json, Value};
use support::{Server, Ws};

const CONFIG: &str = r#"
[sqlite]
synchronous = "normal"

[[namespaces]]
prefix = "typing:"
ephemeral = "allowed"
max_event_bytes = 64

[[namespaces]]
prefix = "cursor:"
ephemeral = "only"
"#;

/// Store transactions (group-commit batches) so far, on either store.
async fn store_batches(server: &Server) -> f64 {
    server.api().metric("hubcast_store_batch_size_count").await
}

/// Reads the next frame, which must be the `ephemeral` frame of `room` with `data`.
async fn expect_ephemeral(ws: &mut Ws, room: &str, data: &Value) -> Value {
    let frame = ws.expect_type("ephemeral").await;
    assert_eq!(
        (&frame["room"], &frame["data"]),
        (&json!(room), data),
        "{frame}"
    );
    assert!(frame["ts"].as_i64().is_some(), "{frame}");
    assert!(
        frame.get("seq").is_none(),
        "an ephemeral frame has no seq: {frame}"
    );
    frame
}

/// Publishes over HTTP with `"ephemeral": true` and checks the 202 receipt.
async fn publish_ephemeral(server: &Server, room: &str, data: Value) {
    let (status, receipt) = server
        .api()
        .post(room, &json!({"data": data, "ephemeral": true}), None)
        .await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(
        (&receipt["room"], &receipt["ephemeral"]),
        (&json!(room), &json!(true)),
        "{receipt}"
    );
    assert!(receipt["ts"].as_i64().is_some(), "{receipt}");
    assert!(receipt.get("seq").is_none(), "{receipt}");
}

/// A `/v1/ws` session subscribed to `room` live from its head, caught up.
async fn socket_in(server: &Server, room: &str) -> Ws {
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    let subscribed = ws.subscribe(room, json!({})).await;
    let head = subscribed["head"].as_u64().expect("head");
    ws.until_caught_up(room, head).await;
    ws
}

/// A socket publish of `data` with `ephemeral: true`; returns the `ack`
/// (the sender, subscribed to the room, also gets the message: echo is on).
async fn socket_ephemeral(ws: &mut Ws, room: &str, id: &str, data: &Value) -> Value {
    ws.send_json(
        json!({"type": "publish", "id": id, "room": room, "data": data, "ephemeral": true}),
    )
    .await;
    let (mut ack, mut echoed) = (None, false);
    while ack.is_none() || !echoed {
        let frame = ws.next_json().await;
        match frame["type"].as_str() {
            Some("ack") => ack = Some(frame),
            Some("ephemeral") => {
                assert_eq!(&frame["data"], data, "{frame}");
                echoed = true;
            }
            _ => panic!("unexpected frame after an ephemeral publish: {frame}"),
        }
    }
    let ack = ack.expect("ack");
    assert_eq!(
        (&ack["id"], &ack["room"], &ack["ephemeral"]),
        (&json!(id), &json!(room), &json!(true)),
        "{ack}"
    );
    assert!(ack.get("seq").is_none(), "{ack}");
    ack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemeral_messages_are_live_only_and_leave_the_log_and_cursors_alone() {
    let server = Server::start(CONFIG).await;
    let api = server.api();
    let room = "typing:1";
    let (mut watcher, subscribed) = Ws::room(&server, room, "").await;
    assert_eq!(subscribed["head"], 0);
    watcher.until_caught_up(room, 0).await;
    api.publish(room, json!({"text": "hello"})).await;
    watcher.events_until(room, 0, 1).await;

    let batches = store_batches(&server).await;
    publish_ephemeral(&server, room, json!({"typing": "alice"})).await;
    expect_ephemeral(&mut watcher, room, &json!({"typing": "alice"})).await;
    let mut typist = socket_in(&server, room).await;
    socket_ephemeral(&mut typist, room, "t1", &json!({"typing": "bob"})).await;
    expect_ephemeral(&mut watcher, room, &json!({"typing": "bob"})).await;
    // Nothing was written: same head, same history, no store transaction.
    assert_eq!(
        store_batches(&server).await,
        batches,
        "an ephemeral publish wrote to the store"
    );
    assert_eq!(api.room(room).await["head"], 1);
    assert_eq!(support::seqs(&api.all_events(room).await), [1]);
    assert_eq!(api.metric("hubcast_ephemeral_published_total").await, 2.0);

    // The next event is seq 2 for everyone: no cursor moved, no seq was taken.
    api.publish(room, json!({"text": "again"})).await;
    watcher.events_until(room, 1, 2).await;
    typist.events_until(room, 1, 2).await;

    // A replay from the start has the two events and nothing else: the next
    // frame after `caught_up` is the live event 3.
    let (mut late, _) = Ws::room(&server, room, "?cursor=0").await;
    let (events, last) = late.until_caught_up(room, 0).await;
    assert_eq!((events.len(), last), (2, 2));
    api.publish(room, json!({"text": "third"})).await;
    late.events_until(room, 2, 3).await;
    // And a subscriber that joins now gets what is published from now on.
    publish_ephemeral(&server, room, json!({"typing": "carol"})).await;
    expect_ephemeral(&mut late, room, &json!({"typing": "carol"})).await;

    // The namespace's size limit holds for ephemeral messages too.
    let (status, body) = api
        .post(
            room,
            &json!({"data": "x".repeat(100), "ephemeral": true}),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (413, &json!("too_large")),
        "{body}"
    );
    // An ephemeral message has no seq to expect.
    let (status, body) = api
        .post(
            room,
            &json!({"data": 1, "ephemeral": true, "expected_seq": 3}),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("bad_request")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rooms_without_the_option_refuse_ephemeral_and_only_rooms_store_nothing() {
    let server = Server::start(CONFIG).await;
    let api = server.api();
    let (status, body) = api
        .post("plain", &json!({"data": 1, "ephemeral": true}), None)
        .await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("ephemeral_not_allowed")),
        "{body}"
    );
    let mut ws = socket_in(&server, "plain").await;
    ws.send_json(
        json!({"type": "publish", "id": "e1", "room": "plain", "data": 1, "ephemeral": true}),
    )
    .await;
    let refused = ws.expect_type("error").await;
    assert_eq!(
        (&refused["code"], &refused["id"], &refused["room"]),
        (
            &json!("ephemeral_not_allowed"),
            &json!("e1"),
            &json!("plain")
        ),
        "{refused}"
    );
    assert_eq!(api.room("plain").await["head"], 0);

    // `ephemeral = "only"`: every publish is ephemeral, flag or not.
    let room = "cursor:doc";
    let (mut watcher, _) = Ws::room(&server, room, "").await;
    watcher.until_caught_up(room, 0).await;
    let (status, receipt) = api.post(room, &json!({"data": {"x": 1}}), None).await;
    assert_eq!(
        (status, &receipt["ephemeral"]),
        (202, &json!(true)),
        "{receipt}"
    );
    expect_ephemeral(&mut watcher, room, &json!({"x": 1})).await;
    let mut mover = socket_in(&server, room).await;
    mover
        .send_json(json!({"type": "publish", "id": "m1", "room": room, "data": {"x": 2}}))
        .await;
    expect_ephemeral(&mut watcher, room, &json!({"x": 2})).await;
    let frames = [mover.next_json().await, mover.next_json().await];
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "ack" && f["ephemeral"] == true && f.get("seq").is_none()),
        "{frames:?}"
    );
    let history = api.history(room, 0, 10).await;
    assert_eq!(
        (&history["head"], &history["events"]),
        (&json!(0), &json!([]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemeral_messages_reach_both_nodes_of_a_cluster_and_neither_log() {
    if !support::cluster_backend() {
        eprintln!("SKIPPED ephemeral::ephemeral_messages_reach_both_nodes_of_a_cluster_and_neither_log: run with HUBCAST_TEST_BACKEND=cluster");
        return;
    }
    let a = Server::start_cluster(CONFIG, &support::test_pg_url(), &support::test_nats_url()).await;
    let b = Server::start_peer(&a, CONFIG).await;
    let room = "typing:cluster";
    let (mut on_a, _) = Ws::room(&a, room, "").await;
    on_a.until_caught_up(room, 0).await;
    let (mut on_b, _) = Ws::room(&b, room, "").await;
    on_b.until_caught_up(room, 0).await;
    // A durable event first: once B's subscriber has it, B's hub follows the
    // room on the bus.
    a.api().publish(room, json!({"text": "hi"})).await;
    on_a.events_until(room, 0, 1).await;
    on_b.events_until(room, 0, 1).await;

    let batches = (store_batches(&a).await, store_batches(&b).await);
    publish_ephemeral(&a, room, json!({"typing": "from A"})).await;
    expect_ephemeral(&mut on_a, room, &json!({"typing": "from A"})).await;
    expect_ephemeral(&mut on_b, room, &json!({"typing": "from A"})).await;
    let mut typist = socket_in(&b, room).await;
    socket_ephemeral(&mut typist, room, "t1", &json!({"typing": "from B"})).await;
    expect_ephemeral(&mut on_b, room, &json!({"typing": "from B"})).await;
    expect_ephemeral(&mut on_a, room, &json!({"typing": "from B"})).await;
    assert_eq!(
        (store_batches(&a).await, store_batches(&b).await),
        batches,
        "an ephemeral publish wrote to the store"
    );

    // Both nodes see the log unchanged; the next event is seq 2 everywhere.
    for node in [&a, &b] {
        let history = node.api().history(room, 0, 10).await;
        assert_eq!(support::seqs(history["events"].as_array().unwrap()), [1]);
    }
    b.api().publish(room, json!({"text": "next"})).await;
    on_a.events_until(room, 1, 2).await;
    on_b.events_until(room, 1, 2).await;
    typist.events_until(room, 1, 2).await;
    // A resume on the other node from cursor 1 gets event 2 only.
    let (mut resumed, _) = Ws::room(&a, room, "?cursor=1").await;
    let (events, last) = resumed.until_caught_up(room, 1).await;
    assert_eq!((events.len(), last), (1, 2));

    // Refused on both nodes where not allowed.
    for node in [&a, &b] {
        let (status, body) = node
            .api()
            .post("plain", &json!({"data": 1, "ephemeral": true}), None)
            .await;
        assert_eq!(
            (status, &body["error"]),
            (403, &json!("ephemeral_not_allowed"))
        );
    }
}

/// Ephemeral messages of 64 KiB published at a subscriber that stopped
/// reading: far more than its 16-frame queue and the kernel's socket buffers hold.
const FLOOD: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_loses_ephemeral_frames_but_is_not_cut() {
    let config = format!(
        "{CONFIG}\n[[namespaces]]\nprefix = \"flood:\"\nephemeral = \"allowed\"\n\n\
         [limits]\noutbound_queue = 16\n[hub]\ntail = 8\n[heartbeat]\ninterval_ms = 60000\nstale_ms = 120000\n"
    );
    let server = Server::start(&config).await;
    let api = server.api();
    let room = "flood:1";
    let mut slow = support::RawWs::connect(server.addr(), &format!("/v1/rooms/{room}/ws")).await;
    for kind in ["welcome", "subscribed", "caught_up"] {
        assert_eq!(slow.next_json().await["type"], kind);
    }
    // From here on the slow client reads nothing.
    let pad = "x".repeat(64 * 1024);
    for i in 1..=FLOOD {
        let (status, receipt) = api
            .post(
                room,
                &json!({"data": {"i": i, "pad": pad}, "ephemeral": true}),
                None,
            )
            .await;
        assert_eq!(status, 202, "{receipt}");
    }
    support::eventually(
        "ephemeral frames to be dropped for the stopped reader",
        || {
            let api = api.clone();
            async move { (api.metric("hubcast_ephemeral_dropped_total").await > 0.0).then_some(()) }
        },
    )
    .await;
    // Not cut: still subscribed, and an event published now is queued for it.
    assert_eq!(api.room(room).await["subscribers"], 1);
    api.publish(room, json!({"after": "flood"})).await;

    // It reads again: some ephemeral messages (in order, with gaps where they
    // were dropped), then the event, and no close.
    let mut seen = Vec::new();
    loop {
        let frame = slow.next_json().await;
        match frame["type"].as_str() {
            Some("ephemeral") => seen.push(frame["data"]["i"].as_u64().expect("i")),
            Some("event") => {
                assert_eq!(
                    (&frame["seq"], &frame["data"]),
                    (&json!(1), &json!({"after": "flood"}))
                );
                break;
            }
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert!(
        (seen.len() as u64) < FLOOD,
        "nothing was dropped for the stopped reader ({} of {FLOOD})",
        seen.len()
    );
    assert_eq!(api.room(room).await["subscribers"], 1);
    assert!(
        !server.log().contains("4009"),
        "the session was cut as a slow consumer"
    );
}

/// `POST` an ephemeral publish with `Authorization: Bearer key`.
async fn ephemeral_as(server: &Server, room: &str, key: &str) -> (u16, Value) {
    let response = support::within(
        support::STEP,
        "an ephemeral publish",
        reqwest::Client::new()
            .post(format!("{}/v1/rooms/{room}/events", server.base()))
            .bearer_auth(key)
            .json(&json!({"data": {"typing": true}, "ephemeral": true}))
            .send(),
    )
    .await
    .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_publishes_need_the_publish_grant_and_count_against_the_rate() {
    const KEY: &str = "ephemeral-test-key-0123456789";
    let config = format!(
        "{CONFIG}\n[[auth.api_keys]]\nkey = \"{KEY}\"\nname = \"typist\"\nrooms = [\"typing:team-*\"]\n\n\
         [rate_limits]\npublishes_per_key_per_second = 5\n"
    );
    let server = Server::start(&config).await;
    // No credential: 401; a room outside the key's grant: 403 forbidden (the
    // grant is checked before the namespace).
    let (status, body) = server
        .api()
        .post(
            "typing:team-a",
            &json!({"data": 1, "ephemeral": true}),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("unauthenticated")),
        "{body}"
    );
    let (status, body) = ephemeral_as(&server, "typing:other", KEY).await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    // Within the grant: accepted until the key's publish rate runs out.
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let (status, body) = ephemeral_as(&server, "typing:team-a", KEY).await;
        if status == 429 {
            assert_eq!(body["error"], "rate_limited", "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses[0], 202, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "40 ephemeral publishes at once must trip 5 per second: {statuses:?}"
    );
}
