//! Pusher's close and error codes, and how hubcast's close codes map onto
//! them. pusher-js acts on the range of a close code: 4000–4099 refused (it
//! does not reconnect), 4100–4199 reconnect after a backoff, 4200–4299
//! reconnect at once, other codes below 4000 reconnect.

use crate::protocol::codes::close;

/// The app key names no app.
pub const APP_NOT_FOUND: u16 = 4001;
/// Over the app's connection quota.
pub const OVER_QUOTA: u16 = 4004;
/// A protocol version Pusher never had, or none.
pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
pub const NO_PROTOCOL: u16 = 4008;
/// Unauthorized: a refused signature, or terminated by the app.
pub const UNAUTHORIZED: u16 = 4009;
/// Over capacity: reconnect after a backoff.
pub const OVER_CAPACITY: u16 = 4100;
/// Reconnect at once (the server restarts).
pub const RECONNECT: u16 = 4200;
/// No pong after the server's ping.
pub const PONG_TIMEOUT: u16 = 4201;
/// A client event over the rate, dropped: an error, not a close (Pusher's
/// 4300–4399 range is for errors that keep the connection).
pub const CLIENT_EVENT_RATE_LIMITED: u16 = 4301;

/// The close code a Pusher client is sent for a session closed with
/// hubcast's `code`: the same advice in Pusher's ranges. A slow consumer
/// (4009 in hubcast, "unauthorized" to Pusher) must reconnect, so it
/// becomes 4100; an operator's disconnect or a revoked sign-in must not, so
/// they become 4009.
pub fn close_code(code: u16) -> u16 {
    match code {
        close::SLOW_CONSUMER | close::TRY_AGAIN_LATER | close::RATE_LIMITED => OVER_CAPACITY,
        close::RESTART | close::GOING_AWAY => RECONNECT,
        close::HEARTBEAT_TIMEOUT => PONG_TIMEOUT,
        close::DISCONNECTED | close::TOKEN_REVOKED | close::UNAUTHENTICATED | close::FORBIDDEN => {
            UNAUTHORIZED
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubcast_codes_keep_their_advice_in_pushers_ranges() {
        // (hubcast code, Pusher code): reconnect codes stay reconnects,
        // final ones stay final.
        for (hubcast, pusher) in [
            (close::SLOW_CONSUMER, 4100),
            (close::TRY_AGAIN_LATER, 4100),
            (close::RATE_LIMITED, 4100),
            (close::RESTART, 4200),
            (close::GOING_AWAY, 4200),
            (close::HEARTBEAT_TIMEOUT, 4201),
            (close::DISCONNECTED, 4009),
            (close::TOKEN_REVOKED, 4009),
            (close::TOO_BIG, close::TOO_BIG),
            (close::POLICY, close::POLICY),
        ] {
            assert_eq!(close_code(hubcast), pusher, "{hubcast}");
        }
    }
}
