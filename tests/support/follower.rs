//! A resuming follower that checks the gapless-sequence guarantee ([`follow`]).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{within, STEP};

/// What a [`follow`] run saw.
#[derive(Debug, Default, Clone)]
pub struct Followed {
    /// Every event delivered, in order of arrival, across all connections.
    pub events: Vec<Value>,
    pub epoch: Option<String>,
    /// How many connections it took.
    pub connections: u32,
    /// Close codes the server sent.
    pub close_codes: Vec<u16>,
}

/// Follows `room` the way a well-behaved client does: connects with its cursor
/// (`cursor=SEQ&epoch=E`), checks every event is exactly the next seq, and
/// resumes after any disconnect until it has processed `upto`.
///
/// `drop_after(connection)` may return `Some(n)`: the client then drops that
/// connection itself after `n` more events (0: right after the upgrade).
pub async fn follow(
    server_ws: String,
    room: String,
    start: u64,
    upto: u64,
    mut drop_after: impl FnMut(u32) -> Option<usize> + Send,
) -> Followed {
    let mut seen = Followed::default();
    let mut last = start;
    while last < upto {
        seen.connections += 1;
        assert!(seen.connections < 10_000, "follower of {room} reconnected too often");
        let mut url = format!("{server_ws}/v1/rooms/{room}/ws?cursor={last}");
        if let Some(epoch) = &seen.epoch {
            url.push_str(&format!("&epoch={epoch}"));
        }
        let budget = drop_after(seen.connections);
        let connected = within(STEP, "a follower connect", tokio_tungstenite::connect_async(&url)).await;
        let Ok((mut socket, _)) = connected else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if budget == Some(0) {
            drop(socket);
            continue;
        }
        let mut taken = 0usize;
        loop {
            let next = within(STEP, &format!("a frame for the follower of {room} at {last}"), socket.next()).await;
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        seen.close_codes.push(u16::from(frame.code));
                    }
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            };
            let frame: Value = serde_json::from_str(text.as_str()).expect("frame is JSON");
            match frame["type"].as_str() {
                Some("welcome") | Some("caught_up") => {}
                Some("subscribed") => {
                    let epoch = frame["epoch"].as_str().expect("subscribed has an epoch").to_owned();
                    match &seen.epoch {
                        None => seen.epoch = Some(epoch),
                        Some(known) => assert_eq!(known, &epoch, "the epoch of {room} changed"),
                    }
                }
                Some("event") => {
                    let seq = frame["seq"].as_u64().expect("seq");
                    assert_eq!(seq, last + 1, "follower of {room}: expected seq {} got {frame}", last + 1);
                    last = seq;
                    seen.events.push(frame);
                    taken += 1;
                    if last >= upto || budget.is_some_and(|b| taken >= b) {
                        break;
                    }
                }
                _ => panic!("follower of {room}: unexpected frame {frame}"),
            }
        }
        if last < upto && budget.is_some_and(|b| taken >= b) && rand::random::<bool>() {
            // Half of the self-inflicted drops are polite, half just vanish.
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
        }
        drop(socket);
    }
    seen
}
