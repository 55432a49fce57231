//! Server-Sent Events (`/v1/rooms/{room}/sse`, `/v1/sse?room=…`): the same
//! ordering, replay and resume guarantees as WebSockets, with the stream id
//! (`Last-Event-ID`) carrying every room's cursor; refusals as HTTP errors
//! with JSON; heartbeats; the `close` event; the Rust SDK's SSE subscriber
//! across a `kill -9`.

mod support;

use serde_json::{json, Value};
use support::{eventually, range, room_seqs, within, Server, SseStream, FAST, PHASE};

const SECRET: &str = "sse-test-secret-of-at-least-32-bytes!";

fn token(subscribe: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": "u", "exp": exp, "subscribe": subscribe});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs".into());
    hubcast_protocol::token::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("a non-empty secret"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_room_stream_resumes_every_room_from_its_last_event_id() {
    let server = Server::start(FAST).await;
    let api = server.api();
    api.publish_many("sse-a", 5, 1, |i| json!({"a": i})).await;
    api.publish_many("sse-b", 3, 1, |i| json!({"b": i})).await;

    let mut stream = SseStream::open(
        &server.base(),
        "/v1/sse?room=sse-a&room=sse-b&cursor=0",
        &[],
    )
    .await;
    let events = stream.events_until(&[("sse-a", 5), ("sse-b", 3)]).await;
    assert_eq!(room_seqs(&events, "sse-a"), range(1, 5));
    assert_eq!(room_seqs(&events, "sse-b"), range(1, 3));
    // The data is the WebSocket `event` object, unchanged.
    let history = api.all_events("sse-a").await;
    let first_a = events.iter().find(|e| e["room"] == "sse-a").unwrap();
    assert_eq!(first_a["type"], "event");
    assert_eq!(
        (&first_a["data"], &first_a["ts"]),
        (&history[0]["data"], &history[0]["ts"])
    );
    let id = stream.last_id();
    drop(stream);

    api.publish_many("sse-a", 3, 1, |i| json!({"a": 5 + i}))
        .await;
    api.publish_many("sse-b", 2, 1, |i| json!({"b": 3 + i}))
        .await;
    // The header wins over the URL's cursor=0: exactly what was missed.
    let mut resumed = SseStream::open(
        &server.base(),
        "/v1/sse?room=sse-a&room=sse-b&cursor=0",
        &[("Last-Event-ID", &id)],
    )
    .await;
    let events = resumed.events_until(&[("sse-a", 8), ("sse-b", 5)]).await;
    assert_eq!(
        room_seqs(&events, "sse-a"),
        range(6, 8),
        "resumed from {id}"
    );
    assert_eq!(
        room_seqs(&events, "sse-b"),
        range(4, 5),
        "resumed from {id}"
    );

    // The same with the query parameter, for clients that cannot set headers.
    let path = format!(
        "/v1/sse?room=sse-a&room=sse-b&lastEventId={}",
        hubcast_client::urls::encode_component(&id)
    );
    let mut by_query = SseStream::open(&server.base(), &path, &[]).await;
    let events = by_query.events_until(&[("sse-a", 8), ("sse-b", 5)]).await;
    assert_eq!(room_seqs(&events, "sse-a"), range(6, 8));
    assert_eq!(room_seqs(&events, "sse-b"), range(4, 5));

    // Live events follow the replay on the same stream, with no gap.
    api.publish("sse-b", json!("live")).await;
    let events = by_query.events_until(&[("sse-b", 6)]).await;
    assert_eq!(room_seqs(&events, "sse-b"), [6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_another_epoch_gets_a_reset_event_then_live() {
    let server = Server::start(FAST).await;
    let api = server.api();
    api.publish_many("sse-reset", 4, 1, |i| json!(i)).await;
    let mut stream = SseStream::open(
        &server.base(),
        "/v1/rooms/sse-reset/sse?cursor=2&epoch=not-this-one",
        &[],
    )
    .await;
    let (_, subscribed) = stream.expect("subscribed").await;
    let (reset_event, reset) = stream.expect("reset").await;
    assert_eq!(reset["epoch"], subscribed["epoch"]);
    assert_eq!(reset["earliest"], 1);
    let (caught_up_event, caught_up) = stream.expect("caught_up").await;
    assert_eq!(caught_up["seq"], 4);
    assert_ne!(
        caught_up_event.id, reset_event.id,
        "caught_up moves the id to the head"
    );
    assert_eq!(
        caught_up_event.id,
        format!("{}/4", subscribed["epoch"].as_str().unwrap())
    );
    api.publish("sse-reset", json!("after")).await;
    let events = stream.events_until(&[("sse-reset", 5)]).await;
    assert_eq!(room_seqs(&events, "sse-reset"), [5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_zero_means_from_the_start_of_retention() {
    let server = Server::start(&format!(
        "{FAST}[retention]\nmax_events = 3\ninterval_ms = 50\n"
    ))
    .await;
    let api = server.api();
    api.publish_many("sse-pruned", 10, 1, |i| json!(i)).await;
    eventually("retention to prune the room", || async {
        (api.room("sse-pruned").await["earliest"] == 8).then_some(())
    })
    .await;
    let mut stream =
        SseStream::open(&server.base(), "/v1/rooms/sse-pruned/sse?cursor=0", &[]).await;
    let events = stream.events_until(&[("sse-pruned", 10)]).await;
    assert_eq!(room_seqs(&events, "sse-pruned"), range(8, 10));
}

/// A request that must be refused: path, headers, status, error code.
type Refusal<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_http_errors_with_json_bodies() {
    let config = format!(
        "{FAST}[auth]\nallowed_origins = [\"https://app.example\"]\n[[auth.jwt]]\nkid = \"hs\"\nalg = \"HS256\"\nsecret = \"{SECRET}\"\n[sse]\nmax_rooms = 2\n"
    );
    let server = Server::start(&config).await;
    let base = server.base();
    let allowed = token(&["ok:*"]);
    let bearer = format!("Bearer {allowed}");
    let cases: Vec<Refusal> = vec![
        ("/v1/rooms/ok:1/sse".into(), vec![], 401, "unauthenticated"),
        (
            "/v1/rooms/ok:1/sse?token=garbage".into(),
            vec![],
            401,
            "unauthenticated",
        ),
        (
            "/v1/rooms/no:1/sse".into(),
            vec![("authorization", &bearer)],
            403,
            "forbidden",
        ),
        (
            format!("/v1/sse?room=ok:1&room=no:1&token={allowed}"),
            vec![],
            403,
            "forbidden",
        ),
        (
            "/v1/rooms/ok:1/sse".into(),
            vec![
                ("authorization", &bearer),
                ("origin", "https://evil.example"),
            ],
            403,
            "forbidden",
        ),
        (
            "/v1/sse".into(),
            vec![("authorization", &bearer)],
            400,
            "invalid_parameter",
        ),
        (
            "/v1/sse?room=ok:1&room=ok:1".into(),
            vec![("authorization", &bearer)],
            400,
            "invalid_parameter",
        ),
        (
            "/v1/sse?room=ok:1&room=ok:2&room=ok:3".into(),
            vec![("authorization", &bearer)],
            400,
            "too_many_subscriptions",
        ),
        (
            "/v1/rooms/ok:1/sse?cursor=-1".into(),
            vec![("authorization", &bearer)],
            400,
            "invalid_parameter",
        ),
        (
            "/v1/rooms/ok:1/sse?what=1".into(),
            vec![("authorization", &bearer)],
            400,
            "invalid_parameter",
        ),
        (
            "/v1/rooms/ok:1/sse".into(),
            vec![("authorization", &bearer), ("last-event-id", "e/1,2")],
            400,
            "invalid_parameter",
        ),
        (
            "/v1/rooms/bad%20room/sse".into(),
            vec![("authorization", &bearer)],
            400,
            "invalid_room",
        ),
    ];
    for (path, headers, status, code) in cases {
        let (got, body) = SseStream::refused(&base, &path, &headers).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{path} {headers:?}: {body}"
        );
    }
    // The allowed ones stream, by header, by ?token=, and from the allowed origin.
    for (path, headers) in [
        (
            "/v1/rooms/ok:1/sse".to_string(),
            vec![("authorization", bearer.as_str())],
        ),
        (
            format!("/v1/sse?room=ok:1&room=ok:2&token={allowed}"),
            vec![("origin", "https://app.example")],
        ),
    ] {
        let mut stream = SseStream::open(&base, &path, &headers).await;
        stream.expect("caught_up").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_metrics_and_the_close_event_on_shutdown() {
    let mut server = Server::start(&format!(
        "{FAST}[sse]\nheartbeat_ms = 100\nretry_ms = 750\n"
    ))
    .await;
    let api = server.api();
    let mut stream = SseStream::open(&server.base(), "/v1/rooms/sse-beat/sse", &[]).await;
    stream.expect("caught_up").await;
    eventually("an SSE stream counted by transport", || async {
        (api.metric("hubcast_sse_connections").await == 1.0).then_some(())
    })
    .await;
    // Comments keep an idle stream alive; they are not events.
    within(PHASE, "two heartbeat comments", async {
        while stream.comments < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let next =
                tokio::time::timeout(std::time::Duration::from_millis(500), stream.next()).await;
            if let Ok(event) = next {
                assert!(event.is_some(), "the stream ended");
            }
        }
    })
    .await;

    server.sigterm();
    let (_, close) = stream.expect("close").await;
    assert_eq!(close["code"], 1012, "{close}");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after `close`"
    );
    server.wait_exit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_is_not_read_is_cut_and_resumes_exactly() {
    let server = Server::start(&format!(
        "{FAST}[limits]\noutbound_queue = 16\n[hub]\ntail = 8\n"
    ))
    .await;
    let api = server.api();
    let mut stream = SseStream::open(&server.base(), "/v1/rooms/sse-slow/sse?cursor=0", &[]).await;
    stream.expect("caught_up").await;
    let id = stream.last_id();
    // Not read while far more than the socket buffers and the queue hold arrives.
    let big = "x".repeat(16 * 1024);
    api.publish_many("sse-slow", 400, 4, move |i| json!({"i": i, "pad": big}))
        .await;
    eventually("the unread stream to be cut as a slow consumer", || async {
        (api.metric("hubcast_connections_closed_total{reason=\"slow_consumer\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    // Whatever it read before the cut, a resume from its id gets all of it.
    let mut seen: Vec<u64> = Vec::new();
    let mut last = id;
    while let Some(event) = stream.next().await {
        if event.event == "message" {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            seen.push(data["seq"].as_u64().unwrap());
            last = event.id;
        }
    }
    let mut resumed = SseStream::open(
        &server.base(),
        "/v1/rooms/sse-slow/sse",
        &[("last-event-id", &last)],
    )
    .await;
    let events = resumed.events_until(&[("sse-slow", 400)]).await;
    seen.extend(room_seqs(&events, "sse-slow"));
    assert_eq!(seen, range(1, 400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_subscriber_resumes_across_a_kill_9() {
    use hubcast_client::sse::{SseItem, SseSubscriber};
    use hubcast_protocol::ServerFrame;

    let mut server = Server::start(FAST).await;
    server
        .api()
        .publish_many("sse-sdk", 20, 1, |i| json!(i))
        .await;
    let mut subscriber = SseSubscriber::new(&server.base(), &["sse-sdk"], "cursor=0").unwrap();
    let mut seqs: Vec<u64> = Vec::new();
    let mut reconnects = 0;
    within(PHASE, "the SDK to read 1..40 across a restart", async {
        while seqs.last() != Some(&40) {
            match subscriber.next().await.expect("no terminal error") {
                SseItem::Frame(ServerFrame::Event(event)) => {
                    seqs.push(event.seq);
                    if event.seq == 20 {
                        server.kill9().await;
                        server.restart_on_same_port().await;
                        server
                            .api()
                            .publish_many("sse-sdk", 20, 1, |i| json!(20 + i))
                            .await;
                    }
                }
                SseItem::Reconnecting { .. } => reconnects += 1,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(seqs, range(1, 40));
    assert!(reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cookie_authenticates_streams_only_with_cors_credentials() {
    let config = format!(
        "{FAST}[auth]\ntoken_cookie = \"hc_token\"\nallowed_origins = [\"https://app.example\"]\n[[auth.jwt]]\nkid = \"hs\"\nalg = \"HS256\"\nsecret = \"{SECRET}\"\n"
    );
    let server = Server::start(&config).await;
    let base = server.base();
    let allowed = token(&["ok:*"]);
    let cookie = format!("theme=dark; hc_token={allowed}; other=1");

    // The cookie is a credential on the stream, as for a same-origin EventSource …
    let mut stream = SseStream::open(&base, "/v1/rooms/ok:c/sse", &[("cookie", &cookie)]).await;
    stream.expect("caught_up").await;
    // … checked like any other: a bad one is refused, another cookie is not read.
    let (status, body) = SseStream::refused(
        &base,
        "/v1/rooms/ok:c/sse",
        &[("cookie", "hc_token=garbage")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = SseStream::refused(
        &base,
        "/v1/rooms/ok:c/sse",
        &[("cookie", &format!("other={allowed}"))],
    )
    .await;
    assert_eq!(status, 401);

    // A cross-origin page of an allowed origin may send it (withCredentials).
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .get(format!("{base}/v1/rooms/ok:c/sse"))
        .header("cookie", &cookie)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    drop(response);

    // Publishing never reads the cookie: a forged cross-site POST changes nothing.
    let response = http
        .post(format!("{base}/v1/rooms/ok:c/events"))
        .header("cookie", &cookie)
        .json(&json!({"data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_frames_become_one_message_per_event_with_exact_ids() {
    // A window that never ends: live events go out only as full batches of 8.
    let config =
        format!("{FAST}[[namespaces]]\nprefix = \"full:\"\nbatch_ms = 600000\nbatch_max = 8\n");
    let server = Server::start(&config).await;
    let api = server.api();
    let mut stream = SseStream::open(&server.base(), "/v1/rooms/full:sse/sse", &[]).await;
    stream.expect("caught_up").await;
    for i in 0..16 {
        api.publish("full:sse", json!({"i": i})).await;
    }
    let mut seqs = Vec::new();
    let mut ids = Vec::new();
    while seqs.len() < 16 {
        let event = stream.next().await.expect("the stream ended early");
        if event.event == "message" {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(data["type"], "event", "{data}");
            assert_eq!(
                data["data"]["i"].as_u64().unwrap() + 1,
                data["seq"].as_u64().unwrap()
            );
            seqs.push(data["seq"].as_u64().unwrap());
            ids.push(event.id);
        }
    }
    assert_eq!(seqs, range(1, 16));
    let epoch = api.room("full:sse").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ids[4], format!("{epoch}/5"));
    // A resume from inside a batch gets exactly the rest.
    let mut resumed = SseStream::open(
        &server.base(),
        "/v1/rooms/full:sse/sse",
        &[("last-event-id", &ids[4])],
    )
    .await;
    let events = resumed.events_until(&[("full:sse", 16)]).await;
    assert_eq!(room_seqs(&events, "full:sse"), range(6, 16));
}
