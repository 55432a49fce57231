//! The admin API, cluster-wide: a room's presence over HTTP, disconnecting a
//! user, token revocation, deleting a room's log.
//!
//! Every test runs on one node (SQLite and the memory bus) and, with
//! `HUBCAST_TEST_BACKEND=cluster`, on two nodes of one cluster (PostgreSQL +
//! NATS): the action is taken on node A and its effect checked on both.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hubcast_client::{Client, ConnectionState, RoomUpdate, SubscribeOptions};
use serde_json::{json, Value};
use support::{eventually, within, Server, Ws, STEP};

const SECRET: &str = "admin-test-secret-0123456789abcdef0123";
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
const PUBLISH_KEY: &str = "publish-key-0123456789abcdef";

/// The config of every node; revocations reload every `reload_ms`.
fn config_reloading_every(reload_ms: u64) -> String {
    format!(
        r#"
[sqlite]
synchronous = "normal"

[[auth.jwt]]
alg = "HS256"
secret = "{SECRET}"

[[auth.api_keys]]
key = "{ADMIN_KEY}"
name = "ops"
admin = true

[[auth.api_keys]]
key = "{PUBLISH_KEY}"
name = "backend"

[presence]
heartbeat_ms = 200
ttl_ms = 1000

[revocations]
reload_ms = {reload_ms}
"#
    )
}

/// Revocations reload rarely: within a test, only the bus can spread one.
fn config() -> String {
    config_reloading_every(600_000)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `sub` with every grant; `extra` claims merged in (`jti`, `iat`, `admin`).
fn token(sub: &str, extra: Value) -> String {
    let mut claims = json!({
        "sub": sub,
        "exp": now() + 3600,
        "subscribe": ["*"],
        "publish": ["*"],
        "presence": ["*"],
        "info": {"name": sub.to_uppercase()},
    });
    for (k, v) in extra.as_object().expect("extra claims").clone() {
        claims[k] = v;
    }
    hubcast_protocol::token::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("a non-empty secret"),
    )
    .expect("sign token")
}

/// Node A, and node B of the same cluster when the tests run on one.
async fn nodes() -> (Server, Option<Server>) {
    nodes_with(&config()).await
}

async fn nodes_with(config: &str) -> (Server, Option<Server>) {
    let a = Server::start(config).await;
    let b = if a.is_cluster() {
        Some(Server::start_peer(&a, config).await)
    } else {
        None
    };
    (a, b)
}

/// A, then B if there is one.
fn each<'a>(a: &'a Server, b: &'a Option<Server>) -> Vec<&'a Server> {
    std::iter::once(a).chain(b.iter()).collect()
}

/// An HTTP request with `Authorization: Bearer credential`; the status and JSON answer.
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    credential: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let api = server.api();
    let mut request = api.http.request(method, format!("{}{path}", api.base));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = within(STEP, path, request.send())
        .await
        .unwrap_or_else(|err| panic!("{path}: {err}"));
    let status = response.status().as_u16();
    let body = within(STEP, "an answer", response.json::<Value>())
        .await
        .unwrap_or_else(|err| panic!("{path}: answer is not JSON: {err}"));
    (status, body)
}

async fn admin_get(server: &Server, path: &str) -> Value {
    let (status, body) = call(server, reqwest::Method::GET, path, Some(ADMIN_KEY), None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn admin_post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    call(
        server,
        reqwest::Method::POST,
        path,
        Some(ADMIN_KEY),
        Some(body),
    )
    .await
}

async fn publish(server: &Server, room: &str, data: Value) -> Value {
    let path = format!("/v1/rooms/{room}/events");
    let (status, receipt) = call(
        server,
        reqwest::Method::POST,
        &path,
        Some(PUBLISH_KEY),
        Some(json!({ "data": data })),
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    receipt
}

async fn connect(server: &Server, token: &str) -> Ws {
    Ws::connect(&server.ws_url(&format!("/v1/ws?token={token}"))).await
}

/// Subscribes with presence and reads through the first `presence` list.
async fn enter(ws: &mut Ws, room: &str) -> Value {
    ws.subscribe(room, json!({"presence": true})).await;
    ws.expect_type("caught_up").await;
    ws.expect_type("presence").await
}

fn ids(members: &Value) -> Vec<String> {
    members
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The room's members as a socket's `presence` request answers them.
async fn socket_members(ws: &mut Ws, room: &str) -> Value {
    ws.send_json(json!({"type": "presence", "room": room}))
        .await;
    loop {
        let frame = ws.next_json().await;
        match frame["type"].as_str() {
            Some("join" | "leave") => continue,
            _ => {
                assert_eq!(frame["type"], "presence", "{frame}");
                return frame["members"].clone();
            }
        }
    }
}

/// The sum of a `/metrics` series (read with the admin key: with auth on,
/// node-wide data is for admins).
async fn metric(server: &Server, series: &str) -> f64 {
    let api = server.api();
    let request = api
        .http
        .get(format!("{}/metrics", api.base))
        .bearer_auth(ADMIN_KEY)
        .send();
    let response = within(STEP, "GET /metrics", request)
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let text = within(STEP, "the metrics", response.text())
        .await
        .expect("metrics");
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_over_http_is_what_sockets_see() {
    let (a, b) = nodes().await;
    let room = "chat:presence";
    let mut alice = connect(&a, &token("alice", json!({}))).await;
    enter(&mut alice, room).await;
    let other = b.as_ref().unwrap_or(&a);
    let mut bob = connect(other, &token("bob", json!({}))).await;
    enter(&mut bob, room).await;

    for node in each(&a, &b) {
        let path = format!("/v1/rooms/{room}/presence");
        let http = eventually("the HTTP list to have both members", || async {
            let list = admin_get(node, &path).await;
            (ids(&list["members"]) == ["alice", "bob"]).then_some(list)
        })
        .await;
        let seen = socket_members(&mut alice, room).await;
        // The same members with the same info; `since` is the HTTP list's own.
        let without_since: Vec<Value> = http["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert!(m["since"].as_i64().is_some_and(|t| t > 0), "{m}");
                json!({"id": m["id"], "info": m["info"]})
            })
            .collect();
        assert_eq!(Value::from(without_since), seen, "{http}");
        assert_eq!(http["room"], room);
    }

    // Admin access only: no credentials, a user's token, a publish key.
    let path = format!("/v1/rooms/{room}/presence");
    let get = |credential: Option<String>| {
        let path = path.clone();
        let a = &a;
        async move { call(a, reqwest::Method::GET, &path, credential.as_deref(), None).await }
    };
    assert_eq!(get(None).await.0, 401);
    let (status, body) = get(Some(token("alice", json!({})))).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    assert_eq!(get(Some(PUBLISH_KEY.to_owned())).await.0, 403);
    // A token with the admin grant may.
    let (status, body) = get(Some(token("ops-user", json!({"admin": true})))).await;
    assert_eq!(status, 200, "{body}");
    assert!(metric(&a, "hubcast_admin_actions_total{action=\"presence\"}").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnect_closes_every_session_of_the_user_for_good() {
    let (a, b) = nodes().await;
    let mut alice_sockets = Vec::new();
    for node in each(&a, &b) {
        alice_sockets.push(connect(node, &token("alice", json!({}))).await);
        alice_sockets.push(connect(node, &token("alice", json!({}))).await);
    }
    let mut bob = connect(b.as_ref().unwrap_or(&a), &token("bob", json!({}))).await;

    // The Rust SDK, connected as alice to the last node.
    let last = b.as_ref().unwrap_or(&a);
    let alice_token = token("alice", json!({}));
    let client = Client::builder(last.base())
        .token_provider(move || {
            let token = alice_token.clone();
            async move { Ok(Some(token)) }
        })
        .build()
        .expect("client");
    let mut events = client.events();
    let mut updates = client
        .subscribe(
            "chat:sdk",
            // From the start: the event below arrives however the subscribe
            // and the publish interleave.
            SubscribeOptions {
                rewind: Some(10),
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe");
    let mut state = client.watch_state();
    within(
        STEP,
        "the SDK to connect",
        state.wait_for(|s| *s == ConnectionState::Open),
    )
    .await
    .expect("state");
    // Wait until the subscription has an event, so the SDK's session is listed.
    publish(&a, "chat:sdk", json!(1)).await;
    let first = within(STEP, "the SDK's first event", updates.next()).await;
    assert!(matches!(first, Some(RoomUpdate::Event(_))), "{first:?}");
    let opened_before = metric(last, "hubcast_connections_opened_total").await;

    let (status, body) = admin_post(
        &a,
        "/v1/users/alice/disconnect",
        json!({"reason": "banned for spam"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"user": "alice", "code": 4011, "reason": "banned for spam"})
    );

    for ws in &mut alice_sockets {
        let (code, reason, _) = ws.expect_close_frame().await;
        assert_eq!((code, reason.as_str()), (4011, "banned for spam"));
    }
    // bob is untouched.
    bob.send_json(json!({"type": "ping"})).await;
    bob.expect_type("pong").await;

    // The SDK surfaces it as final: an error with the close code, state closed.
    let error = within(STEP, "the SDK's error", async {
        loop {
            match events.recv().await {
                Ok(hubcast_client::ClientEvent::Error(error)) => return error,
                Ok(_) => continue,
                Err(err) => panic!("events: {err}"),
            }
        }
    })
    .await;
    assert_eq!(
        (error.code.as_str(), error.close_code),
        ("disconnected", Some(4011))
    );
    assert!(
        error.message.contains("banned for spam"),
        "{}",
        error.message
    );
    within(
        STEP,
        "the SDK to close",
        state.wait_for(|s| *s == ConnectionState::Closed),
    )
    .await
    .expect("state");
    // It does not come back: after a round trip through the server (a
    // publish and its delivery to bob) no connection was opened.
    bob.subscribe("chat:after", json!({})).await;
    publish(&a, "chat:after", json!("later")).await;
    bob.expect_type("caught_up").await;
    bob.expect_type("event").await;
    assert_eq!(client.state(), ConnectionState::Closed);
    assert_eq!(
        metric(last, "hubcast_connections_opened_total").await,
        opened_before,
        "the SDK reconnected after a final close"
    );

    // Bad input: a code outside the application range, an oversized reason,
    // malformed JSON, and a caller without admin access.
    let (status, body) = admin_post(&a, "/v1/users/alice/disconnect", json!({"code": 1012})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let long = "x".repeat(124);
    let (status, _) = admin_post(&a, "/v1/users/alice/disconnect", json!({"reason": long})).await;
    assert_eq!(status, 400);
    let (status, body) = admin_post(&a, "/v1/users/alice/disconnect", json!({"nope": 1})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, _) = call(
        &a,
        reqwest::Method::POST,
        "/v1/users/alice/disconnect",
        Some(PUBLISH_KEY),
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert!(metric(&a, "hubcast_admin_actions_total{action=\"disconnect\"}").await >= 1.0);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_is_refused_and_its_sessions_closed_even_after_a_restart() {
    let (mut a, b) = nodes().await;
    let revoked = token("carol", json!({"jti": "carol-1"}));
    let kept = token("carol", json!({"jti": "carol-2"}));
    let mut live = Vec::new();
    for node in each(&a, &b) {
        live.push(connect(node, &revoked).await);
    }
    let mut other = connect(b.as_ref().unwrap_or(&a), &kept).await;

    let (status, body) = admin_post(&a, "/v1/revocations", json!({"jti": "carol-1"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["jti"], "carol-1");
    assert!(
        body["expires_at"].as_u64().is_some_and(|t| t > now()),
        "{body}"
    );

    // Its live sessions close with 4012 on every node; the other token's stays.
    for ws in &mut live {
        let (code, _, _) = ws.expect_close_frame().await;
        assert_eq!(code, 4012);
    }
    other.send_json(json!({"type": "ping"})).await;
    other.expect_type("pong").await;

    // Refused at connect, on every node, and over HTTP.
    for node in each(&a, &b) {
        assert_refused(node, &revoked).await;
        let (status, body) = call(
            node,
            reqwest::Method::GET,
            "/v1/rooms/x:1",
            Some(&revoked),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("token_revoked"))
        );
    }
    // … and as a refresh on a live session (`auth` message).
    other
        .send_json(json!({"type": "auth", "token": revoked}))
        .await;
    let (code, _, frames) = other.expect_close_frame().await;
    assert_eq!(code, 4012);
    assert!(
        frames.iter().any(|f| f["code"] == "token_revoked"),
        "{frames:?}"
    );

    // Every token of a user issued before a time, or without `iat`.
    let issued = now();
    let old = token("dave", json!({"iat": issued - 60}));
    let no_iat = token("dave", json!({}));
    let fresh = token("dave", json!({"iat": issued + 120}));
    let mut old_session = connect(&a, &old).await;
    let (status, body) = admin_post(
        &a,
        "/v1/revocations",
        json!({"user": "dave", "issued_before": issued}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(old_session.expect_close_frame().await.0, 4012);
    assert_refused(&a, &no_iat).await;
    connect(b.as_ref().unwrap_or(&a), &fresh).await;

    let listed = admin_get(&a, "/v1/revocations").await;
    assert_eq!(
        listed["revocations"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );

    // Bad input.
    for bad in [
        json!({}),
        json!({"user": "dave"}),
        json!({"jti": "x", "expires_at": 1}),
    ] {
        let (status, body) = admin_post(&a, "/v1/revocations", bad.clone()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_parameter")),
            "{bad}"
        );
    }

    // Durable: still refused after a restart.
    drop(b);
    a.restart().await;
    assert_refused(&a, &revoked).await;
    assert_refused(&a, &old).await;
    connect(&a, &kept).await;
}

/// The server refuses `token` at connect: an `error` `token_revoked`, then 4012.
async fn assert_refused(server: &Server, token: &str) {
    let mut ws = Ws::connect_raw(&server.ws_url(&format!("/v1/ws?token={token}"))).await;
    let (code, _, frames) = ws.expect_close_frame().await;
    assert_eq!(code, 4012, "{frames:?}");
    assert_eq!(
        frames.first().map(|f| f["code"].clone()),
        Some(json!("token_revoked")),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_the_bus_lost_is_applied_by_the_reload() {
    // Written straight into the store, as if its bus message was lost: every
    // node finds it at its next reload and closes the session.
    let (a, b) = nodes_with(&config_reloading_every(200)).await;
    let Some(b) = b else {
        eprintln!("SKIPPED admin::a_revocation_the_bus_lost_is_applied_by_the_reload: run with HUBCAST_TEST_BACKEND=cluster");
        return;
    };
    let revoked = token("erin", json!({"jti": "erin-1"}));
    let mut on_b = connect(&b, &revoked).await;
    let cluster = a.cluster().expect("cluster");
    let pg = cluster.connect().await;
    pg.execute(
        &format!(
            "INSERT INTO {}.revocations (kind, subject, expires_at, created_at) VALUES ('jti', 'erin-1', $1, 0)",
            cluster.schema
        ),
        &[&((now() + 3600) as i64)],
    )
    .await
    .expect("insert a revocation");
    assert_eq!(on_b.expect_close_frame().await.0, 4012);
    assert_refused(&a, &revoked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_room_resets_its_subscribers_into_a_new_epoch() {
    let (a, b) = nodes().await;
    let room = "feed:deleted";
    let first = publish(&a, room, json!(1)).await;
    publish(&a, room, json!(2)).await;
    let old_epoch = first["epoch"].as_str().unwrap().to_owned();

    let mut subscribers = Vec::new();
    for node in each(&a, &b) {
        let mut ws = connect(node, &token("sub", json!({}))).await;
        ws.subscribe(room, json!({"cursor": 0, "epoch": old_epoch}))
            .await;
        ws.events_until(room, 0, 2).await;
        ws.expect_type("caught_up").await;
        subscribers.push(ws);
    }
    // The Rust SDK, on the last node.
    let last = b.as_ref().unwrap_or(&a);
    let sub_token = token("sdk", json!({}));
    let client = Client::builder(last.base())
        .token_provider(move || {
            let token = sub_token.clone();
            async move { Ok(Some(token)) }
        })
        .build()
        .expect("client");
    let mut updates = client
        .subscribe(
            room,
            SubscribeOptions {
                rewind: Some(10),
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe");
    for seq in 1..=2 {
        match within(STEP, "the SDK's replay", updates.next()).await {
            Some(RoomUpdate::Event(event)) => assert_eq!(event.seq, seq),
            other => panic!("{other:?}"),
        }
    }

    let (status, body) = call(
        &a,
        reqwest::Method::DELETE,
        &format!("/v1/rooms/{room}"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let epoch = body["epoch"].as_str().expect("epoch").to_owned();
    assert_ne!(epoch, old_epoch);
    assert_eq!(body["head"], 0);

    for ws in &mut subscribers {
        let reset = ws.expect_type("reset").await;
        assert_eq!(
            reset,
            json!({"type": "reset", "room": room, "epoch": epoch, "earliest": 1, "head": 0})
        );
    }
    match within(STEP, "the SDK's reset", updates.next()).await {
        Some(RoomUpdate::Reset(reset)) => {
            assert_eq!((reset.epoch.as_str(), reset.head), (epoch.as_str(), 0))
        }
        other => panic!("{other:?}"),
    }

    // The next publish is seq 1 of the new epoch, delivered live everywhere.
    let receipt = publish(&a, room, json!("new")).await;
    assert_eq!(
        (receipt["seq"].as_u64(), receipt["epoch"].as_str()),
        (Some(1), Some(epoch.as_str()))
    );
    for ws in &mut subscribers {
        let event = ws.expect_type("event").await;
        assert_eq!(
            (event["seq"].as_u64(), &event["data"]),
            (Some(1), &json!("new"))
        );
    }
    match within(STEP, "the SDK's event", updates.next()).await {
        Some(RoomUpdate::Event(event)) => assert_eq!(event.seq, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        updates.cursor().map(|c| (c.epoch, c.seq)),
        Some((Some(epoch.clone()), 1))
    );
    let history = admin_get(&a, &format!("/v1/rooms/{room}/events?after=0")).await;
    assert_eq!(
        (history["epoch"].as_str(), history["head"].as_u64()),
        (Some(epoch.as_str()), Some(1))
    );
    assert_eq!(history["events"].as_array().map(Vec::len), Some(1));

    // A cursor into the deleted log gets `reset`.
    let mut late = connect(&a, &token("late", json!({}))).await;
    late.subscribe(room, json!({"cursor": 2, "epoch": old_epoch}))
        .await;
    assert_eq!(late.expect_type("reset").await["epoch"], epoch.as_str());

    // A room never written has nothing to delete; a publish key may not delete.
    let (status, body) = call(
        &a,
        reqwest::Method::DELETE,
        "/v1/rooms/feed:never",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = call(
        &a,
        reqwest::Method::DELETE,
        &format!("/v1/rooms/{room}"),
        Some(PUBLISH_KEY),
        None,
    )
    .await;
    assert_eq!(status, 403);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deletion_the_bus_lost_is_found_by_the_reconcile() {
    // The log deleted straight in the store, as if the notice was lost: each
    // node's hub sees the head go back at its next reconcile and resets its
    // subscribers into the new epoch. (That comparison with the store runs
    // every `full_reconcile_every` intervals on a cluster: here every one.)
    let (a, b) = nodes_with(&format!("{}\n[hub]\nfull_reconcile_every = 1\n", config())).await;
    let Some(b) = b else {
        eprintln!("SKIPPED admin::a_deletion_the_bus_lost_is_found_by_the_reconcile: run with HUBCAST_TEST_BACKEND=cluster");
        return;
    };
    let room = "feed:lost";
    for n in 1..=3 {
        publish(&a, room, json!(n)).await;
    }
    let mut ws = connect(&b, &token("sub", json!({}))).await;
    ws.subscribe(room, json!({"cursor": 0})).await;
    ws.events_until(room, 0, 3).await;
    ws.expect_type("caught_up").await;
    let cluster = a.cluster().expect("cluster");
    let pg = cluster.connect().await;
    let schema = &cluster.schema;
    pg.batch_execute(&format!(
        "BEGIN; DELETE FROM {schema}.events WHERE room = '{room}';
         UPDATE {schema}.rooms SET epoch = 'feedbeeffeedbeef', head = 0, pruned_through = 0 WHERE name = '{room}';
         COMMIT;"
    ))
    .await
    .expect("delete the log in the store");
    let reset = ws.expect_type("reset").await;
    assert_eq!(
        reset,
        json!({"type": "reset", "room": room, "epoch": "feedbeeffeedbeef", "earliest": 1, "head": 0})
    );
    publish(&a, room, json!("new")).await;
    let event = ws.expect_type("event").await;
    assert_eq!(event["seq"], 1, "{event}");
}

/// SSE streams are sessions too: a disconnect ends a user's streams on every
/// node with a `close` event (4011), and revoking a token ends the streams
/// opened with it (4012).
#[tokio::test]
async fn disconnect_and_revocation_end_sse_streams() {
    let (a, b) = nodes().await;
    let alice = token("alice", json!({}));
    let carol = token("carol", json!({"jti": "carol-sse-1", "iat": now() - 5}));
    let mut streams = Vec::new();
    for node in each(&a, &b) {
        for credential in [&alice, &carol] {
            let bearer = format!("Bearer {credential}");
            let mut stream = support::SseStream::open(
                &node.base(),
                "/v1/rooms/chat:sse/sse",
                &[("authorization", bearer.as_str())],
            )
            .await;
            stream.expect("caught_up").await;
            streams.push(stream);
        }
    }
    let (status, body) = admin_post(&a, "/v1/users/alice/disconnect", json!({})).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = admin_post(&a, "/v1/revocations", json!({"jti": "carol-sse-1"})).await;
    assert!(status == 201 || status == 200, "{status} {body}");
    for (i, stream) in streams.iter_mut().enumerate() {
        let expected = if i % 2 == 0 { 4011 } else { 4012 };
        let (_, close) = stream.expect("close").await;
        assert_eq!(close["code"], expected, "stream {i}: {close}");
        assert!(
            stream.next().await.is_none(),
            "stream {i} ends after `close`"
        );
    }
    // The revoked token opens no new stream.
    let bearer = format!("Bearer {carol}");
    let (status, body) = support::SseStream::refused(
        &a.base(),
        "/v1/rooms/chat:sse/sse",
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked")),
        "{body}"
    );
}
