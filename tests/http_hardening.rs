//! The HTTP surface under hostile and unusual input, over raw TCP: stalled
//! and oversized bodies, forwarded-address headers, numbers past what the
//! store can hold, and refusals that must all be JSON with their code.
//! Each test is a regression test for a finding of a fault and hostile-input
//! run (see tests/external/python/test_http_hardening.py for the same
//! findings driven by Python's urllib and http.client).

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::{within, Server, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FAST: &str = "[sqlite]\nsynchronous = \"normal\"\n";

/// One HTTP answer, read to the server's close.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, failing the test if it is anything else.
    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}: {}",
            String::from_utf8_lossy(&self.body)
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// `(status, error code)` of a JSON refusal.
    fn refusal(&self) -> (u16, String) {
        (
            self.status,
            self.json()["error"].as_str().unwrap_or("").to_owned(),
        )
    }
}

/// Reads one answer from `stream` until the server closes it.
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    within(STEP, "the server's answer and close", async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close` added to
/// its head) and reads the answer.
async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut stream = within(STEP, "TCP connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let head = head.trim_end_matches("\r\n");
    let request = format!("{head}\r\nHost: hubcast\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write head");
    stream.write_all(body).await.expect("write body");
    read_answer(&mut stream).await
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, &format!("GET {path} HTTP/1.1"), b"").await
}

async fn post(addr: SocketAddr, path: &str, extra_headers: &str, body: &str) -> Answer {
    let head = format!("POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}", body.len());
    send(addr, &head, body.as_bytes()).await
}

// ---------------------------------------------------------------------------
// 1. Stalled request bodies

/// A body that stalled after its head held its connection forever (hyper's
/// header timeout covers only the head). Now it is answered `408
/// request_timeout` in JSON and closed, while the node keeps answering others.
#[tokio::test]
async fn a_stalled_body_is_answered_408_and_closed() {
    let server = Server::start(&format!("{FAST}[limits]\nbody_read_timeout_ms = 500\n")).await;
    let addr = server.addr();
    let mut stalled = Vec::new();
    for i in 0..50 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = "POST /v1/rooms/r/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
        stream.write_all(head.as_bytes()).await.expect("write");
        if i % 2 == 0 {
            stream.write_all(b"{").await.expect("write");
        }
        stalled.push(stream);
    }
    let health = get(addr, "/healthz").await;
    assert_eq!(
        (health.status, health.json()),
        (200, serde_json::json!({"status": "ok"}))
    );
    for stream in &mut stalled {
        let answer = read_answer(stream).await;
        assert_eq!(answer.refusal(), (408, "request_timeout".to_owned()));
        assert_eq!(answer.header("connection"), Some("close"));
    }
    // Nothing was appended by the stalled publishes.
    assert_eq!(get(addr, "/v1/rooms/r").await.json()["head"], 0);
}

// ---------------------------------------------------------------------------
// 2. Oversized publishes

/// A declared length over the limit was answered only once body bytes came:
/// a client that waits for the answer before sending waited forever.
#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_at_once() {
    let server = Server::start(&format!("{FAST}[limits]\nmax_event_bytes = 1024\n")).await;
    let head = "POST /v1/rooms/big/events HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 50000000";
    let answer = send(server.addr(), head, b"").await;
    assert_eq!(answer.refusal(), (413, "too_large".to_owned()));
}

/// The 413 of a body over the limit was followed by a close that left the
/// rest of the body unread, so the client got a reset, often before it read
/// the answer. The close now lingers: the client reads its 413 whole.
#[tokio::test]
async fn an_oversized_body_written_whole_still_reads_its_413() {
    let server = Server::start(FAST).await;
    let body = format!("{{\"data\":\"{}\"}}", "x".repeat(8 * 1024 * 1024));
    for _ in 0..3 {
        let answer = post(server.addr(), "/v1/rooms/big/events", "", &body).await;
        assert_eq!(answer.refusal(), (413, "too_large".to_owned()));
    }
}

// ---------------------------------------------------------------------------
// 3. Forwarded addresses

/// Sends a WebSocket upgrade to `/v1/ws` with `extra_headers` and returns its
/// status (the socket is dropped after the head).
async fn upgrade(addr: SocketAddr, extra_headers: &str) -> Answer {
    let mut stream = within(STEP, "TCP connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: hubcast\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    read_head(&mut stream).await
}

/// Reads one answer's head, and its body by `Content-Length` (the connection
/// may stay open; a 101 has no body).
async fn read_head(stream: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    within(STEP, "an answer's head", async {
        let mut buf = [0u8; 4096];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let mut answer = parse_answer(&raw);
    let length: usize = answer
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    if answer.body.len() < length {
        let mut rest = vec![0u8; length - answer.body.len()];
        within(STEP, "an answer's body", stream.read_exact(&mut rest))
            .await
            .expect("read body");
        answer.body.extend_from_slice(&rest);
    }
    answer
}

/// Only the first `X-Forwarded-For` line was read, so behind a proxy that
/// adds its own line a client's forged line chose its address, and a fresh
/// connect-rate quota with every connect. Every line is read now, from the
/// right.
#[tokio::test]
async fn every_forwarded_for_line_is_read() {
    let config = format!("{FAST}[auth]\ntrusted_proxies = [\"127.0.0.1\"]\n[rate_limits]\nconnects_per_ip_per_minute = 2\n");
    let server = Server::start(&config).await;
    for forged in 1..=2 {
        let answer = upgrade(
            server.addr(),
            &format!("X-Forwarded-For: 6.6.6.{forged}\r\nX-Forwarded-For: 203.0.113.7\r\n"),
        )
        .await;
        assert_eq!(answer.status, 101, "{answer:?}");
    }
    let refused = upgrade(
        server.addr(),
        "X-Forwarded-For: 6.6.6.3\r\nX-Forwarded-For: 203.0.113.7\r\n",
    )
    .await;
    assert_eq!(refused.refusal(), (429, "rate_limited".to_owned()));
    // One header line with a list is the same chain.
    let refused = upgrade(
        server.addr(),
        "X-Forwarded-For: 6.6.6.4, 203.0.113.7:5555\r\n",
    )
    .await;
    assert_eq!(refused.refusal(), (429, "rate_limited".to_owned()));
    let other = upgrade(
        server.addr(),
        "X-Forwarded-For: 6.6.6.3\r\nX-Forwarded-For: 203.0.113.8\r\n",
    )
    .await;
    assert_eq!(other.status, 101, "{other:?}");
    // A hop that is not an address is not the proxy: a forged `unknown` must
    // not borrow the proxy's (loopback) quota or protected-mode trust.
    for _ in 0..2 {
        assert_eq!(
            upgrade(server.addr(), "X-Forwarded-For: unknown\r\n")
                .await
                .status,
            101
        );
    }
    assert_eq!(
        upgrade(server.addr(), "X-Forwarded-For: unknown\r\n")
            .await
            .refusal(),
        (429, "rate_limited".to_owned())
    );
    assert_eq!(
        upgrade(server.addr(), "").await.status,
        101,
        "the proxy's own quota is untouched"
    );
}

/// RFC 7239 `Forwarded` (quoted, with ports and brackets), when configured.
#[tokio::test]
async fn the_forwarded_header_is_read_when_configured() {
    let config = format!(
        "{FAST}[auth]\ntrusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"forwarded\"\n[rate_limits]\nconnects_per_ip_per_minute = 1\n"
    );
    let server = Server::start(&config).await;
    let first = upgrade(
        server.addr(),
        "Forwarded: for=6.6.6.1\r\nForwarded: for=\"[2001:db8:cafe::17]:4711\";proto=http\r\n",
    )
    .await;
    assert_eq!(first.status, 101, "{first:?}");
    let second = upgrade(
        server.addr(),
        "Forwarded: for=6.6.6.2, for=\"[2001:db8:cafe::17]\"\r\n",
    )
    .await;
    assert_eq!(second.refusal(), (429, "rate_limited".to_owned()));
    // X-Forwarded-For is not believed when Forwarded is the configured header.
    let other = upgrade(
        server.addr(),
        "Forwarded: for=198.51.100.9\r\nX-Forwarded-For: 2001:db8:cafe::17\r\n",
    )
    .await;
    assert_eq!(other.status, 101, "{other:?}");
}

// ---------------------------------------------------------------------------
// 4. Numbers past what the store holds

/// `after` was cast to a signed 64-bit number in the store, so
/// `after=18446744073709551614` wrapped to -2 and returned seqs 1..3. Every
/// sequence number a client sends is refused past 2^63-1, with a JSON 400.
#[tokio::test]
async fn sequence_numbers_past_2_pow_63_are_refused() {
    let server = Server::start(FAST).await;
    let addr = server.addr();
    for n in 1..=3 {
        assert_eq!(
            post(addr, "/v1/rooms/r/events", "", &format!("{{\"data\":{n}}}"))
                .await
                .status,
            201
        );
    }
    let largest = get(addr, "/v1/rooms/r/events?after=9223372036854775807").await;
    assert_eq!(largest.status, 200);
    assert_eq!(largest.json()["events"], serde_json::json!([]));
    for after in [
        "9223372036854775808",
        "18446744073709551614",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        let answer = get(addr, &format!("/v1/rooms/r/events?after={after}")).await;
        assert_eq!(
            answer.refusal(),
            (400, "invalid_parameter".to_owned()),
            "after={after}"
        );
    }
    let conflict = post(
        addr,
        "/v1/rooms/r/events",
        "",
        r#"{"data":4,"expected_seq":18446744073709551615}"#,
    )
    .await;
    assert_eq!(conflict.refusal(), (400, "invalid_parameter".to_owned()));
    for query in [
        "cursor=18446744073709551614",
        "cursor=9223372036854775808",
        "rewind=18446744073709551615",
    ] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /v1/rooms/r/ws?{query} HTTP/1.1\r\nHost: hubcast\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let head = read_head(&mut stream).await;
        assert_eq!(
            head.refusal(),
            (400, "invalid_parameter".to_owned()),
            "{query}"
        );
    }
    // Nothing was appended by the refused publish.
    assert_eq!(get(addr, "/v1/rooms/r").await.json()["head"], 3);
}

// ---------------------------------------------------------------------------
// 5. Smaller ones

/// `Idempotency-Key: a b` was accepted although keys are documented as
/// visible ASCII: anything outside `!`..=`~` is refused now.
#[tokio::test]
async fn idempotency_keys_outside_visible_ascii_are_refused() {
    let server = Server::start(FAST).await;
    let addr = server.addr();
    // (Spaces and tabs around a value are not part of it in HTTP.)
    for key in ["a b", "x y z", "caf\u{e9}"] {
        let answer = post(
            addr,
            "/v1/rooms/r/events",
            &format!("Idempotency-Key: {key}\r\n"),
            r#"{"data":1}"#,
        )
        .await;
        assert_eq!(
            answer.refusal(),
            (400, "invalid_parameter".to_owned()),
            "{key:?}"
        );
    }
    assert_eq!(
        post(
            addr,
            "/v1/rooms/r/events",
            "Idempotency-Key: a-b_c.d~!\r\n",
            r#"{"data":1}"#
        )
        .await
        .status,
        201
    );
    assert_eq!(get(addr, "/v1/rooms/r").await.json()["head"], 1);
}

/// Some refusals were plain text from axum's extractors: a room name whose
/// escapes are not UTF-8 (`%ff`), and every refused WebSocket handshake.
/// Each is JSON with its documented code now.
#[tokio::test]
async fn every_refusal_is_json_with_its_code() {
    let server = Server::start(FAST).await;
    let addr = server.addr();
    let invalid_room = (400, "invalid_room".to_owned());
    assert_eq!(
        get(addr, "/v1/rooms/%ff/events").await.refusal(),
        invalid_room
    );
    assert_eq!(get(addr, "/v1/rooms/%ff").await.refusal(), invalid_room);
    assert_eq!(
        post(addr, "/v1/rooms/a%ffb/events", "", r#"{"data":1}"#)
            .await
            .refusal(),
        invalid_room
    );
    assert_eq!(get(addr, "/v1/rooms/%ff/ws").await.refusal(), invalid_room);
    assert_eq!(
        get(addr, "/dashboard/%ff").await.refusal(),
        (404, "not_found".to_owned())
    );

    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let handshake = |headers: &str| format!("GET /v1/ws HTTP/1.1\r\n{headers}");
    for (what, head) in [
        ("a plain GET", handshake("")),
        (
            "no Upgrade header",
            handshake(&format!(
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{key}"
            )),
        ),
        (
            "another Upgrade",
            handshake(&format!(
                "Connection: Upgrade\r\nUpgrade: h2c\r\nSec-WebSocket-Version: 13\r\n{key}"
            )),
        ),
        (
            "no Sec-WebSocket-Key",
            handshake("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"),
        ),
        (
            "version 12",
            handshake(&format!(
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 12\r\n{key}"
            )),
        ),
    ] {
        // `send` adds `Connection: close`, which a handshake without
        // `Connection: Upgrade` lacks; one with it gets both tokens.
        let answer = send(addr, &head, b"").await;
        assert_eq!(answer.refusal(), (400, "bad_request".to_owned()), "{what}");
        if what == "version 12" {
            assert_eq!(answer.header("sec-websocket-version"), Some("13"));
        }
    }
    let on_a_room = send(
        addr,
        "GET /v1/rooms/r/ws HTTP/1.1\r\nSec-WebSocket-Version: 13",
        b"",
    )
    .await;
    assert_eq!(on_a_room.refusal(), (400, "bad_request".to_owned()));
    let post_upgrade = send(addr, &format!("POST /v1/ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{key}Content-Length: 0"), b"").await;
    assert_eq!(
        post_upgrade.refusal(),
        (405, "method_not_allowed".to_owned())
    );
}

/// `limit=0` on history returned one event (the limit was raised to 1);
/// history is "at most `limit`" events, so it is none, with the room's state.
#[tokio::test]
async fn history_with_limit_0_is_the_state_without_events() {
    let server = Server::start(FAST).await;
    let addr = server.addr();
    for n in 1..=3 {
        assert_eq!(
            post(addr, "/v1/rooms/r/events", "", &format!("{{\"data\":{n}}}"))
                .await
                .status,
            201
        );
    }
    let page = get(addr, "/v1/rooms/r/events?limit=0").await.json();
    assert_eq!(
        (&page["head"], &page["earliest"], &page["events"]),
        (&3.into(), &1.into(), &serde_json::json!([]))
    );
    assert!(page["epoch"].is_string(), "{page}");
    let page = get(addr, "/v1/rooms/r/events?after=1&limit=1").await.json();
    assert_eq!(
        page["events"]
            .as_array()
            .map(|e| e.iter().map(|e| e["seq"].clone()).collect::<Vec<_>>()),
        Some(vec![2.into()])
    );
    assert_eq!(
        get(addr, "/v1/rooms?limit=0").await.json()["rooms"],
        serde_json::json!([])
    );
}
