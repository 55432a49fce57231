//! Server-Sent Events: how a stream's `id:` carries every room's cursor, and
//! how one SSE event is written.
//!
//! An SSE stream follows a fixed list of rooms (the URL's). Its `id` is the
//! cursor of each of them, so a reconnect with `Last-Event-ID` resumes every
//! room exactly:
//!
//! ```text
//! id = epochs "/" entry *("," entry)      one entry per room, in URL order
//! epochs = epoch *("," epoch)             the distinct epochs, first use first
//! entry = "-" | seq | seq "." index       "-": no position (the URL decides);
//!                                         seq alone: epoch 0; index: epochs[index]
//! ```
//!
//! `9f1c…/42` is one room at seq 42 of epoch `9f1c…`; `e1,e2/42,-,7.1` three
//! rooms. An empty epoch is "not known" (a cursor given without one). Rooms
//! have distinct epochs, so an id costs about 20 bytes per room plus its seq's
//! digits: 64 rooms (the SSE default cap) fit in ~2 KB, under every common
//! header limit (nginx reads 8 KB lines).

use std::fmt::Write as _;

/// One room's position in a stream id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomCursor {
    /// The room's epoch, when known.
    pub epoch: Option<String>,
    /// The last seq the client has, when it has a position in the room.
    pub seq: Option<u64>,
}

/// Why a `Last-Event-ID` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("Last-Event-ID is not a hubcast stream id (expected EPOCHS/ENTRIES)")]
    Shape,
    #[error("Last-Event-ID has {found} room entries but this stream has {expected} rooms")]
    RoomCount { found: usize, expected: usize },
    #[error("Last-Event-ID entry `{0}` is not `-`, SEQ or SEQ.INDEX")]
    Entry(String),
    #[error("Last-Event-ID refers to epoch {0}, which it does not list")]
    Index(usize),
}

/// Whether an epoch can be written into an id as it is. Server epochs are
/// hex; anything else is written as "not known".
fn id_safe(epoch: &str) -> bool {
    epoch
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Appends the stream id of `rooms` (in URL order) to `out`.
pub fn write_stream_id(out: &mut String, rooms: &[RoomCursor]) {
    // Few distinct epochs per stream: a linear search beats a map here.
    let mut epochs: Vec<&str> = Vec::new();
    let mut indexes: Vec<Option<usize>> = Vec::with_capacity(rooms.len());
    for room in rooms {
        indexes.push(room.seq.map(|_| {
            let epoch = room.epoch.as_deref().filter(|e| id_safe(e)).unwrap_or("");
            epochs.iter().position(|e| *e == epoch).unwrap_or_else(|| {
                epochs.push(epoch);
                epochs.len() - 1
            })
        }));
    }
    out.push_str(&epochs.join(","));
    out.push('/');
    for (i, (room, index)) in rooms.iter().zip(indexes).enumerate() {
        if i > 0 {
            out.push(',');
        }
        match (room.seq, index) {
            (Some(seq), Some(0)) => {
                let _ = write!(out, "{seq}");
            }
            (Some(seq), Some(index)) => {
                let _ = write!(out, "{seq}.{index}");
            }
            _ => out.push('-'),
        }
    }
}

/// The stream id of `rooms`.
pub fn stream_id(rooms: &[RoomCursor]) -> String {
    let mut out = String::new();
    write_stream_id(&mut out, rooms);
    out
}

/// Reads a stream id for a stream of `rooms` rooms.
pub fn parse_stream_id(id: &str, rooms: usize) -> Result<Vec<RoomCursor>, StreamIdError> {
    let (epochs, entries) = id.trim().split_once('/').ok_or(StreamIdError::Shape)?;
    let epochs: Vec<&str> = epochs.split(',').collect();
    let entries: Vec<&str> = entries.split(',').collect();
    if entries.len() != rooms {
        return Err(StreamIdError::RoomCount {
            found: entries.len(),
            expected: rooms,
        });
    }
    entries
        .into_iter()
        .map(|entry| {
            if entry == "-" {
                return Ok(RoomCursor::default());
            }
            let (seq, index) = match entry.split_once('.') {
                Some((seq, index)) => (seq, index.parse::<usize>().ok()),
                None => (entry, Some(0)),
            };
            let seq = seq
                .parse::<u64>()
                .ok()
                .filter(|&s| s <= crate::request::MAX_SEQ);
            let (Some(seq), Some(index)) = (seq, index) else {
                return Err(StreamIdError::Entry(entry.chars().take(40).collect()));
            };
            let epoch = epochs.get(index).ok_or(StreamIdError::Index(index))?;
            Ok(RoomCursor {
                epoch: (!epoch.is_empty()).then(|| (*epoch).to_owned()),
                seq: Some(seq),
            })
        })
        .collect()
}

/// Appends one SSE event to `out`: its name (none: the default `message`),
/// its id, and `data` (a line break in it starts another `data:` line, which
/// the client joins back with `\n`).
pub fn write_event(out: &mut Vec<u8>, name: Option<&str>, id: Option<&str>, data: &str) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix('\r').unwrap_or(line).as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The room and seq of an `event` frame as the server encodes it
/// (`{"type":"event","room":"…","seq":N,…`), read from its first bytes
/// without parsing the rest; `None` for any other frame or shape (the caller
/// then parses it). Room names need no escaping, so the name ends at the
/// first quote. An SSE stream reads every frame it sends: this keeps that
/// cost independent of the event's size.
pub fn peek_event(frame: &str) -> Option<(&str, u64)> {
    let rest = frame.strip_prefix(r#"{"type":"event","room":""#)?;
    let end = rest.find('"')?;
    let (room, rest) = rest.split_at(end);
    let rest = rest.strip_prefix(r#"","seq":"#)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let seq = rest[..digits].parse().ok()?;
    Some((room, seq))
}

/// The data of the `close` event, the last of a stream the server ends:
/// the close code a WebSocket would have been closed with, and the `error`
/// frame that said why, if one did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CloseEvent<T> {
    pub code: u16,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<T>,
}

/// Encodes a `close` event's data; `error` is the `error` frame as sent.
pub fn encode_close(code: u16, reason: &str, error: Option<&str>) -> String {
    let error = error.and_then(|e| serde_json::from_str::<&serde_json::value::RawValue>(e).ok());
    let close = CloseEvent {
        code,
        reason: reason.to_owned(),
        error,
    };
    serde_json::to_string(&close).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: Option<&str>, seq: Option<u64>) -> RoomCursor {
        RoomCursor {
            epoch: epoch.map(str::to_owned),
            seq,
        }
    }

    #[test]
    fn ids_round_trip() {
        let cases = [
            vec![at(Some("e1"), Some(42))],
            vec![
                at(Some("e1"), Some(42)),
                at(None, None),
                at(Some("e2"), Some(7)),
            ],
            vec![at(None, Some(5))],
            vec![at(Some("e1"), None), at(Some("e1"), Some(0))],
        ];
        for rooms in cases {
            let id = stream_id(&rooms);
            let mut back = parse_stream_id(&id, rooms.len()).unwrap();
            // An epoch without a position is not written.
            for (b, r) in back.iter_mut().zip(&rooms) {
                if r.seq.is_none() {
                    b.epoch = r.epoch.clone();
                }
            }
            assert_eq!(back, rooms, "{id}");
        }
        assert_eq!(
            stream_id(&[
                at(Some("e1"), Some(42)),
                at(None, None),
                at(Some("e2"), Some(7))
            ]),
            "e1,e2/42,-,7.1"
        );
        assert_eq!(stream_id(&[at(Some("a/b"), Some(3))]), "/3");
    }

    #[test]
    fn bad_ids() {
        assert_eq!(parse_stream_id("42", 1), Err(StreamIdError::Shape));
        assert!(matches!(
            parse_stream_id("e/1,2", 1),
            Err(StreamIdError::RoomCount {
                found: 2,
                expected: 1
            })
        ));
        assert!(matches!(
            parse_stream_id("e/x", 1),
            Err(StreamIdError::Entry(_))
        ));
        assert!(matches!(
            parse_stream_id("e/1.3", 1),
            Err(StreamIdError::Index(3))
        ));
        assert!(matches!(
            parse_stream_id("e/99999999999999999999", 1),
            Err(StreamIdError::Entry(_))
        ));
    }

    #[test]
    fn close_events() {
        let data = encode_close(
            4003,
            "subscription refused",
            Some(r#"{"type":"error","code":"forbidden","message":"no"}"#),
        );
        assert_eq!(
            data,
            r#"{"code":4003,"reason":"subscription refused","error":{"type":"error","code":"forbidden","message":"no"}}"#
        );
        let back: CloseEvent<crate::frame::ErrorFrame> = serde_json::from_str(&data).unwrap();
        assert_eq!(
            (back.code, back.error.unwrap().code.as_str()),
            (4003, "forbidden")
        );
        assert_eq!(
            encode_close(1012, "server restarting", None),
            r#"{"code":1012,"reason":"server restarting"}"#
        );
    }

    #[test]
    fn event_frames_are_peeked() {
        assert_eq!(
            peek_event(r#"{"type":"event","room":"a:b","seq":42,"ts":1,"data":{"seq":7}}"#),
            Some(("a:b", 42))
        );
        assert_eq!(
            peek_event(r#"{"type":"caught_up","room":"a","seq":3}"#),
            None
        );
        assert_eq!(peek_event(r#"{"room":"a","type":"event","seq":3}"#), None);
        assert_eq!(peek_event(r#"{"type":"event","room":"a","seq":}"#), None);
    }

    #[test]
    fn events() {
        let mut out = Vec::new();
        write_event(&mut out, Some("reset"), Some("e/1"), "{\"a\":\r\n1}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: reset\nid: e/1\ndata: {\"a\":\ndata: 1}\n\n"
        );
    }
}
