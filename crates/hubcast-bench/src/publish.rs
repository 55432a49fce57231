//! `bench publish`: durable publishes per second over HTTP, one event per
//! request or, with `--batch N`, atomic batches of N events (`POST /v1/events`).
//!
//! The load generator shares the two cores with the server it measures, so it
//! is kept cheap: each publisher owns one keep-alive HTTP/1.1 connection
//! (hyper's client connection, polled in the publisher's own task, so a
//! request wakes no second task), and the request's URI and headers are
//! parsed once, not per publish. `https://` goes through rustls
//! (`--ca-file`), and `--api-key` / `--token` become the bearer.
//! `--ephemeral` measures ephemeral publishes (202, never stored) on the same
//! path, for the comparison with durable ones.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{latency_histogram, now_us, progress, run_room, Common, Report};

#[derive(Debug, Clone, clap::Args)]
pub struct PublishOptions {
    /// Concurrent publishers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Events to publish in all.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Rooms to spread the events over.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Bytes of padding in each event's data.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Publish ephemeral messages (`"ephemeral": true`, answered 202, never
    /// stored) instead of events. The rooms' namespace must allow them
    /// (`--spawn` allows them under `bench:`).
    #[arg(long, conflicts_with = "batch")]
    pub ephemeral: bool,
    /// Events per request: 1 publishes to `/v1/rooms/{room}/events`; more
    /// sends atomic batches to `/v1/events`, each spread over the rooms.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
}

pub async fn run(url: &str, options: &PublishOptions, common: &Common) -> anyhow::Result<Report> {
    let target = Target::parse(url, &common.client)?;
    let (flag, accepted) = if options.ephemeral {
        (r#","ephemeral":true"#, StatusCode::ACCEPTED)
    } else {
        ("", StatusCode::CREATED)
    };
    let prefix = run_room("publish");
    let paths: Vec<Uri> = (0..options.rooms.max(1))
        .map(|i| format!("/v1/rooms/{prefix}-{i}/events").parse::<Uri>())
        .collect::<Result<_, _>>()?;
    let rooms: Arc<Vec<String>> = Arc::new(
        (0..options.rooms.max(1))
            .map(|i| format!("{prefix}-{i}"))
            .collect(),
    );
    let batch_path: Uri = "/v1/events".parse()?;
    let batch = options.batch.max(1);
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let bar = progress(options.events, common.quiet, "publish");
    let padding = Arc::new("x".repeat(options.payload));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..options.concurrency.max(1) {
        let (target, paths, next, failures, bar, padding) = (
            target.clone(),
            paths.clone(),
            next.clone(),
            failures.clone(),
            bar.clone(),
            padding.clone(),
        );
        let (rooms, batch_path) = (rooms.clone(), batch_path.clone());
        let total = options.events;
        tasks.push(tokio::spawn(async move {
            let mut histogram = latency_histogram();
            let mut connection = None;
            loop {
                let n = next.fetch_add(batch, Ordering::Relaxed);
                if n >= total {
                    return histogram;
                }
                let count = batch.min(total - n);
                let (path, body) = if batch == 1 {
                    let path = &paths[n as usize % paths.len()];
                    let body = format!(r#"{{"data":{{"n":{n},"pad":"{padding}"}}{flag}}}"#);
                    (path, body)
                } else {
                    let events: Vec<String> = (n..n + count)
                        .map(|k| {
                            let room = &rooms[k as usize % rooms.len()];
                            format!(r#"{{"room":"{room}","data":{{"n":{k},"pad":"{padding}"}}}}"#)
                        })
                        .collect();
                    (
                        &batch_path,
                        format!(r#"{{"events":[{}]}}"#, events.join(",")),
                    )
                };
                let sent = now_us();
                match target.publish(&mut connection, path, body).await {
                    Ok(status) if status == accepted => {
                        let _ = histogram.record(now_us().saturating_sub(sent).max(1));
                    }
                    Ok(_) => {
                        failures.fetch_add(count, Ordering::Relaxed);
                    }
                    Err(_) => {
                        // The next publish opens a new connection.
                        connection = None;
                        failures.fetch_add(count, Ordering::Relaxed);
                    }
                }
                bar.inc(count);
            }
        }));
    }
    let mut histogram = latency_histogram();
    for task in tasks {
        histogram.add(task.await?)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let failed = failures.load(Ordering::Relaxed);
    let mut report = Report::new("publish", url);
    report.add("ephemeral", options.ephemeral);
    report.add("concurrency", options.concurrency as u64);
    report.add("rooms", paths.len() as u64);
    report.add("events", options.events);
    report.add("batch", batch);
    report.add("failed", failed);
    report.add("seconds", elapsed);
    report.add(
        "publishes_per_sec",
        (options.events - failed) as f64 / elapsed,
    );
    // Per request: one event, or one whole batch.
    report.add_latency("publish", &histogram);
    Ok(report)
}

/// A connection's byte stream: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The future that does a client connection's I/O.
type ConnIo = Pin<Box<Connection<TokioIo<Box<dyn Stream>>, Full<Bytes>>>>;

/// One publisher's HTTP/1.1 connection: the request side and its I/O.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    io: ConnIo,
}

/// Runs `work` while polling the connection's I/O in the same task.
async fn drive<T>(io: &mut ConnIo, work: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        out = &mut work => Ok(out),
        closed = io.as_mut() => match closed {
            Ok(()) => anyhow::bail!("the server closed the connection"),
            Err(err) => Err(err.into()),
        },
    }
}

/// The server to publish to.
#[derive(Clone)]
struct Target {
    /// `host:port` to connect to.
    addr: String,
    host: HeaderValue,
    /// For https://: the connector and the name the certificate must have.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// `Bearer KEY` when a credential was given.
    authorization: Option<HeaderValue>,
}

impl Target {
    fn parse(url: &str, client: &crate::ClientArgs) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("bad --url {url}"))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("bench publish speaks http:// or https://, not {url}"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("no host in {url}"))?;
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority
                .port_u16()
                .unwrap_or(if secure { 443 } else { 80 })
        );
        let tls = if secure {
            let name = rustls::pki_types::ServerName::try_from(authority.host().to_owned())?;
            Some((tokio_rustls::TlsConnector::from(client.tls()?), name))
        } else {
            None
        };
        let authorization = client
            .credential()
            .map(|c| HeaderValue::from_str(&format!("Bearer {c}")))
            .transpose()?;
        Ok(Target {
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
            tls,
            authorization,
        })
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &self.tls {
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
            None => Box::new(tcp),
        };
        let (sender, io) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            io: Box::pin(io),
        })
    }

    /// POSTs one event body to `path` (on `connection`, opened if `None`) and
    /// returns the response's status once its body is read.
    async fn publish(
        &self,
        connection: &mut Option<Conn>,
        path: &Uri,
        body: String,
    ) -> anyhow::Result<StatusCode> {
        if connection.is_none() {
            *connection = Some(self.connect().await?);
        }
        let Conn { sender, io } = connection.as_mut().expect("connected above");
        let mut request = Request::post(path.clone())
            .header(header::HOST, self.host.clone())
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        drive(io, sender.ready()).await??;
        let response = drive(io, sender.send_request(request)).await??;
        let status = response.status();
        drive(io, response.into_body().collect()).await??;
        Ok(status)
    }
}
