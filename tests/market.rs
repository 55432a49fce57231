//! The prediction-market demo (`hubcast demo`) against the real binary: the
//! stale-quote check happens inside the database transaction, so concurrent
//! buyers with the same quote commit exactly while the price is within their
//! tolerance; every committed trade is broadcast once, in a gapless sequence;
//! the market's state is the sum of its committed trades. Runs on SQLite, and
//! on PostgreSQL + NATS with `HUBCAST_TEST_BACKEND=cluster`.

mod support;

use std::collections::BTreeSet;

use hubcast_demo::market::{decide, seeds, BuyOrder};
use serde_json::{json, Value};
use support::{within, Server, Ws, FAST, PHASE};

const MARKET: &str = "mars-2030";
const ROOM: &str = "demo.market.mars-2030";

async fn market(api: &support::Api) -> Value {
    let (status, market) = api.get(&format!("/demo/api/markets/{MARKET}")).await;
    assert_eq!(status, 200, "{market}");
    market
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_buyers_with_one_quote_commit_exactly_within_tolerance() {
    // No simulated traders: the test is the only buyer.
    let server = Server::start_with(FAST, &["demo", "--traders", "0"]).await;
    let api = server.api();
    let start = market(&api).await;
    assert_eq!(start["version"], 0, "a fresh market: {start}");
    assert_eq!(start["room"], ROOM);

    // A subscriber, live from the room's head (its seed event).
    let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
    let subscribed = ws.subscribe(ROOM, json!({})).await;
    let head = subscribed["head"].as_u64().expect("head");

    // 50 buyers, all quoted the opening price, with a 4.5-point tolerance.
    let order = BuyOrder {
        outcome: 0,
        shares: 5.0,
        expected_price: 0.5,
        max_slippage: 0.045,
        expected_version: None,
    };
    // What a serial market does with the same 50 orders: the first k fill,
    // then the price is out of tolerance for everyone else.
    let mut simulated = seeds()
        .into_iter()
        .find(|m| m.id == MARKET)
        .expect("seed market");
    let mut expected_fills = 0;
    for _ in 0..50 {
        if let Ok(trade) = decide(&simulated, &order) {
            simulated = trade.after;
            expected_fills += 1;
        }
    }
    assert!(
        expected_fills > 1 && expected_fills < 50,
        "the test needs some fills and some refusals: {expected_fills}"
    );

    let body = serde_json::to_value(&order).unwrap();
    let buys: Vec<_> = (0..50)
        .map(|_| {
            let api = api.clone();
            let body = body.clone();
            tokio::spawn(async move {
                api.post_json(&format!("/demo/api/markets/{MARKET}/buy"), &body)
                    .await
            })
        })
        .collect();
    let mut fills = Vec::new();
    let mut refusals = Vec::new();
    for buy in buys {
        let (status, answer) = within(PHASE, "a buy", buy).await.expect("buy task");
        match status {
            200 => fills.push(answer),
            409 => refusals.push(answer),
            other => panic!("a buy answered {other}: {answer}"),
        }
    }
    assert_eq!(fills.len(), expected_fills, "fills: {fills:?}");
    assert_eq!(refusals.len(), 50 - expected_fills);
    for fill in &fills {
        let before = fill["trade"]["price_before"].as_f64().unwrap();
        assert!(
            (before - 0.5).abs() <= 0.045,
            "a fill outside the tolerance: {fill}"
        );
    }
    for refusal in &refusals {
        assert_eq!(refusal["error"], "stale_quote", "{refusal}");
        assert_eq!(refusal["refusal"]["reason"], "price_moved", "{refusal}");
        let current = refusal["current_price"].as_f64().unwrap();
        assert!(
            (current - 0.5).abs() > 0.045,
            "refused although within tolerance: {refusal}"
        );
    }
    let versions: BTreeSet<u64> = fills
        .iter()
        .map(|f| f["trade"]["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        (1..=expected_fills as u64).collect(),
        "one version per fill"
    );
    let fill_seqs: BTreeSet<u64> = fills.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        fill_seqs,
        (head + 1..=head + expected_fills as u64).collect(),
        "fills took the next seqs"
    );

    // A marker trade (any price) after the race: once the subscriber has it,
    // it has had every earlier event.
    let marker = json!({"outcome": 1, "shares": 1.0, "expected_price": 0.5, "max_slippage": 1.0});
    let (status, marker) = api
        .post_json(&format!("/demo/api/markets/{MARKET}/buy"), &marker)
        .await;
    assert_eq!(status, 200, "{marker}");
    let marker_seq = marker["seq"].as_u64().unwrap();
    let mut seen = Vec::new();
    within(PHASE, "the trades on the WebSocket", async {
        loop {
            let frame = ws.next_json().await;
            let events = match frame["type"].as_str() {
                Some("event") => vec![frame],
                Some("batch") => frame["events"].as_array().cloned().unwrap_or_default(),
                _ => continue,
            };
            for event in events {
                seen.push((event["seq"].as_u64().unwrap(), event["data"].clone()));
            }
            if seen.last().is_some_and(|(seq, _)| *seq >= marker_seq) {
                break;
            }
        }
    })
    .await;
    let seen_seqs: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seen_seqs,
        (head + 1..=marker_seq).collect::<Vec<_>>(),
        "each trade once, gapless, in order"
    );
    for fill in &fills {
        let seq = fill["seq"].as_u64().unwrap();
        let (_, data) = seen
            .iter()
            .find(|(s, _)| *s == seq)
            .expect("every fill was broadcast");
        assert_eq!(data, &fill["trade"], "the broadcast is the committed trade");
    }

    // The market is the sum of its committed trades.
    let end = market(&api).await;
    let all: Vec<&Value> = fills
        .iter()
        .chain(std::iter::once(&marker))
        .map(|f| &f["trade"])
        .collect();
    let mut shares = [0.0f64; 2];
    let mut volume = 0.0;
    for trade in &all {
        shares[trade["outcome"].as_u64().unwrap() as usize] += trade["shares"].as_f64().unwrap();
        volume += trade["cost"].as_f64().unwrap();
    }
    assert_eq!(end["version"].as_u64(), Some(all.len() as u64), "{end}");
    assert_eq!(end["shares"], json!(shares), "{end}");
    assert!(
        (end["volume"].as_f64().unwrap() - volume).abs() < 1e-9,
        "{end} vs {volume}"
    );
    assert_eq!(
        end["shares"][0].as_f64(),
        Some(simulated.shares[0]),
        "the same as the serial market"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_versions_and_bad_orders_are_refused_and_state_survives_a_restart() {
    let mut server = Server::start_with(FAST, &["demo", "--traders", "0"]).await;
    let api = server.api();
    let path = format!("/demo/api/markets/{MARKET}/buy");
    let (status, first) =
        api.post_json(&path, &json!({"outcome": 0, "shares": 2.0, "expected_price": 0.5, "max_slippage": 0.1, "expected_version": 0})).await;
    assert_eq!(status, 200, "{first}");
    // The same quote again: the price is within tolerance, but the version moved.
    let (status, stale) =
        api.post_json(&path, &json!({"outcome": 0, "shares": 2.0, "expected_price": 0.5, "max_slippage": 0.1, "expected_version": 0})).await;
    assert_eq!(status, 409, "{stale}");
    assert_eq!(
        (
            stale["refusal"]["reason"].as_str(),
            stale["current_version"].as_u64()
        ),
        (Some("stale_version"), Some(1)),
        "{stale}"
    );

    for bad in [
        json!({"outcome": 7, "shares": 1.0, "expected_price": 0.5, "max_slippage": 0.1}),
        json!({"outcome": 0, "shares": -1.0, "expected_price": 0.5, "max_slippage": 0.1}),
        json!({"outcome": 0, "shares": 1.0}),
    ] {
        let (status, answer) = api.post_json(&path, &bad).await;
        assert_eq!(status, 400, "{bad} → {answer}");
    }
    let (status, _) = api
        .post_json(
            "/demo/api/markets/nope/buy",
            &json!({"outcome": 0, "shares": 1.0, "expected_price": 0.5, "max_slippage": 0.1}),
        )
        .await;
    assert_eq!(status, 404);

    let before = market(&api).await;
    server.restart().await;
    let api = server.api();
    assert_eq!(
        market(&api).await,
        before,
        "the market survives a restart unchanged"
    );
    let history = api.history(ROOM, 0, 100).await;
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["reset", "trade"],
        "seeded once, one trade: {history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_traders_buy_through_the_same_path() {
    let server = Server::start_with(FAST, &["demo", "--traders", "4"]).await;
    let api = server.api();
    // Traders move prices on their own; wait until some market has trades.
    let (id, version) = support::eventually("a simulated trade", || {
        let api = api.clone();
        async move {
            let (_, body) = api.get("/demo/api/markets").await;
            body["markets"].as_array()?.iter().find_map(|m| {
                let version = m["version"].as_u64()?;
                (version >= 2).then(|| (m["id"].as_str().unwrap_or_default().to_owned(), version))
            })
        }
    })
    .await;
    // Each trader trade is a committed trade event in the market's room.
    let history = api.history(&format!("demo.market.{id}"), 0, 1000).await;
    let trades: Vec<u64> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["type"] == "trade")
        .map(|e| e["data"]["version"].as_u64().unwrap())
        .collect();
    assert!(trades.len() as u64 >= version, "{history}");
    assert_eq!(
        trades,
        (1..=trades.len() as u64).collect::<Vec<_>>(),
        "one event per version, in order"
    );
}

/// `hubcast demo` with no flag runs a few traders: a first visitor sees prices
/// move without buying anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_traders_by_default() {
    let server = Server::start_with(FAST, &["demo"]).await;
    let api = server.api();
    support::eventually("a trade nobody here made", || {
        let api = api.clone();
        async move {
            let (_, body) = api.get("/demo/api/markets").await;
            body["markets"]
                .as_array()?
                .iter()
                .any(|m| m["version"].as_u64() > Some(0))
                .then_some(())
        }
    })
    .await;
}
