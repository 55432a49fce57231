//! Atomic batch publishes: what an HTTP `POST /v1/events` and a socket
//! `publish_batch` both check before the store appends the batch in one
//! transaction. Each transport maps the refusal and the outcome to its own
//! answer (a status with a JSON body, an `error` or `batch_ack` frame).

use std::net::IpAddr;

use crate::auth::{Action, Principal};
use crate::limits::rate_key;
use crate::metrics::note_refusal;
use crate::node::Node;
use crate::protocol::batch::BatchEventRequest;
use crate::protocol::codes::ErrorCode;
use crate::store::{BatchItem, BatchRequest};

/// Why a batch is refused before the store sees it.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// The room of the item refused, when one item is to blame.
    pub room: Option<String>,
}

/// Admits a batch or refuses it whole: at most `limits.max_batch_events`
/// events, each within its room's event size, the caller's publish grant on
/// every room, and one publish per event against the caller's publish rate
/// (so batching is no way around the rate limit; a batch over the rate's
/// one-second burst is always refused).
pub fn admit(
    node: &Node,
    principal: &Principal,
    ip: IpAddr,
    events: &[BatchEventRequest],
) -> Result<(), Refusal> {
    let max_events = node.config.limits.max_batch_events;
    if events.len() > max_events {
        return Err(Refusal {
            code: ErrorCode::TooLarge,
            message: format!(
                "the batch holds {} events, over the limit of {max_events}",
                events.len()
            ),
            room: None,
        });
    }
    for (index, event) in events.iter().enumerate() {
        let max = node.max_event_bytes(&event.room);
        if event.data.get().len() > max {
            return Err(Refusal {
                code: ErrorCode::TooLarge,
                message: format!("events[{index}].data is larger than {max} bytes"),
                room: Some(event.room.to_string()),
            });
        }
    }
    let mut checked: Vec<&crate::room::RoomName> = Vec::new();
    for event in events {
        if checked.contains(&&event.room) {
            continue;
        }
        if let Err(err) = node.auth.authorize(principal, Action::Publish, &event.room) {
            let code = err.code();
            note_refusal(code.as_str(), ip, &err.to_string());
            return Err(Refusal {
                code,
                message: format!("{}: {err}", event.room),
                room: Some(event.room.to_string()),
            });
        }
        checked.push(&event.room);
    }
    if let Err(refusal) = node
        .limits
        .check_publishes(|| rate_key(principal, ip), events.len())
    {
        note_refusal(ErrorCode::RateLimited.as_str(), ip, &refusal.to_string());
        return Err(Refusal {
            code: ErrorCode::RateLimited,
            message: format!("{refusal} (a batch counts one publish per event)"),
            room: None,
        });
    }
    Ok(())
}

/// The store's request for an admitted batch.
pub fn request(
    events: Vec<BatchEventRequest>,
    idem_key: Option<String>,
    origin: Option<u64>,
) -> BatchRequest {
    BatchRequest {
        events: events
            .into_iter()
            .map(|event| BatchItem {
                room: event.room,
                data: event.data,
                expected_seq: event.expected_seq,
            })
            .collect(),
        idem_key,
        origin,
    }
}
