//! The bodies of `POST /v1/rooms/{room}/events` and `POST /v1/events` (the
//! same bytes are tried as both).
#![no_main]

use hubcast_protocol::batch::parse_batch_body;
use hubcast_protocol::request::parse_publish_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = parse_publish_body(data) {
        serde_json::from_str::<serde_json::Value>(body.data.get()).expect("raw data re-parses");
    }
    if let Ok(events) = parse_batch_body(data) {
        assert!(!events.is_empty(), "a batch holds at least one event");
        for event in events {
            serde_json::from_str::<serde_json::Value>(event.data.get()).expect("raw data re-parses");
        }
    }
});
