//! Hostile load, bounded in count and time, loopback only: thousands of
//! connections that never finish their HTTP handshake, garbage bytes, upgraded
//! sockets that never read while large events flow, and bursts of malformed
//! WebSocket frames — while one well-behaved subscriber receives every event,
//! exactly, the node stays up, and its memory and open files stay bounded.
//!
//! Rate limits are off here, so the attack itself reaches the parsers and the
//! fan-out (tests/security.rs checks the limits). About 3,000 connections are
//! open at the peak: some 6,000 descriptors counting both ends, well below the
//! 20,000 this machine allows a process.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use support::{eventually, within, RawWs, Server, Ws, PHASE, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROOM: &str = "feed";
/// Events published during the attack, each with about `EVENT_BYTES` of data.
const EVENTS: u64 = 600;
const EVENT_BYTES: usize = 16 * 1024;
/// Connections that send half a request head and stop.
const STALLED: usize = 2_000;
/// Connections that send nothing at all.
const SILENT: usize = 500;
/// Upgraded room sockets that never read.
const NON_READERS: usize = 100;
/// Connections that send garbage instead of HTTP.
const GARBAGE: usize = 1_000;
/// Upgraded sockets that send a burst of malformed frames.
const MALFORMED: usize = 260;
/// Connects in flight at once.
const CONCURRENCY: usize = 64;
/// Growth of the server's resident memory allowed by the attack.
const RSS_BOUND_KIB: u64 = 300 * 1024;

/// Rate limits off (0), a smaller outbound queue so sockets that never read
/// are cut as slow consumers within the run, the default 1 MiB frame limit.
const CONFIG: &str = "
[sqlite]
synchronous = \"normal\"
[limits]
outbound_queue = 256
[hub]
tail = 128
[rate_limits]
connects_per_ip_per_minute = 0
messages_per_session_per_second = 0
max_connections_per_ip = 0
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_hurt_a_well_behaved_subscriber() {
    let server = Server::start(CONFIG).await;
    let addr = server.addr();
    let pid = server.pid();
    let api = server.api();

    let (mut good, _) = Ws::room(&server, ROOM, "").await;
    good.until_caught_up(ROOM, 0).await;
    let rss_before = support::rss_kib(pid);
    let fds_before = open_fds(pid);

    // Connections that never finish the handshake, held open for the whole run.
    let stalled = within(PHASE, "the stalled connections", open_stalled(addr)).await;
    assert_eq!(stalled.len(), STALLED + SILENT);
    assert_eq!(
        api.get("/healthz").await.0,
        200,
        "the node answers while thousands of handshakes hang"
    );

    // Upgraded room sockets that never read a byte.
    let non_readers: Vec<RawWs> = within(
        PHASE,
        "the non-reading sockets",
        futures_util::stream::iter(0..NON_READERS)
            .map(|_| async move { RawWs::connect(addr, &format!("/v1/rooms/{ROOM}/ws")).await })
            .buffer_unordered(CONCURRENCY)
            .collect(),
    )
    .await;

    // Now, all at once: large events, garbage, malformed frames, and the
    // well-behaved subscriber reading everything.
    let subscriber = tokio::spawn(async move {
        let events = good.events_until(ROOM, 0, EVENTS).await;
        (good, events)
    });
    let publisher = {
        let api = api.clone();
        tokio::spawn(async move {
            let pad = "x".repeat(EVENT_BYTES);
            for i in 1..=EVENTS {
                let receipt = api.publish(ROOM, json!({"i": i, "pad": pad})).await;
                assert_eq!(receipt["seq"], i, "{receipt}");
            }
        })
    };
    let garbage = tokio::spawn(send_garbage(addr));
    let malformed = tokio::spawn(send_malformed(addr));

    within(PHASE, "the publisher", publisher)
        .await
        .expect("publisher task");
    let (mut good, events) = within(PHASE, "the subscriber", subscriber)
        .await
        .expect("subscriber task");
    let garbage_answers = within(PHASE, "the garbage senders", garbage)
        .await
        .expect("garbage task");
    let malformed_outcomes = within(PHASE, "the malformed-frame senders", malformed)
        .await
        .expect("malformed task");

    // Every event, exactly once, in order, with its data.
    assert_eq!(events.len() as u64, EVENTS);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event["data"]["i"],
            i as u64 + 1,
            "event {} carries the wrong data",
            i + 1
        );
        assert_eq!(
            event["data"]["pad"].as_str().map(str::len),
            Some(EVENT_BYTES)
        );
    }
    // And it is still a live, answering session.
    good.send_json(json!({"type": "ping"})).await;
    assert_eq!(good.next_json().await["type"], "pong");

    // The node is up and serves newcomers.
    assert_eq!(api.get("/healthz").await.0, 200);
    assert_eq!(api.get("/readyz").await.0, 200);
    let (mut newcomer, subscribed) =
        Ws::room(&server, ROOM, &format!("?cursor={}", EVENTS - 3)).await;
    assert_eq!(subscribed["head"], EVENTS);
    newcomer.until_caught_up(ROOM, EVENTS - 3).await;

    // The garbage got HTTP errors or a closed connection, never a hang.
    assert_eq!(garbage_answers.len(), GARBAGE);
    let accepted: Vec<&String> = garbage_answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 2") || a.starts_with("HTTP/1.1 101"))
        .collect();
    assert!(accepted.is_empty(), "garbage was accepted: {accepted:?}");
    // Protocol violations ended their sessions; the codes that have one were used.
    for (kind, outcome) in &malformed_outcomes {
        let ok = match kind {
            Malformed::Binary => *outcome == Outcome::Closed(Some(1008)),
            Malformed::HugeLength | Malformed::HugeFragmented => {
                *outcome == Outcome::Closed(Some(1009))
            }
            Malformed::BadJsonBurst | Malformed::PingFlood => true,
            _ => matches!(outcome, Outcome::Closed(_)),
        };
        assert!(
            ok,
            "{kind:?} ended as {outcome:?}; all outcomes: {malformed_outcomes:?}"
        );
    }

    // Sockets that never read were cut as slow consumers (they resume from
    // their cursor when they come back), not buffered without bound.
    // (A cut is counted once its close frame has had its chance to go out.)
    let slow = eventually("a non-reading socket to be cut as a slow consumer", || {
        let api = api.clone();
        async move {
            let slow = api
                .metric("hubcast_connections_closed_total{reason=\"slow_consumer\"}")
                .await;
            (slow >= 1.0).then_some(slow)
        }
    })
    .await;

    // Memory stayed bounded while all of it was open.
    let rss_peak = support::rss_kib(pid);
    assert!(
        rss_peak < rss_before + RSS_BOUND_KIB,
        "the server's RSS grew from {rss_before} KiB to {rss_peak} KiB under attack"
    );
    eprintln!(
        "hostile: rss {rss_before} -> {rss_peak} KiB, fds {fds_before} -> {}, slow-consumer closes {slow}",
        open_fds(pid)
    );

    // When the attackers go, so do their resources.
    drop(stalled);
    drop(non_readers);
    // (`good` and `newcomer` remain: two sessions, one more descriptor.)
    let mut last = (0, json!(null));
    let released = tokio::time::timeout(PHASE, async {
        loop {
            let fds = open_fds(pid);
            let (_, stats) = api.get("/v1/stats").await;
            if fds <= fds_before + 16 && stats["connections"] == 2 {
                return;
            }
            last = (fds, stats);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        released.is_ok(),
        "resources left over: {} fds (from {fds_before}), stats {}",
        last.0,
        last.1
    );
    assert_eq!(api.get("/healthz").await.0, 200);
}

// ---------------------------------------------------------------------------
// Handshakes that never finish
// ---------------------------------------------------------------------------

/// `STALLED` connections with half a request head, then `SILENT` with nothing.
async fn open_stalled(addr: SocketAddr) -> Vec<TcpStream> {
    futures_util::stream::iter(0..STALLED + SILENT)
        .map(|i| async move {
            let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
            if i < STALLED {
                let partial: &[u8] = match i % 3 {
                    0 => b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
                    1 => b"GET /v1/rooms/feed/ws HTTP/1.1\r\nHost: x\r\nConnection: Up",
                    _ => b"POST /v1/rooms/feed/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"data\":",
                };
                stream.write_all(partial).await.expect("write a partial request");
            }
            stream
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

// ---------------------------------------------------------------------------
// Garbage instead of HTTP
// ---------------------------------------------------------------------------

/// One connection per item: writes garbage, reads what comes back until the
/// server closes (or a second passes), returns the first line of the answer.
async fn send_garbage(addr: SocketAddr) -> Vec<String> {
    futures_util::stream::iter(0..GARBAGE)
        .map(|i| async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return "connect failed".to_owned();
            };
            let _ = stream.write_all(&garbage(i)).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 || answer.len() > 64 * 1024 {
                        break;
                    }
                    answer.extend_from_slice(&chunk[..n]);
                }
            })
            .await;
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .buffer_unordered(CONCURRENCY / 2)
        .collect()
        .await
}

/// The `i`th garbage payload: random bytes, oversized or contradictory
/// headers, an HTTP/2 preface, a TLS hello, a broken upgrade.
fn garbage(i: usize) -> Vec<u8> {
    let random = |n: usize| -> Vec<u8> { (0..n).map(|_| rand::random::<u8>()).collect() };
    match i % 8 {
        0 | 1 => random(1 + i % 4096),
        2 => format!("GET /v1/ws HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(128 * 1024)).into_bytes(),
        3 => b"POST /v1/rooms/feed/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        4 => {
            let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            preface.extend(random(512));
            preface
        }
        5 => {
            // A TLS ClientHello record header and junk.
            let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
            hello.extend(random(500));
            hello
        }
        6 => b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\n\r\n".to_vec(),
        _ => {
            let mut request = b"GET /v1/ws HTTP/1.1\r\n".to_vec();
            for n in 0..500 {
                request.extend_from_slice(format!("X-H{n}: v\r\n").as_bytes());
            }
            request.extend_from_slice(b"\r\n");
            request
        }
    }
}

// ---------------------------------------------------------------------------
// Malformed WebSocket frames
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    /// 100 text frames of bad JSON and unknown types (answered, not fatal).
    BadJsonBurst,
    Unmasked,
    ReservedOpcode,
    ReservedBits,
    InvalidUtf8,
    ContinuationWithoutStart,
    FragmentedPing,
    OversizedPing,
    /// A header announcing 2^62 bytes.
    HugeLength,
    /// 2 MiB of continuation fragments (over the 1 MiB + 16 KiB limit).
    HugeFragmented,
    Binary,
    BadClose,
    /// 500 WebSocket pings in one write, never reading the pongs.
    PingFlood,
}

const KINDS: [Malformed; 13] = [
    Malformed::BadJsonBurst,
    Malformed::Unmasked,
    Malformed::ReservedOpcode,
    Malformed::ReservedBits,
    Malformed::InvalidUtf8,
    Malformed::ContinuationWithoutStart,
    Malformed::FragmentedPing,
    Malformed::OversizedPing,
    Malformed::HugeLength,
    Malformed::HugeFragmented,
    Malformed::Binary,
    Malformed::BadClose,
    Malformed::PingFlood,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The server ended the connection: its close code, if it sent one.
    Closed(Option<u16>),
    /// Still open when the test stopped waiting.
    Open,
}

/// Upgraded sockets each sending one kind of malformed burst; what the server did.
async fn send_malformed(addr: SocketAddr) -> Vec<(Malformed, Outcome)> {
    futures_util::stream::iter(0..MALFORMED)
        .map(|i| async move {
            let kind = KINDS[i % KINDS.len()];
            let mut stream = raw_upgrade(addr).await;
            let _ = stream.write_all(&malformed(kind)).await;
            let wait = match kind {
                Malformed::BadJsonBurst | Malformed::PingFlood => Duration::from_millis(300),
                _ => STEP,
            };
            (kind, read_to_close(&mut stream, wait).await)
        })
        .buffer_unordered(CONCURRENCY / 2)
        .collect()
        .await
}

/// Upgrades `/v1/ws` by hand; the stream is positioned after the 101 head.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    // Read byte by byte up to the end of the head, so no frame is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = within(STEP, "the upgrade answer", stream.read_u8())
            .await
            .expect("read the upgrade answer");
        head.push(byte);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads server frames until the connection ends or `wait` passes.
async fn read_to_close(stream: &mut TcpStream, wait: Duration) -> Outcome {
    let mut buf = Vec::new();
    let ended = tokio::time::timeout(wait, async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            // The server's close frame is the end, as it is for any client
            // (which then hangs up): the server lingers only while we stay.
            if close_code(&buf).is_some() {
                return;
            }
        }
    })
    .await
    .is_ok();
    if !ended {
        return Outcome::Open;
    }
    Outcome::Closed(close_code(&buf))
}

/// The code of the first close frame in a stream of (unmasked) server frames.
fn close_code(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, at) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().ok()?) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if bytes.len() < at + len {
            return None;
        }
        if opcode == 0x8 {
            return (len >= 2).then(|| u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        }
        bytes = &bytes[at + len..];
    }
    None
}

/// A client frame: `first` is the FIN/RSV/opcode byte; masked unless told not to.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x1bu8, 0x2c, 0x3d, 0x4e];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn malformed(kind: Malformed) -> Vec<u8> {
    const TEXT: u8 = 0x81;
    match kind {
        Malformed::BadJsonBurst => {
            let mut out = Vec::new();
            for i in 0..100 {
                let text = match i % 4 {
                    0 => "{not json".to_owned(),
                    1 => format!(r#"{{"type":"dance","id":"d{i}"}}"#),
                    2 => r#"{"type":"subscribe","room":"bad room"}"#.to_owned(),
                    _ => r#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"#.to_owned(),
                };
                out.extend(frame(TEXT, text.as_bytes(), true));
            }
            out
        }
        Malformed::Unmasked => frame(TEXT, br#"{"type":"ping"}"#, false),
        Malformed::ReservedOpcode => frame(0x83, b"????", true),
        Malformed::ReservedBits => frame(0xC1, br#"{"type":"ping"}"#, true),
        Malformed::InvalidUtf8 => frame(TEXT, &[0x7b, 0xff, 0xfe, 0xc3, 0x28, 0x7d], true),
        Malformed::ContinuationWithoutStart => frame(0x80, br#"{"type":"ping"}"#, true),
        Malformed::FragmentedPing => frame(0x09, b"ping", true),
        Malformed::OversizedPing => frame(0x89, &[7u8; 200], true),
        Malformed::HugeLength => {
            let mut out = vec![TEXT, 0x80 | 127];
            out.extend_from_slice(&(1u64 << 62).to_be_bytes());
            out.extend_from_slice(&[1, 2, 3, 4]);
            out.extend_from_slice(&[0u8; 1024]);
            out
        }
        Malformed::HugeFragmented => {
            let chunk = vec![b'a'; 64 * 1024];
            let mut out = frame(0x01, b"\"", true); // text, not final
            for _ in 0..32 {
                out.extend(frame(0x00, &chunk, true)); // continuation, not final
            }
            out.extend(frame(0x80, b"\"", true));
            out
        }
        Malformed::Binary => frame(0x82, &[0, 1, 2, 3], true),
        Malformed::BadClose => frame(0x88, &[0x03, 0xe7, 0xff], true), // code 999, invalid UTF-8 reason
        Malformed::PingFlood => {
            let mut out = Vec::new();
            for _ in 0..500 {
                out.extend(frame(0x89, b"are you there", true));
            }
            out
        }
    }
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

/// How many files `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

// ---------------------------------------------------------------------------
// The same kind of attack against the default limits
// ---------------------------------------------------------------------------

/// With the default limits (600 connects per address per minute, 200
/// messages per session per second) a flood of upgrades from one address is
/// mostly turned away with 429, and the sessions it does get are closed with
/// 4008 when they flood messages — while a client at another address (behind
/// the same trusted proxy) receives every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_turn_a_flood_away() {
    const ATTEMPTS: usize = 800;
    const FLOOD_EVENTS: u64 = 200;
    let server = Server::start("insecure = true\n[sqlite]\nsynchronous = \"normal\"\n[auth]\ntrusted_proxies = [\"127.0.0.1\"]\n").await;
    let addr = server.addr();
    let api = server.api();
    let mut good = Ws::upgrade(
        &server.room_ws_url(ROOM, ""),
        &[("x-forwarded-for", "192.0.2.1")],
    )
    .await
    .unwrap_or_else(|(status, body)| panic!("the good client was refused: {status} {body}"));
    good.expect_type("welcome").await;
    good.expect_type("subscribed").await;
    good.until_caught_up(ROOM, 0).await;

    let subscriber =
        tokio::spawn(async move { good.events_until(ROOM, 0, FLOOD_EVENTS).await.len() as u64 });
    let publisher = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 1..=FLOOD_EVENTS {
                api.publish(ROOM, json!({"i": i})).await;
            }
        })
    };
    let flood: Vec<Option<Outcome>> = within(
        PHASE,
        "the upgrade flood",
        futures_util::stream::iter(0..ATTEMPTS)
            .map(|_| async move {
                let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
                let request = format!(
                    "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     X-Forwarded-For: 203.0.113.66\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await.expect("write upgrade");
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(within(STEP, "an upgrade answer", stream.read_u8()).await.expect("read"));
                }
                if head.starts_with(b"HTTP/1.1 429") {
                    return None;
                }
                assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
                let mut pings = Vec::new();
                for _ in 0..1000 {
                    pings.extend(frame(0x81, br#"{"type":"ping"}"#, true));
                }
                let _ = stream.write_all(&pings).await;
                Some(read_to_close(&mut stream, STEP).await)
            })
            .buffer_unordered(CONCURRENCY / 2)
            .collect(),
    )
    .await;

    let refused = flood.iter().filter(|o| o.is_none()).count();
    assert!(
        refused > 0,
        "{ATTEMPTS} upgrades from one address must trip 600 per minute"
    );
    for outcome in flood.iter().flatten() {
        assert_eq!(
            *outcome,
            Outcome::Closed(Some(4008)),
            "a message flood is closed with 4008"
        );
    }
    within(PHASE, "the publisher", publisher)
        .await
        .expect("publisher");
    assert_eq!(
        within(PHASE, "the subscriber", subscriber)
            .await
            .expect("subscriber"),
        FLOOD_EVENTS
    );
    assert!(
        api.metric("hubcast_refusals_total{reason=\"rate_limited\"}")
            .await
            >= refused as f64
    );
    assert!(
        api.metric("hubcast_refusals_total{reason=\"message_rate\"}")
            .await
            >= 1.0
    );
    assert_eq!(api.get("/healthz").await.0, 200);
}

// ---------------------------------------------------------------------------
// Handshakes that never finish are timed out
// ---------------------------------------------------------------------------

/// A connection that never completes its request head (silent, or a head cut
/// off midway) is closed by the server after `limits.header_read_timeout_ms`,
/// so idle or trickling connections cannot hold the node's file descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_closed_by_the_server() {
    let server = Server::start(
        "[sqlite]\nsynchronous = \"normal\"\n[limits]\nheader_read_timeout_ms = 500\n",
    )
    .await;
    let addr = server.addr();
    let mut stalled = Vec::new();
    for i in 0..100 {
        let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
        if i % 2 == 0 {
            stream
                .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
        }
        stalled.push(stream);
    }
    within(
        Duration::from_secs(120),
        "the server to close stalled handshakes",
        async {
            for stream in &mut stalled {
                let mut byte = [0u8; 1];
                loop {
                    match stream.read(&mut byte).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => continue,
                    }
                }
            }
        },
    )
    .await;
}
