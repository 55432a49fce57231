//! Every WebSocket text frame a client sends goes through `parse_client_message`.
#![no_main]

use hubcast_protocol::{encode_error, parse_client_message, ClientMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_client_message(text) {
        Ok(ClientMessage::Subscribe(request)) => {
            assert!(hubcast_protocol::room::RoomName::parse(&request.room).is_ok());
        }
        Ok(ClientMessage::Publish(request)) => {
            assert!(!request.id.is_empty() && request.id.len() <= hubcast_protocol::MAX_ID_LEN);
            // The raw data is valid JSON on its own.
            serde_json::from_str::<serde_json::Value>(request.data.get()).expect("raw data re-parses");
        }
        Ok(ClientMessage::PublishBatch { id, events }) => {
            assert!(!id.is_empty() && id.len() <= hubcast_protocol::MAX_ID_LEN);
            assert!(!events.is_empty());
            for event in events {
                serde_json::from_str::<serde_json::Value>(event.data.get()).expect("raw data re-parses");
            }
        }
        Ok(_) => {}
        Err(err) => {
            // Every refusal encodes to a valid JSON error frame.
            let frame = encode_error(&err, None);
            serde_json::from_str::<serde_json::Value>(&frame).expect("error frame is JSON");
        }
    }
});
