//! Clients that stop keeping up: a subscriber that stops reading is cut as a
//! slow consumer (4009) without slowing anyone else, and resumes from its
//! cursor losing nothing; a client that stops answering is cut by the
//! heartbeat (4010) while responsive clients stay connected.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{eventually, range, seqs, within, Follower, Frame, RawWs, Server, Ws, FAST, PHASE};

/// Events published at the stopped reader: far more than a 16-frame queue
/// plus the kernel's socket buffers hold (about 19 MiB).
const FLOOD: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_cut_with_4009_and_resumes_without_loss() {
    let config = format!(
        "{FAST}[limits]\noutbound_queue = 16\n[hub]\ntail = 8\n[heartbeat]\ninterval_ms = 60000\nstale_ms = 120000\n"
    );
    let server = Server::start(&config).await;
    let api = server.api();
    let room = "firehose";
    // The slow client also holds a room of its own, so the test can see when
    // its session ends without counting anyone else.
    let probe = "slow-probe";

    let mut slow = RawWs::connect(server.addr(), &format!("/v1/rooms/{probe}/ws")).await;
    assert_eq!(slow.next_json().await["type"], "welcome");
    assert_eq!(slow.next_json().await["type"], "subscribed");
    assert_eq!(slow.next_json().await["type"], "caught_up");
    slow.send_text(&json!({"type": "subscribe", "room": room}).to_string())
        .await;
    let subscribed = slow.next_json().await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["room"].as_str()),
        (Some("subscribed"), Some(room)),
        "{subscribed}"
    );
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
    let caught_up = slow.next_json().await;
    assert_eq!(
        (caught_up["type"].as_str(), caught_up["seq"].as_u64()),
        (Some("caught_up"), Some(0)),
        "{caught_up}"
    );
    assert_eq!(api.room(probe).await["subscribers"], 1);
    // From here on the slow client reads nothing.

    // A healthy subscriber on the same room, reading as it should.
    let healthy = Follower::new(server.ws_url(""), room, FLOOD).spawn();
    eventually("the healthy subscriber to join", || {
        let api = api.clone();
        async move { (api.room(room).await["subscribers"] == 2).then_some(()) }
    })
    .await;

    let pad = "x".repeat(64 * 1024);
    for i in 1..=FLOOD {
        api.publish(room, json!({"i": i, "pad": pad})).await;
    }
    eventually("the slow session to be cut", || {
        let api = api.clone();
        async move { (api.room(probe).await["subscribers"] == 0).then_some(()) }
    })
    .await;

    // Now read what reached the slow client before it was cut.
    let (frames, _truncated) = slow.drain_to_end().await;
    let mut delivered = Vec::new();
    let mut close_code = None;
    for frame in &frames {
        match frame.opcode {
            Frame::TEXT => {
                let value = frame.json().expect("text frames are JSON");
                assert_eq!(
                    (value["type"].as_str(), value["room"].as_str()),
                    (Some("event"), Some(room)),
                    "unexpected frame {value}"
                );
                assert_eq!(value["data"]["i"], value["seq"], "{}", value["seq"]);
                delivered.push(value["seq"].as_u64().unwrap());
            }
            Frame::CLOSE => close_code = frame.close_code(),
            other => panic!("unexpected frame with opcode {other}"),
        }
    }
    let cursor = delivered.last().copied().unwrap_or(0);
    assert_eq!(
        delivered,
        range(1, cursor),
        "the stopped reader got a gap before it was cut"
    );
    assert!(
        cursor < FLOOD,
        "the stopped reader was never cut (it got all {FLOOD} events)"
    );
    match close_code {
        Some(code) => assert_eq!(code, 4009, "close code of the stopped reader"),
        // The close frame cannot get past a full socket; the server's own
        // record of why it closed the session must say 4009.
        None => assert!(
            server.log().contains("4009"),
            "no 4009 close for the stopped reader"
        ),
    }
    eprintln!("stopped reader cut after {cursor} of {FLOOD} events (close frame: {close_code:?})");

    // It resumes from its cursor and gets exactly the rest.
    let (mut resumed, subscribed) =
        Ws::room(&server, room, &format!("?cursor={cursor}&epoch={epoch}")).await;
    assert_eq!(subscribed["head"], FLOOD);
    let (rest, last) = resumed.until_caught_up(room, cursor).await;
    assert_eq!((seqs(&rest), last), (range(cursor + 1, FLOOD), FLOOD));
    assert!(rest.iter().all(|e| e["data"]["i"] == e["seq"]
        && e["data"]["pad"].as_str().map(str::len) == Some(pad.len())));

    let healthy = within(PHASE, "the healthy subscriber", healthy)
        .await
        .unwrap();
    assert_eq!(seqs(&healthy.events), range(1, FLOOD));
    eprintln!(
        "healthy subscriber: {} connection(s), closes {:?}",
        healthy.connections, healthy.close_codes
    );
}

const HEARTBEAT: &str =
    "[sqlite]\nsynchronous = \"normal\"\n[heartbeat]\ninterval_ms = 200\nstale_ms = 600\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_is_closed_with_4010() {
    let server = Server::start(HEARTBEAT).await;
    let room = "heartbeat";
    let mut silent = RawWs::connect(server.addr(), &format!("/v1/rooms/{room}/ws")).await;
    let welcome = silent.next_json().await;
    assert_eq!(
        (welcome["type"].as_str(), welcome["heartbeat_ms"].as_u64()),
        (Some("welcome"), Some(200)),
        "{welcome}"
    );
    assert_eq!(silent.next_json().await["type"], "subscribed");
    assert_eq!(silent.next_json().await["type"], "caught_up");

    // It sends nothing at all: no pong, no message.
    let api = server.api();
    eventually("the silent session to be closed", || {
        let api = api.clone();
        async move { (api.room(room).await["subscribers"] == 0).then_some(()) }
    })
    .await;
    let (frames, truncated) = silent.drain_to_end().await;
    assert!(!truncated);
    let close = frames.last().expect("frames before the end");
    assert_eq!(
        close.close_code(),
        Some(4010),
        "last frame: {close:?}; all: {frames:?}"
    );
    assert!(
        frames[..frames.len() - 1]
            .iter()
            .all(|f| f.opcode == Frame::PING),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responsive_clients_outlive_many_heartbeat_intervals() {
    let server = Server::start(HEARTBEAT).await;
    let room = "alive";

    // A standard client: its library answers the server's pings while it reads.
    let (mut ws, _) = Ws::room(&server, room, "").await;
    ws.until_caught_up(room, 0).await;

    // A client that never answers pings but sends its own messages.
    let mut chatty = RawWs::connect(server.addr(), &format!("/v1/rooms/{room}/ws")).await;
    for _ in 0..3 {
        chatty.next_json().await; // welcome, subscribed, caught_up
    }

    // Idle for several stale periods (the server pings every 200 ms and cuts
    // after 600 ms of silence).
    let idle = async {
        for _ in 0..15 {
            chatty.send_text(r#"{"type":"ping"}"#).await;
            assert_eq!(chatty.next_json().await["type"], "pong");
            // Read frames the standard client receives meanwhile (pings only).
            if let Some(frame) = ws.next_json_within(Duration::from_millis(100)).await {
                panic!("unexpected frame while idle: {frame}");
            }
        }
    };
    within(PHASE, "the idle period", idle).await;
    assert!(chatty.pings > 0, "the server sent no pings");

    let stats = server.api().room(room).await;
    assert_eq!(stats["subscribers"], 2, "{stats}");
    server.publish(room, json!("still here")).await;
    assert_eq!(ws.events_until(room, 0, 1).await[0]["data"], "still here");
    chatty.send_text(r#"{"type":"ping"}"#).await;
    let mut got_event = false;
    loop {
        let frame = chatty.next_json().await;
        match frame["type"].as_str() {
            Some("event") => got_event = true,
            Some("pong") => break,
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert!(got_event, "the chatty client missed the event");
}

/// A reader that keeps up only in bursts: the kernel's buffers fill, so a
/// frame is often half written when the next arrives. Frames written at once
/// by the hub, the rest of a frame written later by the writer task, and
/// pings in between must still reach the client whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_in_bursts_gets_every_frame_whole_and_in_order() {
    const EVENTS: u64 = 120;
    let config = format!(
        "{FAST}[limits]\noutbound_queue = 4096\n[heartbeat]\ninterval_ms = 100\nstale_ms = 120000\n"
    );
    let server = Server::start(&config).await;
    let api = server.api();
    let room = "bursts";
    let mut reader = RawWs::connect(server.addr(), &format!("/v1/rooms/{room}/ws")).await;
    assert_eq!(reader.next_json().await["type"], "welcome");
    assert_eq!(reader.next_json().await["type"], "subscribed");
    assert_eq!(reader.next_json().await["type"], "caught_up");

    // Small and large events alternate: a large one fills the socket, and
    // the small one behind it must wait for all of it.
    let big = "y".repeat(512 * 1024);
    let (published_tx, mut published) = tokio::sync::watch::channel(0u64);
    let publisher = {
        let (api, big) = (api.clone(), big.clone());
        tokio::spawn(async move {
            for i in 1..=EVENTS {
                let pad = if i % 2 == 0 { big.as_str() } else { "s" };
                api.publish(room, json!({"i": i, "pad": pad})).await;
                published_tx.send_replace(i);
            }
        })
    };
    let mut seen = Vec::new();
    while (seen.len() as u64) < EVENTS {
        let event = reader.next_json().await;
        assert_eq!(event["type"], "event", "{event}");
        let i = event["data"]["i"].as_u64().unwrap();
        let expected_pad = if i % 2 == 0 { big.len() } else { 1 };
        assert_eq!(event["data"]["pad"].as_str().map(str::len), Some(expected_pad));
        assert_eq!(event["seq"].as_u64(), Some(i));
        seen.push(i);
        // Stop reading now and then until the server is 40 events (~10 MiB)
        // ahead: the socket's buffers fill and frames wait half written.
        if i % 10 == 0 {
            let ahead = (i + 40).min(EVENTS);
            within(PHASE, "the publisher to get ahead", published.wait_for(|&n| n >= ahead))
                .await
                .unwrap();
        }
    }
    assert_eq!(seen, range(1, EVENTS));
    within(PHASE, "the publisher", publisher).await.unwrap();
    eprintln!("pings read between events: {}", reader.pings);
}
