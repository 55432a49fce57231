//! The process dies or stops: an acknowledged publish survives `kill -9`, and
//! SIGTERM closes every session with 1012, exits 0, and loses nothing.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use support::{range, seqs, shared, within, Receipt, Server, Ws, FAST, PHASE};

/// Publishers that keep publishing until the server stops answering; every
/// `201` receipt is collected.
fn start_publishers(
    server: &Server,
    room: &'static str,
    workers: usize,
) -> (
    Arc<std::sync::Mutex<Vec<Receipt>>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let receipts = shared();
    let counter = Arc::new(AtomicUsize::new(0));
    let tasks = (0..workers)
        .map(|w| {
            let (api, receipts, counter) = (server.api(), receipts.clone(), counter.clone());
            tokio::spawn(async move {
                loop {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let data = json!({"worker": w, "n": n, "pad": "x".repeat(n % 200)});
                    match api
                        .try_post(room, &json!({"data": data}), Some(&format!("key-{n}")))
                        .await
                    {
                        Ok((201, receipt)) => receipts
                            .lock()
                            .unwrap()
                            .push(Receipt::from_json(&receipt, data)),
                        // Refused while stopping, or the connection died: not acknowledged.
                        Ok(_) | Err(_) => return,
                    }
                }
            })
        })
        .collect();
    (receipts, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_publish_survives_kill_9() {
    let mut server = Server::start("[sqlite]\nsynchronous = \"full\"\n").await;
    let room = "durable";
    let (receipts, tasks) = start_publishers(&server, room, 8);

    support::eventually("300 acknowledged publishes", || {
        let n = receipts.lock().unwrap().len();
        async move { (n >= 300).then_some(()) }
    })
    .await;
    server.kill9().await;
    for task in tasks {
        within(PHASE, "publishers to notice the kill", task)
            .await
            .unwrap();
    }
    let acknowledged = receipts.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);

    server.restart().await;
    let history = server.api().all_events(room).await;
    // The log is gapless and every acknowledged event is in it, unchanged.
    assert_eq!(
        seqs(&history),
        range(1, history.len() as u64),
        "the log has a gap"
    );
    let epoch = &acknowledged[0].epoch;
    for receipt in &acknowledged {
        assert_eq!(&receipt.epoch, epoch, "{receipt:?}");
        let stored = &history
            .get(receipt.seq as usize - 1)
            .unwrap_or_else(|| panic!("acknowledged seq {} is missing after kill -9", receipt.seq));
        assert_eq!(
            (&stored["data"], stored["ts"].as_i64()),
            (&receipt.data, Some(receipt.ts)),
            "seq {}",
            receipt.seq
        );
    }
    // No event was appended twice.
    let mut ns: Vec<u64> = history
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    ns.dedup();
    assert_eq!(ns.len(), history.len(), "an event was stored twice");

    // The room keeps its epoch and carries on from its head.
    let stats = server.api().room(room).await;
    assert_eq!(
        (&stats["epoch"], stats["head"].as_u64()),
        (&json!(epoch), Some(history.len() as u64))
    );
    let receipt = server.publish(room, json!("after restart")).await;
    assert_eq!(receipt["seq"], history.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_with_1012_and_loses_nothing() {
    let mut server = Server::start(FAST).await;
    let room = "graceful";
    let (mut room_ws, _) = Ws::room(&server, room, "").await;
    room_ws.until_caught_up(room, 0).await;
    let mut multi = Ws::connect(&server.ws_url("/v1/ws")).await;
    multi.subscribe(room, json!({})).await;
    multi.until_caught_up(room, 0).await;
    let mut idle = Ws::connect(&server.ws_url("/v1/ws")).await;

    let first = server
        .api()
        .publish_many(room, 20, 2, |i| json!({"i": i}))
        .await;
    assert_eq!(seqs(&room_ws.events_until(room, 0, 20).await), range(1, 20));
    assert_eq!(seqs(&multi.events_until(room, 0, 20).await), range(1, 20));

    // Publishers are still running when the signal arrives.
    let (receipts, tasks) = start_publishers(&server, room, 4);
    support::eventually("publishes after the first 20", || {
        let n = receipts.lock().unwrap().len();
        async move { (n >= 20).then_some(()) }
    })
    .await;
    // The address clients hold: they come back to it after the restart.
    let ws_base = server.ws_url("");
    server.sigterm();

    for ws in [&mut room_ws, &mut multi, &mut idle] {
        let (code, frames) = ws.close_after_frames().await;
        assert_eq!(code, Some(1012), "close code after SIGTERM");
        assert!(frames.iter().all(|f| f["type"] == "event"), "{frames:?}");
    }
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    for task in tasks {
        within(PHASE, "publishers to notice the shutdown", task)
            .await
            .unwrap();
    }

    // Restarted where it was, at once: its own connections in TIME_WAIT
    // (it closed every session) do not keep it from its port.
    server.restart_on_same_port().await;
    assert_eq!(server.ws_url(""), ws_base);
    let history = server.api().all_events(room).await;
    assert_eq!(seqs(&history), range(1, history.len() as u64));
    for receipt in first.iter().chain(receipts.lock().unwrap().iter()) {
        let stored = history
            .get(receipt.seq as usize - 1)
            .unwrap_or_else(|| panic!("acknowledged seq {} lost in shutdown", receipt.seq));
        assert_eq!(stored["data"], receipt.data, "seq {}", receipt.seq);
    }
    // Clients resume from their cursors on the restarted node, at the URL they had.
    let epoch = &first[0].epoch;
    let mut resumed = Ws::connect(&format!(
        "{ws_base}/v1/rooms/{room}/ws?cursor=20&epoch={epoch}"
    ))
    .await;
    assert_eq!(resumed.expect_type("subscribed").await["room"], room);
    let (events, _) = resumed.until_caught_up(room, 20).await;
    assert_eq!(seqs(&events), range(21, history.len() as u64));
}
