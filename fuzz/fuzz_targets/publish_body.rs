//! The body of `POST /v1/rooms/{room}/events`.
#![no_main]

use hubcast_protocol::request::parse_publish_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = parse_publish_body(data) {
        serde_json::from_str::<serde_json::Value>(body.data.get()).expect("raw data re-parses");
    }
});
