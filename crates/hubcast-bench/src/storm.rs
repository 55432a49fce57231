//! `bench storm-client`: one client process of `bench/storm` written in Rust,
//! for when the load generator must cost less than the servers it loads.
//!
//! `bench/storm/storm.mjs` drives its client processes with three requests,
//! one JSON object per line: `storm` (open this process's share of the
//! subscribers and answer once each is subscribed, refused or failed),
//! `publish` (this process's share of the durable publishes, at its rate) and
//! `check` (each subscriber's stream against its room's head). This process
//! reads them on stdin and answers on stdout exactly as the Node client
//! (`storm.mjs --worker`) does, so the two are interchangeable behind the same
//! report. On this 2-core machine six Node client processes needed 100-125%
//! of a core for 20,400 deliveries/s over 102,000 sockets, more than the six
//! nodes they measured; these need ~45%, and connect in 13 s instead of 48 s.
//!
//! Like the Node client it never retries: a subscribe answered `error`
//! counts as refused, a socket closed before `caught_up` as failed. It reads
//! frames with its own minimal JSON view, not hubcast's protocol crate.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::load_client::{
    connect, connect_error, now_ms, request_failure, source_address, Frame, Sent,
};

/// The storm's options, as storm.mjs sends them (its `opt`).
#[derive(Debug, Clone, Deserialize)]
struct StormOptions {
    nodes: Vec<String>,
    connections: usize,
    workers: usize,
    rooms: usize,
    rate: f64,
    seconds: f64,
    prefix: String,
    #[serde(default = "default_inflight")]
    inflight: usize,
    #[serde(default = "default_sources")]
    sources: usize,
}

fn default_inflight() -> usize {
    1000
}

fn default_sources() -> usize {
    64
}

/// A request from storm.mjs.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Request {
    Storm { w: usize, opt: StormOptions },
    Publish,
    Check { heads: Vec<u64> },
}

/// Where one subscriber stands.
#[derive(Debug, Default)]
struct Stream {
    state: State,
    opened: bool,
    /// The next seq expected; the stream holds 1..next-1.
    next: u64,
    delivered: u64,
    duplicates: u64,
    gap_events: u64,
    holes: u64,
    resets: u64,
    closed: bool,
    refusal: Option<String>,
    connect_error: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Connecting,
    Live,
    Refused,
    Failed,
}

/// What every subscriber of the process records.
struct Latencies {
    /// Publish-to-receive of each in-order event, in ms (sent back whole:
    /// storm.mjs merges every process's into one set of percentiles).
    all: Vec<f64>,
    /// The publisher's clock to the store's commit (`ts`), µs.
    to_commit: Histogram<u64>,
    /// The store's commit to receipt, µs.
    from_commit: Histogram<u64>,
    /// Beside each of `all`: the second (since the Unix epoch) it was sent
    /// in, and its publish-to-commit part (-1 when the frame had no `ts`),
    /// for storm.mjs's per-second timeline.
    second: Vec<u64>,
    to_commit_ms: Vec<f64>,
}

/// The process: requests on stdin, answers on stdout, until stdin closes.
pub async fn client() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let latencies = Arc::new(Mutex::new(Latencies {
        all: Vec::new(),
        to_commit: Histogram::new(3)?,
        from_commit: Histogram::new(3)?,
        second: Vec::new(),
        to_commit_ms: Vec::new(),
    }));
    let lag = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let mut streams: Vec<(usize, Arc<Mutex<Stream>>)> = Vec::new();
    let mut options: Option<(usize, StormOptions)> = None;
    let mut lag_probe: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(line) = lines.next_line().await? {
        let answer = match serde_json::from_str::<Request>(&line)? {
            Request::Storm { w, opt } => {
                streams = storm(w, &opt, &latencies).await;
                options = Some((w, opt));
                tally(&streams)
            }
            Request::Publish => {
                let (w, opt) = options
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("publish before storm"))?;
                lag_probe = Some(tokio::spawn(probe_lag(lag.clone())));
                publish(*w, opt).await?
            }
            Request::Check { heads } => {
                if let Some(probe) = lag_probe.take() {
                    probe.abort();
                }
                check(&streams, &heads, &latencies, &lag)
            }
        };
        let mut out = serde_json::to_vec(&answer)?;
        out.push(b'\n');
        stdout.write_all(&out).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// Opens this process's share of the subscribers (`w` of `opt.workers`),
/// spread exactly as storm.mjs's Node client spreads them, and returns once
/// each is live, refused or failed.
async fn storm(
    w: usize,
    opt: &StormOptions,
    latencies: &Arc<Mutex<Latencies>>,
) -> Vec<(usize, Arc<Mutex<Stream>>)> {
    let per = opt.connections / opt.workers;
    let extra = opt.connections % opt.workers;
    let share = per + usize::from(w < extra);
    let base = w * per + w.min(extra);
    let gate = Arc::new(Semaphore::new(opt.inflight.max(1)));
    let (settled_tx, mut settled_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut streams = Vec::with_capacity(share);
    for i in 0..share {
        let g = base + i;
        let room = g % opt.rooms;
        // Subscribers of one room land on every node in turn.
        let node = opt.nodes[(g / opt.rooms) % opt.nodes.len()].clone();
        let source = source_address(1, w, i, opt.sources);
        let stream = Arc::new(Mutex::new(Stream {
            next: 1,
            ..Stream::default()
        }));
        streams.push((room, stream.clone()));
        let url = format!(
            "{}/v1/rooms/{}:{room}/ws?cursor=0",
            node.replacen("http", "ws", 1),
            opt.prefix
        );
        let (gate, settled, latencies) = (gate.clone(), settled_tx.clone(), latencies.clone());
        tokio::spawn(async move {
            subscribe(&url, &node, source, &gate, &stream, &latencies, settled).await;
        });
    }
    drop(settled_tx);
    for _ in 0..share {
        if settled_rx.recv().await.is_none() {
            break;
        }
    }
    streams
}

/// One subscriber for the life of the process: connect (through the
/// handshake gate), then read and check every frame until the socket closes.
async fn subscribe(
    url: &str,
    node: &str,
    source: Ipv4Addr,
    gate: &Semaphore,
    stream: &Mutex<Stream>,
    latencies: &Mutex<Latencies>,
    settled: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let settle = |stream: &mut Stream, state: State| {
        if stream.state == State::Connecting {
            stream.state = state;
            let _ = settled.send(());
        }
    };
    let socket = {
        let _permit = gate.acquire().await;
        connect(url, node, source).await
    };
    let mut socket = match socket {
        Ok(socket) => socket,
        Err(err) => {
            let mut s = stream.lock().unwrap();
            s.connect_error = Some(connect_error(&err));
            settle(&mut s, State::Failed);
            return;
        }
    };
    stream.lock().unwrap().opened = true;
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(_) => continue,
            Err(_) => break,
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        let mut s = stream.lock().unwrap();
        match frame.kind {
            "caught_up" => settle(&mut s, State::Live),
            "reset" => s.resets += 1,
            "error" if s.state == State::Connecting => {
                s.refusal = Some(frame.code.unwrap_or_else(|| "no-code".to_owned()));
                settle(&mut s, State::Refused);
            }
            "event" => accept(&mut s, frame.seq, frame.ts, frame.data.as_ref(), latencies),
            "batch" => {
                for item in &frame.events {
                    accept(&mut s, item.seq, item.ts, item.data.as_ref(), latencies);
                }
            }
            _ => {}
        }
    }
    let mut s = stream.lock().unwrap();
    s.closed = true;
    settle(&mut s, State::Failed);
}

fn accept(
    s: &mut Stream,
    seq: u64,
    ts: Option<f64>,
    data: Option<&Sent>,
    latencies: &Mutex<Latencies>,
) {
    s.delivered += 1;
    if seq == s.next {
        s.next += 1;
        if let Some(sent) = data.and_then(|d| d.t) {
            let now = now_ms();
            let mut l = latencies.lock().unwrap();
            l.all.push(now - sent);
            l.second.push((sent / 1000.0) as u64);
            l.to_commit_ms.push(ts.map_or(-1.0, |ts| ts - sent));
            if let Some(ts) = ts {
                let _ = l.to_commit.record(((ts - sent).max(0.0) * 1000.0) as u64);
                let _ = l.from_commit.record(((now - ts).max(0.0) * 1000.0) as u64);
            }
        }
    } else if seq < s.next {
        s.duplicates += 1;
    } else {
        s.gap_events += 1;
        s.holes += seq - s.next;
        s.next = seq + 1;
    }
}

/// The storm's answer: how each subscribe ended.
fn tally(streams: &[(usize, Arc<Mutex<Stream>>)]) -> Value {
    let (mut opened, mut subscribed, mut refused, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut codes = BTreeMap::<String, u64>::new();
    let mut errors = BTreeMap::<String, u64>::new();
    for (_, stream) in streams {
        let s = stream.lock().unwrap();
        opened += u64::from(s.opened);
        match s.state {
            State::Live => subscribed += 1,
            State::Refused => {
                refused += 1;
                *codes
                    .entry(s.refusal.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            State::Failed => failed += 1,
            State::Connecting => {}
        }
        if let Some(kind) = &s.connect_error {
            *errors.entry(kind.clone()).or_default() += 1;
        }
    }
    json!({"type": "stormed", "opened": opened, "subscribed": subscribed, "refused": refused,
        "failedConnects": failed, "codes": codes, "connectErrors": errors})
}

/// This process's share of the publishes: `rate / workers` per second for
/// `seconds`, each to a random room on the nodes in turn, with the send time
/// in the event. Every publish is its own request on a keep-alive pool, sent
/// when due whatever the earlier ones are doing.
async fn publish(w: usize, opt: &StormOptions) -> anyhow::Result<Value> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()?;
    let rate = opt.rate / opt.workers as f64;
    let total = (rate * opt.seconds).round() as u64;
    let heads = Arc::new(Mutex::new(vec![0u64; opt.rooms]));
    let reasons = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut pending = tokio::task::JoinSet::new();
    for n in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
        let room = rand::random::<u32>() as usize % opt.rooms;
        let node = &opt.nodes[(w + n as usize) % opt.nodes.len()];
        let url = format!("{node}/v1/rooms/{}:{room}/events", opt.prefix);
        let body = json!({"data": {"t": now_ms(), "w": w}});
        let (http, heads, reasons, ok) = (http.clone(), heads.clone(), reasons.clone(), ok.clone());
        pending.spawn(async move {
            let reason = match http.post(url).json(&body).send().await {
                Ok(response) if response.status().as_u16() == 201 => {
                    match response.json::<Value>().await {
                        Ok(receipt) => {
                            let seq = receipt["seq"].as_u64().unwrap_or(0);
                            let mut heads = heads.lock().unwrap();
                            heads[room] = heads[room].max(seq);
                            ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return;
                        }
                        Err(err) => format!("201 unreadable receipt: {err}"),
                    }
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.json::<Value>().await.unwrap_or_default();
                    format!(
                        "{status} {}",
                        body["error"].as_str().unwrap_or("no-error-code")
                    )
                }
                Err(err) => request_failure(&err),
            };
            *reasons.lock().unwrap().entry(reason).or_default() += 1;
        });
    }
    while pending.join_next().await.is_some() {}
    let ok = ok.load(std::sync::atomic::Ordering::Relaxed);
    let reasons = std::mem::take(&mut *reasons.lock().unwrap());
    let failed: u64 = reasons.values().sum();
    let heads = std::mem::take(&mut *heads.lock().unwrap());
    Ok(json!({"type": "published", "ok": ok, "failed": failed, "reasons": reasons, "heads": heads}))
}

/// How late this process's runtime runs: a 10 ms sleep's overshoot, the
/// counterpart of the Node client's event-loop delay.
async fn probe_lag(lag: Arc<Mutex<Histogram<u64>>>) {
    loop {
        let asked = tokio::time::Instant::now() + Duration::from_millis(10);
        tokio::time::sleep_until(asked).await;
        let late = tokio::time::Instant::now().saturating_duration_since(asked);
        let _ = lag.lock().unwrap().record(late.as_micros() as u64);
    }
}

/// Every stream against its room's head, and the latencies.
fn check(
    streams: &[(usize, Arc<Mutex<Stream>>)],
    heads: &[u64],
    latencies: &Mutex<Latencies>,
    lag: &Mutex<Histogram<u64>>,
) -> Value {
    let (mut expected, mut delivered, mut missed, mut disorder, mut inexact, mut closed) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for (room, stream) in streams {
        let s = stream.lock().unwrap();
        let head = heads.get(*room).copied().unwrap_or(0);
        expected += head;
        if s.state != State::Live {
            missed += head;
            inexact += 1;
            continue;
        }
        let got = s.next - 1;
        delivered += s.delivered;
        missed += head.saturating_sub(got) + s.holes;
        disorder += s.duplicates + s.gap_events;
        let exact = got == head && s.duplicates == 0 && s.holes == 0 && s.resets == 0;
        inexact += u64::from(!exact);
        closed += u64::from(s.closed);
    }
    let l = latencies.lock().unwrap();
    let lag = lag.lock().unwrap();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let summary = |h: &Histogram<u64>| {
        json!({"count": h.len(), "p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99), "p999_ms": ms(h, 0.999),
            "max_ms": h.max() as f64 / 1000.0, "mean_ms": h.mean() / 1000.0})
    };
    json!({"type": "checked", "expected": expected, "delivered": delivered, "missed": missed,
    "disorder": disorder, "inexact": inexact, "closed": closed, "latencies": l.all,
        "sentSeconds": l.second, "toCommit": l.to_commit_ms,
    "breakdown": {
        "publish_to_commit_ms": summary(&l.to_commit),
        "commit_to_receive_ms": summary(&l.from_commit),
        "client_loop_delay_ms": {"p50": ms(&lag, 0.5), "p99": ms(&lag, 0.99), "max": lag.max() as f64 / 1000.0},
    }})
}
