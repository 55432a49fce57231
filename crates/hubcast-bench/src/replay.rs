//! `bench replay`: a client that missed K events reconnects with its cursor;
//! how long until it has caught up.

use std::time::Instant;

use futures_util::StreamExt;

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
    let http = common.client.http()?;
    let credential = common.client.credential();
    let bar = progress(options.events, common.quiet, "fill");
    let mut posted = 0;
    while posted < options.events {
        let batch: Vec<_> = (posted..(posted + 64).min(options.events))
            .map(|n| {
                let body = serde_json::json!({"data": {"n": n, "pad": "0123456789abcdef0123456789abcdef"}});
                let request = http.post(format!("{url}/v1/rooms/{room}/events")).json(&body);
                match credential {
                    Some(credential) => request.bearer_auth(credential),
                    None => request,
                }
                .send()
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

    // The catch-up is measured through the client SDK (resume from a cursor,
    // dedup, gap healing): what an application actually gets. The fanout and
    // publish scenarios keep raw sockets and plain HTTP, to measure the server
    // without client-side overhead.
    let mut times = Vec::new();
    for _ in 0..options.repeat.max(1) {
        let started = Instant::now();
        let client = common.client.client(url)?;
        let start = hubcast_client::Cursor {
            epoch: None,
            seq: 0,
        };
        let options_ = hubcast_client::SubscribeOptions {
            cursor: Some(start),
            ..Default::default()
        };
        let mut subscription = client.subscribe(&room, options_).await?;
        let mut got = 0;
        while got < options.events {
            let update =
                tokio::time::timeout(std::time::Duration::from_secs(60), subscription.next())
                    .await
                    .map_err(|_| anyhow::anyhow!("replay stalled after {got} events"))?;
            match update {
                Some(hubcast_client::RoomUpdate::Event(_)) => got += 1,
                Some(hubcast_client::RoomUpdate::Reset(reset)) => {
                    anyhow::bail!("unexpected reset: {reset:?}")
                }
                Some(hubcast_client::RoomUpdate::Error(err)) if err.close_code.is_some() => {
                    anyhow::bail!("replay failed: {err}")
                }
                Some(hubcast_client::RoomUpdate::Error(_)) => {}
                Some(
                    hubcast_client::RoomUpdate::Presence(_)
                    | hubcast_client::RoomUpdate::Ephemeral(_),
                ) => {} // not asked for
                None => break,
            }
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if got != options.events {
            anyhow::bail!("replay delivered {got} of {} events", options.events);
        }
        client.close().await;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let mut report = Report::new("replay", url);
    report.add("events", options.events);
    report.add("runs", times.len() as u64);
    report.add("catch_up_best_ms", times[0]);
    report.add("catch_up_median_ms", times[times.len() / 2]);
    report.add(
        "events_per_sec_best",
        options.events as f64 / (times[0] / 1000.0),
    );
    Ok(report)
}
