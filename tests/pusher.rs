//! The Pusher Channels protocol and HTTP API (docs/pusher.md), against the
//! real binary:
//!
//! - with clients nobody here wrote: `pusher-js` and the official `pusher`
//!   server library (npm) in `tests/pusher/pusher.test.mjs`, `laravel-echo`
//!   over pusher-js in `echo.test.mjs`, the official Python `pusher`
//!   library (PyPI) in `python/server_library.py`, and Pusher webhooks
//!   verified by the npm library's own `webhook()` (`webhook_receiver.mjs`);
//! - on two nodes (PostgreSQL + NATS) the same suites with their clients on
//!   different nodes: presence and occupancy across nodes;
//! - pusher-js reconnecting after a server restart;
//! - the wire itself from Rust: ping/pong, Pusher's error and close codes,
//!   and a Pusher channel read as a hubcast room over hubcast's WebSocket.
//!
//! The npm packages are installed into `tests/pusher/node_modules` and the
//! Python one into `tests/pusher/.venv`, under a lock, the first time a test
//! needs them (`scripts/test.sh` needs nothing more).

mod support;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{within, Server, Ws, PHASE, STEP};

const APP: &str = r#"
[pusher]
activity_timeout_secs = 120

[[pusher.apps]]
id = "123"
key = "key1"
secret = "secret1"
enable_client_messages = true
"#;

/// The config of a node serving app 123, with its webhooks sent to `receiver`.
fn config(receiver: Option<&str>) -> String {
    let mut config = format!("{}{APP}", support::FAST);
    if let Some(url) = receiver {
        config.push_str(&format!("\n[[pusher.apps.webhooks]]\nurl = \"{url}\"\n"));
        // The two Pusher sends only when enabled, to a second endpoint.
        config.push_str(&format!(
            "\n[[pusher.apps.webhooks]]\nurl = \"{url}/counts\"\nevent_types = [\"cache_miss\", \"subscription_count\"]\n"
        ));
        // Occupancy is decided once the grace has passed: keep it short.
        config.push_str("\n[hub]\noccupancy_grace_ms = 200\n");
    }
    config
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pusher")
}

/// Installs the npm packages (when missing or stale) and the Python venv,
/// under a lock: tests run in parallel.
fn install() {
    let script = r#"
set -e
exec 9>.install.lock
flock 9
if [ ! -d node_modules ] || ! cmp -s package.json node_modules/.installed; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package.json node_modules/.installed
fi
if [ ! -x .venv/bin/python ] || ! cmp -s python/requirements.txt .venv/.installed; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r python/requirements.txt
  cp python/requirements.txt .venv/.installed
fi
"#;
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir())
        .status()
        .expect("run bash to install the Pusher tests' packages");
    assert!(
        status.success(),
        "could not install tests/pusher's npm and PyPI packages"
    );
}

/// A running `webhook_receiver.mjs`; killed on drop.
struct Receiver {
    child: Child,
    url: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn receiver() -> Receiver {
    let mut child = Command::new("node")
        .arg(dir().join("webhook_receiver.mjs"))
        .args(["123", "key1", "secret1"])
        .current_dir(dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the webhook receiver (node)");
    let stdout = child.stdout.take().expect("piped stdout");
    let line = within(
        STEP,
        "the webhook receiver to listen",
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read the receiver's stdout");
            line
        }),
    )
    .await
    .expect("reader task");
    Receiver {
        child,
        url: line.trim().to_owned(),
    }
}

/// Runs `program args` in tests/pusher with the nodes' URLs, and fails the
/// test with its output (and the servers' logs) unless it succeeds.
async fn run_suite(program: &str, args: &[&str], nodes: &[&Server], receiver: Option<&Receiver>) {
    let urls: Vec<String> = nodes.iter().map(|s| s.base()).collect();
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir())
        .env("HUBCAST_URLS", urls.join(","));
    if let Some(receiver) = receiver {
        command.env("WEBHOOK_RECEIVER", &receiver.url);
    }
    let what = format!("{program} {}", args.join(" "));
    let output = within(
        Duration::from_secs(180),
        &what,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("join")
    .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    if !output.status.success() {
        let logs: Vec<String> = nodes.iter().map(|s| s.log()).collect();
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- server logs\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            logs.join("\n---\n")
        );
    }
}

/// One node, or two of one cluster with `HUBCAST_TEST_BACKEND=cluster`.
async fn nodes(config: &str) -> Vec<Server> {
    let first = Server::start(config).await;
    if first.is_cluster() {
        let second = Server::start_peer(&first, config).await;
        vec![first, second]
    } else {
        vec![first]
    }
}

#[tokio::test]
async fn pusher_js_and_the_pusher_server_library() {
    install();
    let receiver = receiver().await;
    let servers = nodes(&config(Some(&receiver.url))).await;
    let nodes: Vec<&Server> = servers.iter().collect();
    run_suite(
        "node",
        &["--test", "--test-concurrency=1", "pusher.test.mjs"],
        &nodes,
        Some(&receiver),
    )
    .await;
}

#[tokio::test]
async fn laravel_echo() {
    install();
    let servers = nodes(&config(None)).await;
    let nodes: Vec<&Server> = servers.iter().collect();
    run_suite("node", &["--test", "echo.test.mjs"], &nodes, None).await;
}

#[tokio::test]
async fn the_python_pusher_library() {
    install();
    let servers = nodes(&config(None)).await;
    let nodes: Vec<&Server> = servers.iter().collect();
    let python = dir().join(".venv/bin/python");
    run_suite(
        python.to_str().expect("utf-8 path"),
        &["python/server_library.py"],
        &nodes,
        None,
    )
    .await;
}

/// pusher-js reconnects by itself after the node restarts (on the same
/// port, as a supervisor restarts it), subscribes again and gets what is
/// triggered after.
#[tokio::test]
async fn pusher_js_reconnects_after_a_restart() {
    install();
    let mut server = Server::start(&config(None)).await;
    let mut child = Command::new("node")
        .arg("reconnect.mjs")
        .current_dir(dir())
        .env("HUBCAST_URLS", server.base())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start reconnect.mjs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    expect_line(&mut lines, "subscribed").await;
    server.restart_on_same_port().await;
    writeln!(stdin, "restarted").expect("tell reconnect.mjs");
    expect_line(&mut lines, "ok").await;
    let status = within(
        STEP,
        "reconnect.mjs to exit",
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("join")
    .expect("wait");
    assert!(
        status.success(),
        "reconnect.mjs failed; server log:\n{}",
        server.log()
    );
}

/// Reads `reconnect.mjs`'s lines until `want` (echoing the others).
async fn expect_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) {
    loop {
        let line = within(PHASE, want, lines.recv())
            .await
            .unwrap_or_else(|| panic!("reconnect.mjs ended before saying {want}"));
        if line == want {
            return;
        }
        eprintln!("reconnect.mjs: {line}");
    }
}

/// The wire from Rust: `pusher:ping` → `pusher:pong`, Pusher's errors, and
/// refusals with Pusher's close codes.
#[tokio::test]
async fn the_wire_pings_errors_and_close_codes() {
    let server = Server::start(&config(None)).await;
    let mut ws = Ws::connect_raw(&server.ws_url("/app/key1?protocol=7&client=rust")).await;
    let established = ws.next_json().await;
    assert_eq!(established["event"], "pusher:connection_established");
    let data: Value = serde_json::from_str(established["data"].as_str().expect("data is a string"))
        .expect("data is JSON");
    assert_eq!(data["activity_timeout"], 120);
    let socket_id = data["socket_id"].as_str().expect("socket_id").to_owned();
    let (a, b) = socket_id.split_once('.').expect("socket_id is N.N");
    assert!(
        a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok(),
        "{socket_id}"
    );

    ws.send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    assert_eq!(ws.next_json().await["event"], "pusher:pong");
    ws.send_text("not json").await;
    let error = ws.next_json().await;
    assert_eq!(error["event"], "pusher:error");
    ws.send_json(
        json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": "key1:00"}}),
    )
    .await;
    assert_eq!(ws.next_json().await["data"]["code"], 4009);
    let refused = ws.next_json().await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(refused["data"]["status"], 401);
    ws.send_json(json!({"event": "pusher:subscribe", "data": {"channel": "bad:name"}}))
        .await;
    assert_eq!(ws.next_json().await["data"]["status"], 400);
    // A server-to-user channel only for a socket signed in as its user.
    ws.send_json(
        json!({"event": "pusher:subscribe", "data": {"channel": "#server-to-user-bob", "auth": ""}}),
    )
    .await;
    let refused = ws.next_json().await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(refused["channel"], "#server-to-user-bob");
    assert_eq!(refused["data"]["status"], 403);
    let user_data = r#"{"id":"alice"}"#;
    ws.send_json(json!({"event": "pusher:signin", "data": {
        "user_data": user_data, "auth": signin_auth(&socket_id, user_data)}}))
        .await;
    assert_eq!(ws.next_json().await["event"], "pusher:signin_success");
    for user in ["bob", "alice"] {
        ws.send_json(json!({"event": "pusher:subscribe", "data": {
            "channel": format!("#server-to-user-{user}"), "auth": ""}}))
            .await;
    }
    let bob = ws.next_json().await;
    assert_eq!(bob["event"], "pusher:subscription_error", "{bob}");
    let alice = ws.next_json().await;
    assert_eq!(
        alice,
        json!({"event": "pusher_internal:subscription_succeeded",
               "channel": "#server-to-user-alice", "data": "{}"})
    );

    for (path, code) in [
        ("/app/nope?protocol=7", 4001),
        ("/app/key1", 4008),
        ("/app/key1?protocol=3", 4007),
    ] {
        let mut ws = Ws::connect_raw(&server.ws_url(path)).await;
        let error = ws.next_json().await;
        assert_eq!(error["event"], "pusher:error", "{path}");
        assert_eq!(error["data"]["code"], code, "{path}");
        assert_eq!(ws.expect_close().await, code, "{path}");
    }
}

/// A Pusher channel is a hubcast room: a hubcast WebSocket subscriber of
/// the room gets Pusher triggers as events with seqs, and a Pusher socket
/// gets the hubcast publishes as Pusher events.
#[tokio::test]
async fn a_channel_is_a_room_both_ways() {
    let server = Server::start(&config(None)).await;
    let mut native = Ws::connect(&server.ws_url("/v1/ws")).await;
    native.subscribe("pusher:123:prices", json!({})).await;
    native.expect_type("caught_up").await;
    let mut pusher = Ws::connect_raw(&server.ws_url("/app/key1?protocol=7")).await;
    pusher.next_json().await;
    pusher
        .send_json(json!({"event": "pusher:subscribe", "data": {"channel": "prices"}}))
        .await;
    assert_eq!(
        pusher.next_json().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    server
        .publish(
            "pusher:123:prices",
            json!({"event": "tick", "data": "{\"p\":1}"}),
        )
        .await;
    let event = native.expect_type("event").await;
    assert_eq!(event["seq"], 1);
    assert_eq!(event["data"]["event"], "tick");
    let frame = pusher.next_json().await;
    assert_eq!(
        frame,
        json!({"event": "tick", "channel": "prices", "data": "{\"p\":1}"})
    );
}

/// A private channel's authorization as the app's auth endpoint signs it
/// (`key:HMAC-SHA256(secret, "socket_id:channel")`), computed here with
/// `ring`, not with the server's own code.
fn channel_auth(socket_id: &str, channel: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret1");
    let tag = ring::hmac::sign(&key, format!("{socket_id}:{channel}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("key1:{hex}")
}

/// A sign-in's authentication (`key:HMAC-SHA256(secret,
/// "socket_id::user::user_data")`), computed here with `ring`.
fn signin_auth(socket_id: &str, user_data: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret1");
    let tag = ring::hmac::sign(&key, format!("{socket_id}::user::{user_data}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("key1:{hex}")
}

/// A raw Pusher socket subscribed to the private `channel`, with its socket_id.
async fn private_socket(server: &Server, channel: &str) -> (Ws, String) {
    let mut ws = Ws::connect_raw(&server.ws_url("/app/key1?protocol=7")).await;
    let established = ws.next_json().await;
    let data: Value =
        serde_json::from_str(established["data"].as_str().expect("data")).expect("data is JSON");
    let socket_id = data["socket_id"].as_str().expect("socket_id").to_owned();
    ws.send_json(json!({"event": "pusher:subscribe", "data": {
        "channel": channel, "auth": channel_auth(&socket_id, channel)}}))
        .await;
    assert_eq!(
        ws.next_json().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    (ws, socket_id)
}

/// Sends `pusher:ping` and reads up to the pong: the client events answered
/// with 4301 before it (the answers to a socket keep their order).
async fn refusals_until_pong(ws: &mut Ws) -> usize {
    ws.send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    let mut refused = 0;
    loop {
        let frame = ws.next_json().await;
        match frame["event"].as_str() {
            Some("pusher:pong") => return refused,
            Some("pusher:error") if frame["data"]["code"] == 4301 => refused += 1,
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

/// Client events over the session's message rate are answered as Pusher
/// answers them: `pusher:error` 4301, the event dropped, the connection
/// kept. Every event is either relayed or refused, and once the rate allows
/// again the same socket's events go through.
#[tokio::test]
async fn client_events_over_the_rate_get_4301_and_keep_the_socket() {
    let server = Server::start(&format!(
        "{}{APP}\n[rate_limits]\nmessages_per_session_per_second = 5\n",
        support::FAST
    ))
    .await;
    let (mut sender, _) = private_socket(&server, "private-chat").await;
    // Its `subscription_succeeded` means the hub has it: nothing to wait for.
    let (mut receiver, _) = private_socket(&server, "private-chat").await;
    const SENT: usize = 30;
    for n in 0..SENT {
        sender
            .send_json(json!({"event": "client-n", "channel": "private-chat", "data": {"n": n}}))
            .await;
    }
    let refused = refusals_until_pong(&mut sender).await;
    assert!(
        refused > 0 && refused < SENT,
        "{refused} of {SENT} refused at 5/s"
    );
    // Once the bucket refills, a client event from the same socket passes.
    let mut retries = 0;
    loop {
        sender
            .send_json(json!({"event": "client-last", "channel": "private-chat", "data": {}}))
            .await;
        if refusals_until_pong(&mut sender).await == 0 {
            break;
        }
        retries += 1;
        assert!(retries < 40, "client events stayed refused for 10 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut relayed = 0;
    loop {
        let frame = receiver.next_json().await;
        match frame["event"].as_str() {
            Some("client-n") => relayed += 1,
            Some("client-last") => break,
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert_eq!(
        relayed + refused,
        SENT,
        "every client event relayed or refused"
    );
}
