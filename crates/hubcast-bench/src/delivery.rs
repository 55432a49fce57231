//! The engine behind `fanout` and `rooms`: subscribers spread over rooms, a
//! publisher at a steady rate (or as fast as it can), and every delivery's
//! publish→receive latency, against any [`Target`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::target::{timestamps, Inbound, Target, Transport};
use super::{latency_histogram, now_us, progress, run_room, Common, Report};

/// How long deliveries may stop arriving, after the last publish, before the
/// run ends with what it has (and reports the shortfall).
const STALL: Duration = Duration::from_secs(10);

/// How long a connected subscriber may wait for its subscription to be confirmed.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The load: `rooms` rooms × `per_room` subscribers, `events_per_room` events
/// published to each, round-robin.
pub struct Shape {
    pub rooms: usize,
    pub per_room: usize,
    pub events_per_room: u64,
    /// Publishes per second over all rooms; 0 publishes as fast as possible.
    pub rate: u64,
    /// Concurrent HTTP publishes.
    pub publishers: usize,
}

/// Counters the subscribers share. A subscriber adds its deliveries in steps
/// of [`TALLY_STEP`] (and the rest when it ends), so 10k sockets' frames do not
/// all bounce one cache line between the cores: the generator shares them with
/// the server under test and must cost it as little as possible.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    connect_failures: AtomicU64,
}

/// Deliveries a subscriber counts locally before adding them to the tally.
const TALLY_STEP: u64 = 16;

/// What one subscriber brings back: each delivery's latency in µs, when each
/// arrived (µs after the subscriber's `base_us`), and when its latest delivery
/// arrived (µs since the Unix epoch).
#[derive(Default)]
struct Received {
    latencies: Vec<u32>,
    arrivals: Vec<u32>,
    base_us: u64,
    last_us: u64,
}

impl Received {
    /// Records the deliveries of one frame (a `batch` frame holds several).
    fn record(&mut self, text: &str, now: u64) {
        let before = self.latencies.len();
        self.latencies.extend(
            timestamps(text).map(|sent| now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32),
        );
        let added = self.latencies.len() - before;
        if added > 0 {
            self.last_us = now;
            let at = now.saturating_sub(self.base_us).min(u64::from(u32::MAX)) as u32;
            self.arrivals.resize(self.arrivals.len() + added, at);
        }
    }

    /// Deliveries that arrived at or before `until_us` (µs since the Unix epoch).
    fn arrived_by(&self, until_us: u64) -> u64 {
        let Some(until) = until_us.checked_sub(self.base_us) else {
            return 0;
        };
        self.arrivals
            .iter()
            .filter(|&&at| u64::from(at) <= until)
            .count() as u64
    }
}

pub async fn run(
    scenario: &str,
    target: &Target,
    shape: &Shape,
    common: &Common,
) -> anyhow::Result<Report> {
    // Letters, digits and dashes only: Pusher reads ':' as a namespace.
    let prefix = run_room(scenario).replace(':', "-");
    let rooms: Vec<String> = (0..shape.rooms.max(1))
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    let subscribers_total = rooms.len() * shape.per_room;
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();

    // Connect the subscribers, at most 256 handshakes at a time.
    let connect_bar = progress(subscribers_total as u64, common.quiet, "connect");
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut subscribers = Vec::with_capacity(subscribers_total);
    // One HTTP/1.1 connection per SSE stream; the pool opens them as needed.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()?;
    for room in &rooms {
        for _ in 0..shape.per_room {
            let subscriber = Subscriber {
                http: http.clone(),
                target: target.clone(),
                room: room.clone(),
                expected: shape.events_per_room,
                tally: tally.clone(),
                stop: stop.clone(),
            };
            let (permits, ready_tx) = (permits.clone(), ready_tx.clone());
            subscribers.push(tokio::spawn(subscriber.run(permits, ready_tx)));
        }
    }
    drop(ready_tx);
    let mut subscribed = 0;
    while let Some(ok) = ready_rx.recv().await {
        subscribed += u64::from(ok);
        connect_bar.inc(1);
    }
    connect_bar.finish_and_clear();
    let connect_failures = tally.connect_failures.load(Ordering::Relaxed);

    // Publish. The server's CPU is read at both ends of the publish phase
    // (and again once the deliveries are done).
    let server = common.server_processes();
    // The load generator's own CPU, the same way: what a delivery costs the
    // client side, which shares the machine with the server.
    let loadgen = crate::cpu::ServerProcesses {
        root: std::process::id(),
    };
    let expected = subscribed * shape.events_per_room;
    let deliver_bar = progress(expected, common.quiet, "deliver");
    let cpu_start = server.and_then(|s| s.cpu_seconds());
    let loadgen_start = loadgen.cpu_seconds();
    let epoch = Instant::now();
    let epoch_us = now_us();
    let published = publish(target, &rooms, shape).await;
    let publish_seconds = epoch.elapsed().as_secs_f64();
    let cpu_published = server.and_then(|s| s.cpu_seconds());
    let loadgen_published = loadgen.cpu_seconds();
    let published_us = now_us();

    // Wait for the deliveries: all of them, or until they stop coming.
    let mut last = (tally.delivered.load(Ordering::Relaxed), Instant::now());
    loop {
        let delivered = tally.delivered.load(Ordering::Relaxed);
        deliver_bar.set_position(delivered);
        if delivered >= expected {
            break;
        }
        if delivered != last.0 {
            last = (delivered, Instant::now());
        } else if last.1.elapsed() > STALL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_delivered = server.and_then(|s| s.cpu_seconds());
    stop.cancel();
    deliver_bar.finish_and_clear();
    let mut histogram = latency_histogram();
    let (mut complete, mut deliveries, mut last_us) = (0u64, 0u64, 0u64);
    let mut in_publish_phase = 0u64;
    for subscriber in subscribers {
        let Ok(received) = subscriber.await else {
            continue;
        };
        if received.latencies.len() as u64 >= shape.events_per_room {
            complete += 1;
        }
        deliveries += received.latencies.len() as u64;
        in_publish_phase += received.arrived_by(published_us);
        last_us = last_us.max(received.last_us);
        for us in received.latencies {
            let _ = histogram.record(u64::from(us).max(1));
        }
    }
    // Deliveries per second over the whole delivery: first publish to last receipt.
    let last_us = last_us.saturating_sub(epoch_us);
    let delivery_seconds = (last_us as f64 / 1e6).max(1e-6);

    let mut report = Report::new(scenario, &target.base_url());
    report.add("target", serde_json::to_value(target.kind)?);
    report.add("transport", serde_json::to_value(target.transport())?);
    report.add("rooms", rooms.len() as u64);
    report.add("subscribers", subscribers_total as u64);
    report.add("subscribers_connected", subscribed);
    report.add("connect_failures", connect_failures);
    report.add("rate_per_sec", shape.rate);
    report.add("events", published.attempted);
    report.add("publish_failures", published.failed);
    report.add("deliveries", deliveries);
    report.add("deliveries_expected", expected);
    report.add("subscribers_complete", complete);
    report.add("publish_seconds", publish_seconds);
    report.add(
        "publishes_per_sec",
        published.attempted as f64 / publish_seconds.max(1e-6),
    );
    report.add("deliveries_per_sec", deliveries as f64 / delivery_seconds);
    report.add_latency("latency", &histogram);
    // Server CPU per delivery: over the publish phase (the deliveries that
    // arrived while publishing), and over the whole run (first publish to
    // the last delivery, every delivery; the fairer figure where queues are
    // still draining when publishing ends, as at the maximum rate).
    if let (Some(start), Some(published), Some(delivered)) =
        (cpu_start, cpu_published, cpu_delivered)
    {
        let per =
            |cpu: f64, n: u64| (n > 0).then(|| (cpu * 1e6 / n as f64 * 1000.0).round() / 1000.0);
        report.add("server_cpu_seconds_publish_phase", published - start);
        report.add("deliveries_publish_phase", in_publish_phase);
        if let Some(us) = per(published - start, in_publish_phase) {
            report.add("server_cpu_us_per_delivery", us);
        }
        report.add("server_cpu_seconds_total", delivered - start);
        if let Some(us) = per(delivered - start, deliveries) {
            report.add("server_cpu_us_per_delivery_total", us);
        }
    }
    if let (Some(start), Some(published)) = (loadgen_start, loadgen_published) {
        if in_publish_phase > 0 {
            let us = (published - start) * 1e6 / in_publish_phase as f64;
            report.add("loadgen_cpu_us_per_delivery", (us * 1000.0).round() / 1000.0);
        }
    }
    Ok(report)
}

/// One subscriber's connection.
struct Subscriber {
    http: reqwest::Client,
    target: Target,
    room: String,
    expected: u64,
    tally: Arc<Tally>,
    stop: CancellationToken,
}

impl Subscriber {
    /// Connects and subscribes (reporting success on `ready`), then records
    /// each event's latency in µs until it has them all or the run stops.
    async fn run(
        self,
        permits: Arc<tokio::sync::Semaphore>,
        ready: tokio::sync::mpsc::UnboundedSender<bool>,
    ) -> Received {
        let mut received = Received {
            latencies: Vec::with_capacity(self.expected as usize),
            arrivals: Vec::with_capacity(self.expected as usize),
            base_us: now_us(),
            last_us: 0,
        };
        if self.target.transport() == Transport::Sse {
            return self.run_sse(permits, ready, received).await;
        }
        let permit = permits.acquire().await;
        let url = self.target.subscribe_url(&self.room);
        let Ok(mut socket) = self.target.connect(&url).await else {
            self.tally.connect_failures.fetch_add(1, Ordering::Relaxed);
            let _ = ready.send(false);
            return received;
        };
        let mut ready = Some((ready, permit));
        if self.target.subscribed_on_open() {
            if let Some((ready, _permit)) = ready.take() {
                let _ = ready.send(true);
            }
        }
        let subscribe_deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            let message = tokio::select! {
                message = socket.next() => message,
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep_until(subscribe_deadline), if ready.is_some() => break,
            };
            // Read in place: no copy of the frame.
            let binary;
            let text: &str = match &message {
                Some(Ok(Message::Text(text))) => text.as_str(),
                Some(Ok(Message::Binary(bytes))) => {
                    binary = String::from_utf8_lossy(bytes);
                    &binary
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            };
            match self.target.inbound(&self.room, text) {
                Inbound::Reply(reply) => {
                    if socket.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                }
                Inbound::Subscribed => {
                    if let Some((ready, _permit)) = ready.take() {
                        let _ = ready.send(true);
                    }
                }
                Inbound::Data => {
                    let before = received.latencies.len();
                    received.record(text, now_us());
                    let latencies = &received.latencies;
                    if latencies.len() > before {
                        let (was, is) = (
                            before as u64 / TALLY_STEP,
                            latencies.len() as u64 / TALLY_STEP,
                        );
                        if is > was {
                            self.tally
                                .delivered
                                .fetch_add((is - was) * TALLY_STEP, Ordering::Relaxed);
                        }
                    }
                    if latencies.len() as u64 >= self.expected {
                        break;
                    }
                }
            }
        }
        // The deliveries not yet counted in steps.
        let delivered = received.latencies.len() as u64;
        let counted = delivered / TALLY_STEP * TALLY_STEP;
        self.tally
            .delivered
            .fetch_add(delivered - counted, Ordering::Relaxed);
        if let Some((ready, _permit)) = ready.take() {
            self.tally.connect_failures.fetch_add(1, Ordering::Relaxed);
            let _ = ready.send(false);
        }
        let _ = socket.close(None).await;
        received
    }
}

impl Subscriber {
    /// [`Subscriber::run`] over Server-Sent Events: the stream's `data:` lines
    /// are the WebSocket frames, read line by line as chunks arrive.
    async fn run_sse(
        self,
        permits: Arc<tokio::sync::Semaphore>,
        ready: tokio::sync::mpsc::UnboundedSender<bool>,
        mut received: Received,
    ) -> Received {
        let permit = permits.acquire().await;
        let response = match self.http.get(self.target.sse_url(&self.room)).send().await {
            Ok(response) if response.status().is_success() => response,
            _ => {
                self.tally.connect_failures.fetch_add(1, Ordering::Relaxed);
                let _ = ready.send(false);
                return received;
            }
        };
        let mut response = response;
        let mut ready = Some((ready, permit));
        let subscribe_deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
        let mut pending: Vec<u8> = Vec::new();
        let mut counted = 0u64;
        'read: loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep_until(subscribe_deadline), if ready.is_some() => break,
            };
            let Ok(Some(chunk)) = chunk else { break };
            pending.extend_from_slice(&chunk);
            let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let now = now_us();
            for line in pending[..end].split(|&b| b == b'\n') {
                let Some(data) = line.strip_prefix(b"data: ") else {
                    continue;
                };
                let text = String::from_utf8_lossy(data);
                if text.contains(r#""type":"caught_up""#) {
                    if let Some((ready, _permit)) = ready.take() {
                        let _ = ready.send(true);
                    }
                    continue;
                }
                received.record(&text, now);
                if received.latencies.len() as u64 >= self.expected {
                    break 'read;
                }
            }
            pending.drain(..=end);
            let steps = received.latencies.len() as u64 / TALLY_STEP * TALLY_STEP;
            if steps > counted {
                self.tally
                    .delivered
                    .fetch_add(steps - counted, Ordering::Relaxed);
                counted = steps;
            }
        }
        self.tally
            .delivered
            .fetch_add(received.latencies.len() as u64 - counted, Ordering::Relaxed);
        if let Some((ready, _permit)) = ready.take() {
            self.tally.connect_failures.fetch_add(1, Ordering::Relaxed);
            let _ = ready.send(false);
        }
        received
    }
}

struct Published {
    attempted: u64,
    failed: u64,
}

/// Publishes `events_per_room` events to every room, round-robin, at the
/// shape's rate with up to `publishers` requests in flight.
async fn publish(target: &Target, rooms: &[String], shape: &Shape) -> Published {
    let total = rooms.len() as u64 * shape.events_per_room;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*target.tls).clone())
        .pool_max_idle_per_host(shape.publishers.max(1))
        .build()
        .unwrap_or_default();
    let failed = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(shape.publishers.max(1)));
    let mut tick = (shape.rate > 0)
        .then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / shape.rate as f64)));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        if let Some(tick) = tick.as_mut() {
            tick.tick().await;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (http, target, failed) = (http.clone(), target.clone(), failed.clone());
        let room = rooms[(n % rooms.len() as u64) as usize].clone();
        tasks.spawn(async move {
            let data = format!(r#"{{"bench_t":{},"n":{n}}}"#, now_us());
            if !target.publish(&http, &room, &data).await {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Published {
        attempted: total,
        failed: failed.load(Ordering::Relaxed),
    }
}
