//! Atomic batch publishes: the body of `POST /v1/events` and the events of a
//! socket `publish_batch`. One shape for both, checked here item by item so
//! every refusal names the item (`events[3].room: …`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::ErrorCode;
use crate::room::RoomName;

/// One event of a batch, validated.
#[derive(Debug)]
pub struct BatchEventRequest {
    pub room: RoomName,
    pub data: Box<RawValue>,
    /// Append the batch only if the room's head is this seq when this item is
    /// appended (the batch's earlier items in the room count).
    pub expected_seq: Option<u64>,
}

/// One event of a batch as it comes in, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatchEvent {
    pub room: String,
    pub data: Box<RawValue>,
    #[serde(default, deserialize_with = "crate::request::json_seq")]
    pub expected_seq: Option<u64>,
}

/// One event of a batch, for encoding (the Rust client).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BatchEventOut<'a> {
    pub room: &'a str,
    pub data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

/// `POST /v1/events` body: `{"events": [{room, data, expected_seq?}, …]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    events: Vec<Box<RawValue>>,
}

/// Parses a batch body; the error carries its code (`invalid_json` for
/// broken JSON, `bad_request` for the wrong shape or an empty batch,
/// `invalid_room`, `invalid_parameter`) and a message naming the item.
pub fn parse_batch_body(body: &[u8]) -> Result<Vec<BatchEventRequest>, (ErrorCode, String)> {
    let shape = |err: serde_json::Error| {
        let code = if err.is_data() {
            ErrorCode::BadRequest
        } else {
            ErrorCode::InvalidJson
        };
        (code, err.to_string())
    };
    let is_object = body.trim_ascii_start().first() == Some(&b'{');
    let body: BatchBody = serde_json::from_slice(body).map_err(shape)?;
    // Serde reads a struct from a JSON array too (`["a", 1]`): only the
    // documented objects are a batch and its events.
    let not_object = |what: &str| {
        (
            ErrorCode::BadRequest,
            format!("{what} must be a JSON object"),
        )
    };
    if !is_object {
        return Err(not_object("the body"));
    }
    let mut events = Vec::with_capacity(body.events.len());
    for (index, raw) in body.events.iter().enumerate() {
        if !raw.get().starts_with('{') {
            return Err(not_object(&format!("events[{index}]")));
        }
        let event: RawBatchEvent = serde_json::from_str(raw.get())
            .map_err(shape)
            .map_err(|(code, message)| (code, format!("events[{index}]: {message}")))?;
        events.push(event);
    }
    check_batch(events)
}

/// Checks every item of a batch (room name, data readable, `expected_seq`
/// in range); a batch must hold at least one event.
pub fn check_batch(
    events: Vec<RawBatchEvent>,
) -> Result<Vec<BatchEventRequest>, (ErrorCode, String)> {
    if events.is_empty() {
        return Err((
            ErrorCode::BadRequest,
            "a batch holds at least one event".into(),
        ));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            let room = RoomName::parse(&event.room).map_err(|err| {
                (
                    ErrorCode::InvalidRoom,
                    format!("events[{index}].room: {err}"),
                )
            })?;
            crate::message::check_data(&event.data)
                .map_err(|message| (ErrorCode::BadRequest, format!("events[{index}].{message}")))?;
            if let Some(n) = event.expected_seq.filter(|&n| n > crate::request::MAX_SEQ) {
                return Err((
                    ErrorCode::InvalidParameter,
                    format!(
                        "events[{index}].expected_seq {n} is over the largest sequence number, {}",
                        crate::request::MAX_SEQ
                    ),
                ));
            }
            Ok(BatchEventRequest {
                room,
                data: event.data,
                expected_seq: event.expected_seq,
            })
        })
        .collect()
}

/// One receipt of an appended batch, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReceipt {
    pub room: String,
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Result<usize, ErrorCode> {
        parse_batch_body(body.as_bytes())
            .map(|events| events.len())
            .map_err(|(code, _)| code)
    }

    #[test]
    fn only_objects_are_batches_and_items() {
        assert_eq!(
            code(r#"[[{"room":"a","data":1}]]"#),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(code(r#"{"events":[["a",1]]}"#), Err(ErrorCode::BadRequest));
        let events = parse_batch_body(
            br#"{"events":[{"room":"a","data":1,"expected_seq":3873664417514874.0}]}"#,
        )
        .unwrap();
        assert_eq!(events[0].expected_seq, Some(3873664417514874));
    }

    #[test]
    fn batch_bodies() {
        assert_eq!(
            code(r#"{"events":[{"room":"a","data":1},{"room":"b","data":{},"expected_seq":0}]}"#),
            Ok(2)
        );
        assert_eq!(code(r#"{"events":[]}"#), Err(ErrorCode::BadRequest));
        assert_eq!(code(r#"{"events":"#), Err(ErrorCode::InvalidJson));
        assert_eq!(
            code(r#"{"events":[{"room":"a"}]}"#),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"events":[{"room":"a","data":1,"x":1}]}"#),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"events":[{"room":"a","data":1}],"x":1}"#),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"events":[{"room":"a b","data":1}]}"#),
            Err(ErrorCode::InvalidRoom)
        );
        assert_eq!(
            code(r#"{"events":[{"room":"a","data":1e999}]}"#),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"events":[{"room":"a","data":1,"expected_seq":9223372036854775808}]}"#),
            Err(ErrorCode::InvalidParameter)
        );
        let (_, message) =
            parse_batch_body(br#"{"events":[{"room":"a","data":1},{"room":"","data":1}]}"#)
                .unwrap_err();
        assert!(message.starts_with("events[1].room"), "{message}");
    }
}
