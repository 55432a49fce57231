//! A real `hubcast serve` process ([`Server`]) with its own temp dir and
//! `hubcast.toml`, on a free loopback port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::cluster::{cluster_backend, Cluster};
use super::{within, Api, STEP};

/// Config for tests where durability is not the subject: fsync-free commits.
pub const FAST: &str = "[sqlite]\nsynchronous = \"normal\"\n";

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
            Some(Arc::new(Cluster::from_env().await))
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
            Some(Arc::new(Cluster::from_env().await))
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

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}
