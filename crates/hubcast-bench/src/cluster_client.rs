//! `bench cluster-client`: one client process of `bench/cluster` written in
//! Rust, for when the load generator must cost less than the servers it loads.
//!
//! `bench/cluster/cluster.mjs` drives its client processes with one JSON
//! request per line: `connect` (open this process's share of the room mix's
//! subscribers and answer once each is live), `down` (a node was killed),
//! `publish` (this process's share of the durable publishes), `drain` (wait
//! until every stream holds its room's head) and `check` (each stream against
//! its room's head); every second the process also sends a `tick` of what it
//! saw. This process reads the requests on stdin and answers on stdout exactly
//! as the Node worker (`cluster.mjs --worker`, with wsload.mjs's `Subscriber`
//! and `resume: true`) does, so the two are interchangeable behind the same
//! report. At 100,000 sockets the Node client processes took ~95% of one of
//! this machine's 2 cores: the rate measured was the load generator's limit,
//! not the servers'. The point of this one is to leave the cores to the nodes.
//!
//! Latencies cross the process boundary as wsload.mjs's `Histogram` JSON
//! (`{b: {bucket: count}, count, max, sum}`, 1% log buckets), so the main
//! process merges them with the Node workers' code unchanged; [`Buckets`] is
//! that histogram. Frames are read with a minimal JSON view of their own, not
//! hubcast's protocol crate: this is an independent client.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::load_client::{
    connect, connect_error, now_ms, request_failure, socket_error, source_address, Frame, Sent,
    Socket,
};

/// The options of cluster.mjs this process reads (its `opt`, sent with `connect`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterOptions {
    urls: Vec<String>,
    prefix: String,
    placement: Placement,
    inflight: usize,
    publish_inflight: usize,
    source_block: usize,
    sources: usize,
    connect_timeout: f64,
}

/// Which node a subscriber starts on and fails over to (see [`Worker::pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Placement {
    Spread,
    RoomHash,
}

/// A request from cluster.mjs.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Request {
    Connect {
        w: usize,
        #[serde(rename = "P")]
        processes: usize,
        opt: ClusterOptions,
        sizes: Vec<usize>,
    },
    Down {
        node: usize,
    },
    Publish {
        rate: f64,
        seconds: f64,
    },
    Drain {
        heads: Vec<u64>,
        /// Milliseconds since the Unix epoch.
        deadline: f64,
    },
    Check {
        heads: Vec<u64>,
    },
    #[serde(other)]
    Unknown,
}

/// The Node client's publish deadline (wsload.mjs's `post`).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// The Node client's keep-alive agent opens at most this many sockets per
/// node (`maxSockets`); more publishes wait for one.
const PUBLISH_SOCKETS_PER_NODE: usize = 64;

// ---------------------------------------------------------------- histogram

/// wsload.mjs's `Histogram`: latencies in ms in buckets 1% wide, bucket
/// `ceil(ln(ms / 0.01) / ln(1.01))` (0 for ms ≤ 0.01), serialized sparse.
#[derive(Debug, Default)]
struct Buckets {
    /// Count per bucket index (a few thousand at most: 60 s is bucket ~1,570).
    counts: Vec<u64>,
    count: u64,
    max: f64,
    sum: f64,
}

const BUCKET_MIN_MS: f64 = 0.01;

impl Buckets {
    fn bucket_of(ms: f64) -> usize {
        if ms <= BUCKET_MIN_MS {
            return 0;
        }
        ((ms / BUCKET_MIN_MS).ln() / 1.01f64.ln()).ceil() as usize
    }

    fn add(&mut self, ms: f64) {
        let bucket = Self::bucket_of(ms);
        if bucket >= self.counts.len() {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum += ms;
        if ms > self.max {
            self.max = ms;
        }
    }

    /// `{b: {bucket: count}, count, max, sum}`, as `Histogram.toJSON()`.
    fn to_json(&self) -> Value {
        let b: Map<String, Value> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(bucket, &n)| (bucket.to_string(), n.into()))
            .collect();
        json!({"b": b, "count": self.count, "max": self.max, "sum": self.sum})
    }
}

// ---------------------------------------------------------------- recording

/// What every subscriber and the publisher of this process record.
#[derive(Debug, Default)]
struct Recorder {
    /// Publish-to-receive of the events that came live, this step.
    live: Buckets,
    /// … and of those replayed after a resume (before its `caught_up`).
    replay: Buckets,
    /// A resume's time from the close to live again.
    resume: Buckets,
    /// Since the last tick.
    tick: Tick,
}

#[derive(Debug, Default)]
struct Tick {
    deliveries: u64,
    replayed: u64,
    ok: u64,
    failed: u64,
    hist: Buckets,
}

impl Recorder {
    fn delivery(&mut self, ms: f64, replayed: bool) {
        self.tick.deliveries += 1;
        self.tick.hist.add(ms);
        if replayed {
            self.tick.replayed += 1;
            self.replay.add(ms);
        } else {
            self.live.add(ms);
        }
    }
}

// ---------------------------------------------------------------- subscriber

/// One subscriber: its room, the nodes it tries, its source address, and
/// where its stream stands.
struct Subscriber {
    room: String,
    room_index: usize,
    /// The nodes to try, best first ([`node_order`]).
    order: Vec<usize>,
    /// Spreads a dead node's subscribers over the others (`spread`).
    salt: usize,
    source: Ipv4Addr,
    stream: Mutex<Stream>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Connecting,
    Live,
    Resuming,
}

/// Where one subscriber's stream stands: wsload.mjs's `Subscriber` fields.
#[derive(Debug, Default)]
struct Stream {
    state: State,
    epoch: Option<String>,
    /// The next seq expected; the stream holds 1..next-1.
    next: u64,
    duplicates: u64,
    /// Seqs skipped by holes.
    holes: u64,
    resets: u64,
    resumes: u64,
    failures_in_row: u32,
    /// When the last live socket closed (ms since the epoch).
    closed_at: f64,
    /// The refusal (`error` frame) of the current socket, if any.
    refusal: Option<String>,
    connect_errors: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
    close_codes: BTreeMap<String, u64>,
    /// The node of the current (or last) socket.
    node: usize,
    /// The node it was on when the last publish phase started.
    node_at_publish: Option<usize>,
}

/// One stream against its room's head (`Subscriber.check`).
struct Verdict {
    exact: bool,
    missed: u64,
    beyond: u64,
}

impl Stream {
    /// An event in the stream: in order, a duplicate, or after a hole.
    /// Returns whether it was the next one.
    fn accept(&mut self, seq: u64) -> bool {
        if seq == self.next {
            self.next += 1;
            true
        } else if seq < self.next {
            self.duplicates += 1;
            false
        } else {
            self.holes += seq - self.next;
            self.next = seq + 1;
            false
        }
    }

    /// An error on a socket not yet caught up (Node's `ws` `error` event
    /// before `caught_up`), by its code.
    fn count_connect_error(&mut self, kind: String) {
        *self.connect_errors.entry(kind).or_default() += 1;
    }

    fn check(&self, head: u64) -> Verdict {
        let got = self.next - 1;
        Verdict {
            exact: self.state == State::Live
                && got == head
                && self.duplicates == 0
                && self.holes == 0
                && self.resets == 0,
            missed: head.saturating_sub(got) + self.holes,
            beyond: got.saturating_sub(head),
        }
    }

    /// Where to reconnect after a socket closed, and how long to wait: a live
    /// socket that closed resumes at once; a failed handshake (or a refusal)
    /// waits a little, longer each time in a row, jittered.
    fn closed(&mut self, caught_up: bool, code: u16) -> Duration {
        self.refusal = None;
        if caught_up {
            *self.close_codes.entry(code.to_string()).or_default() += 1;
            self.resumes += 1;
            self.closed_at = now_ms();
            self.state = State::Resuming;
            self.failures_in_row = 0;
            return Duration::ZERO;
        }
        self.failures_in_row += 1;
        let ms = (50.0 * 2f64.powi(self.failures_in_row.min(6) as i32)).min(2000.0)
            * (0.5 + rand::random::<f64>());
        Duration::from_secs_f64(ms / 1000.0)
    }
}

/// `fnv1a` of cluster.mjs (over UTF-16 code units there; the bench's room
/// names are ASCII, so bytes here).
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, byte| {
        (h ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The nodes a subscriber tries, best first (cluster.mjs's `nodeOrder`):
/// `spread` starts at (room + k) mod K, so a room's subscribers cover every
/// node; `room-hash` ranks the nodes by rendezvous hash of (room, node), so
/// they all start on one node and fail over together.
fn node_order(
    placement: Placement,
    nodes: usize,
    room_name: &str,
    room: usize,
    k: usize,
) -> Vec<usize> {
    match placement {
        Placement::Spread => (0..nodes).map(|i| (room + k + i) % nodes).collect(),
        Placement::RoomHash => {
            let mut ranked: Vec<(u32, usize)> = (0..nodes)
                .map(|n| (fnv1a(&format!("{room_name}/{n}")), n))
                .collect();
            // Highest hash first; ties keep node order (a stable sort, as JS's).
            ranked.sort_by_key(|&(hash, _)| std::cmp::Reverse(hash));
            ranked.into_iter().map(|(_, n)| n).collect()
        }
    }
}

// ---------------------------------------------------------------- the process

/// This client process once `connect` has told it its share.
struct Worker {
    w: usize,
    processes: usize,
    opt: ClusterOptions,
    sizes: Vec<usize>,
    /// The nodes known dead (`down`).
    down: Vec<AtomicBool>,
    subscribers: Vec<Arc<Subscriber>>,
    /// The handshakes in flight (wsload.mjs's `Gate`).
    handshakes: Semaphore,
    recorder: Mutex<Recorder>,
    /// Keep-alive HTTP for the publishes.
    http: reqwest::Client,
    /// Per node, the sockets the publishes may use at once (the Node
    /// client's agent's `maxSockets`).
    publish_sockets: Vec<Arc<Semaphore>>,
    /// The subscribers' tasks, stopped by `check`.
    tasks: Mutex<Vec<AbortHandle>>,
}

/// The process: requests on stdin, answers (and ticks) on stdout, until stdin closes.
pub async fn client() -> anyhow::Result<()> {
    let (out, lines_out) = unbounded_channel::<Value>();
    tokio::spawn(write_lines(lines_out));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut worker: Option<Arc<Worker>> = None;
    while let Some(line) = lines.next_line().await? {
        // Publish and drain take a while: answered by tasks of their own, so
        // that a `down` in the middle is read at once.
        match serde_json::from_str::<Request>(&line)? {
            Request::Connect {
                w,
                processes,
                opt,
                sizes,
            } => {
                let started = Arc::new(Worker::new(w, processes, opt, sizes)?);
                tokio::spawn(tick_every_second(started.clone(), out.clone()));
                answer(&out, started.clone().connect());
                worker = Some(started);
            }
            Request::Down { node } => connected(&worker)?.mark_down(node),
            Request::Publish { rate, seconds } => {
                answer(&out, connected(&worker)?.publish(rate, seconds));
            }
            Request::Drain { heads, deadline } => {
                answer(&out, connected(&worker)?.drain(heads, deadline));
            }
            Request::Check { heads } => {
                let worker = connected(&worker)?;
                let _ = out.send(worker.check(&heads));
                worker.stop();
            }
            Request::Unknown => {}
        }
    }
    Ok(())
}

/// The worker, once `connect` has made it.
fn connected(worker: &Option<Arc<Worker>>) -> anyhow::Result<Arc<Worker>> {
    worker
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a request before connect"))
}

/// Sends `reply`'s value on stdout once it is ready.
fn answer(
    out: &UnboundedSender<Value>,
    reply: impl std::future::Future<Output = Value> + Send + 'static,
) {
    let out = out.clone();
    tokio::spawn(async move {
        let _ = out.send(reply.await);
    });
}

/// One JSON object per line on stdout. A write that fails means cluster.mjs
/// is gone (it exits once it has the checks): nothing more to say.
async fn write_lines(mut values: UnboundedReceiver<Value>) {
    let mut stdout = tokio::io::stdout();
    while let Some(value) = values.recv().await {
        let mut line = serde_json::to_vec(&value).unwrap_or_default();
        line.push(b'\n');
        if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
            return;
        }
    }
}

async fn tick_every_second(worker: Arc<Worker>, out: UnboundedSender<Value>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    loop {
        every.tick().await;
        if out.send(worker.tick()).is_err() {
            return;
        }
    }
}

impl Worker {
    /// This process's share of the subscribers: subscriber g of the room mix
    /// (rooms in order, each room's subscribers k = 0..size) belongs to
    /// process g mod P, as in cluster.mjs.
    fn new(
        w: usize,
        processes: usize,
        opt: ClusterOptions,
        sizes: Vec<usize>,
    ) -> anyhow::Result<Worker> {
        let nodes = opt.urls.len();
        anyhow::ensure!(nodes > 0, "no node URLs");
        anyhow::ensure!(processes > 0, "P must be at least 1");
        let mut subscribers = Vec::new();
        let mut first = 0;
        for (room_index, &size) in sizes.iter().enumerate() {
            let room = format!("{}:{room_index}", opt.prefix);
            for k in (0..size).filter(|k| (first + k) % processes == w) {
                let socket = subscribers.len();
                subscribers.push(Arc::new(Subscriber {
                    order: node_order(opt.placement, nodes, &room, room_index, k),
                    room: room.clone(),
                    room_index,
                    salt: rand::random_range(0..1024),
                    source: source_address(opt.source_block, w, socket, opt.sources),
                    stream: Mutex::new(Stream {
                        next: 1,
                        ..Stream::default()
                    }),
                }));
            }
            first += size;
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(PUBLISH_SOCKETS_PER_NODE)
            .timeout(PUBLISH_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Worker {
            w,
            processes,
            down: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            subscribers,
            handshakes: Semaphore::new(opt.inflight.max(1)),
            recorder: Mutex::new(Recorder::default()),
            http,
            publish_sockets: (0..nodes)
                .map(|_| Arc::new(Semaphore::new(PUBLISH_SOCKETS_PER_NODE)))
                .collect(),
            tasks: Mutex::new(Vec::new()),
            opt,
            sizes,
        })
    }

    fn mark_down(&self, node: usize) {
        if let Some(flag) = self.down.get(node) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    fn is_down(&self, node: usize) -> bool {
        self.down
            .get(node)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// The nodes not known dead, in the order given.
    fn alive(&self, nodes: impl IntoIterator<Item = usize>) -> Vec<usize> {
        nodes.into_iter().filter(|&n| !self.is_down(n)).collect()
    }

    /// The node a subscriber connects to (cluster.mjs's `pick`): its first in
    /// `order` at first; after a close or a failed connect, `spread` goes to
    /// another live node at random (per subscriber), so a dead node's
    /// subscribers spread over the others; `room-hash` to the best live node
    /// of the room's rendezvous order, then the next ones, so a room moves
    /// whole.
    fn pick(&self, sub: &Subscriber, resumes: u64, failures: u32) -> usize {
        if resumes + u64::from(failures) == 0 {
            return sub.order[0];
        }
        let alive = self.alive(sub.order.iter().copied());
        if alive.is_empty() {
            return sub.order[0];
        }
        match self.opt.placement {
            Placement::RoomHash => alive[failures as usize % alive.len()],
            Placement::Spread => {
                alive[(sub.salt + resumes as usize + failures as usize) % alive.len()]
            }
        }
    }

    /// Starts every subscriber and answers once each is live, or when
    /// `connect-timeout` is up: `connected {notLive}`.
    async fn connect(self: Arc<Self>) -> Value {
        let (settled, mut live) = unbounded_channel::<()>();
        {
            let mut tasks = self.tasks.lock().unwrap();
            for sub in &self.subscribers {
                let task = keep_subscribed(self.clone(), sub.clone(), settled.clone());
                tasks.push(tokio::spawn(task).abort_handle());
            }
        }
        drop(settled);
        let expected = self.subscribers.len();
        let all_live = async {
            for _ in 0..expected {
                if live.recv().await.is_none() {
                    break;
                }
            }
        };
        let timeout = Duration::from_secs_f64(self.opt.connect_timeout.max(0.0));
        let _ = tokio::time::timeout(timeout, all_live).await;
        let not_live = self
            .subscribers
            .iter()
            .filter(|sub| sub.stream.lock().unwrap().state != State::Live)
            .count();
        json!({"type": "connected", "notLive": not_live})
    }

    /// The unsolicited once-a-second report: where the subscribers stand and
    /// what this process saw since the last tick.
    fn tick(&self) -> Value {
        let (mut live, mut resuming, mut resumes) = (0u64, 0u64, 0u64);
        for sub in &self.subscribers {
            let s = sub.stream.lock().unwrap();
            match s.state {
                State::Live => live += 1,
                State::Resuming => resuming += 1,
                State::Connecting => {}
            }
            resumes += s.resumes;
        }
        let tick = std::mem::take(&mut self.recorder.lock().unwrap().tick);
        json!({"type": "tick", "w": self.w, "at": now_ms() as u64, "live": live,
            "resuming": resuming, "resumes": resumes, "deliveries": tick.deliveries,
            "replayed": tick.replayed, "ok": tick.ok, "failed": tick.failed,
            "hist": tick.hist.to_json()})
    }

    /// This process's share of a publish phase: `rate / P` per second for
    /// `seconds`, open loop up to `publish-inflight` in flight, each to a
    /// random room on the live nodes in turn, with the send time in the
    /// event. Answers `published {ok, failed, reasons, heads}`.
    async fn publish(self: Arc<Self>, rate: f64, seconds: f64) -> Value {
        // Where each subscriber is as the phase starts: those on a node
        // killed in it must resume.
        for sub in &self.subscribers {
            let mut s = sub.stream.lock().unwrap();
            s.node_at_publish = Some(s.node);
        }
        {
            let mut recorder = self.recorder.lock().unwrap();
            recorder.live = Buckets::default();
            recorder.replay = Buckets::default();
        }
        let share = rate / self.processes as f64;
        let total = (share * seconds).round() as u64;
        let outcome = Arc::new(Mutex::new(Published::default()));
        let in_flight = Arc::new(Semaphore::new(self.opt.publish_inflight.max(1)));
        let start = tokio::time::Instant::now();
        let mut pending = tokio::task::JoinSet::new();
        for n in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / share)).await;
            // Beyond the cap the achieved rate falls short of the asked one
            // (and the report says so).
            let Ok(slot) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let room = rand::random_range(0..self.sizes.len());
            let alive = self.alive(0..self.opt.urls.len());
            let node = alive
                .get((self.w + n as usize) % alive.len().max(1))
                .copied()
                .unwrap_or(0);
            let (worker, outcome) = (self.clone(), outcome.clone());
            pending.spawn(async move {
                let result = worker.post(node, room).await;
                worker.count_publish(&outcome, room, result);
                drop(slot);
            });
            while pending.try_join_next().is_some() {}
        }
        while pending.join_next().await.is_some() {}
        let outcome = std::mem::take(&mut *outcome.lock().unwrap());
        json!({"type": "published", "ok": outcome.ok, "failed": outcome.failed,
            "reasons": outcome.reasons, "heads": outcome.heads})
    }

    /// One durable publish of `{"t": now, "w": w}` to `room` on `node`: the
    /// receipt's seq, or why it failed, as wsload.mjs's `post` says it
    /// (`STATUS code` from the error body, or the socket error).
    async fn post(&self, node: usize, room: usize) -> Result<u64, String> {
        let _socket = self.publish_sockets[node].acquire().await;
        let url = format!(
            "{}/v1/rooms/{}:{room}/events",
            self.opt.urls[node], self.opt.prefix
        );
        let body = json!({"data": {"t": now_ms(), "w": self.w}});
        let response = self.http.post(url).json(&body).send().await;
        let response = response.map_err(|err| request_failure(&err))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|err| request_failure(&err))?;
        let json = serde_json::from_str::<Value>(&text).unwrap_or_default();
        if status == 201 {
            Ok(json["seq"].as_u64().unwrap_or(0))
        } else {
            Err(format!(
                "{status} {}",
                json["error"].as_str().unwrap_or("no-error-code")
            ))
        }
    }

    fn count_publish(&self, outcome: &Mutex<Published>, room: usize, result: Result<u64, String>) {
        let mut outcome = outcome.lock().unwrap();
        let mut recorder = self.recorder.lock().unwrap();
        match result {
            Ok(seq) => {
                outcome.ok += 1;
                recorder.tick.ok += 1;
                let head = outcome.heads.entry(room).or_default();
                *head = (*head).max(seq);
            }
            Err(reason) => {
                outcome.failed += 1;
                recorder.tick.failed += 1;
                *outcome.reasons.entry(reason).or_default() += 1;
            }
        }
    }

    /// Waits (until `deadline`, ms since the epoch) for every stream to hold
    /// its room's head; answers `drained {at, lagging, deliveries, live, replay}`.
    async fn drain(self: Arc<Self>, heads: Vec<u64>, deadline: f64) -> Value {
        let mut lagging = self.lagging(&heads);
        while lagging > 0 && now_ms() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            lagging = self.lagging(&heads);
        }
        let recorder = self.recorder.lock().unwrap();
        json!({"type": "drained", "at": now_ms() as u64, "lagging": lagging,
            "deliveries": recorder.live.count + recorder.replay.count,
            "live": recorder.live.to_json(), "replay": recorder.replay.to_json()})
    }

    fn lagging(&self, heads: &[u64]) -> usize {
        self.subscribers
            .iter()
            .filter(|sub| {
                let head = heads.get(sub.room_index).copied().unwrap_or(0);
                sub.stream.lock().unwrap().next - 1 < head
            })
            .count()
    }

    /// Every stream against its room's head: `checked {…}`, the fields of
    /// cluster.mjs's worker `check`.
    fn check(&self, heads: &[u64]) -> Value {
        let mut c = Checked::default();
        for sub in &self.subscribers {
            let s = sub.stream.lock().unwrap();
            let verdict = s.check(heads.get(sub.room_index).copied().unwrap_or(0));
            if s.node_at_publish.is_some_and(|node| self.is_down(node)) {
                c.on_killed += 1;
                c.on_killed_resumed += u64::from(s.resumes > 0);
            }
            c.live += u64::from(s.state == State::Live);
            c.resumes += s.resumes;
            c.resets += s.resets;
            c.beyond += u64::from(verdict.beyond > 0);
            add_counts(&mut c.connect_errors, &s.connect_errors);
            add_counts(&mut c.refusals, &s.refusals);
            add_counts(&mut c.close_codes, &s.close_codes);
            if verdict.exact {
                c.exact += 1;
                continue;
            }
            c.inexact += 1;
            c.missed += verdict.missed;
            c.duplicates += s.duplicates;
            let room = c.rooms.entry(sub.room_index).or_default();
            room.inexact += 1;
            room.missed += verdict.missed;
            room.duplicates += s.duplicates;
            room.not_live += u64::from(s.state != State::Live);
        }
        let rooms: BTreeMap<usize, Value> = c
            .rooms
            .iter()
            .map(|(&r, x)| {
                (
                    r,
                    json!({"inexact": x.inexact, "missed": x.missed,
                    "duplicates": x.duplicates, "notLive": x.not_live}),
                )
            })
            .collect();
        json!({"type": "checked", "subscribers": self.subscribers.len(), "live": c.live,
            "exact": c.exact, "inexact": c.inexact, "missed": c.missed,
            "duplicates": c.duplicates, "resets": c.resets, "beyond": c.beyond,
            "resumes": c.resumes, "onKilled": c.on_killed, "onKilledResumed": c.on_killed_resumed,
            "rooms": rooms, "connectErrors": c.connect_errors, "refusals": c.refusals,
            "closeCodes": c.close_codes,
            "resumeHist": self.recorder.lock().unwrap().resume.to_json()})
    }

    /// Closes every subscriber's socket (after `check`).
    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A publish phase's outcome in this process.
#[derive(Debug, Default)]
struct Published {
    ok: u64,
    failed: u64,
    reasons: BTreeMap<String, u64>,
    /// The highest seq acknowledged per room.
    heads: BTreeMap<usize, u64>,
}

/// The sums of [`Worker::check`].
#[derive(Debug, Default)]
struct Checked {
    live: u64,
    exact: u64,
    inexact: u64,
    missed: u64,
    duplicates: u64,
    resets: u64,
    beyond: u64,
    resumes: u64,
    on_killed: u64,
    on_killed_resumed: u64,
    rooms: BTreeMap<usize, RoomShortfall>,
    connect_errors: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
    close_codes: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct RoomShortfall {
    inexact: u64,
    missed: u64,
    duplicates: u64,
    not_live: u64,
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (key, n) in from {
        *into.entry(key.clone()).or_default() += n;
    }
}

// ---------------------------------------------------------------- one subscriber's sockets

/// One subscriber for the life of the process: a socket, and when it closes
/// the next one, from the last seq its stream holds.
async fn keep_subscribed(worker: Arc<Worker>, sub: Arc<Subscriber>, settled: UnboundedSender<()>) {
    loop {
        let wait = session(&worker, &sub, &settled).await;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One socket, from the handshake (through the gate) to its close, on the
/// node [`Worker::pick`] gives, with `?cursor=<next-1>[&epoch=E]`. Returns
/// how long to wait before the next.
async fn session(worker: &Worker, sub: &Subscriber, settled: &UnboundedSender<()>) -> Duration {
    let permit = worker.handshakes.acquire().await;
    let (node, url) = {
        let mut s = sub.stream.lock().unwrap();
        s.node = worker.pick(sub, s.resumes, s.failures_in_row);
        (s.node, resume_url(&worker.opt.urls[s.node], &sub.room, &s))
    };
    let connected = connect(&url, &worker.opt.urls[node], sub.source).await;
    drop(permit);
    let mut caught_up = false;
    let code = match connected {
        Ok(socket) => read_until_closed(worker, sub, socket, &mut caught_up, settled).await,
        Err(err) => {
            sub.stream
                .lock()
                .unwrap()
                .count_connect_error(connect_error(&err));
            ABNORMAL_CLOSURE
        }
    };
    sub.stream.lock().unwrap().closed(caught_up, code)
}

/// `ws://node/v1/rooms/{room}/ws?cursor=<last seq held>[&epoch=E]`.
fn resume_url(base: &str, room: &str, s: &Stream) -> String {
    let mut url = format!(
        "{}/v1/rooms/{room}/ws?cursor={}",
        base.replacen("http", "ws", 1),
        s.next - 1
    );
    if let Some(epoch) = &s.epoch {
        url.push_str("&epoch=");
        url.push_str(epoch);
    }
    url
}

/// Close codes as Node's `ws` reports them: a close frame without a code, and
/// a connection that ended without a close frame (a node killed).
const NO_STATUS: u16 = 1005;
const ABNORMAL_CLOSURE: u16 = 1006;

/// Reads one socket's frames until it closes; returns its close code.
async fn read_until_closed(
    worker: &Worker,
    sub: &Subscriber,
    mut socket: Socket,
    caught_up: &mut bool,
    settled: &UnboundedSender<()>,
) -> u16 {
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => on_frame(worker, sub, &text, caught_up, settled),
            Ok(Message::Close(frame)) => return frame.map_or(NO_STATUS, |f| u16::from(f.code)),
            Ok(_) => {}
            Err(err) => {
                if let Some(kind) = socket_error(&err) {
                    if !*caught_up {
                        sub.stream.lock().unwrap().count_connect_error(kind);
                    }
                }
                return ABNORMAL_CLOSURE;
            }
        }
    }
    ABNORMAL_CLOSURE
}

/// One frame, as wsload.mjs's `Subscriber` takes it: `subscribed` sets the
/// epoch, `caught_up` makes the subscriber live (and times a resume),
/// `reset` and a refusal before live count, events are checked in order and
/// their latency recorded (as replayed before `caught_up` of a resume).
fn on_frame(
    worker: &Worker,
    sub: &Subscriber,
    text: &str,
    caught_up: &mut bool,
    settled: &UnboundedSender<()>,
) {
    // Every frame of this bench's rooms parses; one that did not would show
    // as a hole in the stream.
    let Ok(frame) = serde_json::from_str::<Frame>(text) else {
        return;
    };
    let mut s = sub.stream.lock().unwrap();
    match frame.kind {
        "subscribed" => s.epoch = frame.epoch,
        // The cursor could not be served: a hole the bench must report.
        "reset" => s.resets += 1,
        "caught_up" => {
            *caught_up = true;
            match s.state {
                State::Connecting => {
                    s.state = State::Live;
                    let _ = settled.send(());
                }
                State::Resuming => {
                    s.state = State::Live;
                    let again = now_ms() - s.closed_at;
                    worker.recorder.lock().unwrap().resume.add(again);
                }
                State::Live => {}
            }
        }
        "error" if s.state != State::Live && s.refusal.is_none() => {
            let code = frame.code.unwrap_or_else(|| "undefined".to_owned());
            *s.refusals.entry(code.clone()).or_default() += 1;
            s.refusal = Some(code);
        }
        "event" => {
            let replayed = !*caught_up && s.resumes > 0;
            if s.accept(frame.seq) {
                record(worker, frame.data.as_ref(), replayed);
            }
        }
        "batch" => {
            let replayed = !*caught_up && s.resumes > 0;
            for item in &frame.events {
                if s.accept(item.seq) {
                    record(worker, item.data.as_ref(), replayed);
                }
            }
        }
        _ => {}
    }
}

/// An in-order event's publish-to-receive latency, if it carries its send time.
fn record(worker: &Worker, data: Option<&Sent>, replayed: bool) {
    if let Some(sent) = data.and_then(|d| d.t) {
        let ms = now_ms() - sent;
        worker.recorder.lock().unwrap().delivery(ms, replayed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_wsloads() {
        assert_eq!(Buckets::bucket_of(0.0), 0);
        assert_eq!(Buckets::bucket_of(0.01), 0);
        // ceil(ln(100) / ln(1.01)) = ceil(462.8…) for 1 ms.
        assert_eq!(Buckets::bucket_of(1.0), 463);
        let mut h = Buckets::default();
        h.add(1.0);
        h.add(1.0);
        h.add(0.0);
        assert_eq!(
            h.to_json(),
            json!({"b": {"0": 1, "463": 2}, "count": 3, "max": 1.0, "sum": 2.0})
        );
    }

    #[test]
    fn fnv1a_is_cluster_mjs() {
        // fnv1a('') and fnv1a('a') of the 32-bit FNV-1a.
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
        // cluster.mjs's fnv1a('cluster_1_2:5/1'), by node.
        assert_eq!(fnv1a("cluster_1_2:5/1"), 2_334_677_365);
    }

    #[test]
    fn spread_starts_at_room_plus_k() {
        assert_eq!(node_order(Placement::Spread, 3, "p:4", 4, 1), vec![2, 0, 1]);
    }

    #[test]
    fn a_stream_counts_duplicates_and_holes() {
        let mut s = Stream {
            next: 1,
            state: State::Live,
            ..Stream::default()
        };
        assert!(s.accept(1));
        assert!(!s.accept(1));
        assert!(!s.accept(4));
        assert!(s.accept(5));
        let v = s.check(5);
        assert!(!v.exact);
        assert_eq!((v.missed, s.duplicates, v.beyond), (2, 1, 0));
    }
}
