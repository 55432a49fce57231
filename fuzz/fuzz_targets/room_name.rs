//! Room names arrive in URL paths, messages and the outbox.
#![no_main]

use hubcast_protocol::pattern::pattern_matches;
use hubcast_protocol::room::{RoomName, MAX_ROOM_NAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(room) = RoomName::parse(text) {
        assert!(!room.is_empty() && room.len() <= MAX_ROOM_NAME_LEN);
        assert!(room.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:.@=".contains(&b)));
        assert!(pattern_matches(&room, &room));
        assert!(pattern_matches("*", &room));
    }
    // Patterns come from configuration and tokens: any split must be safe.
    if let Some((pattern, room)) = text.split_once('\n') {
        let _ = pattern_matches(pattern, room);
    }
});
