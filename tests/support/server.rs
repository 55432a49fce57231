//! A real `hubcast serve` process ([`Server`]) with its own temp dir and
//! `hubcast.toml`, on a port the kernel picks.
//!
//! No port is guessed: the server is started with `--listen 127.0.0.1:0` and
//! the test reads the address it bound from the one line it prints on stdout
//! once it listens ([`LISTENING`], documented in `hubcast serve --help`).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::cluster::{cluster_backend, Cluster};
use super::{within, Api, STEP};

/// Config for tests where durability is not the subject: fsync-free commits.
pub const FAST: &str = "[sqlite]\nsynchronous = \"normal\"\n";

/// What `hubcast serve` prints on stdout once it listens, before the bound
/// address: `listening on http://127.0.0.1:41234`.
pub const LISTENING: &str = "listening on http://";

/// The limit for a process to start: open its store (a PostgreSQL schema's
/// migrations, on a loaded machine), listen and become ready.
const START: Duration = Duration::from_secs(30);

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
    /// The address the running (or last) process bound.
    addr: SocketAddr,
    starts: u32,
    /// The subcommand and its own flags (`["serve"]`, or `["demo"]`).
    command: Vec<String>,
    api: Api,
    /// The cluster this node belongs to (`None`: SQLite + memory bus). Shared
    /// with its peers; the schema is dropped when the last of them goes.
    cluster: Option<Arc<Cluster>>,
}

/// The process could not bind the port it was asked for.
struct PortTaken;

impl Server {
    /// Writes `config` as the server's `hubcast.toml` and starts it on a port
    /// of its own, waiting until `/readyz` answers. The backend follows
    /// `HUBCAST_TEST_BACKEND` (see [`Server`]).
    pub async fn start(config: &str) -> Server {
        Server::start_with(config, &["serve"]).await
    }

    /// Starts the first node of a new cluster on the given PostgreSQL and NATS
    /// (whatever `HUBCAST_TEST_BACKEND` says), in a fresh schema and subject prefix.
    pub async fn start_cluster(config: &str, pg_url: &str, nats_url: &str) -> Server {
        Server::start_command(
            config,
            Some(Arc::new(Cluster::new(pg_url, nats_url).await)),
            &["serve"],
        )
        .await
    }

    /// Starts another node of `first`'s cluster: same PostgreSQL schema, same
    /// NATS and subject prefix, its own port, temp dir and `config`.
    pub async fn start_peer(first: &Server, config: &str) -> Server {
        let cluster = first.cluster.clone().expect(
            "start_peer needs a cluster node (HUBCAST_TEST_BACKEND=cluster or start_cluster)",
        );
        Server::start_command(config, Some(cluster), &["serve"]).await
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

    async fn start_command(
        config: &str,
        cluster: Option<Arc<Cluster>>,
        command: &[&str],
    ) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("hubcast-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("hubcast.toml"), config).expect("write hubcast.toml");
        let command = command.iter().map(|c| c.to_string()).collect();
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut server = Server {
            child: None,
            dir,
            addr,
            starts: 0,
            command,
            api: Api::new(format!("http://{addr}")),
            cluster,
        };
        if server.launch(0).await.is_err() {
            unreachable!("port 0 is never taken");
        }
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
    /// [`kill9`](Self::kill9) or [`sigterm`](Self::sigterm)), on a new port:
    /// take [`api`](Self::api) and URLs from it again afterwards. For clients
    /// that resume on the URL they had, see [`restart_on_same_port`](Self::restart_on_same_port).
    pub async fn restart(&mut self) {
        self.stop_child();
        if self.launch(0).await.is_err() {
            unreachable!("port 0 is never taken");
        }
    }

    /// Starts the server again on the port it had, as a supervisor restarts a
    /// node: clients resume on the URLs they hold.
    ///
    /// The node binds with `SO_REUSEADDR`, so its own old connections in
    /// `TIME_WAIT` do not stand in the way. Another process may have taken the
    /// port while the node was down (the one race left, and only here): this
    /// tries again for a while, then fails the test saying so.
    pub async fn restart_on_same_port(&mut self) {
        let port = self.addr.port();
        assert_ne!(port, 0, "the server never listened");
        self.stop_child();
        for _attempt in 0..50 {
            match self.launch(port).await {
                Ok(()) => return,
                Err(PortTaken) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!(
            "port {port} stayed taken by another process while hubcast was down; log:\n{}",
            self.log()
        );
    }

    fn stop_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process on `127.0.0.1:{port}` (0: a port the kernel picks)
    /// and waits until it listens and `/readyz` answers. `Err` if `port` was
    /// taken; any other early exit fails the test.
    async fn launch(&mut self, port: u16) -> Result<(), PortTaken> {
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
            .stdout(Stdio::piped())
            .stderr(log);
        // HUBCAST_* variables are configuration: none of this shell's may leak in.
        for (key, _) in std::env::vars() {
            if key.starts_with("HUBCAST_") {
                command.env_remove(key);
            }
        }
        match &self.cluster {
            None => {
                command.arg("--store").arg(format!(
                    "sqlite://{}",
                    self.dir.path().join("data").join("hubcast.db").display()
                ));
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
        let mut child = command.spawn().expect("spawn hubcast");
        let listening = listening_address(&mut child, START).await;
        self.child = Some(child);
        match listening {
            Ok(addr) => {
                self.addr = addr;
                self.api = Api::new(format!("http://{addr}"));
                self.wait_ready().await;
                Ok(())
            }
            Err(status) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if port != 0 && log.contains("cannot listen") {
                    return Err(PortTaken);
                }
                panic!("hubcast exited before it listened ({status})");
            }
        }
    }

    /// Polls `/readyz` until it answers 200 (the node listens before its
    /// store and bus are ready).
    async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.api.base);
        let (child, http) = (
            self.child.as_mut().expect("server is running"),
            &self.api.http,
        );
        within(START, "hubcast to become ready", async {
            loop {
                if let Some(status) = child.try_wait().ok().flatten() {
                    panic!("hubcast exited before it was ready ({status})");
                }
                let probe =
                    tokio::time::timeout(Duration::from_secs(2), http.get(&url).send()).await;
                if let Ok(Ok(response)) = probe {
                    if response.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("server-{start}.log"))
    }

    /// Everything every run of this server has logged so far.
    /// The SQLite database of a node on the embedded backend.
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("hubcast.db")
    }

    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        self.api.base.clone()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
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
        exit_status(self.child.as_mut().expect("server was started")).await
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

/// Waits up to `limit` for the [`LISTENING`] line of `child` (spawned with a
/// piped stdout, which this takes) and returns the address in it, or the exit
/// status if the process ends first. The rest of stdout is read and dropped
/// on a thread of its own, so the child never blocks on a full pipe.
pub async fn listening_address(
    child: &mut Child,
    limit: Duration,
) -> Result<SocketAddr, ExitStatus> {
    let stdout = child
        .stdout
        .take()
        .expect("hubcast was spawned with a piped stdout");
    match within(
        limit,
        "hubcast's `listening on` line",
        read_listening(stdout),
    )
    .await
    {
        Ok(Ok(addr)) => Ok(addr),
        Ok(Err(line)) => panic!("hubcast printed {line:?}, which does not end in an address"),
        // Stdout closed before the line: the process is ending.
        Err(_) => Err(exit_status(child).await),
    }
}

/// The address of the first [`LISTENING`] line on `stdout` (`Err`: the line
/// as printed, if the rest is not an address). The channel closes without a
/// value if stdout ends first.
fn read_listening(
    stdout: ChildStdout,
) -> tokio::sync::oneshot::Receiver<Result<SocketAddr, String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(address) = line.strip_prefix(LISTENING) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(
                        address
                            .trim()
                            .parse::<SocketAddr>()
                            .map_err(|_| line.clone()),
                    );
                }
            }
        }
    });
    rx
}

/// Waits (up to [`STEP`]) for `child` to exit.
async fn exit_status(child: &mut Child) -> ExitStatus {
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
