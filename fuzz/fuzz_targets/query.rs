//! Query strings of the history, room socket, socket, rooms and SSE routes,
//! and the SSE stream id (`Last-Event-ID`, also a query parameter).
#![no_main]

use hubcast_protocol::request::{
    parse_query, parse_sse_query, HistoryQuery, RoomSocketQuery, RoomsQuery, SocketQuery,
};
use hubcast_protocol::sse::{parse_stream_id, stream_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let _ = parse_query::<HistoryQuery>(query);
    let _ = parse_query::<RoomSocketQuery>(query);
    let _ = parse_query::<SocketQuery>(query);
    let _ = parse_query::<RoomsQuery>(query);
    let _ = parse_sse_query(query);
    for rooms in 1..=3 {
        if let Ok(cursors) = parse_stream_id(query, rooms) {
            // What was read is written back to an id that reads the same seqs.
            let again = parse_stream_id(&stream_id(&cursors), rooms).expect("a written id parses");
            let seqs = |c: &[hubcast_protocol::sse::RoomCursor]| c.iter().map(|r| r.seq).collect::<Vec<_>>();
            assert_eq!(seqs(&cursors), seqs(&again));
        }
    }
});
