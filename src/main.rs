//! The `hubcast` binary: parses arguments and calls into the libraries: the
//! server (`hubcast_server`), the demos (`hubcast_demo`), the load generator
//! (`hubcast_bench`) and the Rust client (`hubcast_client`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use hubcast_client::{Cursor, RoomUpdate, SubscribeOptions};
use hubcast_demo::market::MarketSettings;
use hubcast_server::config::{Config, FlagOverrides};
use hubcast_server::RoomName;

#[derive(Parser)]
#[command(
    name = "hubcast",
    version,
    about = "Real-time event fan-out server: durable rooms, gapless sequence, exact replay"
)]
struct Cli {
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(
        long,
        env = "HUBCAST_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The flags of `serve` (and of `demo`, which runs the same node).
#[derive(clap::Args)]
struct ServeArgs {
    /// Config file [default: hubcast.toml, read if it exists]. A file named
    /// here (or in HUBCAST_CONFIG) must exist.
    #[arg(long, env = "HUBCAST_CONFIG")]
    config: Option<PathBuf>,
    /// Apply the `[env.NAME]` block of the config file.
    #[arg(long = "env", env = "HUBCAST_ENV", value_name = "NAME")]
    env_name: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8787]. Port 0 takes a free
    /// port. Once the socket listens, one line goes to stdout, the only thing
    /// `serve` and `demo` print there: `listening on http://ADDRESS`, with the
    /// address actually bound (`listening on http://127.0.0.1:41234`). Logs
    /// stay on stderr.
    #[arg(long, value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Store URL [default: sqlite://./hubcast-data/hubcast.db].
    #[arg(long)]
    store: Option<String>,
    /// Bus URL [default: memory].
    #[arg(long)]
    bus: Option<String>,
    /// Allow a non-loopback listen address without credentials.
    #[arg(long)]
    insecure: bool,
}

/// The flags of the market demo (`hubcast demo`, `hubcast demo market`).
#[derive(clap::Args)]
struct MarketArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Simulated traders buying through the same path as the page, so prices
    /// move (0: none).
    #[arg(long, default_value_t = hubcast_demo::market::traders::DEFAULT_TRADERS)]
    traders: usize,
    /// Put every demo market back to its seed state before serving.
    #[arg(long)]
    reset: bool,
}

#[derive(Subcommand)]
enum Demo {
    /// A node that also serves a chat page at http://LISTEN/demo/chat/ (examples/chat).
    Chat {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// The prediction market at http://LISTEN/demo/ (the default of `hubcast demo`).
    Market {
        #[command(flatten)]
        market: MarketArgs,
    },
    /// Put every demo market back to its seed state and exit (stop the demo first).
    Reset {
        #[command(flatten)]
        serve: ServeArgs,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Run a node with the prediction-market demo at /demo/ (or `hubcast demo chat`).
    #[command(args_conflicts_with_subcommands = true)]
    Demo {
        #[command(subcommand)]
        demo: Option<Demo>,
        #[command(flatten)]
        market: MarketArgs,
    },
    /// Print the effective configuration (defaults, file, env block,
    /// HUBCAST_* variables, flags) as TOML, secrets redacted.
    Config {
        #[command(flatten)]
        serve: ServeArgs,
        /// Print the JSON Schema of hubcast.toml instead (docs/hubcast.schema.json).
        #[arg(long, conflicts_with = "reference")]
        schema: bool,
        /// Print the configuration reference instead (docs/configuration.md).
        #[arg(long)]
        reference: bool,
    },
    /// Publish one event: `hubcast pub ROOM '{"price":0.42}'`, or many from
    /// stdin: `hubcast pub [ROOM] --stdin < events.ndjson`.
    Pub {
        /// The room (with `--stdin`: of lines that do not name their own).
        #[arg(required_unless_present = "stdin")]
        room: Option<String>,
        /// The event's data, as JSON.
        #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
        json: Option<String>,
        /// Read newline-delimited events from stdin and publish them in atomic
        /// batches (`POST /v1/events`). A line `{"room": R, "data": D}` (and
        /// optionally `"expected_seq"`) is an event of room R; any other JSON
        /// line is the data of an event of ROOM.
        #[arg(long)]
        stdin: bool,
        /// With `--stdin`: the most events per batch (a batch is also sent
        /// when stdin pauses, and at its end).
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        #[arg(long, env = "HUBCAST_URL", default_value = "http://127.0.0.1:8787")]
        url: String,
        /// Idempotency key: a retry with the same key is not appended twice.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Append only if the room's head is this seq (else 409).
        #[arg(long)]
        expected_seq: Option<u64>,
        /// Deliver live only: not stored, no seq (the room's namespace must allow it).
        #[arg(long, conflicts_with = "expected_seq")]
        ephemeral: bool,
        #[command(flatten)]
        client: hubcast_bench::ClientArgs,
    },
    /// Measure a server: fanout, publish or replay.
    Bench {
        #[command(subcommand)]
        scenario: hubcast_bench::Scenario,
        #[command(flatten)]
        common: hubcast_bench::Common,
    },
    /// Follow a room, printing one JSON line per event; resumes after disconnects.
    /// Ephemeral messages print as lines with `"ephemeral": true` (no seq) and
    /// do not count towards `--count`.
    Sub {
        room: String,
        /// Start after this seq (replays everything after it).
        #[arg(long)]
        cursor: Option<u64>,
        /// The epoch the cursor belongs to.
        #[arg(long)]
        epoch: Option<String>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, env = "HUBCAST_URL", default_value = "http://127.0.0.1:8787")]
        url: String,
        #[command(flatten)]
        client: hubcast_bench::ClientArgs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(
        matches!(cli.command, Command::Serve { .. } | Command::Demo { .. }),
        cli.log_format,
    );
    log_panics();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: a cause whose text
/// its parent already includes (thiserror's `{source}` in a message) is not
/// repeated.
fn report(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// `--listen`: an address and a port, with an example when either is missing.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    hubcast_server::config::parse_listen(value)
}

/// Panics go to the log like every other failure (with the thread and where),
/// not only to stderr in another format: a node contains a failing hub or
/// session and goes on, and the operator must still see it.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), %location, "panic: {message}");
    }));
}

/// Colours on stderr only when it is a terminal and `NO_COLOR` is unset or
/// empty (no-color.org): never escape codes in files and pipes.
fn colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

fn init_logging(server: bool, format: LogFormat) {
    let default = if server {
        "hubcast=info"
    } else {
        "hubcast=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn load_config(args: ServeArgs) -> anyhow::Result<Config> {
    let ServeArgs {
        config,
        env_name,
        listen,
        store,
        bus,
        insecure,
    } = args;
    let flags = FlagOverrides {
        listen,
        store,
        bus,
        insecure,
    };
    // The default file is optional; a file the user named must be there.
    let config = match config {
        Some(path) => {
            if !path.is_file() {
                let why = match std::fs::metadata(&path) {
                    Ok(_) => "is not a file".to_owned(),
                    Err(err) => err.to_string(),
                };
                anyhow::bail!("cannot read the config file {}: {why}", path.display());
            }
            path
        }
        None => PathBuf::from("hubcast.toml"),
    };
    Ok(Config::load(&config, env_name.as_deref(), &flags)?)
}

/// `hubcast demo reset`: reseeds the markets on the configured store.
async fn reset_markets(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let (backend, _feed) = hubcast_server::store::open(&config).await?;
    hubcast_demo::market::setup(&backend, true).await?;
    backend.store().close().await;
    println!("demo markets reset on {}", config.store);
    Ok(())
}

/// Which application `serve` adds to the node.
enum App {
    /// `hubcast serve`: the node alone.
    None,
    /// `hubcast demo chat`: plus the chat page at `/demo/chat/`.
    Chat,
    /// `hubcast demo`: plus the prediction market at `/demo/`.
    Market(MarketSettings),
}

/// `hubcast serve` and the demos: the same node, with an application's routes.
async fn serve(args: ServeArgs, app: App) -> anyhow::Result<()> {
    let mut config = load_config(args)?;
    if let App::Chat = app {
        hubcast_demo::chat::allow_typing(&mut config);
    }
    let listen = config.listen;
    let listener = hubcast_server::listen(listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let server = hubcast_server::Server::start(config).await?;
    let address = listener.local_addr()?;
    let server = match app {
        App::None => server,
        App::Chat => {
            tracing::info!("chat demo at http://{address}/demo/chat/");
            server.merge(hubcast_demo::chat::routes())
        }
        App::Market(settings) => {
            let routes = hubcast_demo::market::attach(&server.handle(), &settings).await?;
            tracing::info!("prediction market demo at http://{address}/demo/");
            server.merge(routes)
        }
    };
    announce_listening(address);
    Ok(server
        .run(listener, hubcast_server::shutdown_signal())
        .await?)
}

/// Prints the `listening on http://ADDRESS` line the `--listen` help
/// documents: a script or test that asked for port 0 reads the bound port
/// here instead of guessing a free one. The socket already listens, so a
/// connection made after this line waits in the backlog until the accept
/// loop takes it; `/readyz` says when the node is ready.
fn announce_listening(address: SocketAddr) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (nobody reading) must not stop the node: ignore errors.
    let _ = writeln!(stdout, "listening on http://{address}");
    let _ = stdout.flush();
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { serve: args } => serve(args, App::None).await,
        Command::Demo {
            demo: Some(Demo::Chat { serve: args }),
            ..
        } => serve(args, App::Chat).await,
        Command::Demo {
            demo: Some(Demo::Reset { serve: args }),
            ..
        } => reset_markets(args).await,
        Command::Demo {
            demo: Some(Demo::Market { market }),
            ..
        }
        | Command::Demo { demo: None, market } => {
            let settings = MarketSettings {
                traders: market.traders,
                reset: market.reset,
            };
            serve(market.serve, App::Market(settings)).await
        }
        Command::Config {
            serve: args,
            schema,
            reference,
        } => {
            if schema {
                print!("{}", hubcast_server::config::json_schema());
            } else if reference {
                print!("{}", hubcast_server::config::reference_markdown());
            } else {
                print!("{}", load_config(args)?.to_redacted_toml());
            }
            Ok(())
        }
        Command::Bench { scenario, common } => {
            hubcast_bench::run(scenario, common).await?;
            Ok(())
        }
        Command::Pub {
            room,
            stdin: true,
            batch_size,
            url,
            idempotency_key,
            expected_seq,
            ephemeral,
            client,
            ..
        } => {
            if ephemeral {
                anyhow::bail!(
                    "--ephemeral applies to one message; batches from --stdin are stored events"
                );
            }
            if expected_seq.is_some() {
                anyhow::bail!("--expected-seq applies to one event; with --stdin put \"expected_seq\" in the lines");
            }
            publish_stdin(room, &url, &client, batch_size.max(1), idempotency_key).await
        }
        Command::Pub {
            room,
            json,
            url,
            idempotency_key,
            expected_seq,
            ephemeral,
            client,
            ..
        } => {
            let (Some(room), Some(json)) = (room, json) else {
                anyhow::bail!("hubcast pub ROOM JSON (or --stdin)");
            };
            let room = RoomName::parse(&room)?;
            let data: serde_json::Value = serde_json::from_str(&json)
                .map_err(|e| anyhow::anyhow!("event data is not valid JSON: {e}"))?;
            let http = client.http()?;
            let options = hubcast_client::HttpPublish {
                idempotency_key: idempotency_key.as_deref(),
                expected_seq,
                credential: client.credential(),
                ephemeral,
            };
            let (status, answer) =
                hubcast_client::http_publish(&http, &url, &room, &data, &options).await?;
            println!("{answer}");
            if status == 401 && client.credential().is_none() {
                anyhow::bail!(
                    "publish failed with HTTP 401: the server wants credentials (--api-key or --token, or HUBCAST_API_KEY / HUBCAST_TOKEN)"
                );
            }
            if status >= 300 {
                anyhow::bail!("publish failed with HTTP {status}");
            }
            Ok(())
        }
        Command::Sub {
            room,
            cursor,
            epoch,
            count,
            url,
            client: args,
        } => {
            let room = RoomName::parse(&room)?;
            if epoch.is_some() && cursor.is_none() {
                tracing::warn!("--epoch without --cursor is ignored");
            }
            let client = args.client(url.as_str())?;
            let start = SubscribeOptions {
                cursor: cursor.map(|seq| Cursor { epoch, seq }),
                ..Default::default()
            };
            let mut subscription = client.subscribe(room.as_str(), start).await?;
            let mut seen = 0;
            while count.map_or(true, |n| seen < n) {
                let Some(update) = subscription.next().await else {
                    anyhow::bail!("the subscription ended");
                };
                match update {
                    RoomUpdate::Event(event) => {
                        println!(
                            "{}",
                            serde_json::json!({"room": event.room, "seq": event.seq, "ts": event.ts, "data": event.data})
                        );
                        seen += 1;
                    }
                    RoomUpdate::Reset(reset) => {
                        let earliest = reset
                            .earliest
                            .map_or("unknown".to_owned(), |e| e.to_string());
                        eprintln!(
                            "reset: the cursor cannot be served (epoch {}, earliest {earliest}); continuing live from {}",
                            reset.epoch, reset.head
                        );
                    }
                    RoomUpdate::Presence(_) => {} // `hubcast sub` does not ask for presence
                    RoomUpdate::Ephemeral(message) => {
                        println!(
                            "{}",
                            serde_json::json!({"room": message.room, "ts": message.ts, "data": message.data, "ephemeral": true})
                        );
                    }
                    RoomUpdate::Error(err) => {
                        // Terminal (a close code) or a refused subscription: stop, as before.
                        let fatal = err.close_code.is_some()
                            || matches!(
                                err.code.as_str(),
                                "forbidden"
                                    | "unauthenticated"
                                    | "invalid_room"
                                    | "too_many_subscriptions"
                            );
                        if fatal && err.code == "unauthenticated" && args.credential().is_none() {
                            anyhow::bail!("{err}: the server wants credentials (--api-key or --token, or HUBCAST_API_KEY / HUBCAST_TOKEN)");
                        }
                        if fatal {
                            anyhow::bail!("{err}");
                        }
                        tracing::warn!(%err, "subscription error; the client recovers");
                    }
                }
            }
            client.close().await;
            Ok(())
        }
    }
}

/// `hubcast pub --stdin`: newline-delimited events from stdin, sent in atomic
/// batches of at most `batch_size` (a batch also goes when stdin has nothing
/// ready for a moment, and at its end). Prints each batch's answer; stops at
/// the first refused batch. With an idempotency key, batch `n` (from 0) is
/// sent with the key `KEY-n`, so running the same input again appends nothing.
async fn publish_stdin(
    room: Option<String>,
    url: &str,
    client: &hubcast_bench::ClientArgs,
    batch_size: usize,
    idempotency_key: Option<String>,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let default_room = room.map(|r| RoomName::parse(&r)).transpose()?;
    let http = client.http()?;
    let credential = client.credential();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut batch: Vec<(String, serde_json::Value, Option<u64>)> = Vec::new();
    let mut sent = 0usize;
    let mut line_no = 0usize;
    loop {
        let next = if batch.is_empty() {
            Some(lines.next_line().await?)
        } else {
            tokio::time::timeout(std::time::Duration::from_millis(50), lines.next_line())
                .await
                .ok()
                .transpose()?
        };
        let line = match next {
            Some(line) => line,
            // Stdin paused: send what is gathered rather than hold it.
            None => {
                send_batch(
                    &http,
                    url,
                    credential,
                    &mut batch,
                    &idempotency_key,
                    &mut sent,
                )
                .await?;
                continue;
            }
        };
        let Some(line) = line else {
            send_batch(
                &http,
                url,
                credential,
                &mut batch,
                &idempotency_key,
                &mut sent,
            )
            .await?;
            return Ok(());
        };
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("line {line_no} is not JSON: {e}"))?;
        batch.push(
            stdin_event(value, default_room.as_ref())
                .map_err(|e| anyhow::anyhow!("line {line_no}: {e}"))?,
        );
        if batch.len() >= batch_size {
            send_batch(
                &http,
                url,
                credential,
                &mut batch,
                &idempotency_key,
                &mut sent,
            )
            .await?;
        }
    }
}

/// One line of `hubcast pub --stdin` as `(room, data, expected_seq)`.
fn stdin_event(
    value: serde_json::Value,
    default_room: Option<&RoomName>,
) -> anyhow::Result<(String, serde_json::Value, Option<u64>)> {
    if let Some(object) = value.as_object() {
        let is_event = object.contains_key("room")
            && object.contains_key("data")
            && object
                .keys()
                .all(|k| matches!(k.as_str(), "room" | "data" | "expected_seq"));
        if is_event {
            let room = object["room"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("\"room\" is not a string"))?;
            let room = RoomName::parse(room)?;
            let expected_seq = match object.get("expected_seq") {
                None => None,
                Some(n) => Some(
                    n.as_u64()
                        .ok_or_else(|| anyhow::anyhow!("\"expected_seq\" is not a seq"))?,
                ),
            };
            return Ok((room.to_string(), object["data"].clone(), expected_seq));
        }
    }
    let room = default_room
        .ok_or_else(|| anyhow::anyhow!("no ROOM given for a line without \"room\" and \"data\""))?;
    Ok((room.to_string(), value, None))
}

/// Sends the events gathered so far as one batch (if any) and prints the answer.
async fn send_batch(
    http: &reqwest::Client,
    url: &str,
    credential: Option<&str>,
    batch: &mut Vec<(String, serde_json::Value, Option<u64>)>,
    idempotency_key: &Option<String>,
    sent: &mut usize,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let key = idempotency_key.as_ref().map(|key| format!("{key}-{sent}"));
    let (status, answer) =
        hubcast_client::http_publish_batch(http, url, batch, key.as_deref(), credential).await?;
    println!("{answer}");
    if status == 401 && credential.is_none() {
        anyhow::bail!(
            "batch {sent} failed with HTTP 401: the server wants credentials (--api-key or --token, or HUBCAST_API_KEY / HUBCAST_TOKEN)"
        );
    }
    if status >= 300 {
        anyhow::bail!("batch {sent} failed with HTTP {status}");
    }
    *sent += 1;
    batch.clear();
    Ok(())
}
