//! Cluster mode with real processes: nodes sharing one PostgreSQL (the
//! authoritative log) and one NATS (notifications).
//!
//! - Subscribers on node A receive what is published on node B.
//! - `kill -9` of node A while 8 publishers write to B: A's subscribers resume
//!   on B with their cursors and end with exactly 1..N.
//! - NATS goes away (a private `nats-server` this test stops): hubs reconcile
//!   against PostgreSQL and deliver everything while it is down.
//! - PostgreSQL restarts (a private instance this test stops hard and starts):
//!   publishers get `503 store_unavailable`, retry with their idempotency keys,
//!   and no acknowledged event is lost or stored twice.
//! - The outbox: a committed application transaction is delivered exactly
//!   once, a rolled-back one never, and two nodes draining at once take each
//!   row exactly once.
//!
//! They need PostgreSQL and NATS, so they run when `HUBCAST_TEST_BACKEND=cluster`
//! (`scripts/test.sh` runs `scripts/services.sh` first) and say so when skipped.
//! Each test has its own schema and subject prefix ([`support::Cluster`]).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, range, seqs, within, Api, Follower, Receipt, Server, Ws, PHASE, STEP};

/// Whether the cluster services are expected; prints why a test is skipped.
fn cluster_or_skip(test: &str) -> bool {
    if support::cluster_backend() {
        return true;
    }
    eprintln!(
        "SKIPPED cluster::{test}: it needs PostgreSQL and NATS; run it with HUBCAST_TEST_BACKEND=cluster \
         after scripts/services.sh (scripts/test.sh does both)"
    );
    false
}

/// Small reconcile interval: a lost notification is healed within 200 ms.
const RECONCILE: &str = "[hub]\nreconcile_ms = 200\n";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `POST /v1/rooms/{room}/events` with an idempotency key: status, `Retry-After`, body.
async fn post_keyed(
    api: &Api,
    room: &str,
    data: &Value,
    key: &str,
) -> Result<(u16, Option<String>, Value), reqwest::Error> {
    let response = api
        .http
        .post(format!("{}/v1/rooms/{room}/events", api.base))
        .header("Idempotency-Key", key)
        .json(&json!({ "data": data }))
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json::<Value>().await?;
    Ok((status, retry_after, body))
}

/// Answers publishers got, across all of them.
#[derive(Default)]
struct Answers {
    /// 503 `store_unavailable` (then retried with the same key).
    unavailable: AtomicUsize,
    /// 200: a retry whose earlier attempt had been committed.
    duplicates: AtomicUsize,
}

/// Publishes `data` under `key` until it is acknowledged (201, or 200 for a
/// retry whose first attempt was committed). A 503 must be
/// `{"error":"store_unavailable"}` with `Retry-After`; it is counted and
/// retried with the same key. Anything else fails the test.
async fn publish_until_acknowledged(
    api: &Api,
    room: &str,
    data: Value,
    key: &str,
    answers: &Answers,
) -> Receipt {
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 2000, "publish {key} was never acknowledged");
        match post_keyed(api, room, &data, key).await {
            Ok((201, _, receipt)) => return Receipt::from_json(&receipt, data),
            Ok((200, _, receipt)) => {
                assert!(
                    attempts > 1,
                    "a first attempt of {key} answered 200: {receipt}"
                );
                answers.duplicates.fetch_add(1, Ordering::Relaxed);
                return Receipt::from_json(&receipt, data);
            }
            Ok((503, retry_after, body)) => {
                assert_eq!(
                    body["error"], "store_unavailable",
                    "503 body for {key}: {body}"
                );
                assert!(body["message"].is_string(), "503 body for {key}: {body}");
                assert!(
                    retry_after.is_some(),
                    "a 503 without Retry-After for {key}: {body}"
                );
                answers.unavailable.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok((status, _, body)) => panic!("publish {key} answered {status}: {body}"),
            Err(err) => panic!(
                "publish {key}: the node did not answer: {}",
                support::chain(&err)
            ),
        }
    }
}

/// `GET /readyz`: status and body.
async fn readyz(server: &Server) -> (u16, Value) {
    server.api().get("/readyz").await
}

/// Checks the log of `room` is exactly 1..=n and that every receipt is in it
/// with its data and ts.
fn check_history(history: &[Value], receipts: &[Receipt], n: u64) {
    assert_eq!(seqs(history), range(1, n), "the log is not exactly 1..={n}");
    for receipt in receipts {
        let stored = &history[receipt.seq as usize - 1];
        assert_eq!(
            (&stored["data"], stored["ts"].as_i64()),
            (&receipt.data, Some(receipt.ts)),
            "acknowledged seq {}",
            receipt.seq
        );
    }
}

fn executable(path: &Path) -> bool {
    path.is_file()
}

/// `name` on PATH, else the first of `fallbacks` that exists.
fn find_binary(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| executable(p))
        })
        .unwrap_or_default();
    on_path.or_else(|| fallbacks.iter().map(PathBuf::from).find(|p| executable(p)))
}

async fn port_open(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Runs a command to completion off the async workers; fails the test on a
/// non-zero exit, showing its output.
async fn run(command: Command, what: &str) {
    let output = output(command, what).await;
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a command to completion off the async workers; its output.
async fn output(mut command: Command, what: &str) -> std::process::Output {
    within(
        PHASE,
        what,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("join")
    .unwrap_or_else(|err| panic!("cannot run {what}: {err}"))
}

// ---------------------------------------------------------------------------
// A private nats-server
// ---------------------------------------------------------------------------

/// A `nats-server` of this test alone, on a loopback port it picks, so
/// stopping it disturbs no other test.
struct PrivateNats {
    bin: PathBuf,
    /// The port it listens on (0 before its first start).
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl PrivateNats {
    async fn start() -> PrivateNats {
        let bin = find_binary(
            "nats-server",
            &[
                "/usr/sbin/nats-server",
                "/usr/bin/nats-server",
                "/usr/local/bin/nats-server",
            ],
        )
        .expect("nats-server is not installed (scripts/services.sh installs it)");
        let dir = tempfile::Builder::new()
            .prefix("hubcast-nats-")
            .tempdir()
            .expect("temp dir");
        let mut nats = PrivateNats {
            bin,
            port: 0,
            dir,
            child: None,
            starts: 0,
        };
        nats.launch().await;
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it: the first time on a port it picks (`-p -1`), read from its
    /// log; after that on the same port, since the nodes hold its URL.
    async fn launch(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        self.starts += 1;
        let log_path = self.dir.path().join(format!("nats-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).expect("nats log");
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", self.bin.display()));
        let child = self.child.insert(child);
        let listening = within(STEP, "the private nats-server to listen", async {
            loop {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let port = log
                    .lines()
                    .find_map(|line| {
                        line.split("Listening for client connections on 127.0.0.1:")
                            .nth(1)
                    })
                    .and_then(|port| port.trim().parse::<u16>().ok());
                if let Some(port) = port {
                    return port;
                }
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("the private nats-server exited ({status}):\n{log}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            self.port == 0 || self.port == listening,
            "nats-server moved from port {} to {listening}",
            self.port
        );
        self.port = listening;
    }

    /// Kills it (SIGKILL: connections drop without a goodbye).
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("nats-server is running");
        let _ = child.kill();
        within(
            STEP,
            "the private nats-server to exit",
            tokio::task::spawn_blocking(move || child.wait()),
        )
        .await
        .expect("join")
        .expect("wait for nats-server");
        assert!(
            !port_open(self.port).await,
            "the private nats-server still listens"
        );
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// A private PostgreSQL
// ---------------------------------------------------------------------------

/// A PostgreSQL instance of this test alone (initdb into a temp dir, trust
/// auth, loopback, a port of its own), so stopping it disturbs no other test. When
/// the tests run as root it runs as user `postgres` (via `runuser`).
struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePg {
    async fn start() -> PrivatePg {
        let bin = pg_bin_dir().expect("PostgreSQL server binaries (initdb, pg_ctl) not found; scripts/services.sh installs them");
        // Under /tmp: user postgres must be able to reach it.
        let dir = tempfile::Builder::new()
            .prefix("hubcast-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(dir.path());
            run(chown, "chown of the private PostgreSQL dir").await;
        }
        let mut pg = PrivatePg {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        let mut initdb = pg.tool("initdb");
        initdb.arg("-D").arg(pg.data()).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(initdb, "initdb").await;
        // PostgreSQL cannot be asked for port 0: take a port that was free a
        // moment ago, and another one if something took it in between.
        for attempt in 1..=5 {
            pg.port = unused_port();
            let started = output(pg.pg_ctl("start"), "pg_ctl start").await;
            if started.status.success() {
                break;
            }
            let log = pg.log();
            assert!(
                attempt < 5 && log.contains("could not bind"),
                "pg_ctl start failed ({}):\n{}\n{}\n{log}",
                started.status,
                String::from_utf8_lossy(&started.stdout),
                String::from_utf8_lossy(&started.stderr)
            );
        }
        pg.wait_accepting().await;
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A command for one of the server tools, as user postgres when we are root.
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command.current_dir("/tmp");
            command
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut command = self.tool("pg_ctl");
        command
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().display()
            ))
            .args(["-w", "-t", "60", action]);
        command
    }

    /// Starts it again on its port (the nodes hold its URL).
    async fn start_server(&self) {
        run(self.pg_ctl("start"), "pg_ctl start").await;
        self.wait_accepting().await;
    }

    async fn wait_accepting(&self) {
        let url = self.url();
        eventually("the private PostgreSQL to accept connections", || {
            let url = url.clone();
            async move { support::pg_connect(&url, None).await.ok().map(drop) }
        })
        .await;
    }

    /// An immediate shutdown, as hard as a crash: connections are cut
    /// mid-transaction (a commit may be durable without its answer having
    /// been sent) and the next start runs crash recovery.
    async fn stop_server(&self) {
        let mut command = self.pg_ctl("stop");
        command.args(["-m", "immediate"]);
        run(command, "pg_ctl stop").await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- private PostgreSQL log (last {} lines) ----",
                tail.len()
            );
            tail.iter().rev().for_each(|line| eprintln!("{line}"));
        }
        let mut command = self.pg_ctl("stop");
        command
            .args(["-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = command.status();
    }
}

/// A loopback port that was free a moment ago, for PostgreSQL alone: it
/// cannot be asked for port 0, unlike hubcast and nats-server.
fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The directory holding `initdb` and `pg_ctl`: `HUBCAST_TEST_PG_BIN`, else
/// the newest `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`, else PATH.
fn pg_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HUBCAST_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            executable(&bin.join("initdb")).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if executable(&dir.join("initdb")) {
            return Some(dir);
        }
    }
    find_binary("initdb", &[]).and_then(|p| p.parent().map(Path::to_path_buf))
}

// ---------------------------------------------------------------------------
// Two nodes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_one_node_receive_events_published_on_another() {
    if !cluster_or_skip("subscribers_on_one_node_receive_events_published_on_another") {
        return;
    }
    // Reconcile effectively off: what arrives, arrives through NATS.
    let config = "[hub]\nreconcile_ms = 600000\n";
    let a = Server::start(config).await;
    let b = Server::start_peer(&a, config).await;
    let room = "market:7";

    let mut on_a = Vec::new();
    for _ in 0..2 {
        let (mut ws, subscribed) = Ws::room(&a, room, "").await;
        assert_eq!(subscribed["head"], 0);
        ws.until_caught_up(room, 0).await;
        on_a.push(ws);
    }
    let mut multi = Ws::connect(&a.ws_url("/v1/ws")).await;
    multi.subscribe(room, json!({})).await;
    multi.until_caught_up(room, 0).await;
    on_a.push(multi);
    let (mut on_b, _) = Ws::room(&b, room, "").await;
    on_b.until_caught_up(room, 0).await;

    // Published on B only.
    let receipts = b
        .api()
        .publish_many(room, 200, 4, |i| json!({"i": i, "via": "b"}))
        .await;
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        range(1, 200)
    );
    for ws in on_a.iter_mut().chain([&mut on_b]) {
        let events = ws.events_until(room, 0, 200).await;
        for (event, receipt) in events.iter().zip(&receipts) {
            assert_eq!(
                (&event["data"], event["ts"].as_i64()),
                (&receipt.data, Some(receipt.ts)),
                "{event}"
            );
        }
    }
    assert!(
        a.api()
            .metric("hubcast_bus_messages_total{direction=\"in\"}")
            .await
            >= 200.0,
        "node A did not hear B's events over NATS"
    );

    // Both nodes publishing at once: one sequence, seen the same everywhere.
    let from_a = {
        let api = a.api();
        tokio::spawn(async move {
            api.publish_many(room, 100, 2, |i| json!({"i": i, "via": "a"}))
                .await
        })
    };
    let from_b = b
        .api()
        .publish_many(room, 100, 2, |i| json!({"i": i, "via": "b"}))
        .await;
    let from_a = within(PHASE, "publishers on A", from_a).await.unwrap();
    let mut all: Vec<Receipt> = from_a.into_iter().chain(from_b).collect();
    all.sort_by_key(|r| r.seq);
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        range(201, 400)
    );
    let history = a.api().all_events(room).await;
    check_history(
        &history,
        &receipts.iter().chain(&all).cloned().collect::<Vec<_>>(),
        400,
    );
    for ws in on_a.iter_mut().chain([&mut on_b]) {
        let events = ws.events_until(room, 200, 400).await;
        for event in &events {
            assert_eq!(
                event["data"],
                history[event["seq"].as_u64().unwrap() as usize - 1]["data"]
            );
        }
        // Nothing after the last event (no duplicate from the other path).
        ws.send_json(json!({"type": "ping"})).await;
        ws.expect_type("pong").await;
    }

    // Room names holding the subject separator `.` (and the escape `=`) cross too.
    let dotted = "chat.general=2E";
    let (mut ws, _) = Ws::room(&a, dotted, "").await;
    ws.until_caught_up(dotted, 0).await;
    let receipts = b.api().publish_many(dotted, 10, 1, |i| json!(i)).await;
    let events = ws.events_until(dotted, 0, 10).await;
    assert_eq!(
        events.iter().map(|e| e["data"].clone()).collect::<Vec<_>>(),
        receipts.iter().map(|r| r.data.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_moves_its_subscribers_to_another_without_loss() {
    if !cluster_or_skip("killing_a_node_moves_its_subscribers_to_another_without_loss") {
        return;
    }
    const TOTAL: u64 = 3000;
    let mut a = Server::start(RECONCILE).await;
    let b = Server::start_peer(&a, RECONCILE).await;
    let room = "kill-a";
    let nodes = vec![a.ws_url(""), b.ws_url("")];

    // Four subscribers, all on A.
    let progress: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let followers: Vec<_> = progress
        .iter()
        .map(|p| {
            Follower::across(nodes.clone(), 0, room, TOTAL)
                .progress(p.clone())
                .spawn()
        })
        .collect();
    let api_a = a.api();
    eventually("four subscribers on node A", || {
        let api = api_a.clone();
        async move { (api.room(room).await["subscribers"] == 4).then_some(()) }
    })
    .await;

    // Eight publishers write to B (with idempotency keys, as real publishers do).
    let acked = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Answers::default());
    let next = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..8)
        .map(|w| {
            let (api, acked, answers, next) =
                (b.api(), acked.clone(), answers.clone(), next.clone());
            tokio::spawn(async move {
                let mut receipts = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= TOTAL as usize {
                        return receipts;
                    }
                    let data = json!({"n": n, "worker": w});
                    receipts.push(
                        publish_until_acknowledged(
                            &api,
                            room,
                            data,
                            &format!("kill-{n}"),
                            &answers,
                        )
                        .await,
                    );
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Kill A while the subscribers are mid-stream and publishing goes on.
    eventually("subscribers on A to get going", || {
        let ready = acked.load(Ordering::Relaxed) >= 300
            && progress.iter().all(|p| p.load(Ordering::Relaxed) >= 100);
        async move { ready.then_some(()) }
    })
    .await;
    a.kill9().await;
    let acked_at_kill = acked.load(Ordering::Relaxed);
    let cursors_at_kill: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    eprintln!("killed node A after {acked_at_kill} acknowledged publishes; subscriber cursors {cursors_at_kill:?}");
    assert!(
        acked_at_kill < TOTAL as usize,
        "publishing was over before the kill; the test proves nothing"
    );

    let mut receipts = Vec::new();
    for publisher in publishers {
        receipts.extend(
            within(PHASE, "the publishers on B", publisher)
                .await
                .unwrap(),
        );
    }
    receipts.sort_by_key(|r| r.seq);
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        range(1, TOTAL),
        "receipts"
    );
    assert_eq!(
        answers.unavailable.load(Ordering::Relaxed),
        0,
        "node B refused publishes"
    );
    let history = b.api().all_events(room).await;
    check_history(&history, &receipts, TOTAL);

    for (i, follower) in followers.into_iter().enumerate() {
        let seen = within(PHASE, "a subscriber to reach the head on B", follower)
            .await
            .unwrap();
        assert_eq!(seqs(&seen.events), range(1, TOTAL), "subscriber {i}");
        for (event, stored) in seen.events.iter().zip(&history) {
            assert_eq!(
                (&event["data"], &event["ts"]),
                (&stored["data"], &stored["ts"]),
                "subscriber {i}"
            );
        }
        assert!(seen.connections >= 2, "subscriber {i} never reconnected");
        assert_eq!(
            seen.served_by.first(),
            Some(&0),
            "subscriber {i} started on A"
        );
        assert_eq!(
            seen.served_by.last(),
            Some(&1),
            "subscriber {i} did not end on B"
        );
        let from_b = seen.served_by.iter().filter(|n| **n == 1).count();
        eprintln!(
            "subscriber {i}: {} connections, {} events from A, {from_b} from B",
            seen.connections,
            TOTAL as usize - from_b
        );
    }
    // The survivor's log is the whole story.
    assert_eq!(b.api().room(room).await["head"], TOTAL);
}

// ---------------------------------------------------------------------------
// NATS goes away
// ---------------------------------------------------------------------------

/// While NATS is unreachable under publishing, the bus's outgoing queue stays
/// bounded: past its capacity messages are dropped and counted (peers heal by
/// reconcile) instead of piling up in memory for as long as the outage lasts;
/// every event still reaches the other node's subscriber, and RSS stays near
/// where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_under_publishing_keeps_the_bus_queue_bounded() {
    if !cluster_or_skip("a_nats_outage_under_publishing_keeps_the_bus_queue_bounded") {
        return;
    }
    // A small queue (256 events) so overflowing it does not depend on how
    // the commits happen to batch: 6,000 events are far more than it and the
    // NATS client's own command buffer (2,048) hold together.
    const EVENTS: usize = 6_000;
    let mut nats = PrivateNats::start().await;
    let pg = support::test_pg_url();
    let a = Server::start_cluster(
        &format!("{RECONCILE}[nats]\nmax_queue = 256\n"),
        &pg,
        &nats.url(),
    )
    .await;
    let b = Server::start_peer(&a, RECONCILE).await;
    let room = "nats-outage";
    let (mut on_b, _) = Ws::room(&b, room, "").await;
    on_b.until_caught_up(room, 0).await;
    a.api().publish(room, json!({"warm": true})).await;
    on_b.events_until(room, 0, 1).await;
    let rss_before = support::rss_kib(a.pid());

    nats.stop().await;
    // Node B's subscriber reads throughout: B heals from the store.
    let reader = tokio::spawn(async move { on_b.events_until(room, 1, 1 + EVENTS as u64).await });
    let receipts = a
        .api()
        .publish_many(
            room,
            EVENTS,
            16,
            |i| json!({"i": i, "pad": "x".repeat(200)}),
        )
        .await;
    assert_eq!(receipts.len(), EVENTS);
    let dropped = a.api().metric("hubcast_bus_dropped_total").await;
    eprintln!("{dropped} of {EVENTS} events dropped from the bus queue during the outage");
    assert!(
        dropped > 0.0,
        "the outgoing queue must have overflowed and dropped"
    );
    let rss_after = support::rss_kib(a.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB during the outage"
    );
    let events = within(PHASE, "node B's subscriber", reader)
        .await
        .expect("reader task");
    assert_eq!(seqs(&events), range(2, 1 + EVENTS as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_delivered_while_nats_is_down() {
    if !cluster_or_skip("events_are_delivered_while_nats_is_down") {
        return;
    }
    let mut nats = PrivateNats::start().await;
    let pg = support::test_pg_url();
    let a = Server::start_cluster(RECONCILE, &pg, &nats.url()).await;
    let b = Server::start_peer(&a, RECONCILE).await;
    let room = "nats-drop";

    let (mut on_a, _) = Ws::room(&a, room, "").await;
    on_a.until_caught_up(room, 0).await;
    let (mut on_b, _) = Ws::room(&b, room, "").await;
    on_b.until_caught_up(room, 0).await;

    // NATS up.
    let first = b
        .api()
        .publish_many(room, 20, 2, |i| json!({"phase": "up", "i": i}))
        .await;
    let epoch = first[0].epoch.clone();
    assert_eq!(seqs(&on_a.events_until(room, 0, 20).await), range(1, 20));
    assert_eq!(seqs(&on_b.events_until(room, 0, 20).await), range(1, 20));

    // NATS down: both nodes notice, and keep delivering from PostgreSQL.
    nats.stop().await;
    for node in [&a, &b] {
        let (status, body) = eventually("/readyz to report the bus down", || async move {
            let (status, body) = readyz(node).await;
            (status == 503).then_some((status, body))
        })
        .await;
        assert_eq!((status, &body["store"]), (503, &json!("ok")), "{body}");
        assert_ne!(body["bus"], "ok", "{body}");
    }
    let down_b = b
        .api()
        .publish_many(
            room,
            30,
            3,
            |i| json!({"phase": "down", "via": "b", "i": i}),
        )
        .await;
    assert_eq!(down_b.last().map(|r| r.seq), Some(50));
    let events = on_a.events_until(room, 20, 50).await;
    for event in &events {
        assert_eq!(event["data"]["phase"], "down", "{event}");
    }
    assert_eq!(seqs(&on_b.events_until(room, 20, 50).await), range(21, 50));
    // The other way round, and a subscriber that joins during the outage.
    let down_a = a
        .api()
        .publish_many(
            room,
            10,
            1,
            |i| json!({"phase": "down", "via": "a", "i": i}),
        )
        .await;
    assert_eq!(down_a.last().map(|r| r.seq), Some(60));
    let (mut late, _) = Ws::room(&a, room, &format!("?cursor=10&epoch={epoch}")).await;
    assert_eq!(seqs(&on_b.events_until(room, 50, 60).await), range(51, 60));
    assert_eq!(seqs(&on_a.events_until(room, 50, 60).await), range(51, 60));
    assert_eq!(seqs(&late.events_until(room, 10, 60).await), range(11, 60));
    b.api()
        .publish(room, json!({"phase": "down", "last": true}))
        .await;
    for ws in [&mut on_a, &mut on_b, &mut late] {
        assert_eq!(seqs(&ws.events_until(room, 60, 61).await), [61]);
    }
    // Still down: all of the above was healed by reconciliation.
    assert!(!port_open(nats.port).await, "NATS came back by itself");
    assert_eq!(readyz(&a).await.0, 503);

    // NATS back: nodes reconnect and the fast path resumes.
    nats.launch().await;
    for node in [&a, &b] {
        eventually("/readyz to report the bus back", || async move {
            (readyz(node).await.0 == 200).then_some(())
        })
        .await;
    }
    let after = b
        .api()
        .publish_many(room, 20, 2, |i| json!({"phase": "back", "i": i}))
        .await;
    assert_eq!(after.last().map(|r| r.seq), Some(81));
    for ws in [&mut on_a, &mut on_b, &mut late] {
        assert_eq!(seqs(&ws.events_until(room, 61, 81).await), range(62, 81));
        // No duplicate from notifications queued during the outage.
        ws.send_json(json!({"type": "ping"})).await;
        ws.expect_type("pong").await;
    }
    let history = a.api().all_events(room).await;
    let receipts: Vec<Receipt> = first
        .into_iter()
        .chain(down_b)
        .chain(down_a)
        .chain(after)
        .collect();
    check_history(&history, &receipts, 81);
}

// ---------------------------------------------------------------------------
// PostgreSQL restarts
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_loses_no_acknowledged_event() {
    if !cluster_or_skip("a_postgres_restart_loses_no_acknowledged_event") {
        return;
    }
    const PER_PUBLISHER: usize = 250;
    const PUBLISHERS: usize = 8;
    const TOTAL: u64 = (PER_PUBLISHER * PUBLISHERS) as u64;
    let pg = PrivatePg::start().await;
    let config = "[hub]\nreconcile_ms = 200\n[postgres]\ntimeout_ms = 1000\n";
    let a = Server::start_cluster(config, &pg.url(), &support::test_nats_url()).await;
    let b = Server::start_peer(&a, config).await;
    let room = "pg-restart";
    let nodes = vec![a.ws_url(""), b.ws_url("")];

    // Two subscribers on each node.
    let progress: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let followers: Vec<_> = progress
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Follower::across(nodes.clone(), i % 2, room, TOTAL)
                .progress(p.clone())
                .spawn()
        })
        .collect();
    for node in [&a, &b] {
        let api = node.api();
        eventually("two subscribers on each node", || {
            let api = api.clone();
            async move { (api.room(room).await["subscribers"] == 2).then_some(()) }
        })
        .await;
    }

    // Eight publishers, four on each node, each retrying with its key until acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Answers::default());
    let receipts = Arc::new(Mutex::new(Vec::<(String, Receipt)>::new()));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let api = if p % 2 == 0 { a.api() } else { b.api() };
            let (acked, answers, receipts) = (acked.clone(), answers.clone(), receipts.clone());
            tokio::spawn(async move {
                for j in 0..PER_PUBLISHER {
                    let key = format!("p{p}-{j}");
                    let receipt = publish_until_acknowledged(
                        &api,
                        room,
                        json!({"p": p, "j": j}),
                        &key,
                        &answers,
                    )
                    .await;
                    receipts.lock().unwrap().push((key, receipt));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    eventually("200 acknowledged publishes", || {
        let n = acked.load(Ordering::Relaxed);
        async move { (n >= 200).then_some(()) }
    })
    .await;
    pg.stop_server().await;
    let acked_at_stop = acked.load(Ordering::Relaxed);
    // Publishers keep trying and are refused with 503 store_unavailable
    // (checked on every answer); so is readiness.
    eventually("publishers to be refused while PostgreSQL is down", || {
        let n = answers.unavailable.load(Ordering::Relaxed);
        async move { (n >= 2 * PUBLISHERS).then_some(()) }
    })
    .await;
    for node in [&a, &b] {
        let (status, body) = readyz(node).await;
        assert_eq!(status, 503, "readyz with PostgreSQL down: {body}");
        assert_ne!(body["store"], "ok", "{body}");
    }
    // Stay down while every publisher is refused a few more times.
    let refused_before = answers.unavailable.load(Ordering::Relaxed);
    eventually(
        "publishers to keep retrying while PostgreSQL is down",
        || {
            let n = answers.unavailable.load(Ordering::Relaxed);
            async move { (n >= refused_before + 4 * PUBLISHERS).then_some(()) }
        },
    )
    .await;
    let acked_while_down = acked.load(Ordering::Relaxed) - acked_at_stop;
    pg.start_server().await;
    let refused = answers.unavailable.load(Ordering::Relaxed);
    eprintln!(
        "PostgreSQL stopped after {acked_at_stop} acknowledged publishes; {refused} answers were 503 while it was down; \
         {acked_while_down} publishes acknowledged while stopping"
    );
    assert!(
        acked_at_stop < TOTAL as usize,
        "publishing was over before PostgreSQL stopped"
    );

    for publisher in publishers {
        within(
            PHASE,
            "the publishers to finish after the restart",
            publisher,
        )
        .await
        .unwrap();
    }
    for node in [&a, &b] {
        eventually("/readyz to recover", || async move {
            (readyz(node).await.0 == 200).then_some(())
        })
        .await;
    }
    eprintln!(
        "after the restart: {} retries were answered 200 (their attempt before or during the stop had been committed)",
        answers.duplicates.load(Ordering::Relaxed)
    );

    // Every acknowledged event is in the log exactly once: each key was
    // acknowledged once, the log holds exactly that many events, no data twice.
    let receipts = receipts.lock().unwrap().clone();
    assert_eq!(receipts.len(), TOTAL as usize);
    let history = a.api().all_events(room).await;
    let only_receipts: Vec<Receipt> = receipts.iter().map(|(_, r)| r.clone()).collect();
    check_history(&history, &only_receipts, TOTAL);
    let distinct: BTreeSet<(u64, u64)> = history
        .iter()
        .map(|e| {
            (
                e["data"]["p"].as_u64().unwrap(),
                e["data"]["j"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(distinct.len(), TOTAL as usize, "an event was stored twice");
    let seqs_acked: BTreeSet<u64> = receipts.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(
        seqs_acked.len(),
        TOTAL as usize,
        "two keys were acknowledged with the same seq"
    );

    for (i, follower) in followers.into_iter().enumerate() {
        let seen = within(PHASE, "a subscriber to reach the head", follower)
            .await
            .unwrap();
        assert_eq!(seqs(&seen.events), range(1, TOTAL), "subscriber {i}");
        for (event, stored) in seen.events.iter().zip(&history) {
            assert_eq!(event["data"], stored["data"], "subscriber {i}");
        }
        eprintln!("subscriber {i}: {} connection(s)", seen.connections);
    }

    // The outbox drainers came back with the pool.
    let outbox_room = "pg-restart-outbox";
    let (mut ws, _) = Ws::room(&b, outbox_room, "").await;
    ws.until_caught_up(outbox_room, 0).await;
    let db = a.cluster().expect("a cluster node").connect().await;
    outbox_row(&db, outbox_room, &json!({"after": "restart"}), None).await;
    assert_eq!(
        ws.events_until(outbox_room, 0, 1).await[0]["data"],
        json!({"after": "restart"})
    );
}

// ---------------------------------------------------------------------------
// The outbox
// ---------------------------------------------------------------------------

const OUTBOX: &str = "[hub]\nreconcile_ms = 200\n[postgres]\noutbox_poll_ms = 100\n";

/// Inserts an outbox row on `client` (in whatever transaction it is in).
/// Stops (SIGSTOP) a private PostgreSQL's postmaster and every backend, the
/// way a network partition looks to a client: the kernel still accepts
/// bytes, nothing answers. Thawed (SIGCONT) on drop, whatever happens.
struct Frozen(Vec<String>);

impl Frozen {
    fn freeze(pg: &PrivatePg) -> Frozen {
        let pid =
            std::fs::read_to_string(pg.data().join("postmaster.pid")).expect("postmaster.pid");
        let pid = pid.lines().next().expect("a pid").trim().to_owned();
        let children = std::process::Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .expect("pgrep");
        let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        pids.push(pid);
        let status = std::process::Command::new("kill")
            .arg("-STOP")
            .args(&pids)
            .status()
            .expect("kill -STOP");
        assert!(status.success());
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-CONT")
            .args(&self.0)
            .status();
    }
}

/// A frozen PostgreSQL (a partition: connections stay open, nothing answers)
/// fails publishes with 503 within `postgres.statement_timeout_ms` instead of
/// holding them until it comes back, and `/readyz` answers 503 within its own
/// deadline. Once thawed, publishes succeed again and none acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_postgres_fails_publishes_fast_and_readyz_in_time() {
    if !cluster_or_skip("a_frozen_postgres_fails_publishes_fast_and_readyz_in_time") {
        return;
    }
    let pg = PrivatePg::start().await;
    let config = "[postgres]\ntimeout_ms = 1000\nstatement_timeout_ms = 1000\n";
    let node = Server::start_cluster(config, &pg.url(), &support::test_nats_url()).await;
    let api = node.api();
    let room = "pg-frozen";
    let first = api.publish(room, json!({"n": 1})).await;
    assert_eq!(first["seq"], 1);

    let frozen = Frozen::freeze(&pg);
    // Bounded well above the 1 s deadline: the old behaviour (held until the
    // server comes back, which here it does not) fails this `within`.
    let (status, body) = within(
        STEP,
        "a publish to a frozen store",
        api.post(room, &json!({"data": {"n": 2}}), Some("n-2")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    let (status, ready) = within(STEP, "/readyz with a frozen store", readyz(&node)).await;
    assert_eq!(status, 503, "{ready}");
    drop(frozen);

    // Thawed: the same key commits once (or was committed by the first try).
    let receipt = eventually("a publish after the thaw", || {
        let api = api.clone();
        async move {
            let (status, body) = api
                .post(room, &json!({"data": {"n": 2}}), Some("n-2"))
                .await;
            matches!(status, 200 | 201).then_some(body)
        }
    })
    .await;
    assert_eq!(receipt["seq"], 2);
    let history = api.all_events(room).await;
    assert_eq!(seqs(&history), [1, 2]);
    eventually("/readyz after the thaw", || {
        let node = &node;
        async move { (readyz(node).await.0 == 200).then_some(()) }
    })
    .await;
}

async fn outbox_row(
    client: &impl tokio_postgres::GenericClient,
    room: &str,
    data: &Value,
    key: Option<&str>,
) {
    client
        .execute(
            "INSERT INTO outbox (room, data, idem_key) VALUES ($1, $2::text::jsonb, $3)",
            &[&room, &data.to_string(), &key],
        )
        .await
        .expect("insert an outbox row");
}

async fn outbox_len(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .expect("count the outbox")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_committed_with_business_rows_is_delivered_exactly_once() {
    if !cluster_or_skip("an_outbox_row_committed_with_business_rows_is_delivered_exactly_once") {
        return;
    }
    let a = Server::start(OUTBOX).await;
    let room = "market:42";
    let (mut ws, _) = Ws::room(&a, room, "").await;
    ws.until_caught_up(room, 0).await;

    let mut db = a.cluster().expect("a cluster node").connect().await;
    db.batch_execute(
        "CREATE TABLE markets (id INT PRIMARY KEY, yes_price NUMERIC NOT NULL, version INT NOT NULL);
         INSERT INTO markets VALUES (42, 0.5, 0);",
    )
    .await
    .expect("the application's table");

    // The application's transactions: its own state and the event, atomically.
    for version in 1..=20 {
        let tx = db.transaction().await.expect("begin");
        let price = format!("0.{}", 40 + version);
        tx.execute(
            "UPDATE markets SET yes_price = $1::text::numeric, version = $2 WHERE id = 42",
            &[&price, &version],
        )
        .await
        .expect("update the market");
        outbox_row(
            &tx,
            room,
            &json!({"yes": price, "version": version}),
            Some(&format!("trade-{version}")),
        )
        .await;
        tx.commit().await.expect("commit");
    }
    // One transaction announcing two events; one without a key (its key is `outbox:<id>`).
    let tx = db.transaction().await.expect("begin");
    tx.execute("UPDATE markets SET version = 22 WHERE id = 42", &[])
        .await
        .expect("update");
    outbox_row(&tx, room, &json!({"version": 21}), Some("trade-21")).await;
    outbox_row(&tx, room, &json!({"version": 22}), None).await;
    tx.commit().await.expect("commit");
    // The application retries an announcement it already made: same key, no new event.
    outbox_row(
        &db,
        room,
        &json!({"version": 5, "retry": true}),
        Some("trade-5"),
    )
    .await;
    // A row for an invalid room is set aside, not appended.
    outbox_row(&db, "not a room", &json!({"bad": true}), None).await;
    outbox_row(&db, room, &json!({"version": 23}), Some("trade-23")).await;

    let events = ws.events_until(room, 0, 22).await;
    let versions: Vec<Value> = events
        .iter()
        .map(|e| e["data"]["version"].clone())
        .collect();
    assert_eq!(versions, (1..=22).map(|v| json!(v)).collect::<Vec<_>>());
    assert_eq!(
        events[4]["data"],
        json!({"yes": "0.45", "version": 5}),
        "the retry replaced the first event"
    );
    let last = ws.events_until(room, 22, 23).await;
    assert_eq!(last[0]["data"], json!({"version": 23}));
    // Nothing else: the retried row and the bad row were not delivered.
    ws.send_json(json!({"type": "ping"})).await;
    ws.expect_type("pong").await;

    let history = a.api().all_events(room).await;
    assert_eq!(seqs(&history), range(1, 23));
    for (event, stored) in events.iter().chain(&last).zip(&history) {
        assert_eq!(
            (&event["data"], &event["ts"]),
            (&stored["data"], &stored["ts"])
        );
    }
    eventually("the outbox to be drained", || {
        let db = &db;
        async move { (outbox_len(db).await == 0).then_some(()) }
    })
    .await;
    let rejected = db
        .query("SELECT room, reason FROM outbox_rejected", &[])
        .await
        .expect("rejected rows");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].get::<_, &str>(0), "not a room");
    let version: i32 = db
        .query_one("SELECT version FROM markets WHERE id = 42", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 22);
}

/// Outbox rows get the checks every publish gets: an event over the size
/// limit, a number no double holds and an over-long idempotency key are moved
/// to `outbox_rejected` with the reason and never fanned out (a client would
/// otherwise be sent a frame it cannot take, on every reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_outbox_rows_are_rejected_like_publishes() {
    if !cluster_or_skip("invalid_outbox_rows_are_rejected_like_publishes") {
        return;
    }
    let a = Server::start(OUTBOX).await;
    let room = "outbox-checks";
    let (mut ws, _) = Ws::room(&a, room, "").await;
    ws.until_caught_up(room, 0).await;
    let db = a.cluster().expect("a cluster node").connect().await;
    outbox_row(
        &db,
        room,
        &json!({"big": "x".repeat(2 * 1024 * 1024)}),
        None,
    )
    .await;
    db.execute(
        "INSERT INTO outbox (room, data) VALUES ($1, '{\"n\": 1e400}'::jsonb)",
        &[&room],
    )
    .await
    .expect("insert");
    outbox_row(&db, room, &json!({"key": "long"}), Some(&"k".repeat(300))).await;
    outbox_row(&db, room, &json!({"ok": true}), None).await;

    let events = ws.events_until(room, 0, 1).await;
    assert_eq!(
        events[0]["data"],
        json!({"ok": true}),
        "only the valid row is delivered"
    );
    eventually("the outbox to be drained", || {
        let db = &db;
        async move { (outbox_len(db).await == 0).then_some(()) }
    })
    .await;
    let rejected = db
        .query("SELECT reason FROM outbox_rejected ORDER BY id", &[])
        .await
        .expect("outbox_rejected");
    let reasons: Vec<String> = rejected.iter().map(|row| row.get(0)).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("byte limit"), "{reasons:?}");
    assert!(reasons[1].contains("data:"), "{reasons:?}");
    assert!(reasons[2].contains("idempotency key"), "{reasons:?}");
    assert_eq!(a.api().room(room).await["head"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_outbox_row_is_never_delivered() {
    if !cluster_or_skip("a_rolled_back_outbox_row_is_never_delivered") {
        return;
    }
    let a = Server::start(OUTBOX).await;
    let room = "market:9";
    let (mut ws, _) = Ws::room(&a, room, "").await;
    ws.until_caught_up(room, 0).await;
    let cluster = a.cluster().expect("a cluster node");
    let mut db = cluster.connect().await;
    db.batch_execute("CREATE TABLE orders (id INT PRIMARY KEY, state TEXT NOT NULL)")
        .await
        .expect("the application's table");

    // Rolled back: neither the order nor the event happened.
    let tx = db.transaction().await.expect("begin");
    tx.execute("INSERT INTO orders VALUES (1, 'placed')", &[])
        .await
        .expect("insert");
    outbox_row(
        &tx,
        room,
        &json!({"order": 1, "state": "rolled back"}),
        None,
    )
    .await;
    tx.rollback().await.expect("rollback");

    // Still open while later transactions commit and are delivered.
    let mut pending_db = cluster.connect().await;
    let pending = pending_db.transaction().await.expect("begin");
    pending
        .execute("INSERT INTO orders VALUES (2, 'placed')", &[])
        .await
        .expect("insert");
    outbox_row(
        &pending,
        room,
        &json!({"order": 2, "state": "later rolled back"}),
        None,
    )
    .await;

    let tx = db.transaction().await.expect("begin");
    tx.execute("INSERT INTO orders VALUES (3, 'placed')", &[])
        .await
        .expect("insert");
    outbox_row(&tx, room, &json!({"order": 3, "state": "committed"}), None).await;
    tx.commit().await.expect("commit");
    let first = ws.events_until(room, 0, 1).await;
    assert_eq!(first[0]["data"], json!({"order": 3, "state": "committed"}));

    // The drainer passes over the open transaction's row (several polls and a
    // NOTIFY later, another commit is delivered, not the open row).
    outbox_row(&db, room, &json!({"marker": 1}), None).await;
    let second = ws.events_until(room, 1, 2).await;
    assert_eq!(second[0]["data"], json!({"marker": 1}));
    pending.rollback().await.expect("rollback");
    outbox_row(&db, room, &json!({"marker": 2}), None).await;
    let third = ws.events_until(room, 2, 3).await;
    assert_eq!(third[0]["data"], json!({"marker": 2}));
    ws.send_json(json!({"type": "ping"})).await;
    ws.expect_type("pong").await;

    let history = a.api().all_events(room).await;
    let data: Vec<Value> = history.iter().map(|e| e["data"].clone()).collect();
    assert_eq!(
        data,
        [
            json!({"order": 3, "state": "committed"}),
            json!({"marker": 1}),
            json!({"marker": 2})
        ]
    );
    let orders: Vec<i32> = db
        .query("SELECT id FROM orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(orders, [3]);
    eventually("the outbox to be drained", || {
        let db = &db;
        async move { (outbox_len(db).await == 0).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_draining_the_outbox_append_each_row_exactly_once() {
    if !cluster_or_skip("two_nodes_draining_the_outbox_append_each_row_exactly_once") {
        return;
    }
    const WRITERS: usize = 4;
    const TRANSACTIONS: usize = 60;
    let config = "[hub]\nreconcile_ms = 200\n[postgres]\noutbox_poll_ms = 20\n";
    let a = Server::start(config).await;
    let b = Server::start_peer(&a, config).await;
    let rooms = ["ob-0", "ob-1", "ob-2"];

    // One multiplexed subscriber per node, on every room.
    let mut subscribers = Vec::new();
    for node in [&a, &b] {
        let mut ws = Ws::connect(&node.ws_url("/v1/ws")).await;
        for room in rooms {
            ws.subscribe(room, json!({})).await;
            ws.until_caught_up(room, 0).await;
        }
        subscribers.push(ws);
    }

    // Application writers: many small transactions of 1–5 rows over the rooms,
    // committed concurrently while both nodes drain.
    let cluster = a.cluster().expect("a cluster node");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut db = cluster.connect().await;
        writers.push(tokio::spawn(async move {
            let mut written: Vec<(String, Value)> = Vec::new();
            for t in 0..TRANSACTIONS {
                let tx = db.transaction().await.expect("begin");
                for k in 0..(1 + (w * 7 + t * 3) % 5) {
                    let room = ["ob-0", "ob-1", "ob-2"][(w + t + k) % 3];
                    let data = json!({"w": w, "t": t, "k": k});
                    let key = (k % 2 == 0).then(|| format!("w{w}-t{t}-k{k}"));
                    outbox_row(&tx, room, &data, key.as_deref()).await;
                    written.push((room.to_owned(), data));
                }
                tx.commit().await.expect("commit");
            }
            written
        }));
    }
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for writer in writers {
        for (room, data) in within(PHASE, "the application writers", writer)
            .await
            .unwrap()
        {
            assert!(expected.entry(room).or_default().insert(data.to_string()));
        }
    }
    let total: usize = expected.values().map(BTreeSet::len).sum();

    // Every subscriber on either node gets each row once, per room gapless.
    for (node, ws) in subscribers.iter_mut().enumerate() {
        let mut last: BTreeMap<&str, u64> = rooms.iter().map(|r| (*r, 0)).collect();
        let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        within(PHASE, "every outbox row on a subscriber", async {
            while seen.values().map(BTreeSet::len).sum::<usize>() < total {
                let frame = ws.next_json().await;
                assert_eq!(frame["type"], "event", "{frame}");
                let room = rooms
                    .iter()
                    .copied()
                    .find(|r| frame["room"] == *r)
                    .expect("a subscribed room");
                let seq = frame["seq"].as_u64().unwrap();
                assert_eq!(seq, last[room] + 1, "node {node}: {frame}");
                last.insert(room, seq);
                assert!(
                    seen.entry(room)
                        .or_default()
                        .insert(frame["data"].to_string()),
                    "node {node} got a row twice: {frame}"
                );
            }
        })
        .await;
        ws.send_json(json!({"type": "ping"})).await;
        ws.expect_type("pong").await;
        for room in rooms {
            assert_eq!(
                seen.get(room),
                expected.get(room),
                "node {node}, room {room}"
            );
        }
    }
    for room in rooms {
        let history = a.api().all_events(room).await;
        let stored: BTreeSet<String> = history.iter().map(|e| e["data"].to_string()).collect();
        assert_eq!(
            history.len(),
            expected[room].len(),
            "room {room} holds a row twice"
        );
        assert_eq!(Some(&stored), expected.get(room), "room {room}");
    }
    let db = cluster.connect().await;
    eventually("the outbox to be drained", || {
        let db = &db;
        async move { (outbox_len(db).await == 0).then_some(()) }
    })
    .await;
    let by_a = a.api().metric("hubcast_events_published_total").await;
    let by_b = b.api().metric("hubcast_events_published_total").await;
    eprintln!(
        "{total} outbox rows in {} transactions: node A appended {by_a}, node B {by_b}",
        WRITERS * TRANSACTIONS
    );
    assert_eq!(
        by_a + by_b,
        total as f64,
        "appended events across both nodes"
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL's connection limit
// ---------------------------------------------------------------------------

/// Six nodes with the default pool (16) ask a stock PostgreSQL
/// (`max_connections = 100`) for more connections than it has: before, the
/// connection a pool failed to add was a publish answered `503
/// store_unavailable` with deadpool's `db error`, 1,151 of 102,000 in the
/// storm of issue 22. Here a role allowed three connections stands for the
/// full server: the node caps its pool at what it got, the publishes wait for
/// a connection instead, and the cap is counted and logged with PostgreSQL's
/// own words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_larger_than_postgres_allows_waits_instead_of_failing_publishes() {
    if !cluster_or_skip("a_pool_larger_than_postgres_allows_waits_instead_of_failing_publishes") {
        return;
    }
    const PUBLISHES: usize = 400;
    const CONCURRENT: usize = 64;
    let admin_url = support::test_pg_url();
    let role = format!("hubcast_capped_{:08x}", rand::random::<u32>());
    let Some(role_url) = admin_url
        .split_once("://")
        .and_then(|(scheme, rest)| Some(format!("{scheme}://{role}@{}", rest.split_once('@')?.1)))
    else {
        eprintln!("SKIPPED: HUBCAST_TEST_PG_URL has no user@ to replace");
        return;
    };
    let (db, _driver) = support::pg_connect(&admin_url, None)
        .await
        .expect("PostgreSQL");
    let database: String = db
        .query_one("SELECT current_database()", &[])
        .await
        .expect("current_database")
        .get(0);
    db.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN CONNECTION LIMIT 3; GRANT CREATE ON DATABASE \"{database}\" TO {role};"
    ))
    .await
    .expect("a role with a connection limit");

    let config = "[postgres]\npool_size = 12\nwriters = 4\ntimeout_ms = 5000\n";
    let server = Server::start_cluster(config, &role_url, &support::test_nats_url()).await;
    let api = server.api();
    let next = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (api, next, answers) = (api.clone(), next.clone(), answers.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= PUBLISHES {
                        return;
                    }
                    let (status, body) = api
                        .post(
                            &format!("capped:{}", i % 40),
                            &json!({"data": {"i": i}}),
                            None,
                        )
                        .await;
                    if status != 201 {
                        eprintln!("publish {i}: {status} {body}");
                    }
                    *answers.lock().unwrap().entry(status).or_default() += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        within(PHASE, "the publishers", task)
            .await
            .expect("publisher");
    }
    let answers = answers.lock().unwrap().clone();
    let caps = api.metric("hubcast_store_pool_caps_total").await;
    let log = server.log();
    eprintln!("answers {answers:?}, pool caps {caps}");
    drop(server);
    let _ = db
        .batch_execute(&format!(
            "REVOKE CREATE ON DATABASE \"{database}\" FROM {role}; DROP ROLE IF EXISTS {role};"
        ))
        .await;

    assert_eq!(
        answers,
        BTreeMap::from([(201, PUBLISHES)]),
        "every publish acknowledged"
    );
    assert!(
        caps >= 1.0,
        "the pool was capped (hubcast_store_pool_caps_total = {caps})"
    );
    assert!(
        log.contains("PostgreSQL refused another connection")
            && log.contains("too many connections"),
        "the cap is logged with PostgreSQL's reason:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// Heads on the bus
// ---------------------------------------------------------------------------

/// A notification lost on the bus, followed by silence, is healed by the heads
/// the writing node sends its peers every `hub.reconcile_ms`, without the full
/// reconcile (here effectively off) reading every room from the store. Node A's
/// bus queue holds one event, so of a batch of 50 appended at once most never
/// reach NATS; node B's subscriber still gets 1..50 exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_healed_by_the_heads_on_the_bus() {
    if !cluster_or_skip("a_lost_notification_is_healed_by_the_heads_on_the_bus") {
        return;
    }
    const EVENTS: u64 = 50;
    let config = "[hub]\nreconcile_ms = 200\nfull_reconcile_every = 1000000\n";
    let a = Server::start(&format!("{config}[nats]\nmax_queue = 1\n")).await;
    let b = Server::start_peer(&a, config).await;
    let room = "heads:lost";
    let (mut on_b, _) = Ws::room(&b, room, "").await;
    on_b.until_caught_up(room, 0).await;
    let queries_before = b.api().metric("hubcast_reconcile_queries_total").await;

    let events: Vec<Value> = (0..EVENTS)
        .map(|i| json!({"room": room, "data": {"i": i}}))
        .collect();
    let (status, body) = a
        .api()
        .post_json("/v1/events", &json!({"events": events}))
        .await;
    assert_eq!(status, 201, "{body}");
    let received = on_b.events_until(room, 0, EVENTS).await;
    assert_eq!(seqs(&received), range(1, EVENTS));

    let dropped = a.api().metric("hubcast_bus_dropped_total").await;
    let behind = b.api().metric("hubcast_reconcile_heads_behind_total").await;
    let queries = b.api().metric("hubcast_reconcile_queries_total").await - queries_before;
    eprintln!("A dropped {dropped} of {EVENTS} notifications; B heard {behind} heads it was behind; B's full reconciles: {queries}");
    assert!(
        dropped > 0.0,
        "node A's one-event bus queue must have dropped notifications"
    );
    assert!(behind >= 1.0, "node B healed from a peer's heads");
    assert_eq!(queries, 0.0, "no full reconcile ran");
}
