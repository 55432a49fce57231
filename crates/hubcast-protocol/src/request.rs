//! The shapes of HTTP requests that carry client bytes: the publish body and
//! the query strings. Parsed here so the fuzz targets exercise exactly the
//! code the server runs.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// `POST /v1/rooms/{room}/events` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    pub data: Box<RawValue>,
    pub expected_seq: Option<u64>,
}

/// Parses a publish body; the error carries its code (`invalid_json` for
/// broken JSON, `bad_request` for the wrong shape) and message.
pub fn parse_publish_body(body: &[u8]) -> Result<PublishBody, (ErrorCode, String)> {
    let body: PublishBody = serde_json::from_slice(body).map_err(|err| {
        let code = if err.is_data() { ErrorCode::BadRequest } else { ErrorCode::InvalidJson };
        (code, err.to_string())
    })?;
    crate::message::check_data(&body.data).map_err(|message| (ErrorCode::BadRequest, message))?;
    Ok(body)
}

/// `GET /v1/rooms/{room}/events?after=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

/// `GET /v1/rooms/{room}/ws?cursor=&epoch=&rewind=&presence=&token=`.
#[derive(Debug, Default, Deserialize)]
pub struct RoomSocketQuery {
    pub cursor: Option<u64>,
    pub epoch: Option<String>,
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

/// `GET /v1/rooms?after=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub struct RoomsQuery {
    pub after: Option<String>,
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
        assert_eq!((body.data.get(), body.expected_seq), (r#"{"a":1}"#, Some(3)));
        assert_eq!(parse_publish_body(b"{").unwrap_err().0, ErrorCode::InvalidJson);
        assert_eq!(parse_publish_body(br#"{"data":1,"x":2}"#).unwrap_err().0, ErrorCode::BadRequest);
        assert_eq!(parse_publish_body(br#"{"expected_seq":1}"#).unwrap_err().0, ErrorCode::BadRequest);
        assert_eq!(parse_publish_body(br#"{"data":[1, 2.5e99999]}"#).unwrap_err().0, ErrorCode::BadRequest);
    }

    #[test]
    fn queries() {
        let q: RoomSocketQuery = parse_query("cursor=5&epoch=abc&token=x.y.z").unwrap();
        assert_eq!((q.cursor, q.epoch.as_deref(), q.token.as_deref()), (Some(5), Some("abc"), Some("x.y.z")));
        assert!(parse_query::<HistoryQuery>("after=-1").is_err());
        assert!(parse_query::<HistoryQuery>("").is_ok());
    }
}
