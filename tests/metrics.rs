//! `/metrics`, `/v1/stats` and `/v1/rooms` after a known workload: the counters
//! move by exactly the right amounts.

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::{eventually, Server, Ws, FAST};

/// Parses Prometheus text into `name{labels}` → value.
fn scrape(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn metrics(server: &Server) -> HashMap<String, f64> {
    let text = reqwest::get(format!("{}/metrics", server.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    scrape(&text)
}

fn value(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_by_the_workload() {
    let server = Server::start(FAST).await;
    let before = metrics(&server).await;

    // Three subscribers on one room, 10 events: 30 deliveries.
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let (ws, _) = Ws::room(&server, "metrics:a", "").await;
        subscribers.push(ws);
    }
    for n in 0..10 {
        server.api().publish("metrics:a", json!({ "n": n })).await;
    }
    for ws in &mut subscribers {
        ws.events_until("metrics:a", 0, 10).await;
    }
    // One conflict, one duplicate.
    let (status, _) = server
        .api()
        .post("metrics:a", &json!({"data": 1, "expected_seq": 0}), None)
        .await;
    assert_eq!(status, 409);
    let (status, _) = server
        .api()
        .post("metrics:a", &json!({"data": 1}), Some("dup-key"))
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .api()
        .post("metrics:a", &json!({"data": 1}), Some("dup-key"))
        .await;
    assert_eq!(status, 200);
    for ws in &mut subscribers {
        ws.events_until("metrics:a", 10, 11).await;
    }
    // A client error on a fourth session, then a resume that replays from the store.
    let mut bad = Ws::connect(&server.ws_url("/v1/ws")).await;
    bad.send_text("not json").await;
    assert_eq!(bad.expect_type("error").await["code"], "invalid_json");

    let after = eventually("counters to settle", || {
        let server = &server;
        let before = before.clone();
        async move {
            let after = metrics(server).await;
            let delta = |name: &str| value(&after, name) - value(&before, name);
            (delta("hubcast_deliveries_total") == 33.0).then_some(after)
        }
    })
    .await;
    let delta = |name: &str| value(&after, name) - value(&before, name);
    assert_eq!(delta("hubcast_events_published_total"), 11.0);
    assert_eq!(delta("hubcast_deliveries_total"), 33.0);
    assert_eq!(delta("hubcast_publish_conflicts_total"), 1.0);
    assert_eq!(delta("hubcast_publish_duplicates_total"), 1.0);
    assert_eq!(delta("hubcast_connections_opened_total"), 4.0);
    assert_eq!(value(&after, "hubcast_connections"), 4.0);
    assert_eq!(value(&after, "hubcast_subscriptions"), 3.0);
    assert_eq!(value(&after, "hubcast_hubs"), 1.0);
    assert_eq!(delta("hubcast_client_errors_total"), 1.0);
    assert_eq!(delta("hubcast_delivery_latency_seconds_count"), 11.0);
    assert_eq!(delta("hubcast_broadcast_duration_seconds_count"), 11.0);
    assert!(delta("hubcast_store_append_seconds_count") >= 1.0);
    assert!(
        delta("hubcast_sent_bytes_total") > 33.0 * 40.0,
        "event frames are at least 40 bytes"
    );

    // A late subscriber resuming from cursor 0 (served from the hub's tail).
    let (mut late, _) = Ws::room(&server, "metrics:a", "?cursor=0").await;
    late.events_until("metrics:a", 0, 11).await;
    drop(late);
    for ws in subscribers {
        ws.close().await;
    }
    bad.close().await;
    // A scrape reads the counters and the gauge one after another, so a close
    // can land between them: wait for both to settle, then check nothing more came.
    let closes = |m: &HashMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("hubcast_connections_closed_total"))
            .map(|(_, v)| *v)
            .sum()
    };
    let before_closes = closes(&before);
    let closed = eventually("sessions to close", || {
        let server = &server;
        async move {
            let m = metrics(server).await;
            (value(&m, "hubcast_connections") == 0.0 && closes(&m) - before_closes >= 5.0)
                .then_some(m)
        }
    })
    .await;
    assert_eq!(closes(&closed) - before_closes, 5.0);
    assert_eq!(value(&closed, "hubcast_subscriptions"), 0.0);
}

#[tokio::test]
async fn stats_and_rooms_report_the_node() {
    let server = Server::start(FAST).await;
    let (mut ws, _) = Ws::room(&server, "stats:b", "").await;
    for n in 0..5 {
        server.api().publish("stats:b", json!({ "n": n })).await;
    }
    ws.events_until("stats:b", 0, 5).await;
    let stats = eventually("a sample with the events", || {
        let server = &server;
        async move {
            let (status, stats) = server.api().get("/v1/stats").await;
            assert_eq!(status, 200);
            let sampled = !stats["history"].as_array()?.is_empty();
            (stats["totals"]["published"] == 5 && stats["totals"]["delivered"] == 5 && sampled)
                .then_some(stats)
        }
    })
    .await;
    assert_eq!(stats["totals"]["delivered"], 5);
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["rooms"], 1);
    // The store kind follows the test backend (HUBCAST_TEST_BACKEND).
    assert_eq!(
        stats["store"],
        if server.is_cluster() {
            "postgres"
        } else {
            "sqlite"
        }
    );
    let (status, rooms) = server.api().get("/v1/rooms").await;
    assert_eq!(status, 200);
    assert_eq!(
        rooms["rooms"],
        json!([{"room": "stats:b", "subscribers": 1, "head": 5}])
    );
    assert_eq!(rooms["total"], 1);
    ws.close().await;
}
