//! Atomic batch publish: `POST /v1/events` and the socket `publish_batch`.
//! Every event of a batch is appended, or none is — after a conflict, a
//! refused retry, or a `kill -9` in the middle of a stream of batches.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use support::{eventually, seqs, within, Server, Ws, FAST, PHASE};

/// `POST /v1/events` with `body` (and an `Idempotency-Key`, if given).
async fn post_batch(server: &Server, body: &Value, key: Option<&str>) -> (u16, Value) {
    let api = server.api();
    let mut request = api.http.post(format!("{}/v1/events", api.base)).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = within(PHASE, "a batch POST", request.send())
        .await
        .expect("batch POST");
    let status = response.status().as_u16();
    let body = within(PHASE, "a batch answer", response.json::<Value>())
        .await
        .expect("a JSON answer");
    (status, body)
}

/// `(room, seq)` of each receipt of a batch answer.
fn receipts(answer: &Value) -> Vec<(String, u64)> {
    answer["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no receipts in {answer}"))
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_owned(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn owned(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|&(r, s)| (r.to_owned(), s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_appended_in_request_order_and_fanned_out() {
    let server = Server::start(FAST).await;
    server.publish("bo-a", json!({"n": 0})).await;
    let (mut sub, _) = Ws::room(&server, "bo-b", "").await;
    let body = json!({"events": [
        {"room": "bo-a", "data": {"n": 1}, "expected_seq": 1},
        {"room": "bo-b", "data": {"n": 2}},
        {"room": "bo-a", "data": {"n": 3}, "expected_seq": 2},
        {"room": "bo-b", "data": {"n": 4}},
    ]});
    let (status, answer) = post_batch(&server, &body, None).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        receipts(&answer),
        owned(&[("bo-a", 2), ("bo-b", 1), ("bo-a", 3), ("bo-b", 2)])
    );
    let first = &answer["events"][0];
    assert!(
        first["epoch"].is_string() && first["ts"].is_i64(),
        "{answer}"
    );
    let a = server.api().all_events("bo-a").await;
    let data: Vec<&Value> = a.iter().map(|e| &e["data"]["n"]).collect();
    assert_eq!(data, [&json!(0), &json!(1), &json!(3)]);
    // Subscribers get the batch's events after the commit, as any publish's.
    let live = sub.events_until("bo-b", 0, 2).await;
    assert_eq!(seqs(&live), [1, 2]);
    assert_eq!(live[1]["data"], json!({"n": 4}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_names_the_item_and_appends_nothing() {
    let server = Server::start(FAST).await;
    server.publish("bc-a", json!(1)).await;
    server.publish("bc-b", json!(1)).await;
    server.publish("bc-b", json!(2)).await;
    let body = json!({"events": [
        {"room": "bc-a", "data": "x", "expected_seq": 1},
        {"room": "bc-new", "data": "y"},
        {"room": "bc-b", "data": "z", "expected_seq": 1},
    ]});
    let (status, answer) = post_batch(&server, &body, None).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "conflict", "{answer}");
    assert_eq!(
        (
            answer["index"].as_u64(),
            answer["room"].as_str(),
            answer["head"].as_u64()
        ),
        (Some(2), Some("bc-b"), Some(2)),
        "{answer}"
    );
    assert!(answer["epoch"].is_string(), "{answer}");
    for (room, head) in [("bc-a", 1), ("bc-b", 2), ("bc-new", 0)] {
        assert_eq!(server.api().room(room).await["head"], head, "{room}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_answered_with_its_first_receipts() {
    let server = Server::start(FAST).await;
    let body = json!({"events": [
        {"room": "br-a", "data": 1},
        {"room": "br-b", "data": 2, "expected_seq": 0},
    ]});
    let (status, first) = post_batch(&server, &body, Some("trade-1")).await;
    assert_eq!(status, 201, "{first}");
    let (status, retry) = post_batch(&server, &body, Some("trade-1")).await;
    assert_eq!((status, &retry), (200, &first));
    let other = json!({"events": [{"room": "br-a", "data": 1}]});
    let (status, refused) = post_batch(&server, &other, Some("trade-1")).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (422, Some("idempotency_mismatch")),
        "{refused}"
    );
    for room in ["br-a", "br-b"] {
        assert_eq!(server.api().room(room).await["head"], 1, "{room}");
    }
    let (status, refused) = post_batch(&server, &body, Some("has space")).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_parameter")),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_batches_are_refused_with_json_errors() {
    let config = format!(
        "{FAST}[limits]\nmax_batch_events = 3\nmax_batch_bytes = 4096\nmax_event_bytes = 1024\n"
    );
    let server = Server::start(&config).await;
    let event = |n: usize| json!({"room": "bl", "data": n});
    let refused = |answer: (u16, Value), status: u16, code: &str| {
        assert_eq!(
            (answer.0, answer.1["error"].as_str()),
            (status, Some(code)),
            "{}",
            answer.1
        );
        assert!(answer.1["message"].is_string(), "{}", answer.1);
    };
    let four: Vec<Value> = (0..4).map(event).collect();
    refused(
        post_batch(&server, &json!({"events": four}), None).await,
        413,
        "too_large",
    );
    let big = "x".repeat(2000);
    let body = json!({"events": [{"room": "bl", "data": big}, {"room": "bl", "data": big}, {"room": "bl", "data": big}]});
    refused(post_batch(&server, &body, None).await, 413, "too_large");
    let body =
        json!({"events": [{"room": "bl", "data": 1}, {"room": "bl", "data": "y".repeat(1500)}]});
    let answer = post_batch(&server, &body, None).await;
    assert!(
        answer.1["message"].as_str().unwrap().contains("events[1]"),
        "{}",
        answer.1
    );
    refused(answer, 413, "too_large");
    refused(
        post_batch(&server, &json!({"events": []}), None).await,
        400,
        "bad_request",
    );
    refused(
        post_batch(&server, &json!({"event": [event(1)]}), None).await,
        400,
        "bad_request",
    );
    let body = json!({"events": [event(1), {"room": "no spaces", "data": 1}]});
    refused(post_batch(&server, &body, None).await, 400, "invalid_room");
    let api = server.api();
    let response = api
        .http
        .post(format!("{}/v1/events", api.base))
        .header("content-type", "application/json")
        .body("{\"events\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "invalid_json", "{answer}");
    assert_eq!(api.room("bl").await["head"], 0, "nothing was appended");
    // Within the limits, the batch goes through.
    let three: Vec<Value> = (0..3).map(event).collect();
    assert_eq!(
        post_batch(&server, &json!({"events": three}), None).await.0,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_the_publish_rate_count_every_event() {
    let config = format!(
        "{FAST}[[auth.api_keys]]\nkey = \"k-market-0123456789\"\nname = \"market\"\nrooms = [\"market:*\"]\n[rate_limits]\npublishes_per_key_per_second = 4\n"
    );
    let server = Server::start(&config).await;
    let api = server.api();
    let post = |body: Value| {
        let api = api.clone();
        async move {
            let response = api
                .http
                .post(format!("{}/v1/events", api.base))
                .bearer_auth("k-market-0123456789")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let head = || {
        let api = api.clone();
        async move {
            let response = api
                .http
                .get(format!("{}/v1/rooms/market:1", api.base))
                .bearer_auth("k-market-0123456789")
                .send()
                .await
                .unwrap();
            let stats: Value = response.json().await.unwrap();
            stats["head"].as_u64().unwrap_or_else(|| panic!("{stats}"))
        }
    };
    // One room outside the key's grant refuses the whole batch.
    let (status, answer) = post(json!({"events": [
        {"room": "market:1", "data": 1},
        {"room": "portfolio:1", "data": 1},
    ]}))
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );
    // A batch of more events than the rate allows at once is refused whole.
    let five: Vec<Value> = (0..5)
        .map(|n| json!({"room": "market:1", "data": n}))
        .collect();
    let (status, answer) = post(json!({ "events": five })).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (429, Some("rate_limited")),
        "{answer}"
    );
    assert_eq!(head().await, 0);
    // Batches are counted event by event: a batch of four takes the whole
    // one-second budget, so one of the batches of four sent back to back is
    // refused (only a second between two of them would refill it).
    let four: Vec<Value> = (0..4)
        .map(|n| json!({"room": "market:1", "data": n}))
        .collect();
    let mut accepted = 0;
    let mut limited = 0;
    for _ in 0..5 {
        let (status, answer) = post(json!({ "events": four.clone() })).await;
        match status {
            201 => accepted += 1,
            429 => limited += 1,
            _ => panic!("unexpected {status}: {answer}"),
        }
    }
    assert!(
        accepted >= 1 && limited >= 1,
        "{accepted} accepted, {limited} limited"
    );
    assert_eq!(head().await, 4 * accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_batch_gets_one_ack_or_one_error() {
    let server = Server::start(FAST).await;
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    let batch = json!({"type": "publish_batch", "id": "b-1", "events": [
        {"room": "bs-a", "data": {"n": 1}},
        {"room": "bs-b", "data": {"n": 2}, "expected_seq": 0},
        {"room": "bs-a", "data": {"n": 3}},
    ]});
    ws.send_json(batch.clone()).await;
    let ack = ws.expect_type("batch_ack").await;
    assert_eq!(ack["id"], "b-1", "{ack}");
    assert_eq!(
        receipts(&ack),
        owned(&[("bs-a", 1), ("bs-b", 1), ("bs-a", 2)])
    );
    // The id is the batch's idempotency key: resending it appends nothing.
    ws.send_json(batch).await;
    assert_eq!(ws.expect_type("batch_ack").await, ack);
    ws.send_json(json!({"type": "publish_batch", "id": "b-2", "events": [
        {"room": "bs-a", "data": 4},
        {"room": "bs-b", "data": 5, "expected_seq": 0},
    ]}))
    .await;
    let error = ws.expect_type("error").await;
    assert_eq!(
        (
            error["code"].as_str(),
            error["id"].as_str(),
            error["index"].as_u64(),
            error["room"].as_str(),
            error["head"].as_u64()
        ),
        (
            Some("conflict"),
            Some("b-2"),
            Some(1),
            Some("bs-b"),
            Some(1)
        ),
        "{error}"
    );
    ws.send_json(json!({"type": "publish_batch", "id": "b-3", "events": []}))
        .await;
    let error = ws.expect_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("bad_request"), Some("b-3"))
    );
    assert_eq!(server.api().room("bs-a").await["head"], 2);
}

/// `kill -9` while several publishers stream batches: after the restart
/// every batch is in the log whole or not at all, in request order, and
/// every acknowledged batch is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_stream_of_batches_leaves_each_batch_whole() {
    const ROOMS: [&str; 3] = ["bk-a", "bk-b", "bk-c"];
    let mut server = Server::start(FAST).await;
    let api = server.api();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..3u64)
        .map(|publisher| {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch = publisher * 1_000_000 + n;
                    n += 1;
                    // 2 to 6 events over the three rooms, one room twice.
                    let size = 2 + (batch % 5) as usize;
                    let events: Vec<Value> = (0..size)
                        .map(|i| json!({"room": ROOMS[(batch as usize + i) % 3], "data": {"batch": batch, "i": i, "size": size}}))
                        .collect();
                    let sent = api
                        .http
                        .post(format!("{}/v1/events", api.base))
                        .json(&json!({ "events": events }))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status().as_u16() == 201 => acked.push(batch),
                        Ok(response) => panic!("unexpected answer {}", response.status()),
                        // The server was killed under this request.
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    eventually("a few hundred events are in", || async {
        (api.room("bk-a").await["head"].as_u64().unwrap() > 200).then_some(())
    })
    .await;
    server.kill9().await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for publisher in publishers {
        acked.extend(within(PHASE, "a publisher stops", publisher).await.unwrap());
    }
    server.restart().await;
    let api = server.api();
    // batch -> (size, the `i`s found in request order of their room).
    let mut found: BTreeMap<u64, (usize, Vec<u64>)> = BTreeMap::new();
    for room in ROOMS {
        let events = api.all_events(room).await;
        assert_eq!(
            seqs(&events),
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "{room} is gapless"
        );
        let mut last_i: BTreeMap<u64, u64> = BTreeMap::new();
        for event in &events {
            let data = &event["data"];
            let (batch, i) = (data["batch"].as_u64().unwrap(), data["i"].as_u64().unwrap());
            if let Some(previous) = last_i.insert(batch, i) {
                assert!(previous < i, "batch {batch} keeps request order in {room}");
            }
            let entry = found
                .entry(batch)
                .or_insert((data["size"].as_u64().unwrap() as usize, Vec::new()));
            entry.1.push(i);
        }
    }
    for (batch, (size, mut items)) in found.iter().map(|(b, v)| (*b, v.clone())) {
        items.sort_unstable();
        assert_eq!(
            items,
            (0..size as u64).collect::<Vec<_>>(),
            "batch {batch} is whole"
        );
    }
    for batch in &acked {
        assert!(
            found.contains_key(batch),
            "acknowledged batch {batch} survived"
        );
    }
    assert!(
        acked.len() > 20,
        "the test streamed batches ({} acked)",
        acked.len()
    );
    eprintln!(
        "kill -9 test: {} batches acknowledged, {} in the log after the restart",
        acked.len(),
        found.len()
    );
}

/// `hubcast pub --stdin` with `input`; its exit status and stdout lines.
async fn pub_stdin(server: &Server, args: &[&str], input: String) -> (bool, Vec<Value>) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .arg("pub")
        .args(args)
        .arg("--stdin")
        .arg("--url")
        .arg(server.base())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("hubcast pub");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = within(PHASE, "hubcast pub --stdin", child.wait_with_output())
        .await
        .unwrap();
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (output.status.success(), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubcast_pub_reads_events_from_stdin_in_batches() {
    let server = Server::start(FAST).await;
    let input: String = (0..250)
        .map(|n| match n % 3 {
            0 => format!("{{\"room\":\"cli-b\",\"data\":{{\"n\":{n}}}}}\n"),
            _ => format!("{{\"n\":{n}}}\n"),
        })
        .collect();
    let (ok, answers) = pub_stdin(&server, &["cli-a", "--batch-size", "100"], input).await;
    assert!(ok, "{answers:?}");
    assert_eq!(answers.len(), 3, "250 events in batches of at most 100");
    let total: usize = answers
        .iter()
        .map(|a| a["events"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 250);
    let a = server.api().all_events("cli-a").await;
    let b = server.api().all_events("cli-b").await;
    let ns = |events: &[Value]| -> Vec<u64> {
        events
            .iter()
            .map(|e| e["data"]["n"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ns(&a), (0..250).filter(|n| n % 3 != 0).collect::<Vec<_>>());
    assert_eq!(ns(&b), (0..250).filter(|n| n % 3 == 0).collect::<Vec<_>>());
    // A refused batch stops it with a failure status, and appends nothing.
    let input = "{\"n\":1}\n{\"room\":\"cli-b\",\"data\":0,\"expected_seq\":0}\n".to_owned();
    let (ok, answers) = pub_stdin(&server, &["cli-a"], input).await;
    assert!(!ok);
    assert_eq!(answers[0]["error"], "conflict", "{answers:?}");
    assert_eq!(server.api().room("cli-a").await["head"], a.len());
}

/// A batch body is bounded by `limits.max_batch_bytes`, not by the body limit
/// of single publishes (the largest event and its envelope).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_body_may_exceed_the_single_publish_body_limit() {
    let config = format!("{FAST}[limits]\nmax_event_bytes = 1024\nmax_batch_bytes = 400000\n");
    let server = Server::start(&config).await;
    // 200 events of ~1000 bytes: ~200 KB, three times a single publish's 65 KiB.
    let pad = "p".repeat(1000);
    let events: Vec<Value> = (0..200)
        .map(|n| json!({"room": format!("bb-{}", n % 4), "data": pad}))
        .collect();
    let body = json!({ "events": events });
    assert!(body.to_string().len() > 64 * 1024 + 1024);
    let (status, answer) = post_batch(&server, &body, None).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(receipts(&answer).len(), 200);
    // Over max_batch_bytes: 413 before the body is read.
    let big: Vec<Value> = (0..450)
        .map(|_| json!({"room": "bb-0", "data": pad}))
        .collect();
    let (status, answer) = post_batch(&server, &json!({ "events": big }), None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("too_large")),
        "{answer}"
    );
}
