//! `hubcast bench`: the load generator. Each scenario drives a server over its
//! public interface (HTTP publish, WebSocket subscribe), prints a table, and
//! writes machine-readable JSON. With `--spawn` it starts a server in this
//! process on a temporary SQLite store, so one command measures end to end.

mod cluster_client;
mod cpu;
mod delivery;
mod fanout;
mod floor;
mod idle;
mod load_client;
mod publish;
mod replay;
mod rooms;
mod storm;
mod target;

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use hubcast_server::config::{Config, StoreUrl, Synchronous};

pub use fanout::FanoutOptions;
pub use floor::FloorOptions;
pub use idle::{IdleClientOptions, IdleOptions};
pub use publish::PublishOptions;
pub use replay::ReplayOptions;
pub use rooms::RoomsOptions;
pub use target::{TargetKind, TargetOptions};

/// Which scenario to run.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Scenario {
    /// S subscribers on one room; publishes at a steady rate (or as fast as possible).
    Fanout(FanoutOptions),
    /// Many rooms with a few subscribers each; events round-robin over them.
    Rooms(RoomsOptions),
    /// Durable publishes per second over HTTP with C concurrent publishers.
    Publish(PublishOptions),
    /// Time for a reconnecting client to catch up K missed events.
    Replay(ReplayOptions),
    /// The floor: one thread writes one pre-framed ~100-byte frame to N
    /// loopback sockets; its CPU per write.
    Floor(FloorOptions),
    /// N idle subscribed connections from several client processes; server RSS per connection.
    Idle(IdleOptions),
    /// One client process of `idle` (started by it).
    #[command(hide = true)]
    IdleClient(IdleClientOptions),
    /// One client process of bench/storm (requests on stdin, answers on stdout).
    #[command(hide = true)]
    StormClient,
    /// One client process of bench/cluster (requests on stdin, answers on stdout).
    #[command(hide = true)]
    ClusterClient,
}

/// How a client reaches a server that has auth on or sits behind TLS: the
/// flags of `hubcast pub`, `hubcast sub` and `hubcast bench`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// An API key, sent as `Authorization: Bearer` (and as the socket's token).
    #[arg(
        long,
        env = "HUBCAST_API_KEY",
        hide_env_values = true,
        global = true,
        conflicts_with = "token"
    )]
    pub api_key: Option<String>,
    /// A JWT, sent as `Authorization: Bearer` and as the socket's `?token=`.
    #[arg(long, env = "HUBCAST_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Extra CA certificates (PEM) to trust for https:// and wss://, besides
    /// the system's (or those of `SSL_CERT_FILE`). Repeatable.
    #[arg(long, value_name = "PEM", global = true)]
    pub ca_file: Vec<PathBuf>,
}

impl ClientArgs {
    /// The credential to send, if any (a token or an API key).
    pub fn credential(&self) -> Option<&str> {
        self.token.as_deref().or(self.api_key.as_deref())
    }

    /// The TLS config for https:// and wss://.
    pub fn tls(&self) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
        if self.ca_file.is_empty() {
            return Ok(hubcast_client::tls::default_config());
        }
        Ok(hubcast_client::tls::client_config(&self.ca_file)?)
    }

    /// An HTTP client on [`Self::tls`].
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        Ok(hubcast_client::tls::http_client(&*self.tls()?))
    }

    /// A socket client for `url` with these credentials and TLS settings.
    pub fn client(&self, url: &str) -> anyhow::Result<hubcast_client::Client> {
        let mut builder = hubcast_client::Client::builder(url).tls(self.tls()?);
        if let Some(credential) = self.credential() {
            let credential = credential.to_owned();
            builder = builder.token_provider(move || {
                let credential = credential.clone();
                async move { Ok(Some(credential)) }
            });
        }
        Ok(builder.build()?)
    }
}

/// Options every scenario shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Server to measure.
    #[arg(long, default_value = "http://127.0.0.1:8787", global = true)]
    pub url: String,
    /// Start a server in this process on a temporary store instead of using --url.
    #[arg(long, global = true)]
    pub spawn: bool,
    /// SQLite synchronous mode of a spawned server (`full` or `normal`).
    #[arg(long, default_value = "full", global = true, value_parser = parse_synchronous)]
    pub sqlite_sync: Synchronous,
    /// Write the results here as JSON.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// The pid of the server under test (run as its own process): `fanout`
    /// and `rooms` then report its CPU per delivery, read from `/proc` for
    /// it and every process descended from it. `--spawn` measures its own
    /// process.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Hide the progress bar (for scripts and tests).
    #[arg(long, global = true)]
    pub quiet: bool,
    /// The server's protocol (fanout and rooms run against peers too).
    #[command(flatten)]
    pub target: TargetOptions,
    /// Credentials and TLS.
    #[command(flatten)]
    pub client: ClientArgs,
}

impl Common {
    /// The server processes whose CPU `fanout` and `rooms` read (`--server-pid`).
    fn server_processes(&self) -> Option<cpu::ServerProcesses> {
        self.server_pid.map(|root| cpu::ServerProcesses { root })
    }
}

/// One scenario's results: a flat list of named figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub server: String,
    pub figures: Vec<(String, Value)>,
}

impl Report {
    fn new(scenario: &str, server: &str) -> Report {
        Report {
            scenario: scenario.to_owned(),
            server: server.to_owned(),
            figures: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, value: impl Into<Value>) {
        self.figures.push((name.to_owned(), value.into()));
    }

    /// Adds p50/p90/p99/p99.9/max of a histogram recorded in microseconds, as milliseconds.
    fn add_latency(&mut self, prefix: &str, histogram: &Histogram<u64>) {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        if histogram.is_empty() {
            return;
        }
        self.add(
            &format!("{prefix}_p50_ms"),
            ms(histogram.value_at_quantile(0.50)),
        );
        self.add(
            &format!("{prefix}_p90_ms"),
            ms(histogram.value_at_quantile(0.90)),
        );
        self.add(
            &format!("{prefix}_p99_ms"),
            ms(histogram.value_at_quantile(0.99)),
        );
        self.add(
            &format!("{prefix}_p999_ms"),
            ms(histogram.value_at_quantile(0.999)),
        );
        self.add(&format!("{prefix}_max_ms"), ms(histogram.max()));
    }

    /// The report as a two-column table.
    pub fn table(&self) -> String {
        let width = self
            .figures
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let mut out = format!("{} against {}\n", self.scenario, self.server);
        out.push_str(&format!("{:-<1$}\n", "", width + 16));
        for (name, value) in &self.figures {
            let shown = match value {
                Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
                other => other.to_string(),
            };
            out.push_str(&format!("{name:<width$}  {shown:>12}\n"));
        }
        out
    }

    /// The report as JSON: `{"scenario","server","results":{name: value}}`.
    pub fn to_json(&self) -> Value {
        let results: serde_json::Map<String, Value> = self.figures.iter().cloned().collect();
        serde_json::json!({"scenario": self.scenario, "server": self.server, "results": results})
    }

    /// A figure by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.figures.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// Runs a scenario, prints its table, writes JSON if asked, and returns the report.
pub async fn run(scenario: Scenario, common: Common) -> anyhow::Result<Option<Report>> {
    match &scenario {
        Scenario::IdleClient(options) => {
            idle::client(options).await?;
            return Ok(None);
        }
        Scenario::StormClient | Scenario::ClusterClient => {
            let cluster = matches!(scenario, Scenario::ClusterClient);
            // On one thread: cheaper per frame than a work-stealing runtime
            // (no cross-thread wake-ups), and several of these processes
            // share the machine's cores anyway.
            tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                if cluster {
                    runtime.block_on(cluster_client::client())
                } else {
                    runtime.block_on(storm::client())
                }
            })
            .await??;
            return Ok(None);
        }
        Scenario::Fanout(_) | Scenario::Rooms(_) => {}
        _ if common.target.target != TargetKind::Hubcast => {
            anyhow::bail!("only fanout and rooms run against other servers")
        }
        _ => {}
    }
    if common.target.transport == target::Transport::Sse
        && common.target.target != TargetKind::Hubcast
    {
        anyhow::bail!("--transport sse is hubcast's (--target hubcast)");
    }
    if common.spawn && common.target.target != TargetKind::Hubcast {
        anyhow::bail!("--spawn starts hubcast; start the peer yourself (bench/compare.sh does)");
    }
    // idle spawns its own server processes.
    let in_process = common.spawn && !matches!(scenario, Scenario::Idle(_) | Scenario::Floor(_));
    let spawned = if in_process {
        Some(SpawnedServer::start(common.sqlite_sync).await?)
    } else {
        None
    };
    let url = spawned
        .as_ref()
        .map_or(common.url.clone(), |s| s.url.clone());
    let target = target::Target::new(&url, &common.target, &common.client)?;
    let report = match scenario {
        Scenario::Fanout(options) => fanout::run(&target, &options, &common).await?,
        Scenario::Rooms(options) => rooms::run(&target, &options, &common).await?,
        Scenario::Publish(options) => publish::run(&url, &options, &common).await?,
        Scenario::Replay(options) => replay::run(&url, &options, &common).await?,
        Scenario::Idle(options) => idle::run(&options, &common).await?,
        Scenario::Floor(options) => {
            tokio::task::spawn_blocking(move || floor::run(&options)).await??
        }
        Scenario::IdleClient(_) | Scenario::StormClient | Scenario::ClusterClient => {
            unreachable!("handled above")
        }
    };
    if let Some(server) = spawned {
        server.stop().await;
    }
    println!("{}", report.table());
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.to_json())?)?;
    }
    Ok(Some(report))
}

/// A hubcast server in this process, on a temporary store.
struct SpawnedServer {
    url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), hubcast_server::ServeError>>,
    _dir: tempfile::TempDir,
}

impl SpawnedServer {
    async fn start(sqlite_sync: Synchronous) -> anyhow::Result<SpawnedServer> {
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            store: StoreUrl::Sqlite(dir.path().join("hubcast.db")),
            ..Config::default()
        };
        config.sqlite.synchronous = sqlite_sync;
        config.limits.outbound_queue = 8192;
        // One load generator on one address opens thousands of sockets: the
        // per-address limits meant for the open internet would stop it.
        config.rate_limits.connects_per_ip_per_minute = 0;
        config.rate_limits.max_connections_per_ip = 0;
        // `bench publish --ephemeral` publishes to `bench:` rooms.
        config
            .namespaces
            .push(hubcast_server::config::NamespaceConfig {
                prefix: "bench:".into(),
                ephemeral: hubcast_server::config::Ephemeral::Allowed,
                ..Default::default()
            });
        config.check()?;
        // The node's own backlog: with tokio's `bind`, 256 publishers
        // connecting at once overflowed the accept queue (83 SYNs dropped,
        // each publish behind one waited 1 s for the kernel's retry).
        let listener = hubcast_server::listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(hubcast_server::serve(config, listener, async move {
            shutdown.cancelled().await
        }));
        Ok(SpawnedServer {
            url,
            stop,
            task,
            _dir: dir,
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn parse_synchronous(value: &str) -> Result<Synchronous, String> {
    match value {
        "full" => Ok(Synchronous::Full),
        "normal" => Ok(Synchronous::Normal),
        other => Err(format!("`{other}`: expected `full` or `normal`")),
    }
}

/// Microseconds since the Unix epoch: the clock stamped into payloads and read
/// on receipt (same machine, same clock).
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A latency histogram from 1 µs to 60 s at 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn progress(total: u64, quiet: bool, what: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A room name unique to this run, so repeated runs do not see each other.
pub(crate) fn run_room(prefix: &str) -> String {
    format!("bench:{prefix}:{:08x}", rand::random::<u32>())
}
