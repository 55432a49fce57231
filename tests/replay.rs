//! Replay: a subscriber with a cursor gets exactly the events after it, then
//! the live stream, with no gap and no duplicate — whether the hub's tail or
//! the store serves the replay, and while publishes keep arriving. A cursor
//! that cannot be served (pruned, or from another epoch) gets an explicit
//! `reset` and continues live.

mod support;

use serde_json::{json, Value};
use support::{eventually, range, seqs, within, Server, Ws, FAST, PHASE};

/// Checks that replayed and live event frames carry what history holds.
fn assert_same_data(frames: &[Value], history: &[Value]) {
    for frame in frames {
        let seq = frame["seq"].as_u64().unwrap();
        let stored = history
            .iter()
            .find(|e| e["seq"] == seq)
            .unwrap_or_else(|| panic!("seq {seq} not in history"));
        assert_eq!(
            (&frame["data"], &frame["ts"]),
            (&stored["data"], &stored["ts"]),
            "seq {seq}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_cursor_while_publishes_keep_arriving() {
    let server = Server::start(FAST).await;
    let api = server.api();
    let room = "replay-live";
    let first = api.publish_many(room, 50, 2, |i| json!({"i": i})).await;
    let epoch = first[0].epoch.clone();

    let more = {
        let api = api.clone();
        tokio::spawn(async move {
            api.publish_many(room, 250, 4, |i| json!({"i": 50 + i}))
                .await
        })
    };
    let (mut ws, subscribed) = Ws::room(&server, room, &format!("?cursor=20&epoch={epoch}")).await;
    assert_eq!(subscribed["epoch"], epoch.as_str());
    assert!(subscribed["head"].as_u64().unwrap() >= 50, "{subscribed}");
    let events = ws.events_until(room, 20, 300).await;
    within(PHASE, "the publishers", more).await.unwrap();

    assert_eq!(seqs(&events), range(21, 300));
    assert_same_data(&events, &api.all_events(room).await);
    // Nothing after the last event.
    ws.send_json(json!({"type": "ping"})).await;
    ws.expect_type("pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_longer_than_the_hub_tail_comes_from_the_store() {
    let server = Server::start(&format!("{FAST}[hub]\ntail = 256\n")).await;
    let api = server.api();
    let room = "replay-deep";

    // A live subscriber keeps the room's hub (and its tail) alive throughout.
    let (mut live, _) = Ws::room(&server, room, "").await;
    live.until_caught_up(room, 0).await;
    let live_reader = tokio::spawn(async move { live.events_until(room, 0, 3300).await });

    let receipts = api.publish_many(room, 3000, 8, |i| json!({"i": i})).await;
    assert_eq!(receipts.last().unwrap().seq, 3000);
    let epoch = receipts[0].epoch.clone();

    let more = {
        let api = api.clone();
        tokio::spawn(async move {
            api.publish_many(room, 300, 3, |i| json!({"i": 3000 + i}))
                .await
        })
    };
    // 3000 behind: far outside the tail, served from the store page by page.
    let (mut deep, _) = Ws::room(&server, room, &format!("?cursor=0&epoch={epoch}")).await;
    // 100 behind: inside the tail.
    let (mut shallow, _) = Ws::room(&server, room, &format!("?cursor=2900&epoch={epoch}")).await;
    let shallow_events = shallow.events_until(room, 2900, 3300).await;
    let deep_events = deep.events_until(room, 0, 3300).await;
    within(PHASE, "the publishers", more).await.unwrap();
    let live_events = within(PHASE, "the live subscriber", live_reader)
        .await
        .unwrap();

    assert_eq!(seqs(&deep_events), range(1, 3300));
    assert_eq!(seqs(&shallow_events), range(2901, 3300));
    assert_eq!(seqs(&live_events), range(1, 3300));
    let history = api.all_events(room).await;
    assert_eq!(seqs(&history), range(1, 3300));
    assert_same_data(&deep_events, &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_replays_the_last_n_events() {
    let server = Server::start(&format!("{FAST}[limits]\nmax_rewind = 5\n")).await;
    let room = "rewind";
    server.api().publish_many(room, 10, 1, |i| json!(i)).await;

    let (mut ws, subscribed) = Ws::room(&server, room, "?rewind=3").await;
    assert_eq!(subscribed["head"], 10);
    let (events, last) = ws.until_caught_up(room, 7).await;
    assert_eq!((seqs(&events), last), (range(8, 10), 10));
    assert_eq!(events[0]["data"], 7);

    // More than max_rewind is capped at max_rewind.
    let mut multi = Ws::connect(&server.ws_url("/v1/ws")).await;
    multi.subscribe(room, json!({"rewind": 100})).await;
    let (events, _) = multi.until_caught_up(room, 5).await;
    assert_eq!(seqs(&events), range(6, 10));

    // Both continue live.
    server.publish(room, json!("live")).await;
    assert_eq!(ws.events_until(room, 10, 11).await[0]["data"], "live");
    assert_eq!(multi.events_until(room, 10, 11).await[0]["data"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_at_the_head_or_without_a_cursor_gets_only_live_events() {
    let server = Server::start(FAST).await;
    let room = "at-head";
    let receipts = server.api().publish_many(room, 5, 1, |i| json!(i)).await;
    let epoch = &receipts[0].epoch;

    let (mut at_head, _) = Ws::room(&server, room, &format!("?cursor=5&epoch={epoch}")).await;
    let (mut no_cursor, subscribed) = Ws::room(&server, room, "").await;
    assert_eq!(
        (subscribed["head"].as_u64(), subscribed["epoch"].as_str()),
        (Some(5), Some(epoch.as_str()))
    );
    for ws in [&mut at_head, &mut no_cursor] {
        let (events, last) = ws.until_caught_up(room, 5).await;
        assert_eq!((events.len(), last), (0, 5));
    }
    server.publish(room, json!("six")).await;
    for ws in [&mut at_head, &mut no_cursor] {
        assert_eq!(seqs(&ws.events_until(room, 5, 6).await), [6]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_cursor_gets_a_reset_then_the_live_stream() {
    let config = format!("{FAST}[retention]\nmax_events = 10\ninterval_ms = 100\n");
    let server = Server::start(&config).await;
    let api = server.api();
    let room = "pruned";
    let receipts = api.publish_many(room, 30, 2, |i| json!({"i": i})).await;
    let epoch = receipts[0].epoch.clone();

    let stats = eventually("retention to prune the room to 10 events", || {
        let api = api.clone();
        async move {
            let stats = api.room(room).await;
            (stats["earliest"] == 21).then_some(stats)
        }
    })
    .await;
    assert_eq!(
        (stats["head"].as_u64(), stats["retained"].as_u64()),
        (Some(30), Some(10)),
        "{stats}"
    );
    let history = api.history(room, 0, 100).await;
    assert_eq!(history["earliest"], 21);
    assert_eq!(seqs(history["events"].as_array().unwrap()), range(21, 30));

    // A cursor inside retention is served exactly.
    let (mut ok, _) = Ws::room(&server, room, &format!("?cursor=20&epoch={epoch}")).await;
    let (events, _) = ok.until_caught_up(room, 20).await;
    assert_eq!(seqs(&events), range(21, 30));

    // A cursor behind retention gets `reset` and continues live from the head.
    let (mut behind, subscribed) =
        Ws::room(&server, room, &format!("?cursor=5&epoch={epoch}")).await;
    assert_eq!(subscribed["head"], 30);
    let reset = behind.expect_type("reset").await;
    assert_eq!(
        (
            reset["room"].as_str(),
            reset["epoch"].as_str(),
            reset["earliest"].as_u64()
        ),
        (Some(room), Some(epoch.as_str()), Some(21)),
        "{reset}"
    );
    let (events, last) = behind.until_caught_up(room, 30).await;
    assert_eq!((events.len(), last), (0, 30));

    let receipt = server.publish(room, json!("after reset")).await;
    assert_eq!(receipt["seq"], 31);
    for ws in [&mut ok, &mut behind] {
        let events = ws.events_until(room, 30, 31).await;
        assert_eq!(events[0]["data"], "after reset");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_another_epoch_gets_a_reset() {
    let server = Server::start(FAST).await;
    let room = "epochs";
    let receipts = server.api().publish_many(room, 8, 1, |i| json!(i)).await;
    let epoch = receipts[0].epoch.clone();

    let (mut ws, subscribed) = Ws::room(&server, room, "?cursor=3&epoch=0123456789abcdef").await;
    assert_eq!(
        (subscribed["epoch"].as_str(), subscribed["head"].as_u64()),
        (Some(epoch.as_str()), Some(8))
    );
    let reset = ws.expect_type("reset").await;
    assert_eq!(
        (reset["epoch"].as_str(), reset["earliest"].as_u64()),
        (Some(epoch.as_str()), Some(1)),
        "{reset}"
    );
    let (events, _) = ws.until_caught_up(room, 8).await;
    assert!(events.is_empty());

    // Over the multiplexed socket too; a cursor past the head is also refused.
    let mut multi = Ws::connect(&server.ws_url("/v1/ws")).await;
    multi
        .subscribe(room, json!({"cursor": 3, "epoch": "ffffffffffffffff"}))
        .await;
    assert_eq!(multi.expect_type("reset").await["epoch"], epoch.as_str());
    multi.until_caught_up(room, 8).await;
    multi.subscribe("epochs-2", json!({"cursor": 99})).await;
    multi.expect_type("reset").await;
    multi.until_caught_up("epochs-2", 0).await;

    server.publish(room, json!("live")).await;
    assert_eq!(seqs(&ws.events_until(room, 8, 9).await), [9]);
    assert_eq!(seqs(&multi.events_until(room, 8, 9).await), [9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_during_a_replay_stops_it_cleanly() {
    // A small queue keeps the replay waiting for the client mid-way.
    let server = Server::start(&format!(
        "{FAST}[limits]\noutbound_queue = 32\n[hub]\ntail = 16\n"
    ))
    .await;
    let api = server.api();
    let room = "abandoned";
    api.publish_many(room, 2000, 8, |i| json!({"i": i})).await;
    let epoch = api.room(room).await["epoch"].clone();
    let mut head = 2000;

    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    // Abandon the replay at once, after the first event, and after a few pages.
    // Whether the server reads the unsubscribe before it has sent the last
    // page is a race (a fast writer and the socket buffers can take all 2,000
    // events first): every round must end cleanly either way, and at least one
    // must have been cut short.
    let mut abandoned = 0;
    for wait_for in [0u64, 1, 700] {
        let mut last = 0;
        ws.send_json(json!({"type": "subscribe", "room": room, "cursor": 0, "epoch": epoch}))
            .await;
        if wait_for == 0 {
            ws.send_json(json!({"type": "unsubscribe", "room": room}))
                .await;
        }
        within(PHASE, "the unsubscribed answer", async {
            loop {
                let frame = ws.next_json().await;
                match frame["type"].as_str() {
                    Some("subscribed") => assert_eq!(frame["head"], head),
                    Some("event") => {
                        assert_eq!(frame["seq"], last + 1, "{frame}");
                        last += 1;
                        if last == wait_for {
                            ws.send_json(json!({"type": "unsubscribe", "room": room}))
                                .await;
                        }
                    }
                    Some("caught_up") => assert_eq!(frame["seq"], last, "{frame}"),
                    Some("unsubscribed") => return,
                    _ => panic!("unexpected frame {frame}"),
                }
            }
        })
        .await;
        if last < head {
            abandoned += 1;
        } else {
            eprintln!("round {wait_for}: the replay ended before the unsubscribe was read");
        }
        assert_eq!(api.room(room).await["subscribers"], 0);

        // Nothing of the room follows `unsubscribed`, even as it gets new events.
        api.publish_many(room, 5, 1, |i| json!({"late": i})).await;
        head += 5;
        ws.send_json(json!({"type": "ping"})).await;
        ws.expect_type("pong").await;

        // Subscribing again resumes exactly from where the client got to.
        ws.subscribe(room, json!({"cursor": last, "epoch": epoch}))
            .await;
        let (events, end) = ws.until_caught_up(room, last).await;
        assert_eq!(
            (seqs(&events).first().copied(), end),
            (Some(last + 1), head)
        );
        ws.send_json(json!({"type": "unsubscribe", "room": room}))
            .await;
        ws.expect_type("unsubscribed").await;
    }
    assert!(abandoned >= 1, "no replay was abandoned mid-way");
}
