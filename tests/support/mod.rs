//! Shared helpers for the black-box tests: a real `hubcast serve` process on a
//! free loopback port with its own data directory and `hubcast.toml`, an HTTP
//! client for the v1 routes, a WebSocket client ([`Ws`]), a byte-level
//! WebSocket client that can stop reading or never answer pings ([`RawWs`]),
//! and a resuming follower that checks the gapless-sequence guarantee.
//!
//! Every await goes through [`within`], so a hang fails the test with a
//! message instead of hanging the suite. No test asserts a wall-clock duration:
//! the limits here only turn "never" into a failure.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The limit for one step: one frame, one request, one process start.
pub const STEP: Duration = Duration::from_secs(15);
/// The limit for a whole phase of a test (a replay, a churn run).
pub const PHASE: Duration = Duration::from_secs(90);

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some`, failing after [`PHASE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(PHASE, what, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
}

/// Config for tests where durability is not the subject: fsync-free commits.
pub const FAST: &str = "[sqlite]\nsynchronous = \"normal\"\n";

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A `hubcast serve` child process with its own temp dir. Killed on drop; its
/// log is printed when the test is failing.
///
/// The backend is SQLite in the server's temp dir unless the environment says
/// `HUBCAST_TEST_BACKEND=cluster`: then the server runs with
/// `--store postgres://…` and `--bus nats://…` (see [`Cluster`]), in a schema
/// and under a subject prefix of its own, so tests run in parallel.
pub struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    starts: u32,
    /// The subcommand and its own flags (`["serve"]`, or `["demo"]`).
    command: Vec<String>,
    api: Api,
    /// The cluster this node belongs to (`None`: SQLite + memory bus). Shared
    /// with its peers; the schema is dropped when the last of them goes.
    cluster: Option<Arc<Cluster>>,
}

impl Server {
    /// Writes `config` as the server's `hubcast.toml` and starts it on a free
    /// loopback port, waiting until `/readyz` answers. The backend follows
    /// `HUBCAST_TEST_BACKEND` (see [`Server`]).
    pub async fn start(config: &str) -> Server {
        let cluster = if cluster_backend() {
            Some(Arc::new(Cluster::new(&env_or("HUBCAST_TEST_PG_URL", DEFAULT_PG_URL), &env_or("HUBCAST_TEST_NATS_URL", DEFAULT_NATS_URL)).await))
        } else {
            None
        };
        Server::start_in(config, cluster).await
    }

    /// Starts the first node of a new cluster on the given PostgreSQL and NATS
    /// (whatever `HUBCAST_TEST_BACKEND` says), in a fresh schema and subject prefix.
    pub async fn start_cluster(config: &str, pg_url: &str, nats_url: &str) -> Server {
        Server::start_in(config, Some(Arc::new(Cluster::new(pg_url, nats_url).await))).await
    }

    /// Starts another node of `first`'s cluster: same PostgreSQL schema, same
    /// NATS and subject prefix, its own port, temp dir and `config`.
    pub async fn start_peer(first: &Server, config: &str) -> Server {
        let cluster = first.cluster.clone().expect("start_peer needs a cluster node (HUBCAST_TEST_BACKEND=cluster or start_cluster)");
        Server::start_in(config, Some(cluster)).await
    }

    async fn start_in(config: &str, cluster: Option<Arc<Cluster>>) -> Server {
        Server::start_command(config, cluster, &["serve"]).await
    }

    /// Like [`start`](Self::start) for another subcommand (`&["demo"]`: the
    /// prediction-market demo), on the backend `HUBCAST_TEST_BACKEND` says.
    pub async fn start_with(config: &str, command: &[&str]) -> Server {
        let cluster = if cluster_backend() {
            Some(Arc::new(Cluster::new(&env_or("HUBCAST_TEST_PG_URL", DEFAULT_PG_URL), &env_or("HUBCAST_TEST_NATS_URL", DEFAULT_NATS_URL)).await))
        } else {
            None
        };
        Server::start_command(config, cluster, command).await
    }

    async fn start_command(config: &str, cluster: Option<Arc<Cluster>>, command: &[&str]) -> Server {
        let dir = tempfile::Builder::new().prefix("hubcast-test-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("hubcast.toml"), config).expect("write hubcast.toml");
        let command = command.iter().map(|c| c.to_string()).collect();
        let mut server =
            Server { child: None, dir, port: 0, starts: 0, command, api: Api::new("http://127.0.0.1:0".into()), cluster };
        server.launch().await;
        server
    }

    /// Whether this node runs on PostgreSQL + NATS.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_deref()
    }

    /// The PostgreSQL URL of a cluster node (without the schema).
    pub fn pg_url(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.pg_url.as_str())
    }

    /// The PostgreSQL schema holding this cluster node's tables.
    pub fn schema(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.schema.as_str())
    }

    /// The NATS subject prefix of this cluster node.
    pub fn subject_prefix(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.prefix.as_str())
    }

    /// Starts the server again on the same data dir and config (after
    /// [`kill9`](Self::kill9) or [`sigterm`](Self::sigterm)). Prefers the same port.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.launch().await;
    }

    async fn launch(&mut self) {
        let mut port = if self.port == 0 { free_port() } else { self.port };
        for attempt in 0..5 {
            self.starts += 1;
            let log_path = self.log_path(self.starts);
            let log = std::fs::File::create(&log_path).expect("create server log");
            let mut command = Command::new(env!("CARGO_BIN_EXE_hubcast"));
            command
                .args(&self.command)
                .arg("--config")
                .arg(self.dir.path().join("hubcast.toml"))
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .current_dir(self.dir.path())
                .env("RUST_LOG", "hubcast=debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            for (key, _) in std::env::vars() {
                if key.starts_with("HUBCAST_") {
                    command.env_remove(key);
                }
            }
            match &self.cluster {
                None => {
                    command
                        .arg("--store")
                        .arg(format!("sqlite://{}", self.dir.path().join("data").join("hubcast.db").display()));
                }
                Some(cluster) => {
                    command
                        .arg("--store")
                        .arg(&cluster.pg_url)
                        .arg("--bus")
                        .arg(&cluster.nats_url)
                        .env("HUBCAST_POSTGRES__SCHEMA", &cluster.schema)
                        .env("HUBCAST_NATS__SUBJECT_PREFIX", &cluster.prefix);
                }
            }
            let child = command.spawn().expect("spawn hubcast");
            self.child = Some(child);
            self.port = port;
            self.api = Api::new(format!("http://127.0.0.1:{port}"));
            match self.wait_ready().await {
                Ok(()) => return,
                Err(status) => {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if log.contains("cannot listen") && attempt < 4 {
                        port = free_port();
                        continue;
                    }
                    panic!("hubcast exited before it was ready ({status}); log:\n{log}");
                }
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<(), ExitStatus> {
        let url = format!("{}/readyz", self.api.base);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(status);
            }
            if tokio::time::Instant::now() > deadline {
                panic!("hubcast did not become ready; log:\n{}", self.log());
            }
            let probe = tokio::time::timeout(Duration::from_secs(2), self.api.http.get(&url).send()).await;
            if let Ok(Ok(response)) = probe {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("server-{start}.log"))
    }

    /// Everything every run of this server has logged so far.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn base(&self) -> String {
        self.api.base.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// `ws://…/v1/rooms/{room}/ws{query}` (query includes its `?`).
    pub fn room_ws_url(&self, room: &str, query: &str) -> String {
        self.ws_url(&format!("/v1/rooms/{room}/ws{query}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub async fn kill9(&mut self) {
        let child = self.child.as_mut().expect("server is running");
        child.kill().expect("kill -9");
        self.wait_exit().await;
    }

    /// SIGTERM: asks for a graceful shutdown. Does not wait; see [`wait_exit`](Self::wait_exit).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit and returns its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("server was started");
        within(STEP, "the server process to exit", async {
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Shortcut for [`Api::publish`].
    pub async fn publish(&self, room: &str, data: Value) -> Value {
        self.api.publish(room, data).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut exited = None;
        if let Some(mut child) = self.child.take() {
            exited = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            if let Some(status) = exited {
                eprintln!("---- hubcast had already exited: {status} ----");
            }
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("---- hubcast log (last {} lines) ----", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The cluster backend
// ---------------------------------------------------------------------------

/// PostgreSQL used when `HUBCAST_TEST_BACKEND=cluster` (override: `HUBCAST_TEST_PG_URL`).
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// NATS used when `HUBCAST_TEST_BACKEND=cluster` (override: `HUBCAST_TEST_NATS_URL`).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Whether `HUBCAST_TEST_BACKEND=cluster` selects PostgreSQL + NATS.
pub fn cluster_backend() -> bool {
    match std::env::var("HUBCAST_TEST_BACKEND").as_deref() {
        Ok("cluster") => true,
        Ok("") | Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("HUBCAST_TEST_BACKEND must be `sqlite` or `cluster`, not {other:?}"),
    }
}

/// The cluster's PostgreSQL URL for tests that need one whatever the backend
/// (`HUBCAST_TEST_PG_URL`, else [`DEFAULT_PG_URL`]).
pub fn test_pg_url() -> String {
    env_or("HUBCAST_TEST_PG_URL", DEFAULT_PG_URL)
}

/// The cluster's NATS URL (`HUBCAST_TEST_NATS_URL`, else [`DEFAULT_NATS_URL`]).
pub fn test_nats_url() -> String {
    env_or("HUBCAST_TEST_NATS_URL", DEFAULT_NATS_URL)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// One test's cluster: a PostgreSQL schema and a NATS subject prefix nobody
/// else uses, shared by the nodes started with [`Server::start_peer`]. The
/// schema is dropped (`DROP SCHEMA … CASCADE`) when the last node is dropped.
pub struct Cluster {
    pub pg_url: String,
    pub nats_url: String,
    pub schema: String,
    pub prefix: String,
}

impl Cluster {
    async fn new(pg_url: &str, nats_url: &str) -> Cluster {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("t{}_{}_{:08x}", std::process::id(), n, rand::random::<u32>());
        let cluster = Cluster {
            pg_url: pg_url.to_owned(),
            nats_url: nats_url.to_owned(),
            schema: format!("hubcast_{tag}"),
            prefix: format!("hubcast_{tag}"),
        };
        // Fail here, clearly, rather than as a server that never gets ready.
        let (client, _) = within(STEP, "a connection to the test PostgreSQL", pg_connect(pg_url, None))
            .await
            .unwrap_or_else(|err| panic!("cannot connect to {pg_url} (run scripts/services.sh): {}", chain(&err)));
        drop(client);
        cluster
    }

    /// A new connection whose search path is this cluster's schema.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, _driver) = within(STEP, "a PostgreSQL connection", pg_connect(&self.pg_url, Some(&self.schema)))
            .await
            .unwrap_or_else(|err| panic!("connect to {}: {}", self.pg_url, chain(&err)));
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which must not be blocked on:
        // clean up from a thread of its own, with a runtime of its own.
        let (url, schema) = (self.pg_url.clone(), self.schema.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let drop_schema = async {
                    let (client, _) = pg_connect(&url, None).await?;
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await
                };
                match tokio::time::timeout(Duration::from_secs(20), drop_schema).await {
                    Ok(Ok(())) => {}
                    // Best effort: the private PostgreSQL of a test may be gone already.
                    Ok(Err(err)) => eprintln!("note: could not drop test schema {schema}: {}", chain(&err)),
                    Err(_) => eprintln!("note: timed out dropping test schema {schema}"),
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Connects to PostgreSQL at `url` (search path `schema`, if given); the
/// connection is driven by a spawned task that ends with it.
pub async fn pg_connect(url: &str, schema: Option<&str>) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    use std::str::FromStr;
    let mut config = tokio_postgres::Config::from_str(url)?;
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("hubcast-tests");
    if let Some(schema) = schema {
        config.options(format!("-c search_path={schema}"));
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, driver))
}

/// An error with all its sources, for failure messages.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// The v1 HTTP routes of one server. Cheap to clone into tasks.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(STEP)
            .build()
            .expect("http client");
        Api { base, http }
    }

    /// `POST /v1/rooms/{room}/events` with a raw JSON body; the status and answer.
    pub async fn post(&self, room: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        self.try_post(room, body, key).await.unwrap_or_else(|err| panic!("POST to room {room}: {}", chain(&err)))
    }

    /// Like [`post`](Self::post) but returns transport errors (for tests that
    /// kill the server under load).
    pub async fn try_post(&self, room: &str, body: &Value, key: Option<&str>) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self.http.post(format!("{}/v1/rooms/{room}/events", self.base)).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await?;
        Ok((status, body))
    }

    /// `POST` a raw byte body with a JSON content type.
    pub async fn post_bytes(&self, room: &str, body: Vec<u8>) -> (u16, Value) {
        let response = within(
            STEP,
            "a raw POST",
            self.http
                .post(format!("{}/v1/rooms/{room}/events", self.base))
                .header("content-type", "application/json")
                .body(body)
                .send(),
        )
        .await
        .expect("raw POST");
        let status = response.status().as_u16();
        let text = within(STEP, "a raw POST's body", response.text()).await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer to a raw POST is not JSON: {text:?}"));
        (status, body)
    }

    /// Publishes `data` and returns the `201` receipt `{room, seq, epoch, ts}`.
    pub async fn publish(&self, room: &str, data: Value) -> Value {
        let (status, receipt) = within(STEP, "a publish", self.post(room, &json!({ "data": data }), None)).await;
        assert_eq!(status, 201, "publish to {room} answered {receipt}");
        receipt
    }

    /// `POST path` (relative to the base URL) with a JSON body; the status and JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = within(STEP, "a POST", self.http.post(format!("{}{path}", self.base)).json(body).send())
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {}", chain(&err)));
        let status = response.status().as_u16();
        let body = within(STEP, "a POST body", response.json::<Value>())
            .await
            .unwrap_or_else(|err| panic!("POST {path}: answer is not JSON: {err}"));
        (status, body)
    }

    /// `GET path` (relative to the base URL); the status and JSON answer.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = within(STEP, "a GET", self.http.get(format!("{}{path}", self.base)).send())
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {}", chain(&err)));
        let status = response.status().as_u16();
        let body = within(STEP, "a GET body", response.json::<Value>())
            .await
            .unwrap_or_else(|err| panic!("GET {path}: answer is not JSON: {err}"));
        (status, body)
    }

    /// `GET /v1/rooms/{room}/events?after=&limit=`.
    pub async fn history(&self, room: &str, after: u64, limit: usize) -> Value {
        let (status, body) = self.get(&format!("/v1/rooms/{room}/events?after={after}&limit={limit}")).await;
        assert_eq!(status, 200, "history of {room}: {body}");
        body
    }

    /// `GET /v1/rooms/{room}`.
    pub async fn room(&self, room: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/rooms/{room}")).await;
        assert_eq!(status, 200, "stats of {room}: {body}");
        body
    }

    /// Every retained event of `room`, oldest first, paging through history.
    pub async fn all_events(&self, room: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self.history(room, after, 1000).await;
            let batch = page["events"].as_array().expect("events array").clone();
            let Some(last) = batch.last() else { return events };
            after = last["seq"].as_u64().expect("seq");
            events.extend(batch);
        }
    }

    /// Publishes `n` events with `workers` concurrent publishers; event `i`
    /// (0-based) carries `data(i)`. Returns the receipts, sorted by seq.
    pub async fn publish_many(&self, room: &str, n: usize, workers: usize, data: impl Fn(usize) -> Value + Send + Sync + 'static) -> Vec<Receipt> {
        let data = Arc::new(data);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (api, room, data, next) = (self.clone(), room.to_owned(), data.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut receipts = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return receipts;
                    }
                    let value = data(i);
                    let receipt = api.publish(&room, value.clone()).await;
                    receipts.push(Receipt::from_json(&receipt, value));
                }
            }));
        }
        let mut receipts = Vec::new();
        for task in tasks {
            receipts.extend(within(PHASE, "publishers to finish", task).await.expect("publisher task"));
        }
        receipts.sort_by_key(|r| r.seq);
        receipts
    }
}

/// A `201` receipt and the data that was published with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub seq: u64,
    pub epoch: String,
    pub ts: i64,
    pub data: Value,
}

impl Receipt {
    pub fn from_json(receipt: &Value, data: Value) -> Receipt {
        Receipt {
            seq: receipt["seq"].as_u64().unwrap_or_else(|| panic!("receipt without seq: {receipt}")),
            epoch: receipt["epoch"].as_str().unwrap_or_else(|| panic!("receipt without epoch: {receipt}")).to_owned(),
            ts: receipt["ts"].as_i64().unwrap_or_else(|| panic!("receipt without ts: {receipt}")),
            data,
        }
    }
}

/// The seqs of a list of event frames or history events.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("event without seq: {e}"))).collect()
}

/// `from..=to` as a Vec, for comparing with [`seqs`].
pub fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client (tokio-tungstenite). It answers pings only while it is
/// being read from, as a real client does.
pub struct Ws {
    inner: WsStream,
    /// The `welcome` frame.
    pub welcome: Value,
}

impl Ws {
    /// Connects and reads the `welcome` frame.
    pub async fn connect(url: &str) -> Ws {
        let (inner, _) = within(STEP, "a WebSocket connect", tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|err| panic!("connect {url}: {err}"));
        let mut ws = Ws { inner, welcome: Value::Null };
        let welcome = ws.next_json().await;
        assert_eq!(welcome["type"], "welcome", "first frame must be welcome: {welcome}");
        assert!(welcome["session"].is_string() && welcome["heartbeat_ms"].is_u64(), "{welcome}");
        ws.welcome = welcome;
        ws
    }

    /// Connects to `/v1/rooms/{room}/ws{query}` and reads `welcome` and `subscribed`.
    /// Returns the client and the `subscribed` frame.
    pub async fn room(server: &Server, room: &str, query: &str) -> (Ws, Value) {
        let mut ws = Ws::connect(&server.room_ws_url(room, query)).await;
        let subscribed = ws.expect_type("subscribed").await;
        assert_eq!(subscribed["room"], room);
        (ws, subscribed)
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_owned())).await;
    }

    pub async fn send(&mut self, message: Message) {
        within(STEP, "a WebSocket send", self.inner.send(message)).await.expect("WebSocket send");
    }

    /// Sends `subscribe` and reads the `subscribed` answer. `extra` adds
    /// `cursor`, `epoch` or `rewind`.
    pub async fn subscribe(&mut self, room: &str, extra: Value) -> Value {
        let mut message = json!({"type": "subscribe", "room": room});
        if let (Some(message), Some(extra)) = (message.as_object_mut(), extra.as_object()) {
            message.extend(extra.clone());
        }
        self.send_json(message).await;
        let subscribed = self.expect_type("subscribed").await;
        assert_eq!(subscribed["room"], room, "{subscribed}");
        subscribed
    }

    /// The next JSON text frame (pings and pongs are skipped). Fails the test
    /// on a close, an error or [`STEP`] without a frame.
    pub async fn next_json(&mut self) -> Value {
        match self.next_json_within(STEP).await {
            Some(value) => value,
            None => panic!("no frame within {STEP:?}"),
        }
    }

    /// The next JSON text frame, or `None` if none arrives within `limit`.
    pub async fn next_json_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Ok(next) => next,
                Err(_) => return None,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap_or_else(|err| panic!("frame is not JSON ({err}): {text}")))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(bytes))) => panic!("unexpected binary frame of {} bytes", bytes.len()),
                Some(Ok(Message::Close(frame))) => panic!("connection closed while a frame was expected: {frame:?}"),
                Some(Err(err)) => panic!("WebSocket error while a frame was expected: {err}"),
                None => panic!("connection ended while a frame was expected"),
            }
        }
    }

    /// The next frame, which must have `type` `kind`.
    pub async fn expect_type(&mut self, kind: &str) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["type"], kind, "expected a {kind} frame, got {frame}");
        frame
    }

    /// Reads until the server closes; returns the close code. Text frames
    /// before the close are skipped. Fails if the connection ends without a
    /// close frame.
    pub async fn expect_close(&mut self) -> u16 {
        let (code, frames) = self.close_after_frames().await;
        code.unwrap_or_else(|| panic!("connection ended without a close frame (after {frames:?})"))
    }

    /// Reads until the connection ends; returns the close code (if a close
    /// frame came) and the JSON frames read before it.
    pub async fn close_after_frames(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut frames = Vec::new();
        let code = within(STEP, "the server to close the connection", async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(text.as_str()).unwrap_or(Value::Null)),
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        frames.push(json!({"transport_error": err.to_string()}));
                        return None;
                    }
                    None => return None,
                }
            }
        })
        .await;
        (code, frames)
    }

    /// Reads event frames of `room` until seq `upto`, checking each is the
    /// next after `after`. `caught_up` frames may appear anywhere and must
    /// name the last seq delivered; any other frame fails the test.
    pub async fn events_until(&mut self, room: &str, after: u64, upto: u64) -> Vec<Value> {
        let mut events = Vec::new();
        let mut last = after;
        within(PHASE, &format!("events of {room} through {upto}"), async {
            while last < upto {
                let frame = self.next_json().await;
                match frame["type"].as_str() {
                    Some("event") => {
                        assert_eq!(frame["room"], room, "{frame}");
                        let seq = frame["seq"].as_u64().expect("seq");
                        assert_eq!(seq, last + 1, "expected seq {} in {room}, got {frame}", last + 1);
                        last = seq;
                        events.push(frame);
                    }
                    Some("caught_up") => {
                        assert_eq!(frame["room"], room, "{frame}");
                        assert_eq!(frame["seq"], last, "caught_up must name the last seq delivered: {frame}");
                    }
                    _ => panic!("unexpected frame while reading events of {room}: {frame}"),
                }
            }
        })
        .await;
        events
    }

    /// Reads frames until `caught_up` for `room`; returns the events before it,
    /// checking they follow `after` without a gap.
    pub async fn until_caught_up(&mut self, room: &str, after: u64) -> (Vec<Value>, u64) {
        let mut events = Vec::new();
        let mut last = after;
        loop {
            let frame = self.next_json().await;
            match frame["type"].as_str() {
                Some("event") => {
                    assert_eq!(frame["room"], room, "{frame}");
                    let seq = frame["seq"].as_u64().expect("seq");
                    assert_eq!(seq, last + 1, "expected seq {} in {room}, got {frame}", last + 1);
                    last = seq;
                    events.push(frame);
                }
                Some("caught_up") => {
                    assert_eq!(frame["room"], room, "{frame}");
                    assert_eq!(frame["seq"], last, "caught_up must name the last seq delivered: {frame}");
                    return (events, last);
                }
                _ => panic!("unexpected frame before caught_up of {room}: {frame}"),
            }
        }
    }

    /// Closes politely (close frame, then waits briefly for the server's answer).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(STEP, self.inner.close(None)).await;
    }
}

// ---------------------------------------------------------------------------
// Byte-level WebSocket client
// ---------------------------------------------------------------------------

/// A WebSocket client on a bare `TcpStream`: the handshake and framing are
/// done by hand, and nothing is ever sent unless the test says so — it never
/// answers a ping and can stop reading for as long as the test likes.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    /// Pings skipped by [`next_json`](Self::next_json).
    pub pings: usize,
}

/// One frame from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;

    pub fn json(&self) -> Option<Value> {
        (self.opcode == Frame::TEXT).then(|| serde_json::from_slice(&self.payload).ok()).flatten()
    }

    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == Frame::CLOSE && self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl RawWs {
    /// Connects to `path` on `addr` and completes the upgrade by hand.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let mut stream = within(STEP, "a TCP connect", TcpStream::connect(addr)).await.expect("TCP connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        within(STEP, "the upgrade request", stream.write_all(request.as_bytes())).await.expect("write upgrade");
        let mut buf = Vec::new();
        let header_end = within(STEP, "the upgrade response", async {
            loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return i + 4;
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read upgrade response");
                assert!(n > 0, "connection closed during the upgrade");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        buf.drain(..header_end);
        RawWs { stream, buf, eof: false, pings: 0 }
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        within(STEP, "a raw frame write", self.stream.write_all(&frame)).await.expect("raw frame write");
    }

    /// The next complete frame, or `None` once the server has closed the TCP
    /// connection (a trailing partial frame is dropped).
    pub async fn next_frame(&mut self) -> Option<Frame> {
        within(STEP, "a raw frame", async {
            loop {
                if let Some(frame) = self.parse() {
                    return Some(frame);
                }
                if self.eof {
                    return None;
                }
                self.fill().await;
            }
        })
        .await
    }

    /// The next text frame as JSON, skipping pings.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await.expect("connection ended while a frame was expected");
            match frame.opcode {
                Frame::PING => self.pings += 1,
                Frame::TEXT => return frame.json().expect("text frame is JSON"),
                other => panic!("unexpected frame with opcode {other}: {frame:?}"),
            }
        }
    }

    /// Reads every remaining frame until the server closes the connection.
    /// Returns the frames and whether the stream ended inside a frame.
    pub async fn drain_to_end(&mut self) -> (Vec<Frame>, bool) {
        let mut frames = Vec::new();
        within(PHASE, "the server to close the raw connection", async {
            loop {
                while let Some(frame) = self.parse() {
                    frames.push(frame);
                }
                if self.eof {
                    return;
                }
                self.fill().await;
            }
        })
        .await;
        (frames, !self.buf.is_empty())
    }

    async fn fill(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            at += 4;
            Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            None
        };
        if b.len() < at + len {
            return None;
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(mask) = mask {
            payload.iter_mut().enumerate().for_each(|(i, byte)| *byte ^= mask[i % 4]);
        }
        self.buf.drain(..at + len);
        Some(Frame { opcode, payload })
    }
}

// ---------------------------------------------------------------------------
// A resuming follower
// ---------------------------------------------------------------------------

/// What a [`follow`] run saw.
#[derive(Debug, Default, Clone)]
pub struct Followed {
    /// Every event delivered, in order of arrival, across all connections.
    pub events: Vec<Value>,
    pub epoch: Option<String>,
    /// How many connections it took.
    pub connections: u32,
    /// Close codes the server sent.
    pub close_codes: Vec<u16>,
}

/// Follows `room` the way a well-behaved client does: connects with its cursor
/// (`cursor=SEQ&epoch=E`), checks every event is exactly the next seq, and
/// resumes after any disconnect until it has processed `upto`.
///
/// `drop_after(connection)` may return `Some(n)`: the client then drops that
/// connection itself after `n` more events (0: right after the upgrade).
pub async fn follow(
    server_ws: String,
    room: String,
    start: u64,
    upto: u64,
    mut drop_after: impl FnMut(u32) -> Option<usize> + Send,
) -> Followed {
    let mut seen = Followed::default();
    let mut last = start;
    while last < upto {
        seen.connections += 1;
        assert!(seen.connections < 10_000, "follower of {room} reconnected too often");
        let mut url = format!("{server_ws}/v1/rooms/{room}/ws?cursor={last}");
        if let Some(epoch) = &seen.epoch {
            url.push_str(&format!("&epoch={epoch}"));
        }
        let budget = drop_after(seen.connections);
        let connected = within(STEP, "a follower connect", tokio_tungstenite::connect_async(&url)).await;
        let Ok((mut socket, _)) = connected else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if budget == Some(0) {
            drop(socket);
            continue;
        }
        let mut taken = 0usize;
        loop {
            let next = within(STEP, &format!("a frame for the follower of {room} at {last}"), socket.next()).await;
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        seen.close_codes.push(u16::from(frame.code));
                    }
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            };
            let frame: Value = serde_json::from_str(text.as_str()).expect("frame is JSON");
            match frame["type"].as_str() {
                Some("welcome") | Some("caught_up") => {}
                Some("subscribed") => {
                    let epoch = frame["epoch"].as_str().expect("subscribed has an epoch").to_owned();
                    match &seen.epoch {
                        None => seen.epoch = Some(epoch),
                        Some(known) => assert_eq!(known, &epoch, "the epoch of {room} changed"),
                    }
                }
                Some("event") => {
                    let seq = frame["seq"].as_u64().expect("seq");
                    assert_eq!(seq, last + 1, "follower of {room}: expected seq {} got {frame}", last + 1);
                    last = seq;
                    seen.events.push(frame);
                    taken += 1;
                    if last >= upto || budget.is_some_and(|b| taken >= b) {
                        break;
                    }
                }
                _ => panic!("follower of {room}: unexpected frame {frame}"),
            }
        }
        if last < upto && budget.is_some_and(|b| taken >= b) && rand::random::<bool>() {
            // Half of the self-inflicted drops are polite, half just vanish.
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
        }
        drop(socket);
    }
    seen
}

/// Collects values from tasks that push into a shared list.
pub fn shared<T>() -> Arc<Mutex<Vec<T>>> {
    Arc::new(Mutex::new(Vec::new()))
}

// ---------------------------------------------------------------------------
// Upgrades with headers (credentials, origins, proxies) and capacity closes
// ---------------------------------------------------------------------------

impl Ws {
    /// Upgrades `url` with extra request headers (`Authorization`, `Origin`,
    /// `X-Forwarded-For` …) and does not read `welcome` (its `welcome` is
    /// `Null`): a session refused for capacity gets only a close frame. A
    /// refused upgrade returns the HTTP status and the JSON body (a non-JSON
    /// body as a JSON string).
    pub async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<Ws, (u16, Value)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url.into_client_request().unwrap_or_else(|err| panic!("bad WebSocket URL {url}: {err}"));
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request.headers_mut().append(name, HeaderValue::from_str(value).expect("header value"));
        }
        match within(STEP, "a WebSocket upgrade", tokio_tungstenite::connect_async(request)).await {
            Ok((inner, _)) => Ok(Ws { inner, welcome: Value::Null }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let text = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                Err((response.status().as_u16(), body))
            }
            Err(err) => panic!("upgrade of {url} failed: {err}"),
        }
    }

    /// The next JSON text frame, or the close code (`None`: no close frame)
    /// if the connection ends first. Fails after [`STEP`].
    pub async fn next_or_close(&mut self) -> Result<Value, Option<u16>> {
        within(STEP, "a frame or a close", async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return Ok(serde_json::from_str(text.as_str()).unwrap_or_else(|err| panic!("frame is not JSON ({err}): {text}")))
                    }
                    Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Err(None),
                }
            }
        })
        .await
    }
}
