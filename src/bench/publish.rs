//! `bench publish`: durable publishes per second over HTTP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
}

pub async fn run(url: &str, options: &PublishOptions, common: &Common) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(options.concurrency).build()?;
    let prefix = run_room("publish");
    let rooms: Vec<String> = (0..options.rooms.max(1)).map(|i| format!("{prefix}-{i}")).collect();
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let bar = progress(options.events, common.quiet, "publish");
    let padding = "x".repeat(options.payload);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..options.concurrency.max(1) {
        let (http, url, rooms, next, failures, bar, padding) =
            (http.clone(), url.to_owned(), rooms.clone(), next.clone(), failures.clone(), bar.clone(), padding.clone());
        let total = options.events;
        tasks.push(tokio::spawn(async move {
            let mut histogram = latency_histogram();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return histogram;
                }
                let room = &rooms[n as usize % rooms.len()];
                let body = serde_json::json!({"data": {"n": n, "pad": padding}});
                let sent = now_us();
                let response = http.post(format!("{url}/v1/rooms/{room}/events")).json(&body).send().await;
                match response {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let _ = histogram.record(now_us().saturating_sub(sent).max(1));
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                bar.inc(1);
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
    report.add("concurrency", options.concurrency as u64);
    report.add("rooms", rooms.len() as u64);
    report.add("events", options.events);
    report.add("failed", failed);
    report.add("seconds", elapsed);
    report.add("publishes_per_sec", (options.events - failed) as f64 / elapsed);
    report.add_latency("publish", &histogram);
    Ok(report)
}
