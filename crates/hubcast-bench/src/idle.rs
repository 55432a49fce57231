//! `bench idle`: hold N idle subscribed connections and report the server's
//! resident memory per connection.
//!
//! One process may hold at most 20,000 open files here, so N = 100,000 takes
//! several server processes (`--nodes`, spawned with `--spawn`) and several
//! client processes (`--processes`, each this binary's hidden `idle-client`),
//! each client on its own 127.0.0.x source address so that no address runs
//! out of ephemeral ports. Memory per connection is
//! (Σ RSS with the connections held − Σ RSS before any connected) / connections
//! held, summed over the server processes, read from `/proc/PID/status`.

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Common, Report};

#[derive(Debug, Clone, clap::Args)]
pub struct IdleOptions {
    /// Connections to hold in all.
    #[arg(long, default_value_t = 100_000)]
    pub connections: usize,
    /// Client processes opening them (each below the 20,000-file limit).
    #[arg(long, default_value_t = 6)]
    pub processes: usize,
    /// Server processes started with --spawn (each `hubcast serve` on its own store).
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// Rooms the connections subscribe to, round-robin.
    #[arg(long, default_value_t = 1_000)]
    pub rooms: usize,
    /// Seconds to hold every connection before reading memory.
    #[arg(long, default_value_t = 2)]
    pub hold_secs: u64,
    /// Without --spawn: the server's process ids, to read their memory (with
    /// --url naming the servers, comma separated).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
}

/// The hidden client process: opens its share of the connections.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleClientOptions {
    /// Servers, comma separated; connections go round-robin.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    #[arg(long)]
    pub connections: usize,
    /// Local address the connections come from.
    #[arg(long)]
    pub source: std::net::Ipv4Addr,
    #[arg(long)]
    pub rooms: usize,
    /// Room names start with this.
    #[arg(long)]
    pub prefix: String,
}

pub async fn run(options: &IdleOptions, common: &Common) -> anyhow::Result<Report> {
    let mut nodes = Vec::new();
    let (urls, pids) = if common.spawn {
        for _ in 0..options.nodes.max(1) {
            nodes.push(Node::start().await?);
        }
        (
            nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>(),
            nodes
                .iter()
                .filter_map(|n| n.child.id())
                .collect::<Vec<_>>(),
        )
    } else {
        (
            common.url.split(',').map(str::to_owned).collect(),
            options.server_pid.clone(),
        )
    };
    if pids.is_empty() {
        anyhow::bail!("idle needs --spawn, or --server-pid with the server's process id");
    }
    let rss_before: u64 = pids
        .iter()
        .map(|&pid| rss_kib(pid))
        .sum::<anyhow::Result<u64>>()?;

    let processes = options.processes.max(1);
    let prefix = super::run_room("idle");
    let bar = super::progress(processes as u64, common.quiet, "clients");
    let mut clients = Vec::new();
    for i in 0..processes {
        let share =
            options.connections / processes + usize::from(i < options.connections % processes);
        let source = std::net::Ipv4Addr::new(127, 0, 1, 1 + i as u8);
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench", "idle-client", "--quiet"])
            .arg("--servers")
            .arg(urls.join(","))
            .args([
                "--connections",
                &share.to_string(),
                "--source",
                &source.to_string(),
            ])
            .args(["--rooms", &options.rooms.to_string(), "--prefix", &prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("client has no stdout"))?;
        clients.push((child, BufReader::new(stdout).lines()));
    }
    // Each client prints `held OK FAILED` once every connection has been tried.
    let (mut held, mut failed) = (0u64, 0u64);
    for (_, lines) in clients.iter_mut() {
        let line = lines.next_line().await?.unwrap_or_default();
        let mut words = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse::<u64>().unwrap_or(0));
        held += words.next().unwrap_or(0);
        failed += words.next().unwrap_or(0);
        bar.inc(1);
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(options.hold_secs)).await;
    let rss_held: u64 = pids
        .iter()
        .map(|&pid| rss_kib(pid))
        .sum::<anyhow::Result<u64>>()?;
    // Closing a client's stdin tells it to drop its connections and exit.
    for (mut child, _) in clients {
        drop(child.stdin.take());
        let _ = child.wait().await;
    }
    for node in nodes {
        node.stop().await;
    }

    let mut report = Report::new("idle", &urls.join(","));
    report.add("connections", options.connections as u64);
    report.add("connections_held", held);
    report.add("connect_failures", failed);
    report.add("server_processes", pids.len() as u64);
    report.add("client_processes", processes as u64);
    report.add("rss_before_kib", rss_before);
    report.add("rss_held_kib", rss_held);
    let per_connection = rss_held.saturating_sub(rss_before) as f64 * 1024.0 / held.max(1) as f64;
    report.add("rss_per_connection_bytes", per_connection.round());
    Ok(report)
}

/// A client process's work: open the connections from `source`, wait until
/// each is subscribed, print `held OK FAILED`, hold them until stdin closes.
pub async fn client(options: &IdleClientOptions) -> anyhow::Result<()> {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut connections = tokio::task::JoinSet::new();
    for i in 0..options.connections {
        let server = options.servers[i % options.servers.len().max(1)].clone();
        let room = format!("{}-{}", options.prefix, i % options.rooms.max(1));
        let (source, permits, held_tx) = (options.source, permits.clone(), held_tx.clone());
        connections.spawn(async move {
            let permit = permits.acquire().await;
            // A busy server may drop a handshake: try again, as a real client
            // would, with a growing pause (0.25 s, 0.5 s, 1 s, then 2 s each
            // time) so that a storm of retries does not arrive all at once.
            let mut attempt = connect_from(source, &server, &room).await;
            let mut pause = Duration::from_millis(250);
            for _ in 1..CONNECT_ATTEMPTS {
                if attempt.is_ok() {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                attempt = connect_from(source, &server, &room).await;
            }
            let socket = match attempt {
                Ok(socket) => socket,
                Err(err) => {
                    // One line per kind is enough to say why (the parent counts them).
                    if !REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        eprintln!("idle-client {source}: first connect failure: {err:#}");
                    }
                    let _ = held_tx.send(false);
                    return;
                }
            };
            drop(permit);
            let _ = held_tx.send(true);
            // Keep reading, so heartbeats are answered, until the server closes.
            let mut socket = socket;
            while let Some(Ok(_)) = socket.next().await {}
        });
    }
    drop(held_tx);
    let (mut ok, mut failed) = (0u64, 0u64);
    for _ in 0..options.connections {
        let Some(held) = held_rx.recv().await else {
            break;
        };
        if held {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    println!("held {ok} {failed}");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    connections.shutdown().await;
    Ok(())
}

/// Tries per connection before it counts as failed: ~12 s of retrying. With
/// 5 tries (3.75 s) one 100k run on a 2-core machine left 31 connections
/// unopened while the other 99,969 handshakes were still being served.
const CONNECT_ATTEMPTS: usize = 8;

/// Whether this client already printed a connect failure.
static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A room WebSocket from `source`, returned once the server sent `caught_up`.
async fn connect_from(
    source: std::net::Ipv4Addr,
    server: &str,
    room: &str,
) -> anyhow::Result<Socket> {
    let url = format!("{}/v1/rooms/{room}/ws", server.replacen("http", "ws", 1));
    let authority = server.trim_start_matches("http://").trim_end_matches('/');
    let address: std::net::SocketAddr = authority.parse()?;
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.bind((source, 0).into())?;
    let stream = tcp.connect(address).await?;
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await?;
    while let Some(message) = socket.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message? {
            if text.contains(r#""type":"caught_up""#) {
                return Ok(socket);
            }
        }
    }
    anyhow::bail!("closed before caught_up")
}

/// Resident memory of a process, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}

/// A `hubcast serve` child process on a temporary store.
struct Node {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> anyhow::Result<Node> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        // An empty config file: the defaults, whatever hubcast.toml the
        // working directory has (a named file must exist).
        std::fs::write(dir.path().join("none.toml"), "")?;
        let child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--store")
            .arg(format!("sqlite://{}/hubcast.db", dir.path().display()))
            .arg("--config")
            .arg(dir.path().join("none.toml"))
            // The load comes from a handful of addresses: no per-address limits.
            .env("HUBCAST_RATE_LIMITS__CONNECTS_PER_IP_PER_MINUTE", "0")
            .env("HUBCAST_RATE_LIMITS__MAX_CONNECTIONS_PER_IP", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if matches!(http.get(format!("{url}/readyz")).send().await, Ok(r) if r.status().is_success())
            {
                return Ok(Node {
                    url,
                    child,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("spawned node at {url} did not become ready")
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
