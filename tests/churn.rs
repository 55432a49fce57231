//! Churn: eight publishers write 3,000 events to one room while four
//! subscribers keep dropping their connections at random points (mid-replay,
//! mid-live, right after the upgrade) and resume from their cursors
//! (`epoch` + `seq`). Each must end with exactly 1..=3000, in order, with no
//! duplicate — every connection's stream is checked event by event.

mod support;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use support::{range, seqs, within, Follower, Server, FAST, PHASE};

const TOTAL: u64 = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_keep_reconnecting_see_every_event_exactly_once() {
    let server = Server::start(&format!("{FAST}[hub]\ntail = 64\n")).await;
    let api = server.api();
    let room = "churn";
    let seed: u64 = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("churn seed {seed} (set CHURN_SEED to replay)");

    let followers: Vec<_> = (0..4u64)
        .map(|f| {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(f));
            Follower::new(server.ws_url(""), room, TOTAL)
                .drops(move |_connection| {
                    // Mostly short connections; sometimes drop at once, sometimes stay long.
                    Some(match rng.random_range(0..10) {
                        0 => 0,
                        1..=7 => rng.random_range(1..120),
                        _ => rng.random_range(120..1500),
                    })
                })
                .spawn()
        })
        .collect();

    let receipts = {
        let api = api.clone();
        tokio::spawn(async move {
            api.publish_many(room, TOTAL as usize, 8, |i| json!({"n": i, "by": i % 8}))
                .await
        })
    };
    let receipts = within(PHASE, "the publishers", receipts).await.unwrap();
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        range(1, TOTAL)
    );

    let history = api.all_events(room).await;
    assert_eq!(seqs(&history), range(1, TOTAL));
    for (i, follower) in followers.into_iter().enumerate() {
        let seen = within(PHASE, "a follower to reach the head", follower)
            .await
            .unwrap();
        assert_eq!(seqs(&seen.events), range(1, TOTAL), "follower {i}");
        for (event, stored) in seen.events.iter().zip(&history) {
            assert_eq!(
                event["data"], stored["data"],
                "follower {i}, seq {}",
                stored["seq"]
            );
        }
        assert!(
            seen.connections >= 3,
            "follower {i} should have reconnected several times"
        );
        assert!(
            seen.close_codes.iter().all(|c| *c == 4009),
            "follower {i} got close codes {:?}",
            seen.close_codes
        );
        eprintln!(
            "follower {i}: {} connections, server closes {:?}",
            seen.connections, seen.close_codes
        );
    }
}

/// The same guarantee while the room's hub keeps hibernating: with
/// `hub.idle_ms = 1`, a hub with no subscriber is dropped almost at once, so
/// reconnects keep landing on a hub that is stopping or newly started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_across_hub_hibernation_lose_nothing() {
    const EVENTS: u64 = 1000;
    let server = Server::start(&format!(
        "{FAST}[hub]\ntail = 16\nidle_ms = 1\nreconcile_ms = 20\n"
    ))
    .await;
    let room = "hibernate";
    let seed: u64 = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("hibernation seed {seed} (set CHURN_SEED to replay)");
    let followers: Vec<_> = (0..2u64)
        .map(|f| {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(100 + f));
            Follower::new(server.ws_url(""), room, EVENTS)
                .drops(move |_| Some(rng.random_range(0..40)))
                .spawn()
        })
        .collect();
    let receipts = server
        .api()
        .publish_many(room, EVENTS as usize, 2, |i| json!(i))
        .await;
    assert_eq!(receipts.last().map(|r| r.seq), Some(EVENTS));
    for (i, follower) in followers.into_iter().enumerate() {
        let seen = within(PHASE, "a follower to reach the head", follower)
            .await
            .unwrap();
        assert_eq!(seqs(&seen.events), range(1, EVENTS), "follower {i}");
        eprintln!("follower {i}: {} connections", seen.connections);
    }
}
