//! Bad input gets an `error` frame, a close with the right code, or a JSON
//! HTTP error — and never disturbs another session: a watcher on the same room
//! receives every event, exactly, throughout.

mod support;

use serde_json::{json, Value};
use support::{range, seqs, within, Server, Ws, FAST, PHASE};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = "[sqlite]\nsynchronous = \"normal\"\n[limits]\nmax_event_bytes = 4096\n";

/// Sends `text` and expects an `error` frame with `code` (and `id`, if given).
async fn expect_error(ws: &mut Ws, text: &str, code: &str, id: Option<&str>) -> Value {
    ws.send_text(text).await;
    let error = ws.expect_type("error").await;
    assert_eq!(error["code"], code, "answer to {text}: {error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
    assert_eq!(error["id"].as_str(), id, "answer to {text}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_without_disturbing_other_sessions() {
    let server = Server::start(CONFIG).await;
    let api = server.api();
    let room = "victim";
    let (mut watcher, _) = Ws::room(&server, room, "").await;
    watcher.until_caught_up(room, 0).await;

    // Events keep flowing while the bad clients do their worst.
    let publisher = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 1..=150 {
                api.publish(room, json!({"i": i})).await;
                tokio::task::yield_now().await;
            }
        })
    };

    // Error frames on a session that survives them.
    let mut bad = Ws::connect(&server.ws_url("/v1/ws")).await;
    expect_error(&mut bad, "not json", "invalid_json", None).await;
    expect_error(
        &mut bad,
        r#"{"type":"subscribe","room":"#,
        "invalid_json",
        None,
    )
    .await;
    expect_error(&mut bad, "[1,2,3]", "bad_request", None).await;
    expect_error(
        &mut bad,
        r#"{"type":"dance","id":"d1"}"#,
        "unknown_type",
        Some("d1"),
    )
    .await;
    expect_error(&mut bad, r#"{"room":"victim"}"#, "bad_request", None).await;
    expect_error(&mut bad, r#"{"type":"subscribe"}"#, "bad_request", None).await;
    expect_error(
        &mut bad,
        r#"{"type":"subscribe","room":"victim","cursor":"3"}"#,
        "bad_request",
        None,
    )
    .await;
    expect_error(
        &mut bad,
        r#"{"type":"subscribe","room":"bad room"}"#,
        "invalid_room",
        None,
    )
    .await;
    expect_error(
        &mut bad,
        &format!(r#"{{"type":"subscribe","room":"{}"}}"#, "r".repeat(129)),
        "invalid_room",
        None,
    )
    .await;
    expect_error(
        &mut bad,
        r#"{"type":"publish","room":"victim","data":1}"#,
        "bad_request",
        None,
    )
    .await;
    expect_error(
        &mut bad,
        r#"{"type":"publish","id":"p1","room":"victim"}"#,
        "bad_request",
        Some("p1"),
    )
    .await;
    expect_error(
        &mut bad,
        r#"{"type":"publish","id":"p2","room":"no/slash","data":1}"#,
        "invalid_room",
        Some("p2"),
    )
    .await;
    expect_error(
        &mut bad,
        r#"{"type":"unsubscribe","room":"victim"}"#,
        "not_subscribed",
        None,
    )
    .await;
    let big = format!(
        r#"{{"type":"publish","id":"p3","room":"victim","data":"{}"}}"#,
        "x".repeat(5000)
    );
    let too_large = expect_error(&mut bad, &big, "too_large", Some("p3")).await;
    assert_eq!(too_large["room"], room, "{too_large}");
    bad.send_json(json!({"type": "ping"})).await;
    bad.expect_type("pong").await;

    // A binary frame closes with 1008.
    let mut binary = Ws::connect(&server.ws_url("/v1/ws")).await;
    binary.send(Message::binary(vec![0u8, 1, 2, 3])).await;
    assert_eq!(binary.expect_close().await, 1008);

    // A frame over the limit (event limit + framing overhead) closes with 1009.
    let mut huge = Ws::connect(&server.room_ws_url(room, "")).await;
    huge.send_text(&format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "y".repeat(64 * 1024)
    ))
    .await;
    assert_eq!(huge.expect_close().await, 1009);

    // HTTP refusals are JSON `{error, message}`.
    let check = |(status, body): (u16, Value), want_status: u16, want_code: &str| {
        assert_eq!(
            (status, body["error"].as_str()),
            (want_status, Some(want_code)),
            "{body}"
        );
        assert!(body["message"].is_string(), "{body}");
    };
    check(
        api.post_bytes(room, b"{not json".to_vec()).await,
        400,
        "invalid_json",
    );
    check(
        api.post_bytes(room, b"{\"dat\": 1}".to_vec()).await,
        400,
        "bad_request",
    );
    check(
        api.post_bytes(room, b"{\"data\": 1, \"expected_seq\": -1}".to_vec())
            .await,
        400,
        "bad_request",
    );
    check(
        api.post_bytes("bad*room", b"{\"data\": 1}".to_vec()).await,
        400,
        "invalid_room",
    );
    check(
        api.post_bytes(
            room,
            format!(r#"{{"data":"{}"}}"#, "z".repeat(5000)).into_bytes(),
        )
        .await,
        413,
        "too_large",
    );
    check(
        api.post_bytes(
            room,
            format!(r#"{{"data":"{}"}}"#, "z".repeat(200 * 1024)).into_bytes(),
        )
        .await,
        413,
        "too_large",
    );
    check(
        api.get(&format!("/v1/rooms/{room}/events?after=abc")).await,
        400,
        "invalid_parameter",
    );
    check(api.get("/v1/rooms/bad*room").await, 400, "invalid_room");
    check(api.get("/v1/nowhere").await, 404, "not_found");

    within(PHASE, "the publisher", publisher).await.unwrap();
    // The watcher got every event, exactly once, in order; none of the refused
    // publishes was appended.
    let events = watcher.events_until(room, 0, 150).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e["data"]["i"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        range(1, 150)
    );
    assert_eq!(api.room(room).await["head"], 150);
    assert_eq!(seqs(&api.all_events(room).await), range(1, 150));
    // And the misbehaving-but-open session still works.
    bad.send_json(json!({"type": "subscribe", "room": room, "cursor": 148}))
        .await;
    bad.expect_type("subscribed").await;
    let (events, _) = bad.until_caught_up(room, 148).await;
    assert_eq!(seqs(&events), [149, 150]);
}

/// Attempts an upgrade that must be refused; returns the status and JSON body.
async fn refused_upgrade(url: &str) -> (u16, Value) {
    use tokio_tungstenite::tungstenite::Error;
    match within(
        support::STEP,
        "a refused upgrade",
        tokio_tungstenite::connect_async(url),
    )
    .await
    {
        Err(Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            let body = serde_json::from_slice(body).unwrap_or_else(|_| {
                panic!(
                    "refusal of {url} is not JSON: {:?}",
                    String::from_utf8_lossy(body)
                )
            });
            (status, body)
        }
        Err(err) => panic!("upgrade to {url} failed without an HTTP answer: {err}"),
        Ok(_) => panic!("upgrade to {url} must be refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrades_are_refused_with_json_errors() {
    let server = Server::start(FAST).await;
    let (status, body) = refused_upgrade(&server.room_ws_url("bad*room", "")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_room")),
        "{body}"
    );
    let (status, body) = refused_upgrade(&server.room_ws_url("ok", "?cursor=-1")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_parameter")),
        "{body}"
    );
    let (status, body) = refused_upgrade(&server.room_ws_url("ok", "?rewind=lots")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_parameter")),
        "{body}"
    );
    let (status, body) = refused_upgrade(&server.ws_url("/v1/nowhere/ws")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    // The node is fine.
    let (status, _) = server.api().get("/healthz").await;
    assert_eq!(status, 200);
    let (ws, _) = Ws::room(&server, "ok", "?cursor=0").await;
    ws.close().await;
}

/// Regression: the close frame of a refused oversized frame must reach the
/// client even while events are flowing to it. (The server drops the socket
/// with the rest of the oversized frame unread, which sends a TCP reset; a
/// close frame still waiting in the kernel's send queue — as Nagle's
/// algorithm holds small writes while earlier event frames are unacknowledged
/// — was discarded with it, and the client saw "connection reset" instead of
/// the terminal 1009.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_closed_with_1009_while_events_flow() {
    let server = Server::start(CONFIG).await;
    let room = "busy";
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let (api, stop) = (server.api(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    api.publish(room, json!({"tick": true})).await;
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for _ in 0..30 {
        let (mut ws, _) = Ws::room(&server, room, "").await;
        ws.send_text(&format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "y".repeat(64 * 1024)
        ))
        .await;
        let (code, frames) = ws.close_after_frames().await;
        if code != Some(1009) {
            codes.push(format!("{code:?} after {:?}", frames.last()));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for publisher in publishers {
        within(PHASE, "the publishers", publisher).await.unwrap();
    }
    assert!(
        codes.is_empty(),
        "{} of 30 oversized frames did not get close 1009: {codes:?}",
        codes.len()
    );
}

/// Regression: a body over the limit is refused with 413 before it is read,
/// so the server closes that connection; it must say so (`Connection: close`)
/// or a keep-alive client reuses the dead connection and its next request —
/// often a publish it then cannot know the fate of — fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_for_an_oversized_body_does_not_break_the_next_request() {
    let server = Server::start(CONFIG).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = format!("{}/v1/rooms/big/events", server.base());
    let oversized = format!(r#"{{"data":"{}"}}"#, "z".repeat(200 * 1024));
    let mut failures = Vec::new();
    for i in 0..20 {
        let response = within(
            support::STEP,
            "an oversized POST",
            http.post(&url)
                .header("content-type", "application/json")
                .body(oversized.clone())
                .send(),
        )
        .await
        .expect("oversized POST answered");
        assert_eq!(response.status(), 413);
        assert_eq!(
            response
                .headers()
                .get("connection")
                .and_then(|v| v.to_str().ok()),
            Some("close"),
            "413 must close the connection explicitly"
        );
        let body: Value = within(support::STEP, "the 413 body", response.json())
            .await
            .expect("413 body is JSON");
        assert_eq!(body["error"], "too_large", "{body}");
        match within(
            support::STEP,
            "the next POST",
            http.post(&url).json(&json!({"data": i})).send(),
        )
        .await
        {
            Ok(response) => assert_eq!(response.status(), 201),
            Err(err) => failures.push(support::chain(&err)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} requests after a 413 failed: {:?}",
        failures.len(),
        failures.first()
    );
}
