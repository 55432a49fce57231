//! Query strings of the history, room socket, socket and rooms routes.
#![no_main]

use hubcast_protocol::request::{parse_query, HistoryQuery, RoomSocketQuery, RoomsQuery, SocketQuery};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let _ = parse_query::<HistoryQuery>(query);
    let _ = parse_query::<RoomSocketQuery>(query);
    let _ = parse_query::<SocketQuery>(query);
    let _ = parse_query::<RoomsQuery>(query);
});
