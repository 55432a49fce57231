//! `bench fanout`: S subscribers on one room, publishes at a rate R (or as fast
//! as possible with R = 0); deliveries per second and publish→receive latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use super::{latency_histogram, now_us, progress, run_room, Common, Report};

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutOptions {
    /// Subscribers on the room.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Publishes per second; 0 publishes as fast as the publishers can.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Events to publish.
    #[arg(long, default_value_t = 1_000)]
    pub events: u64,
    /// Concurrent publishers when --rate is 0.
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
}

pub async fn run(url: &str, options: &FanoutOptions, common: &Common) -> anyhow::Result<Report> {
    let room = run_room("fanout");
    let ws_url = format!("{}/v1/rooms/{room}/ws", url.replacen("http", "ws", 1));
    let delivered = Arc::new(AtomicU64::new(0));
    let expected = options.events;

    // Connect the subscribers, a bounded number at a time.
    let connect_bar = progress(options.subscribers as u64, common.quiet, "connect");
    let mut ready = Vec::with_capacity(options.subscribers);
    let mut subscribers = Vec::with_capacity(options.subscribers);
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    for _ in 0..options.subscribers {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        ready.push(ready_rx);
        let (ws_url, delivered, permits, bar) = (ws_url.clone(), delivered.clone(), permits.clone(), connect_bar.clone());
        subscribers.push(tokio::spawn(async move { subscriber(ws_url, expected, delivered, permits, bar, ready_tx).await }));
    }
    for ready in ready {
        ready.await.map_err(|_| anyhow::anyhow!("a subscriber failed to connect"))?;
    }
    connect_bar.finish_and_clear();

    // Publish.
    let http = reqwest::Client::new();
    let publish_bar = progress(expected * options.subscribers as u64, common.quiet, "deliver");
    let watcher = {
        let (delivered, bar) = (delivered.clone(), publish_bar.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(delivered.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let publishers = if options.rate == 0 { options.publishers.max(1) } else { 1 };
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let (http, url, room, next) = (http.clone(), url.to_owned(), room.clone(), next.clone());
        let rate = options.rate;
        tasks.push(tokio::spawn(async move {
            let mut tick = (rate > 0).then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64)));
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= expected {
                    return;
                }
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                let body = serde_json::json!({"data": {"t": now_us(), "n": n}});
                let _ = http.post(format!("{url}/v1/rooms/{room}/events")).json(&body).send().await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    let mut histogram = latency_histogram();
    let mut complete = 0;
    for subscriber in subscribers {
        if let Ok(Ok(result)) = tokio::time::timeout(Duration::from_secs(60), subscriber).await {
            let (got, h) = result;
            histogram.add(h)?;
            if got == expected {
                complete += 1;
            }
        }
    }
    let total_seconds = started.elapsed().as_secs_f64();
    watcher.abort();
    publish_bar.finish_and_clear();
    let deliveries = delivered.load(Ordering::Relaxed);

    let mut report = Report::new("fanout", url);
    report.add("subscribers", options.subscribers as u64);
    report.add("rate_per_sec", options.rate);
    report.add("events", expected);
    report.add("deliveries", deliveries);
    report.add("subscribers_complete", complete as u64);
    report.add("publish_seconds", publish_seconds);
    report.add("deliveries_per_sec", deliveries as f64 / total_seconds);
    report.add_latency("latency", &histogram);
    Ok(report)
}

/// One subscriber: connects, waits for `caught_up`, then records the latency
/// of every event until it has `expected` of them.
async fn subscriber(
    url: String,
    expected: u64,
    delivered: Arc<AtomicU64>,
    permits: Arc<tokio::sync::Semaphore>,
    bar: indicatif::ProgressBar,
    ready: tokio::sync::oneshot::Sender<()>,
) -> (u64, Histogram<u64>) {
    let mut histogram = latency_histogram();
    // Held until subscribed, so at most 256 handshakes are in flight.
    let mut permit = Some(permits.acquire().await);
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
        return (0, histogram);
    };
    let mut ready = Some(ready);
    let mut got = 0;
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        match frame["type"].as_str() {
            Some("caught_up") => {
                permit.take();
                bar.inc(1);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Some("event") => {
                if let Some(sent) = frame["data"]["t"].as_u64() {
                    let _ = histogram.record(now_us().saturating_sub(sent).max(1));
                }
                got += 1;
                delivered.fetch_add(1, Ordering::Relaxed);
                if got == expected {
                    break;
                }
            }
            _ => {}
        }
    }
    (got, histogram)
}
