//! `bench replay`: a client that missed K events reconnects with its cursor;
//! how long until it has caught up.

use std::time::Instant;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::{progress, run_room, Common, Report};

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    /// Missed events to catch up.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Times to repeat the catch-up (the report gives the best and the median).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

pub async fn run(url: &str, options: &ReplayOptions, common: &Common) -> anyhow::Result<Report> {
    let room = run_room("replay");
    let http = reqwest::Client::new();
    let bar = progress(options.events, common.quiet, "fill");
    let mut posted = 0;
    while posted < options.events {
        let batch: Vec<_> = (posted..(posted + 64).min(options.events))
            .map(|n| {
                let body = serde_json::json!({"data": {"n": n, "pad": "0123456789abcdef0123456789abcdef"}});
                http.post(format!("{url}/v1/rooms/{room}/events")).json(&body).send()
            })
            .collect();
        for response in futures_util::future::join_all(batch).await {
            if response?.status().as_u16() != 201 {
                anyhow::bail!("fill publish failed");
            }
            posted += 1;
        }
        bar.set_position(posted);
    }
    bar.finish_and_clear();

    let ws_url = format!("{}/v1/rooms/{room}/ws?cursor=0", url.replacen("http", "ws", 1));
    let mut times = Vec::new();
    for _ in 0..options.repeat.max(1) {
        let started = Instant::now();
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await?;
        let mut got = 0;
        while let Some(message) = socket.next().await {
            let Message::Text(text) = message? else { continue };
            if text.contains("\"type\":\"event\"") {
                got += 1;
            } else if text.contains("\"type\":\"caught_up\"") {
                break;
            }
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if got != options.events {
            anyhow::bail!("replay delivered {got} of {} events", options.events);
        }
        let _ = socket.close(None).await;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let mut report = Report::new("replay", url);
    report.add("events", options.events);
    report.add("runs", times.len() as u64);
    report.add("catch_up_best_ms", times[0]);
    report.add("catch_up_median_ms", times[times.len() / 2]);
    report.add("events_per_sec_best", options.events as f64 / (times[0] / 1000.0));
    Ok(report)
}
