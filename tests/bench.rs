//! Every `hubcast bench` scenario, small, through the real binary with
//! `--spawn`: correctness only (every event delivered, no errors). Times and
//! rates are what the scenarios measure, never what these tests assert.

use std::process::Command;

use serde_json::Value;

/// Runs `hubcast bench ARGS --spawn --quiet --json FILE`; the `results` object.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let output = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .arg("bench")
        .args(args)
        .args(["--spawn", "--quiet", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["scenario"], args[0], "{report}");
    report["results"].clone()
}

fn assert_all_delivered(results: &Value, subscribers: u64, events_each: u64) {
    assert_eq!(results["connect_failures"], 0, "{results}");
    assert_eq!(results["publish_failures"], 0, "{results}");
    assert_eq!(results["subscribers_connected"], subscribers, "{results}");
    assert_eq!(results["subscribers_complete"], subscribers, "{results}");
    assert_eq!(
        results["deliveries"],
        subscribers * events_each,
        "{results}"
    );
    assert!(results["latency_max_ms"].is_number(), "{results}");
}

#[test]
fn fanout_at_max_rate_delivers_every_event_to_every_subscriber() {
    let results = bench(&[
        "fanout",
        "--subscribers",
        "50",
        "--events",
        "40",
        "--rate",
        "0",
    ]);
    assert_all_delivered(&results, 50, 40);
}

#[test]
fn fanout_over_sse_delivers_every_event_to_every_subscriber() {
    let results = bench(&[
        "fanout",
        "--transport",
        "sse",
        "--subscribers",
        "50",
        "--events",
        "40",
        "--rate",
        "0",
    ]);
    assert_eq!(results["transport"], "sse", "{results}");
    assert_all_delivered(&results, 50, 40);
}

#[test]
fn fanout_at_a_steady_rate_delivers_every_event() {
    let results = bench(&[
        "fanout",
        "--subscribers",
        "10",
        "--events",
        "20",
        "--rate",
        "200",
    ]);
    assert_all_delivered(&results, 10, 20);
}

#[test]
fn rooms_delivers_each_rooms_events_to_its_subscribers() {
    let results = bench(&[
        "rooms",
        "--rooms",
        "30",
        "--subscribers-per-room",
        "3",
        "--events-per-room",
        "4",
    ]);
    assert_eq!(results["rooms"], 30, "{results}");
    assert_eq!(results["events"], 120, "{results}");
    assert_all_delivered(&results, 90, 4);
}

#[test]
fn publish_stores_every_event() {
    let results = bench(&[
        "publish",
        "--events",
        "300",
        "--concurrency",
        "8",
        "--rooms",
        "3",
    ]);
    assert_eq!(results["failed"], 0, "{results}");
    assert_eq!(results["events"], 300, "{results}");
}

#[test]
fn publish_in_batches_stores_every_event() {
    // 301 events in batches of 25 over 3 rooms: the last batch is short.
    let results = bench(&[
        "publish",
        "--events",
        "301",
        "--concurrency",
        "4",
        "--rooms",
        "3",
        "--batch",
        "25",
    ]);
    assert_eq!(results["failed"], 0, "{results}");
    assert_eq!(results["batch"], 25, "{results}");
    assert_eq!(results["events"], 301, "{results}");
}

#[test]
fn replay_catches_up_every_missed_event() {
    // The scenario itself fails unless each run gets exactly every event.
    let results = bench(&["replay", "--events", "500", "--repeat", "2"]);
    assert_eq!(results["events"], 500, "{results}");
    assert_eq!(results["runs"], 2, "{results}");
}

#[test]
fn idle_holds_every_connection_over_several_processes() {
    let results = bench(&[
        "idle",
        "--connections",
        "400",
        "--processes",
        "2",
        "--nodes",
        "2",
        "--rooms",
        "7",
        "--hold-secs",
        "0",
    ]);
    assert_eq!(results["connections_held"], 400, "{results}");
    assert_eq!(results["connect_failures"], 0, "{results}");
    assert_eq!(results["server_processes"], 2, "{results}");
    assert_eq!(results["client_processes"], 2, "{results}");
    assert!(results["rss_held_kib"].as_u64().unwrap() > 0, "{results}");
}

#[test]
fn fanout_reports_the_servers_cpu_per_delivery_given_its_pid() {
    // The in-process server's process descends from this test's: its CPU is
    // counted under this pid. Only the figures' presence is asserted.
    let pid = std::process::id().to_string();
    let results = bench(&[
        "fanout",
        "--subscribers",
        "20",
        "--events",
        "20",
        "--rate",
        "0",
        "--server-pid",
        &pid,
    ]);
    assert_all_delivered(&results, 20, 20);
    assert!(
        results["server_cpu_seconds_publish_phase"].is_number(),
        "{results}"
    );
    assert!(results["server_cpu_seconds_total"].is_number(), "{results}");
    assert!(
        results["server_cpu_us_per_delivery_total"].is_number(),
        "{results}"
    );
    let in_phase = results["deliveries_publish_phase"].as_u64().unwrap();
    assert!(in_phase <= 20 * 20, "{results}");
}

#[test]
fn floor_writes_every_frame_to_every_socket() {
    let results = bench(&[
        "floor",
        "--connections",
        "20",
        "--rounds",
        "10",
        "--rate",
        "0",
    ]);
    assert_eq!(results["writes"], 200, "{results}");
    assert_eq!(
        results["bytes_received"].as_u64(),
        Some(200 * results["frame_bytes"].as_u64().unwrap()),
        "{results}"
    );
    assert!(results["cpu_us_per_write"].is_number(), "{results}");
}
