//! The application's backend in the loop, black-box against the real binary:
//! `[auth.connect_hook]`, `[auth.subscribe_hook]` and `[auth.publish_hook]`
//! called on a real HTTP application (an axum server in this test) that
//! authenticates by cookie, the way an application with its own login does.
//!
//! Runs on SQLite, and on PostgreSQL + NATS with `HUBCAST_TEST_BACKEND=cluster`.
//! No test asserts a duration: the slow hook only has to be slower than its
//! timeout, and waits are bounded polls.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use support::{eventually, within, Server, Ws, STEP};

const ADMIN_KEY: &str = "admin-key-0123456789abcdef";

// ---------------------------------------------------------------------------
// The test application
// ---------------------------------------------------------------------------

/// How the application's connect endpoint behaves right now.
const CONNECT_BY_COOKIE: u8 = 0;
/// Answers long after any hook timeout of these tests.
const CONNECT_HANGS: u8 = 1;
/// Answers 500.
const CONNECT_FAILS: u8 = 2;
/// Answers 200 with a grant that is not a room pattern.
const CONNECT_INVALID: u8 = 3;

/// What the application saw and how it answers.
#[derive(Default)]
struct App {
    connect_mode: AtomicU8,
    connect_calls: AtomicU64,
    subscribe_calls: AtomicU64,
    publish_calls: AtomicU64,
    /// Every request body, by hook.
    connect_requests: Mutex<Vec<Value>>,
    subscribe_requests: Mutex<Vec<Value>>,
    publish_requests: Mutex<Vec<Value>>,
    /// When set, the subscribe endpoint answers 503.
    subscribe_fails: std::sync::atomic::AtomicBool,
    /// When set, the publish endpoint answers 500.
    publish_fails: std::sync::atomic::AtomicBool,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The application's sessions: cookie value → user and grants.
fn session_for(cookie: &str) -> Option<Result<Value, StatusCode>> {
    let session = cookie
        .split(';')
        .map(str::trim)
        .find_map(|pair| pair.strip_prefix("session="))?;
    Some(match session {
        "alice-secret" => Ok(json!({
            "user": "alice",
            "info": {"name": "Alice"},
            "grants": {"subscribe": ["chat:*", "news:*"], "publish": ["chat:*"], "presence": ["chat:*"]}
        })),
        "bob-secret" => Ok(json!({
            "user": "bob",
            "grants": {"subscribe": ["chat:*"]}
        })),
        "carol-expired" => Ok(json!({
            "user": "carol",
            "grants": {"subscribe": ["*"]},
            "expires_at": 1_000_000_000u64
        })),
        "dave-brief" => Ok(json!({
            "user": "dave",
            "grants": {"subscribe": ["chat:*"]},
            "expires_at": now_secs() + 2
        })),
        "mallory-banned" => Err(StatusCode::FORBIDDEN),
        _ => Err(StatusCode::UNAUTHORIZED),
    })
}

async fn connect(State(app): State<Arc<App>>, Json(body): Json<Value>) -> Response {
    app.connect_calls.fetch_add(1, Ordering::SeqCst);
    app.connect_requests.lock().unwrap().push(body.clone());
    match app.connect_mode.load(Ordering::SeqCst) {
        CONNECT_HANGS => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Json(json!({"user": "late", "grants": {}})).into_response();
        }
        CONNECT_FAILS => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "database down").into_response()
        }
        CONNECT_INVALID => {
            return Json(json!({"user": "eve", "grants": {"subscribe": ["rooms/with/slashes"]}}))
                .into_response()
        }
        _ => {}
    }
    // A browser sends its cookie; other clients (the Rust SDK here) send the
    // application's opaque session token as `?token=`.
    let cookie = body["headers"]["cookie"].as_str().unwrap_or("");
    let token = body["query"]
        .as_str()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(|token| format!("session={token}"));
    match session_for(token.as_deref().unwrap_or(cookie)) {
        Some(Ok(answer)) => Json(answer).into_response(),
        Some(Err(status)) => status.into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn subscribe(State(app): State<Arc<App>>, Json(body): Json<Value>) -> Response {
    app.subscribe_calls.fetch_add(1, Ordering::SeqCst);
    app.subscribe_requests.lock().unwrap().push(body.clone());
    if app.subscribe_fails.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match body["room"].as_str() {
        Some("chat:secret") => StatusCode::FORBIDDEN.into_response(),
        _ => Json(json!({})).into_response(),
    }
}

/// Denies `chat:quiet`; a `{"text": …}` message is rewritten (uppercased and
/// signed with the user); anything else passes unchanged.
async fn publish(State(app): State<Arc<App>>, Json(body): Json<Value>) -> Response {
    app.publish_calls.fetch_add(1, Ordering::SeqCst);
    app.publish_requests.lock().unwrap().push(body.clone());
    if app.publish_fails.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if body["room"] == "chat:quiet" {
        return StatusCode::FORBIDDEN.into_response();
    }
    match body["data"]["text"].as_str() {
        Some(text) => Json(json!({
            "data": {"text": text.to_uppercase(), "by": body["user"]}
        }))
        .into_response(),
        None => Json(json!({})).into_response(),
    }
}

/// Starts the application on a port of its own; its base URL.
async fn start_app(app: Arc<App>) -> String {
    let router = Router::new()
        .route("/connect", post(connect))
        .route("/subscribe", post(subscribe))
        .route("/publish", post(publish))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the test application");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("test application");
    });
    format!("http://{addr}")
}

/// A hubcast config with an admin key (for HTTP publishes and `/metrics`)
/// and the given hook sections.
fn config(hooks: &str) -> String {
    format!(
        "[sqlite]\nsynchronous = \"normal\"\n\n[auth]\nallowed_origins = [\"https://app.example\"]\n\n[[auth.api_keys]]\nkey = \"{ADMIN_KEY}\"\nadmin = true\nname = \"backend\"\n\n{hooks}"
    )
}

fn cookie(value: &str) -> String {
    format!("theme=dark; session={value}")
}

/// Opens `/v1/ws` with a cookie and reads `welcome`.
async fn connect_as(server: &Server, session: &str) -> Ws {
    let mut ws = Ws::upgrade(&server.ws_url("/v1/ws"), &[("Cookie", &cookie(session))])
        .await
        .unwrap_or_else(|(status, body)| panic!("upgrade refused {status}: {body}"));
    let welcome = ws.next_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws.welcome = welcome;
    ws
}

/// Opens `url` with `headers` and expects the session to be refused: an
/// `error` frame with `code`, then a close with `close`.
async fn refused(url: &str, headers: &[(&str, &str)], code: &str, close: u16) {
    refused_after(url, headers, code, close, false).await
}

/// Like [`refused`] for a session that is admitted (`welcome`) and then
/// closed because its room URL's subscription is refused.
async fn room_refused(url: &str, headers: &[(&str, &str)], code: &str, close: u16) {
    refused_after(url, headers, code, close, true).await
}

async fn refused_after(
    url: &str,
    headers: &[(&str, &str)],
    code: &str,
    close: u16,
    welcomed: bool,
) {
    let mut ws = Ws::upgrade(url, headers)
        .await
        .unwrap_or_else(|(status, body)| panic!("upgrade refused {status}: {body}"));
    let (closed, frames) = ws.close_after_frames().await;
    assert_eq!(closed, Some(close), "{url} {headers:?}: {frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "error" && f["code"] == code),
        "expected an error {code} before close {close}: {frames:?}"
    );
    assert_eq!(
        frames.iter().any(|f| f["type"] == "welcome"),
        welcomed,
        "welcomed before the refusal? {frames:?}"
    );
}

/// Sends `subscribe` and returns the answer (`subscribed` or `error`); after
/// `subscribed`, reads through its `caught_up`.
async fn try_subscribe(ws: &mut Ws, room: &str) -> Value {
    ws.send_json(json!({"type": "subscribe", "room": room}))
        .await;
    let answer = ws.next_json().await;
    if answer["type"] == "subscribed" {
        let caught_up = ws.expect_type("caught_up").await;
        assert_eq!(caught_up["room"], room, "{caught_up}");
    }
    answer
}

/// Sends a socket `publish` and returns its answer (`ack` or `error` with
/// its id); the session's own events in between are skipped.
async fn try_publish(ws: &mut Ws, id: &str, room: &str, data: Value) -> Value {
    ws.send_json(json!({"type": "publish", "id": id, "room": room, "data": data}))
        .await;
    loop {
        let frame = ws.next_json().await;
        if frame["id"] == id {
            return frame;
        }
        assert_eq!(frame["type"], "event", "{frame}");
    }
}

/// The sum of the `/metrics` lines starting with `series` (read with the admin key).
async fn metric(server: &Server, series: &str) -> f64 {
    let text = within(STEP, "GET /metrics", async {
        server
            .api()
            .http
            .get(format!("{}/metrics", server.base()))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await?
            .text()
            .await
    })
    .await
    .expect("GET /metrics");
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Publishes over HTTP with the admin key; the receipt.
async fn http_publish(server: &Server, room: &str, data: Value) -> Value {
    let response = within(STEP, "an HTTP publish", async {
        server
            .api()
            .http
            .post(format!("{}/v1/rooms/{room}/events", server.base()))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "data": data }))
            .send()
            .await
    })
    .await
    .expect("HTTP publish");
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.expect("receipt")
}

/// `GET path` with the admin key; the JSON answer of a 200.
async fn http_get(server: &Server, path: &str) -> Value {
    let response = within(STEP, "a GET", async {
        server
            .api()
            .http
            .get(format!("{}{path}", server.base()))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
    })
    .await
    .expect("GET");
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.json().await.expect("JSON")
}

// ---------------------------------------------------------------------------
// Connect hook
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_hook_admits_a_cookie_session_with_exactly_its_grants() {
    let app = Arc::new(App::default());
    let base = start_app(app.clone()).await;
    let server = Server::start(&config(&format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\nforward_headers = [\"cookie\", \"x-tenant\"]\n"
    )))
    .await;

    // The hook is told the forwarded headers (and only those), the client's
    // address, the origin and the query.
    let url = server.ws_url("/v1/ws?cursor_hint=7");
    let mut alice = Ws::upgrade(
        &url,
        &[
            ("Cookie", &cookie("alice-secret")),
            ("X-Tenant", "acme"),
            ("X-Secret", "not forwarded"),
            ("Origin", "https://app.example"),
        ],
    )
    .await
    .expect("upgrade");
    assert_eq!(alice.next_json().await["type"], "welcome");
    let request = app.connect_requests.lock().unwrap()[0].clone();
    assert_eq!(
        request["headers"],
        json!({"cookie": "theme=dark; session=alice-secret", "x-tenant": "acme"}),
        "{request}"
    );
    assert_eq!(request["remote_addr"], "127.0.0.1", "{request}");
    assert_eq!(request["origin"], "https://app.example", "{request}");
    assert_eq!(request["query"], "cursor_hint=7", "{request}");

    // Exactly the hook's grants: subscribe chat:* and news:*, publish chat:* only.
    assert_eq!(
        try_subscribe(&mut alice, "chat:lobby").await["type"],
        "subscribed"
    );
    assert_eq!(
        try_subscribe(&mut alice, "news:today").await["type"],
        "subscribed"
    );
    let outside = try_subscribe(&mut alice, "admin:panel").await;
    assert_eq!(
        (&outside["type"], &outside["code"]),
        (&json!("error"), &json!("forbidden")),
        "{outside}"
    );
    let ack = try_publish(&mut alice, "p1", "chat:lobby", json!({"n": 1})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let refused_publish = try_publish(&mut alice, "p2", "news:today", json!({"n": 2})).await;
    assert_eq!(refused_publish["code"], "forbidden", "{refused_publish}");

    // The user and info are the session's presence identity.
    alice
        .send_json(json!({"type": "subscribe", "room": "chat:pres", "presence": true}))
        .await;
    let presence = loop {
        let frame = alice.next_json().await;
        if frame["type"] == "presence" {
            break frame;
        }
    };
    assert_eq!(
        presence["members"],
        json!([{"id": "alice", "info": {"name": "Alice"}}]),
        "{presence}"
    );

    // Bob's grants are his own: no news.
    let mut bob = connect_as(&server, "bob-secret").await;
    assert_eq!(
        try_subscribe(&mut bob, "news:today").await["code"],
        "forbidden"
    );

    // A connection with a valid credential of its own does not ask the hook
    // (fallback mode).
    let calls = app.connect_calls.load(Ordering::SeqCst);
    let auth = format!("Bearer {ADMIN_KEY}");
    let mut keyed = Ws::upgrade(&server.ws_url("/v1/ws"), &[("Authorization", &auth)])
        .await
        .expect("upgrade");
    assert_eq!(keyed.next_json().await["type"], "welcome");
    assert_eq!(app.connect_calls.load(Ordering::SeqCst), calls);

    // 401, 403 and an answer that has already expired refuse the session
    // with the documented codes; no cookie at all is a 401 from the app.
    let ws_url = server.ws_url("/v1/ws");
    refused(&ws_url, &[], "unauthenticated", 4001).await;
    refused(
        &ws_url,
        &[("Cookie", &cookie("wrong"))],
        "unauthenticated",
        4001,
    )
    .await;
    refused(
        &ws_url,
        &[("Cookie", &cookie("mallory-banned"))],
        "forbidden",
        4003,
    )
    .await;
    refused(
        &ws_url,
        &[("Cookie", &cookie("carol-expired"))],
        "unauthenticated",
        4001,
    )
    .await;
    // A room URL asks the hook too, and tells it the room.
    let mut room_ws = Ws::upgrade(
        &server.room_ws_url("chat:direct", ""),
        &[("Cookie", &cookie("bob-secret"))],
    )
    .await
    .expect("upgrade");
    assert_eq!(room_ws.next_json().await["type"], "welcome");
    assert_eq!(room_ws.next_json().await["type"], "subscribed");
    assert_eq!(room_ws.next_json().await["type"], "caught_up");
    let last = app
        .connect_requests
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["room"], "chat:direct", "{last}");

    assert!(
        metric(
            &server,
            "hubcast_hook_calls_total{hook=\"connect\",outcome=\"allowed\"}"
        )
        .await
            >= 3.0
    );
    assert!(
        metric(
            &server,
            "hubcast_hook_calls_total{hook=\"connect\",outcome=\"forbidden\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &server,
            "hubcast_hook_duration_seconds_count{hook=\"connect\"}"
        )
        .await
            >= 6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_always_mode_the_hook_decides_even_for_a_valid_credential() {
    let app = Arc::new(App::default());
    let base = start_app(app.clone()).await;
    let server = Server::start(&config(&format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\nmode = \"always\"\n"
    )))
    .await;
    // An API key that may do everything, with Bob's cookie: the hook is
    // asked, and the session has Bob's grants, not the key's.
    let auth = format!("Bearer {ADMIN_KEY}");
    let bob = cookie("bob-secret");
    let mut ws = Ws::upgrade(
        &server.ws_url("/v1/ws"),
        &[("Authorization", auth.as_str()), ("Cookie", bob.as_str())],
    )
    .await
    .expect("upgrade");
    assert_eq!(ws.next_json().await["type"], "welcome");
    assert_eq!(app.connect_calls.load(Ordering::SeqCst), 1);
    let request = app.connect_requests.lock().unwrap()[0].clone();
    assert_eq!(request["headers"]["authorization"], auth, "{request}");
    assert_eq!(
        try_subscribe(&mut ws, "chat:lobby").await["type"],
        "subscribed"
    );
    assert_eq!(
        try_subscribe(&mut ws, "news:today").await["code"],
        "forbidden"
    );
    // Without a session the key alone does not get in.
    refused(
        &server.ws_url("/v1/ws"),
        &[("Authorization", auth.as_str())],
        "unauthenticated",
        4001,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_session_is_closed_with_1001_at_its_expiry_so_the_client_asks_again() {
    let app = Arc::new(App::default());
    let base = start_app(app.clone()).await;
    let server = Server::start(&config(&format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\n"
    )))
    .await;
    let mut dave = connect_as(&server, "dave-brief").await;
    assert_eq!(
        try_subscribe(&mut dave, "chat:lobby").await["type"],
        "subscribed"
    );
    // No token to refresh: at `expires_at` the session ends with 1001
    // (reconnect at once), and the reconnect asks the hook again.
    let (code, frames) = dave.close_after_frames().await;
    assert_eq!(code, Some(1001), "{frames:?}");
    let calls = app.connect_calls.load(Ordering::SeqCst);
    connect_as(&server, "dave-brief").await;
    assert_eq!(app.connect_calls.load(Ordering::SeqCst), calls + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_hook_timeouts_errors_and_5xx_refuse_with_the_retryable_4013() {
    let app = Arc::new(App::default());
    let base = start_app(app.clone()).await;
    let server = Server::start(&config(&format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\ntimeout_ms = 300\n"
    )))
    .await;
    let url = server.ws_url("/v1/ws");
    let alice = cookie("alice-secret");
    let headers = [("Cookie", alice.as_str())];

    // The application hangs: the hook times out, the session is refused fail-closed.
    app.connect_mode.store(CONNECT_HANGS, Ordering::SeqCst);
    refused(&url, &headers, "auth_unavailable", 4013).await;
    // The application fails.
    app.connect_mode.store(CONNECT_FAILS, Ordering::SeqCst);
    refused(&url, &headers, "auth_unavailable", 4013).await;
    // The application answers 200 with something that is not an answer: no
    // session either (fail closed).
    app.connect_mode.store(CONNECT_INVALID, Ordering::SeqCst);
    refused(&url, &headers, "auth_unavailable", 4013).await;
    app.connect_mode.store(CONNECT_FAILS, Ordering::SeqCst);
    // On a room URL too.
    refused(
        &server.room_ws_url("chat:lobby", ""),
        &headers,
        "auth_unavailable",
        4013,
    )
    .await;
    // It recovers: the same client gets in (the retry 4013 asks for works).
    app.connect_mode.store(CONNECT_BY_COOKIE, Ordering::SeqCst);
    connect_as(&server, "alice-secret").await;

    assert!(
        metric(
            &server,
            "hubcast_hook_calls_total{hook=\"connect\",outcome=\"timeout\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &server,
            "hubcast_hook_calls_total{hook=\"connect\",outcome=\"server_error\"}"
        )
        .await
            >= 2.0
    );
    let invalid = "hubcast_hook_calls_total{hook=\"connect\",outcome=\"invalid_answer\"}";
    assert!(metric(&server, invalid).await >= 1.0);
    // Failures are logged (at a bounded rate).
    let log = eventually("the hook failure in the log", || {
        let log = server.log();
        async move { log.contains("hook failed").then_some(log) }
    })
    .await;
    assert!(log.contains("connect"), "{log}");

    // Nobody listening: a connection error refuses with 4013 as well.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        drop(listener);
        addr
    };
    let unreachable = Server::start(&config(&format!(
        "[auth.connect_hook]\nurl = \"http://{dead}/connect\"\ntimeout_ms = 2000\n"
    )))
    .await;
    refused(
        &unreachable.ws_url("/v1/ws"),
        &headers,
        "auth_unavailable",
        4013,
    )
    .await;
    assert!(
        metric(
            &unreachable,
            "hubcast_hook_calls_total{hook=\"connect\",outcome=\"connect_error\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_retries_after_4013_until_the_hook_recovers() {
    let app = Arc::new(App::default());
    let base = start_app(app.clone()).await;
    let server = Server::start(&config(&format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\ntimeout_ms = 300\nforward_headers = [\"authorization\"]\n"
    )))
    .await;
    // The hook fails: the client backs off (4013 is "try again later") and
    // tries again. Its token is the application's opaque session token,
    // which is not a credential hubcast knows: the hook decides.
    app.connect_mode.store(CONNECT_FAILS, Ordering::SeqCst);
    let client = hubcast_client::Client::builder(server.base())
        .token_provider(|| async { Ok(Some("alice-secret".to_owned())) })
        .backoff(Some(hubcast_client::Backoff {
            min_delay_ms: 20,
            max_delay_ms: 100,
            try_again_later_ms: 100,
        }))
        .build()
        .expect("client");
    let mut room = within(
        STEP,
        "subscribe",
        client.subscribe("chat:lobby", Default::default()),
    )
    .await
    .expect("subscribe");
    eventually("the client to try again after 4013", || {
        let calls = app.connect_calls.load(Ordering::SeqCst);
        async move { (calls >= 3).then_some(()) }
    })
    .await;
    // The application recovers: the next attempt gets in and subscribes.
    app.connect_mode.store(CONNECT_BY_COOKIE, Ordering::SeqCst);
    eventually("a welcomed session", || {
        let server = &server;
        async move {
            (metric(
                server,
                "hubcast_hook_calls_total{hook=\"connect\",outcome=\"allowed\"}",
            )
            .await
                >= 1.0)
                .then_some(())
        }
    })
    .await;
    let receipt = http_publish(&server, "chat:lobby", json!({"after": "recovery"})).await;
    let seq = receipt["seq"].as_u64().expect("seq");
    within(STEP, "the event after the hook recovered", async {
        use futures_util::StreamExt;
        loop {
            match room.next().await.expect("the subscription goes on") {
                hubcast_client::RoomUpdate::Event(event) if event.seq == seq => {
                    assert_eq!(event.data, json!({"after": "recovery"}));
                    return;
                }
                hubcast_client::RoomUpdate::Error(err) => {
                    // Retryable refusals may show while the hook is down; a
                    // terminal one would end the stream.
                    assert_ne!(err.code.as_str(), "unauthenticated", "{err:?}");
                }
                _ => {}
            }
        }
    })
    .await;
    client.close().await;
}

// ---------------------------------------------------------------------------
// Subscribe and publish hooks
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_hook_denies_after_the_grants_and_its_answers_are_cached() {
    let app = Arc::new(App::default());
    let base = start_app(app.clone()).await;
    let server = Server::start(&config(&format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\n\n\
         [auth.subscribe_hook]\nurl = \"{base}/subscribe\"\nrooms = \"chat:*\"\ncache_ms = 600000\n"
    )))
    .await;
    let mut alice = connect_as(&server, "alice-secret").await;

    // Allowed by the grants and by the hook, which was told who and where.
    assert_eq!(
        try_subscribe(&mut alice, "chat:lobby").await["type"],
        "subscribed"
    );
    assert_eq!(app.subscribe_calls.load(Ordering::SeqCst), 1);
    let request = app.subscribe_requests.lock().unwrap()[0].clone();
    assert_eq!(request["user"], "alice", "{request}");
    assert_eq!(request["room"], "chat:lobby", "{request}");
    assert_eq!(request["session"], alice.welcome["session"], "{request}");

    // Denied by the hook: the per-request `forbidden` error, and the room is not joined.
    let denied = try_subscribe(&mut alice, "chat:secret").await;
    assert_eq!(
        (&denied["type"], &denied["code"], &denied["room"]),
        (&json!("error"), &json!("forbidden"), &json!("chat:secret")),
        "{denied}"
    );
    assert_eq!(app.subscribe_calls.load(Ordering::SeqCst), 2);

    // Outside the hook's rooms the grants alone decide: no call.
    assert_eq!(
        try_subscribe(&mut alice, "news:today").await["type"],
        "subscribed"
    );
    // Outside the grants the hook is never asked.
    assert_eq!(
        try_subscribe(&mut alice, "admin:x").await["code"],
        "forbidden"
    );
    assert_eq!(app.subscribe_calls.load(Ordering::SeqCst), 2);

    // Cached per (user, room): the allow and the deny are reused, on this
    // session and on another of the same user.
    alice
        .send_json(json!({"type": "unsubscribe", "room": "chat:lobby"}))
        .await;
    assert_eq!(
        alice.expect_type("unsubscribed").await["room"],
        "chat:lobby"
    );
    assert_eq!(
        try_subscribe(&mut alice, "chat:lobby").await["type"],
        "subscribed"
    );
    let mut alice2 = connect_as(&server, "alice-secret").await;
    assert_eq!(
        try_subscribe(&mut alice2, "chat:lobby").await["type"],
        "subscribed"
    );
    assert_eq!(
        try_subscribe(&mut alice2, "chat:secret").await["code"],
        "forbidden"
    );
    assert_eq!(app.subscribe_calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        metric(&server, "hubcast_hook_cache_hits_total{hook=\"subscribe\"}").await,
        3.0
    );
    // Another user is asked about.
    let mut bob = connect_as(&server, "bob-secret").await;
    assert_eq!(
        try_subscribe(&mut bob, "chat:lobby").await["type"],
        "subscribed"
    );
    assert_eq!(app.subscribe_calls.load(Ordering::SeqCst), 3);

    // A denied room URL closes with 4003.
    let bob_cookie = cookie("bob-secret");
    room_refused(
        &server.room_ws_url("chat:secret", ""),
        &[("Cookie", bob_cookie.as_str())],
        "forbidden",
        4003,
    )
    .await;

    // The hook fails (503, not cached): `auth_unavailable`, which clients
    // retry; on a room URL, close 4013.
    app.subscribe_fails.store(true, Ordering::SeqCst);
    let failed = try_subscribe(&mut bob, "chat:other").await;
    assert_eq!(failed["code"], "auth_unavailable", "{failed}");
    room_refused(
        &server.room_ws_url("chat:another", ""),
        &[("Cookie", bob_cookie.as_str())],
        "auth_unavailable",
        4013,
    )
    .await;
    app.subscribe_fails.store(false, Ordering::SeqCst);
    assert_eq!(
        try_subscribe(&mut bob, "chat:other").await["type"],
        "subscribed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_hook_rewrites_data_denies_and_leaves_backend_publishes_alone() {
    let app = Arc::new(App::default());
    let base = start_app(app.clone()).await;
    let server = Server::start(&config(&format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\n\n\
         [auth.publish_hook]\nurl = \"{base}/publish\"\nrooms = \"chat:*\"\ncache_ms = 600000\n"
    )))
    .await;
    let mut reader = connect_as(&server, "bob-secret").await;
    assert_eq!(
        try_subscribe(&mut reader, "chat:lobby").await["type"],
        "subscribed"
    );
    let mut alice = connect_as(&server, "alice-secret").await;

    // Rewritten by the application: subscribers and the log see its data.
    let ack = try_publish(&mut alice, "m1", "chat:lobby", json!({"text": "hello"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let event = reader.expect_type("event").await;
    assert_eq!(
        event["data"],
        json!({"text": "HELLO", "by": "alice"}),
        "{event}"
    );
    let request = app.publish_requests.lock().unwrap()[0].clone();
    assert_eq!(
        (&request["user"], &request["room"], &request["data"]),
        (
            &json!("alice"),
            &json!("chat:lobby"),
            &json!({"text": "hello"})
        ),
        "{request}"
    );
    // A rewrite is never cached: the next one is asked again.
    try_publish(&mut alice, "m2", "chat:lobby", json!({"text": "again"})).await;
    assert_eq!(reader.expect_type("event").await["data"]["text"], "AGAIN");
    assert_eq!(app.publish_calls.load(Ordering::SeqCst), 2);

    // Allowed unchanged: cached, so the next publish is not asked about.
    try_publish(&mut alice, "m3", "chat:lobby", json!({"n": 3})).await;
    assert_eq!(reader.expect_type("event").await["data"], json!({"n": 3}));
    assert_eq!(app.publish_calls.load(Ordering::SeqCst), 3);
    try_publish(
        &mut alice,
        "m4",
        "chat:lobby",
        json!({"text": "cached allow"}),
    )
    .await;
    assert_eq!(
        reader.expect_type("event").await["data"],
        json!({"text": "cached allow"})
    );
    assert_eq!(app.publish_calls.load(Ordering::SeqCst), 3);

    // Denied: the per-request `forbidden` error with the publish id; nothing appended.
    let denied = try_publish(&mut alice, "m5", "chat:quiet", json!({"n": 5})).await;
    assert_eq!(
        (&denied["code"], &denied["id"]),
        (&json!("forbidden"), &json!("m5")),
        "{denied}"
    );
    let history = http_get(&server, "/v1/rooms/chat:quiet/events?after=0").await;
    assert_eq!(history["events"], json!([]), "{history}");

    // The hook fails (500): `auth_unavailable` with the id, nothing appended;
    // the client's resend with the same id goes through once it recovers.
    app.publish_fails.store(true, Ordering::SeqCst);
    let failed = try_publish(&mut alice, "m6", "chat:other", json!({"n": 6})).await;
    assert_eq!(
        (&failed["code"], &failed["id"]),
        (&json!("auth_unavailable"), &json!("m6")),
        "{failed}"
    );
    let history = http_get(&server, "/v1/rooms/chat:other/events?after=0").await;
    assert_eq!(history["events"], json!([]), "{history}");
    app.publish_fails.store(false, Ordering::SeqCst);
    let ack = try_publish(&mut alice, "m6", "chat:other", json!({"n": 6})).await;
    assert_eq!(
        (&ack["type"], &ack["seq"]),
        (&json!("ack"), &json!(1)),
        "{ack}"
    );
    let calls = app.publish_calls.load(Ordering::SeqCst);

    // The backend's HTTP publish (API key) does not go through the hook.
    http_publish(&server, "chat:lobby", json!({"text": "from the backend"})).await;
    assert_eq!(
        reader.expect_type("event").await["data"],
        json!({"text": "from the backend"})
    );
    assert_eq!(app.publish_calls.load(Ordering::SeqCst), calls);

    let history = http_get(&server, "/v1/rooms/chat:lobby/events?after=0").await;
    let texts: Vec<Value> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["data"]["text"].clone())
        .collect();
    assert_eq!(
        texts,
        [
            json!("HELLO"),
            json!("AGAIN"),
            Value::Null,
            json!("cached allow"),
            json!("from the backend")
        ]
    );
}

// ---------------------------------------------------------------------------
// Cost (run by hand: `cargo nextest run -p hubcast --test hooks --run-ignored only`)
// ---------------------------------------------------------------------------

/// Prints what a hook costs on loopback: sessions opened per second with the
/// connect hook against a JWT-free baseline (an API key, no hook call), and
/// subscribes per second with the subscribe hook asked every time or cached.
/// Asserts nothing about time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn measure_hook_cost() {
    const N: usize = 300;
    let app = Arc::new(App::default());
    let base = start_app(app.clone()).await;
    let run = |hooks: String| async move {
        let limits = "\n[rate_limits]\nconnects_per_ip_per_minute = 1000000\nmessages_per_session_per_second = 1000000\n";
        let server = Server::start(&config(&format!("{hooks}{limits}"))).await;
        let auth = format!("Bearer {ADMIN_KEY}");
        let started = std::time::Instant::now();
        for _ in 0..N {
            let mut ws = Ws::upgrade(&server.ws_url("/v1/ws"), &[("Authorization", &auth)])
                .await
                .expect("upgrade");
            assert_eq!(ws.next_json().await["type"], "welcome");
            ws.close().await;
        }
        let keyed = N as f64 / started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        for _ in 0..N {
            connect_as(&server, "alice-secret").await.close().await;
        }
        let hooked = N as f64 / started.elapsed().as_secs_f64();
        let mut alice = connect_as(&server, "alice-secret").await;
        let started = std::time::Instant::now();
        for i in 0..N {
            let room = format!("chat:m{i}");
            assert_eq!(try_subscribe(&mut alice, &room).await["type"], "subscribed");
            alice
                .send_json(json!({"type": "unsubscribe", "room": room}))
                .await;
            alice.expect_type("unsubscribed").await;
        }
        let first = N as f64 / started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        for i in 0..N {
            let room = format!("chat:m{i}");
            assert_eq!(try_subscribe(&mut alice, &room).await["type"], "subscribed");
            alice
                .send_json(json!({"type": "unsubscribe", "room": room}))
                .await;
            alice.expect_type("unsubscribed").await;
        }
        let again = N as f64 / started.elapsed().as_secs_f64();
        // Socket publishes, one at a time (publish, ack): a room the publish
        // hook is asked about (no cache) and one it is not.
        let hooked_publishes = publish_rate(&mut alice, "chat:hooked", N).await;
        let plain_publishes = publish_rate(&mut alice, "chat:plain", N).await;
        let p = |q: &str| {
            let server = &server;
            let q = q.to_owned();
            async move { metric(server, &q).await }
        };
        let sum = p("hubcast_hook_duration_seconds_sum{hook=\"connect\"}").await;
        let count = p("hubcast_hook_duration_seconds_count{hook=\"connect\"}").await;
        println!(
            "connects/s: api key {keyed:.0}, connect hook {hooked:.0} (mean hook call {:.2} ms); \
             subscribe+unsubscribe/s: first {first:.0}, again {again:.0}; \
             socket publishes/s: publish hook {hooked_publishes:.0}, none {plain_publishes:.0}",
            1000.0 * sum / count
        );
    };
    run(format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\n\n\
         [auth.subscribe_hook]\nurl = \"{base}/subscribe\"\nrooms = \"chat:*\"\ncache_ms = 600000\n\n\
         [auth.publish_hook]\nurl = \"{base}/publish\"\nrooms = \"chat:hooked\"\n"
    ))
    .await;
    run(format!(
        "[auth.connect_hook]\nurl = \"{base}/connect\"\n\n\
         [auth.subscribe_hook]\nurl = \"{base}/subscribe\"\nrooms = \"chat:nothing\"\n\n\
         [auth.publish_hook]\nurl = \"{base}/publish\"\nrooms = \"chat:hooked\"\n"
    ))
    .await;
}

/// Socket publishes per second, one at a time (publish, then its ack).
async fn publish_rate(ws: &mut Ws, room: &str, n: usize) -> f64 {
    let started = std::time::Instant::now();
    for i in 0..n {
        let ack = try_publish(ws, &format!("{room}-{i}"), room, json!({"n": i})).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    n as f64 / started.elapsed().as_secs_f64()
}
