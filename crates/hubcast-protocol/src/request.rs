//! The shapes of HTTP requests that carry client bytes: the publish body and
//! the query strings. Parsed here so the fuzz targets exercise exactly the
//! code the server runs.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// The largest sequence number: stores keep seqs in signed 64-bit columns,
/// so a larger `after`, `cursor` or `expected_seq` would wrap negative there.
/// Larger numbers are refused where they come in.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// An optional sequence number in a query string, at most [`MAX_SEQ`].
fn seq<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(deserializer)? {
        Some(n) if n > MAX_SEQ => Err(serde::de::Error::custom(format_args!(
            "{n} is over the largest sequence number, {MAX_SEQ}"
        ))),
        n => Ok(n),
    }
}

/// An optional count in a query string (`limit`), at most [`MAX_SEQ`]: no
/// page can be longer than a log, and the documented integer is 64-bit signed.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    match Option::<u64>::deserialize(deserializer)? {
        Some(n) if n > MAX_SEQ => Err(serde::de::Error::custom(format_args!(
            "{n} is over the largest count, {MAX_SEQ}"
        ))),
        n => Ok(n.map(|n| usize::try_from(n).unwrap_or(usize::MAX))),
    }
}

/// An optional sequence number in a JSON body: an integer, written with or
/// without a zero fraction (`7` or `7.0`: JSON Schema's integer, which is
/// what the OpenAPI description promises). Range is checked by the caller.
pub(crate) fn json_seq<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= MAX_SEQ as f64 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format_args!(
            "expected_seq {number} is not a sequence number (0 to {MAX_SEQ})"
        ))),
    }
}

/// `POST /v1/rooms/{room}/events` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    pub data: Box<RawValue>,
    #[serde(default, deserialize_with = "json_seq")]
    pub expected_seq: Option<u64>,
    /// Deliver to the room's current subscribers only (never stored, no seq).
    /// `null` is the same as leaving it out.
    #[serde(default, deserialize_with = "null_is_false")]
    pub ephemeral: bool,
}

/// An optional flag: absent or `null` is `false`.
fn null_is_false<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
}

/// Parses a publish body; the error carries its code (`invalid_json` for
/// broken JSON, `bad_request` for the wrong shape) and message.
pub fn parse_publish_body(body: &[u8]) -> Result<PublishBody, (ErrorCode, String)> {
    // Serde reads a struct from a JSON array too (`[data, expected_seq]`):
    // only the documented object is a publish body.
    let is_object = body.trim_ascii_start().first() == Some(&b'{');
    let body: PublishBody = serde_json::from_slice(body).map_err(|err| {
        let code = if err.is_data() {
            ErrorCode::BadRequest
        } else {
            ErrorCode::InvalidJson
        };
        (code, err.to_string())
    })?;
    if !is_object {
        return Err((
            ErrorCode::BadRequest,
            "the body must be a JSON object: {\"data\": …}".to_owned(),
        ));
    }
    crate::message::check_data(&body.data).map_err(|message| (ErrorCode::BadRequest, message))?;
    if let Some(n) = body.expected_seq.filter(|&n| n > MAX_SEQ) {
        return Err((
            ErrorCode::InvalidParameter,
            format!("expected_seq {n} is over the largest sequence number, {MAX_SEQ}"),
        ));
    }
    if body.ephemeral && body.expected_seq.is_some() {
        return Err((
            ErrorCode::BadRequest,
            crate::message::EPHEMERAL_WITH_EXPECTED_SEQ.to_owned(),
        ));
    }
    Ok(body)
}

/// The `Idempotency-Key` header of a publish: 1 to [`MAX_ID_LEN`] visible
/// ASCII characters (`!` to `~`: no space, no control, nothing else).
///
/// [`MAX_ID_LEN`]: crate::message::MAX_ID_LEN
pub fn idempotency_key(value: &[u8]) -> Result<&str, (ErrorCode, String)> {
    let max = crate::message::MAX_ID_LEN;
    let visible = |b: &u8| (0x21..=0x7e).contains(b);
    if value.is_empty() || value.len() > max || !value.iter().all(visible) {
        return Err((
            ErrorCode::InvalidParameter,
            format!("Idempotency-Key must be 1 to {max} visible ASCII characters"),
        ));
    }
    // Visible ASCII is UTF-8.
    std::str::from_utf8(value).map_err(|err| (ErrorCode::InvalidParameter, err.to_string()))
}

/// `GET /v1/rooms/{room}/events?after=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    #[serde(default, deserialize_with = "seq")]
    pub after: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub limit: Option<usize>,
}

/// `GET /v1/rooms/{room}/ws?cursor=&epoch=&rewind=&presence=&token=`.
#[derive(Debug, Default, Deserialize)]
pub struct RoomSocketQuery {
    #[serde(default, deserialize_with = "seq")]
    pub cursor: Option<u64>,
    pub epoch: Option<String>,
    #[serde(default, deserialize_with = "seq")]
    pub rewind: Option<u64>,
    /// `true`: enter the room's presence (as `subscribe {presence: true}`).
    pub presence: Option<bool>,
    pub token: Option<String>,
}

/// `GET /v1/ws?token=`.
#[derive(Debug, Default, Deserialize)]
pub struct SocketQuery {
    pub token: Option<String>,
}

/// The query of an SSE stream: `GET /v1/sse?room=a&room=b…` and
/// `GET /v1/rooms/{room}/sse`, both with `cursor=&epoch=&rewind=&token=&lastEventId=`.
/// `cursor`, `epoch` and `rewind` apply to every room of the stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseQuery {
    /// The `room` parameters, in order (`/v1/sse` only).
    pub rooms: Vec<String>,
    pub cursor: Option<u64>,
    pub epoch: Option<String>,
    pub rewind: Option<u64>,
    pub token: Option<String>,
    /// `Last-Event-ID` for clients that cannot set headers.
    pub last_event_id: Option<String>,
}

/// Parses an SSE stream's query string (without the `?`). A repeated
/// parameter other than `room`, or an unknown one, is an error.
pub fn parse_sse_query(query: &str) -> Result<SseQuery, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|err| err.to_string())?;
    let mut out = SseQuery::default();
    let number = |key: &str, value: &str| -> Result<u64, String> {
        match value.parse::<u64>() {
            Ok(n) if n <= MAX_SEQ => Ok(n),
            Ok(n) => Err(format!(
                "{key}: {n} is over the largest sequence number, {MAX_SEQ}"
            )),
            Err(_) => Err(format!("{key}: `{value}` is not a non-negative integer")),
        }
    };
    for (key, value) in pairs {
        let repeated = |set: bool| -> Result<(), String> {
            if set {
                Err(format!("{key} is given twice"))
            } else {
                Ok(())
            }
        };
        match key.as_str() {
            "room" => out.rooms.push(value),
            "cursor" => {
                repeated(out.cursor.is_some())?;
                out.cursor = Some(number("cursor", &value)?);
            }
            "rewind" => {
                repeated(out.rewind.is_some())?;
                out.rewind = Some(number("rewind", &value)?);
            }
            "epoch" => {
                repeated(out.epoch.is_some())?;
                out.epoch = Some(value);
            }
            "token" => {
                repeated(out.token.is_some())?;
                out.token = Some(value);
            }
            "lastEventId" => {
                repeated(out.last_event_id.is_some())?;
                out.last_event_id = Some(value);
            }
            other => return Err(format!("unknown query parameter `{other}`")),
        }
    }
    Ok(out)
}

/// `GET /v1/rooms?after=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub struct RoomsQuery {
    pub after: Option<String>,
    #[serde(default, deserialize_with = "count")]
    pub limit: Option<usize>,
}

/// Parses a query string (without the `?`) into one of the query shapes.
pub fn parse_query<T: for<'de> Deserialize<'de>>(query: &str) -> Result<T, String> {
    serde_urlencoded::from_str(query).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bodies() {
        let body = parse_publish_body(br#"{"data":{"a":1},"expected_seq":3}"#).unwrap();
        assert_eq!(
            (body.data.get(), body.expected_seq),
            (r#"{"a":1}"#, Some(3))
        );
        let body = parse_publish_body(br#"{"data":1,"ephemeral":true}"#).unwrap();
        assert!(body.ephemeral && body.expected_seq.is_none());
        assert_eq!(
            parse_publish_body(br#"{"data":1,"ephemeral":true,"expected_seq":0}"#)
                .unwrap_err()
                .0,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse_publish_body(b"{").unwrap_err().0,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_publish_body(br#"{"data":1,"x":2}"#).unwrap_err().0,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse_publish_body(br#"{"expected_seq":1}"#).unwrap_err().0,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse_publish_body(br#"{"data":[1, 2.5e99999]}"#)
                .unwrap_err()
                .0,
            ErrorCode::BadRequest
        );
        let body = parse_publish_body(br#"{"data":1,"expected_seq":7.0}"#).unwrap();
        assert_eq!(body.expected_seq, Some(7));
        // Exactly, where the fast float parser was one ULP off (Schemathesis).
        let body = parse_publish_body(br#"{"data":1,"expected_seq":3873664417514874.0}"#).unwrap();
        assert_eq!(body.expected_seq, Some(3873664417514874));
        // `"ephemeral": null` is leaving it out.
        let body = parse_publish_body(br#"{"data":1,"ephemeral":null}"#).unwrap();
        assert!(!body.ephemeral);
        for bad in ["7.5", "-1", "-1.0", "1e300", "\"7\""] {
            let body = format!(r#"{{"data":1,"expected_seq":{bad}}}"#);
            assert_eq!(
                parse_publish_body(body.as_bytes()).unwrap_err().0,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        // A struct from an array is serde's, not the documented body.
        assert_eq!(
            parse_publish_body(b" [null, null]").unwrap_err().0,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn queries() {
        let q: RoomSocketQuery = parse_query("cursor=5&epoch=abc&token=x.y.z").unwrap();
        assert_eq!(
            (q.cursor, q.epoch.as_deref(), q.token.as_deref()),
            (Some(5), Some("abc"), Some("x.y.z"))
        );
        assert!(parse_query::<HistoryQuery>("after=-1").is_err());
        assert!(parse_query::<HistoryQuery>("").is_ok());
        let q: HistoryQuery = parse_query("limit=9223372036854775807").unwrap();
        assert_eq!(q.limit, Some(9223372036854775807));
        assert!(parse_query::<HistoryQuery>("limit=9223372036854775808").is_err());
        assert!(parse_query::<RoomsQuery>("limit=9223372036854775808").is_err());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert_eq!(
            idempotency_key(b"order-42:retry/1~!"),
            Ok("order-42:retry/1~!")
        );
        assert_eq!(idempotency_key(&[b'k'; 128]).map(str::len), Ok(128));
        for bad in [
            &b""[..],
            b"a b",
            b" a",
            b"a\t",
            b"caf\xc3\xa9",
            b"\x7f",
            &[b'k'; 129],
        ] {
            assert_eq!(
                idempotency_key(bad).map_err(|(code, _)| code),
                Err(ErrorCode::InvalidParameter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sequence_numbers_past_what_a_store_holds_are_refused() {
        let history = |q: &str| parse_query::<HistoryQuery>(q).map(|q| q.after);
        assert_eq!(history("after=9223372036854775807"), Ok(Some(MAX_SEQ)));
        for q in [
            "after=9223372036854775808",
            "after=18446744073709551614",
            "after=18446744073709551616",
        ] {
            assert!(history(q).is_err(), "{q}");
        }
        let socket = |q: &str| parse_query::<RoomSocketQuery>(q).map(|q| (q.cursor, q.rewind));
        assert_eq!(
            socket("cursor=9223372036854775807&rewind=3"),
            Ok((Some(MAX_SEQ), Some(3)))
        );
        assert!(socket("cursor=9223372036854775808").is_err());
        assert!(socket("rewind=18446744073709551615").is_err());
        let body = |b: &str| {
            parse_publish_body(b.as_bytes())
                .map(|b| b.expected_seq)
                .map_err(|(code, _)| code)
        };
        assert_eq!(
            body(r#"{"data":1,"expected_seq":9223372036854775807}"#),
            Ok(Some(MAX_SEQ))
        );
        assert_eq!(
            body(r#"{"data":1,"expected_seq":9223372036854775808}"#),
            Err(ErrorCode::InvalidParameter)
        );
        assert_eq!(
            body(r#"{"data":1,"expected_seq":18446744073709551615}"#),
            Err(ErrorCode::InvalidParameter)
        );
    }

    #[test]
    fn sse_queries() {
        let q =
            parse_sse_query("room=a&room=b&cursor=3&epoch=e&token=t&lastEventId=e%2F1").unwrap();
        assert_eq!(q.rooms, ["a", "b"]);
        assert_eq!(
            (q.cursor, q.epoch.as_deref(), q.rewind),
            (Some(3), Some("e"), None)
        );
        assert_eq!(q.last_event_id.as_deref(), Some("e/1"));
        assert!(parse_sse_query("cursor=1&cursor=2").is_err());
        assert!(parse_sse_query("cursor=x").is_err());
        assert!(parse_sse_query("cursor=9223372036854775808").is_err());
        assert!(parse_sse_query("nope=1").is_err());
        assert_eq!(parse_sse_query("").unwrap(), SseQuery::default());
    }
}
