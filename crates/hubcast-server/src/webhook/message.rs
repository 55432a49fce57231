//! The body of a webhook, rendered once when it is recorded (so every retry
//! sends the same bytes under the same `webhook-id`):
//! `{"type": "...", "timestamp": "<RFC 3339>", "data": {"room": ..., ...}}`.

use serde::Serialize;
use serde_json::value::RawValue;

use super::EventKind;

/// A webhook to record in the store's outbox for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhook {
    /// The endpoint's name (its URL unless configured).
    pub endpoint: String,
    pub room: String,
    /// The `webhook-id`: kept across retries, so receivers can deduplicate.
    pub msg_id: String,
    pub body: String,
}

/// A new random `webhook-id`.
pub(super) fn new_msg_id() -> String {
    format!("msg_{:032x}", rand::random::<u128>())
}

/// The body of a message of `kind` at `ts_ms` with `data`.
pub(super) fn render(kind: EventKind, ts_ms: i64, data: &impl Serialize) -> String {
    #[derive(Serialize)]
    struct Body<'a, D> {
        #[serde(rename = "type")]
        kind: &'a str,
        timestamp: String,
        data: D,
    }
    serde_json::to_string(&Body {
        kind: kind.as_str(),
        timestamp: rfc3339_ms(ts_ms),
        data,
    })
    .expect("webhook bodies serialize")
}

/// `data` of an `event.published`: the event as a subscriber sees it, with
/// the room's epoch.
#[derive(Serialize)]
pub(super) struct Published<'a> {
    pub room: &'a str,
    pub seq: u64,
    pub epoch: &'a str,
    pub ts: i64,
    pub data: &'a RawValue,
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC, with milliseconds
/// (`2026-12-05T23:01:02.345Z`). Days to a civil date: Howard Hinnant's
/// `civil_from_days`.
pub fn rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_614_265_330_123), "2021-02-25T15:02:10.123Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn renders_the_body() {
        let data = RawValue::from_string(r#"{"x":1}"#.into()).unwrap();
        let body = render(
            EventKind::EventPublished,
            0,
            &Published {
                room: "a",
                seq: 2,
                epoch: "e",
                ts: 0,
                data: &data,
            },
        );
        assert_eq!(
            body,
            r#"{"type":"event.published","timestamp":"1970-01-01T00:00:00.000Z","data":{"room":"a","seq":2,"epoch":"e","ts":0,"data":{"x":1}}}"#
        );
    }
}
