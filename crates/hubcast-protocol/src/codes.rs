//! Every client-visible error code and WebSocket close code, in one place,
//! with what a client does about each.
//!
//! Close codes are split the way clients need them: codes after which a client
//! should reconnect and resume from its cursor, and terminal codes after which
//! reconnecting with the same credentials cannot help. The server sends the
//! codes; the client SDKs read them back ([`CloseCode`], [`ReceivedErrorCode`])
//! and follow the policy written here ([`CloseCode::reconnect`],
//! [`ErrorCode::publish_is_retried`], [`ErrorCode::subscribe_is_retried`]).

use std::str::FromStr;

/// WebSocket close codes sent by hubcast (see docs/protocol.md).
pub mod close {
    /// The node is going away; resume elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// A malformed WebSocket frame (bad opcode, reserved bits, a bad continuation).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation, e.g. a binary frame where JSON text is expected.
    pub const POLICY: u16 = 1008;
    /// A frame was larger than the configured maximum.
    pub const TOO_BIG: u16 = 1009;
    /// The node is restarting (graceful shutdown); resume elsewhere at once.
    pub const RESTART: u16 = 1012;
    /// Over capacity; try again later with backoff.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// No or invalid credentials.
    pub const UNAUTHENTICATED: u16 = 4001;
    /// Credentials do not allow this.
    pub const FORBIDDEN: u16 = 4003;
    /// Too many messages or connects.
    pub const RATE_LIMITED: u16 = 4008;
    /// The session's outbound queue overflowed; resume from the cursor.
    pub const SLOW_CONSUMER: u16 = 4009;
    /// No frame from the client within `heartbeat.stale_ms`.
    pub const HEARTBEAT_TIMEOUT: u16 = 4010;
    /// An operator disconnected the user (`POST /v1/users/{user}/disconnect`):
    /// final, the client does not reconnect on its own.
    pub const DISCONNECTED: u16 = 4011;
    /// The session's token was revoked (`POST /v1/revocations`): final.
    pub const TOKEN_REVOKED: u16 = 4012;
    /// The application's connect hook could not decide (timeout, connection
    /// error, 5xx, an answer that is not one): refused fail-closed; try again
    /// later, the decision may be possible then.
    pub const AUTH_UNAVAILABLE: u16 = 4013;

    // Codes a client meets that hubcast never sends.

    /// A normal close: what a client sends when the application closes it.
    pub const NORMAL: u16 = 1000;
    /// A close frame without a code (RFC 6455 reserves 1005 for reporting it).
    pub const NO_STATUS: u16 = 1005;
    /// The connection dropped without a close frame, or never opened: never on
    /// the wire, reported by WebSocket implementations (RFC 6455).
    pub const ABNORMAL: u16 = 1006;
    /// What the client SDKs close a socket with when they give up on it
    /// themselves (connect timeout, heartbeat timeout).
    pub const ABANDONED: u16 = 4000;

    /// Whether a client should reconnect (and resume) after this close code.
    pub fn should_reconnect(code: u16) -> bool {
        super::CloseCode::from(code).reconnect() != super::Reconnect::Never
    }
}

/// A close code as a client reads it: one of hubcast's named codes, or any
/// other (1000, 1006, 1011, a newer server's…), which a client handles with
/// plain backoff. Converts from and to the numbers in [`close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    GoingAway,
    ProtocolError,
    InvalidData,
    Policy,
    TooBig,
    Restart,
    TryAgainLater,
    Unauthenticated,
    Forbidden,
    RateLimited,
    SlowConsumer,
    HeartbeatTimeout,
    Disconnected,
    TokenRevoked,
    AuthUnavailable,
    Other(u16),
}

/// What a client does after its socket closed (docs/clients.md, "Reconnect policy").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Reconnect with delay 0 if the closed session had received `welcome`
    /// (else back off: a node that restarts before greeting is no reason to hurry).
    AtOnce,
    /// Back off: exponential with full jitter.
    Backoff,
    /// Back off, waiting at least the client's `try_again_later` delay.
    TryAgainLater,
    /// Never: reconnecting as is cannot help. The client closes with
    /// [`CloseCode::terminal_error_code`] until the application acts.
    Never,
}

impl CloseCode {
    /// Every named code, for tests and tables.
    pub const NAMED: [CloseCode; 15] = [
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidData,
        CloseCode::Policy,
        CloseCode::TooBig,
        CloseCode::Restart,
        CloseCode::TryAgainLater,
        CloseCode::Unauthenticated,
        CloseCode::Forbidden,
        CloseCode::RateLimited,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::Disconnected,
        CloseCode::TokenRevoked,
        CloseCode::AuthUnavailable,
    ];

    /// The code on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::GoingAway => close::GOING_AWAY,
            CloseCode::ProtocolError => close::PROTOCOL_ERROR,
            CloseCode::InvalidData => close::INVALID_DATA,
            CloseCode::Policy => close::POLICY,
            CloseCode::TooBig => close::TOO_BIG,
            CloseCode::Restart => close::RESTART,
            CloseCode::TryAgainLater => close::TRY_AGAIN_LATER,
            CloseCode::Unauthenticated => close::UNAUTHENTICATED,
            CloseCode::Forbidden => close::FORBIDDEN,
            CloseCode::RateLimited => close::RATE_LIMITED,
            CloseCode::SlowConsumer => close::SLOW_CONSUMER,
            CloseCode::HeartbeatTimeout => close::HEARTBEAT_TIMEOUT,
            CloseCode::Disconnected => close::DISCONNECTED,
            CloseCode::TokenRevoked => close::TOKEN_REVOKED,
            CloseCode::AuthUnavailable => close::AUTH_UNAVAILABLE,
            CloseCode::Other(code) => code,
        }
    }

    /// The client's reconnect policy for this code.
    pub fn reconnect(self) -> Reconnect {
        match self {
            CloseCode::GoingAway | CloseCode::Restart => Reconnect::AtOnce,
            CloseCode::TryAgainLater | CloseCode::RateLimited | CloseCode::AuthUnavailable => {
                Reconnect::TryAgainLater
            }
            CloseCode::Unauthenticated
            | CloseCode::Forbidden
            | CloseCode::Policy
            | CloseCode::TooBig
            | CloseCode::ProtocolError
            | CloseCode::InvalidData
            | CloseCode::Disconnected
            | CloseCode::TokenRevoked => Reconnect::Never,
            CloseCode::SlowConsumer | CloseCode::HeartbeatTimeout | CloseCode::Other(_) => {
                Reconnect::Backoff
            }
        }
    }

    /// The error code a client SDK closes with after a terminal code
    /// ([`Reconnect::Never`]): `unauthenticated`, `forbidden`,
    /// `policy_violation`, `frame_too_big`, `protocol_error`,
    /// `invalid_data`, `disconnected` or `token_revoked`; `None` for the others.
    pub fn terminal_error_code(self) -> Option<&'static str> {
        match self {
            CloseCode::Unauthenticated => Some(ErrorCode::Unauthenticated.as_str()),
            CloseCode::Forbidden => Some(ErrorCode::Forbidden.as_str()),
            CloseCode::Policy => Some(sdk::POLICY_VIOLATION),
            CloseCode::TooBig => Some(sdk::FRAME_TOO_BIG),
            CloseCode::ProtocolError => Some(sdk::PROTOCOL_ERROR),
            CloseCode::InvalidData => Some(sdk::INVALID_DATA),
            CloseCode::Disconnected => Some(sdk::DISCONNECTED),
            CloseCode::TokenRevoked => Some(ErrorCode::TokenRevoked.as_str()),
            _ => None,
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode::NAMED
            .into_iter()
            .find(|named| named.as_u16() == code)
            .unwrap_or(CloseCode::Other(code))
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.as_u16()
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// The client SDKs' own error codes, besides the protocol's (docs/clients.md,
/// "Errors an application sees"): no server sends them; both SDKs surface
/// them with these names.
pub mod sdk {
    /// The client was closed, or closed for good after a close code.
    pub const CLOSED: &str = "closed";
    /// A publish was not acknowledged within its timeout (it may still be appended).
    pub const TIMEOUT: &str = "timeout";
    /// Too many publishes wait for an ack.
    pub const QUEUE_FULL: &str = "queue_full";
    /// The history route could not be read to heal a gap.
    pub const HISTORY_UNAVAILABLE: &str = "history_unavailable";
    /// The server sent a frame that is not JSON, or a malformed known message (ignored).
    pub const PROTOCOL_VIOLATION: &str = "protocol_violation";
    /// The application's token provider failed.
    pub const TOKEN_ERROR: &str = "token_error";
    /// Closed with 1008 (a binary frame where JSON text is expected).
    pub const POLICY_VIOLATION: &str = "policy_violation";
    /// Closed with 1009 (a frame over the server's limit).
    pub const FRAME_TOO_BIG: &str = "frame_too_big";
    /// Closed with 1002 (the client sent a malformed WebSocket frame).
    pub const PROTOCOL_ERROR: &str = "protocol_error";
    /// Closed with 1007 (the client sent text that is not UTF-8).
    pub const INVALID_DATA: &str = "invalid_data";
    /// An HTTP request did not get an answer (the Rust SDK's `http_publish`).
    pub const NETWORK_ERROR: &str = "network_error";
    /// Closed with 4011 (an operator disconnected the user).
    pub const DISCONNECTED: &str = "disconnected";
}

/// Machine-readable error codes, used as `error` in HTTP JSON bodies and as
/// `code` in WebSocket `error` frames. A new code goes into [`ErrorCode::ALL`]
/// as well (the tests check it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request or message is not valid JSON.
    InvalidJson,
    /// The message is JSON but not of a known shape (missing or mistyped field).
    BadRequest,
    /// A WebSocket message had an unknown `type`.
    UnknownType,
    /// The room name is empty, too long, or has characters outside the charset.
    InvalidRoom,
    /// A query parameter or header is malformed.
    InvalidParameter,
    /// The event or frame is larger than `limits.max_event_bytes`.
    TooLarge,
    /// `expected_seq` did not match the room's head.
    Conflict,
    /// The session already holds `limits.max_subscriptions` rooms.
    TooManySubscriptions,
    /// An idempotency key was reused with a different room, body or
    /// `expected_seq`: not a retry of the first publish.
    IdempotencyMismatch,
    /// The session is already subscribed to that room.
    AlreadySubscribed,
    /// The session is not subscribed to that room.
    NotSubscribed,
    /// No such route.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// Anonymous access from a non-loopback address, or bad credentials.
    Unauthenticated,
    /// The session's token expired; send a fresh one with an `auth` message.
    TokenExpired,
    /// The token was revoked by an operator; a new one must be issued.
    TokenRevoked,
    /// The credentials do not grant this.
    Forbidden,
    /// An ephemeral publish to a room whose namespace does not set
    /// `ephemeral = "allowed"` or `"only"`.
    EphemeralNotAllowed,
    /// A rate limit was exceeded; retry later.
    RateLimited,
    /// A capacity limit was reached; retry later.
    OverCapacity,
    /// The store could not be reached; retry later.
    StoreUnavailable,
    /// The application's auth hook could not decide (timeout, connection
    /// error, 5xx): refused fail-closed; retry later.
    AuthUnavailable,
    /// The node is shutting down.
    ShuttingDown,
    /// A bug or an unexpected failure; logged on the server.
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::InvalidJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidParameter,
        ErrorCode::TooLarge,
        ErrorCode::Conflict,
        ErrorCode::IdempotencyMismatch,
        ErrorCode::TooManySubscriptions,
        ErrorCode::AlreadySubscribed,
        ErrorCode::NotSubscribed,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthenticated,
        ErrorCode::TokenExpired,
        ErrorCode::TokenRevoked,
        ErrorCode::Forbidden,
        ErrorCode::EphemeralNotAllowed,
        ErrorCode::RateLimited,
        ErrorCode::OverCapacity,
        ErrorCode::StoreUnavailable,
        ErrorCode::AuthUnavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Conflict => "conflict",
            ErrorCode::IdempotencyMismatch => "idempotency_mismatch",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::EphemeralNotAllowed => "ephemeral_not_allowed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::OverCapacity => "over_capacity",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::AuthUnavailable => "auth_unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::BadRequest
            | ErrorCode::UnknownType
            | ErrorCode::InvalidRoom
            | ErrorCode::InvalidParameter
            | ErrorCode::TooManySubscriptions
            | ErrorCode::AlreadySubscribed
            | ErrorCode::NotSubscribed => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::Conflict => 409,
            ErrorCode::IdempotencyMismatch => 422,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unauthenticated | ErrorCode::TokenExpired | ErrorCode::TokenRevoked => 401,
            ErrorCode::Forbidden | ErrorCode::EphemeralNotAllowed => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::OverCapacity => 503,
            ErrorCode::StoreUnavailable | ErrorCode::AuthUnavailable | ErrorCode::ShuttingDown => {
                503
            }
            ErrorCode::Internal => 500,
        }
    }
}

impl ErrorCode {
    /// Whether a client resends a socket publish refused with this code (same
    /// id, after a backoff): nothing was appended, and a later try may succeed
    /// (docs/clients.md, "Publish"). Other codes fail the publish.
    pub fn publish_is_retried(self) -> bool {
        matches!(
            self,
            ErrorCode::StoreUnavailable
                | ErrorCode::AuthUnavailable
                | ErrorCode::ShuttingDown
                | ErrorCode::OverCapacity
                | ErrorCode::RateLimited
                | ErrorCode::TokenExpired
        )
    }

    /// Whether a client subscribes again (from its cursor, after a backoff)
    /// when a subscription is refused with this code: the refusal is for now
    /// (docs/clients.md, "Subscription errors"). After other codes the
    /// subscription is over on this socket (`already_subscribed` and
    /// `not_subscribed` aside, which restart it).
    pub fn subscribe_is_retried(self) -> bool {
        matches!(
            self,
            ErrorCode::StoreUnavailable
                | ErrorCode::AuthUnavailable
                | ErrorCode::OverCapacity
                | ErrorCode::RateLimited
        )
    }

    /// The `retry_after_ms` the server sends with a subscription refused with
    /// this code, when the refusal is for now ([`subscribe_is_retried`]):
    /// clients wait at least this long before they ask again, so a storm of
    /// refused subscribes does not come straight back as a storm of retries
    /// (the clients' own backoff and jitter spread them further).
    ///
    /// [`subscribe_is_retried`]: ErrorCode::subscribe_is_retried
    pub fn subscribe_retry_after_ms(self) -> Option<u64> {
        self.subscribe_is_retried()
            .then_some(SUBSCRIBE_RETRY_AFTER_MS)
    }
}

/// See [`ErrorCode::subscribe_retry_after_ms`].
pub const SUBSCRIBE_RETRY_AFTER_MS: u64 = 1000;

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of this version's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<ErrorCode, UnknownErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Refuses codes this version does not know; read [`ReceivedErrorCode`] where
/// a newer server's codes must pass.
impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ErrorCode, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

/// An error code as a client receives it: one this version knows, or a newer
/// server's, kept as sent so an older client reports it instead of refusing
/// the frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReceivedErrorCode {
    Known(ErrorCode),
    Unknown(String),
}

impl ReceivedErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ReceivedErrorCode::Known(code) => code.as_str(),
            ReceivedErrorCode::Unknown(code) => code,
        }
    }

    /// The code, if this version knows it.
    pub fn known(&self) -> Option<ErrorCode> {
        match self {
            ReceivedErrorCode::Known(code) => Some(*code),
            ReceivedErrorCode::Unknown(_) => None,
        }
    }
}

impl From<&str> for ReceivedErrorCode {
    fn from(code: &str) -> ReceivedErrorCode {
        code.parse().map_or_else(
            |_| ReceivedErrorCode::Unknown(code.to_owned()),
            ReceivedErrorCode::Known,
        )
    }
}

impl From<ErrorCode> for ReceivedErrorCode {
    fn from(code: ErrorCode) -> ReceivedErrorCode {
        ReceivedErrorCode::Known(code)
    }
}

impl PartialEq<ErrorCode> for ReceivedErrorCode {
    fn eq(&self, other: &ErrorCode) -> bool {
        self.known() == Some(*other)
    }
}

impl std::fmt::Display for ReceivedErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ReceivedErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ReceivedErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ReceivedErrorCode, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ReceivedErrorCode::from(&*code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_parses_back_from_its_string() {
        // A new variant fails to compile here until it has a place in this
        // list; the count then asks for it in `ErrorCode::ALL` too.
        let listed = |code: ErrorCode| match code {
            ErrorCode::InvalidJson
            | ErrorCode::BadRequest
            | ErrorCode::UnknownType
            | ErrorCode::InvalidRoom
            | ErrorCode::InvalidParameter
            | ErrorCode::TooLarge
            | ErrorCode::Conflict
            | ErrorCode::IdempotencyMismatch
            | ErrorCode::TooManySubscriptions
            | ErrorCode::AlreadySubscribed
            | ErrorCode::NotSubscribed
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Unauthenticated
            | ErrorCode::TokenExpired
            | ErrorCode::TokenRevoked
            | ErrorCode::Forbidden
            | ErrorCode::EphemeralNotAllowed
            | ErrorCode::RateLimited
            | ErrorCode::OverCapacity
            | ErrorCode::StoreUnavailable
            | ErrorCode::AuthUnavailable
            | ErrorCode::ShuttingDown
            | ErrorCode::Internal => true,
        };
        assert_eq!(ErrorCode::ALL.len(), 24);
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(listed(code) && seen.insert(code.as_str()), "{code}");
            assert_eq!(code.as_str().parse(), Ok(code));
            assert_eq!(
                ReceivedErrorCode::from(code.as_str()),
                ReceivedErrorCode::Known(code)
            );
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{code}\""));
            assert_eq!(
                serde_json::from_str::<ErrorCode>(&format!("\"{code}\"")).unwrap(),
                code
            );
        }
        assert_eq!(
            "teapot".parse::<ErrorCode>(),
            Err(UnknownErrorCode("teapot".into()))
        );
        assert!(serde_json::from_str::<ErrorCode>("\"teapot\"").is_err());
        // A newer server's code passes as itself.
        let newer: ReceivedErrorCode = serde_json::from_str("\"teapot\"").unwrap();
        assert_eq!(
            (newer.known(), newer.as_str(), newer.to_string()),
            (None, "teapot", "teapot".to_owned())
        );
        assert_eq!(serde_json::to_string(&newer).unwrap(), "\"teapot\"");
        assert_eq!(
            serde_json::from_str::<ReceivedErrorCode>("\"conflict\"").unwrap(),
            ErrorCode::Conflict
        );
    }

    #[test]
    fn close_codes_convert_both_ways() {
        for code in CloseCode::NAMED {
            assert_eq!(CloseCode::from(code.as_u16()), code);
            assert_eq!(u16::from(code), code.as_u16());
        }
        for code in [
            close::NORMAL,
            close::NO_STATUS,
            close::ABNORMAL,
            close::ABANDONED,
            1011,
            4999,
        ] {
            assert_eq!(CloseCode::from(code), CloseCode::Other(code));
            assert_eq!(
                CloseCode::from(code).reconnect(),
                Reconnect::Backoff,
                "{code}"
            );
        }
    }

    #[test]
    fn reconnect_policy_per_close_code() {
        use Reconnect::*;
        let table = [
            (close::GOING_AWAY, AtOnce, None),
            (close::RESTART, AtOnce, None),
            (close::TRY_AGAIN_LATER, TryAgainLater, None),
            (close::RATE_LIMITED, TryAgainLater, None),
            (close::AUTH_UNAVAILABLE, TryAgainLater, None),
            (close::SLOW_CONSUMER, Backoff, None),
            (close::HEARTBEAT_TIMEOUT, Backoff, None),
            (close::UNAUTHENTICATED, Never, Some("unauthenticated")),
            (close::FORBIDDEN, Never, Some("forbidden")),
            (close::POLICY, Never, Some("policy_violation")),
            (close::TOO_BIG, Never, Some("frame_too_big")),
            (close::PROTOCOL_ERROR, Never, Some("protocol_error")),
            (close::INVALID_DATA, Never, Some("invalid_data")),
            (close::DISCONNECTED, Never, Some("disconnected")),
            (close::TOKEN_REVOKED, Never, Some("token_revoked")),
        ];
        assert_eq!(table.len(), CloseCode::NAMED.len());
        for (code, policy, error) in table {
            let close_code = CloseCode::from(code);
            assert_eq!(
                (close_code.reconnect(), close_code.terminal_error_code()),
                (policy, error),
                "{code}"
            );
            assert_eq!(close::should_reconnect(code), policy != Never, "{code}");
        }
    }

    #[test]
    fn client_policy_per_error_code() {
        let mut publish: Vec<&str> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.publish_is_retried())
            .map(ErrorCode::as_str)
            .collect();
        publish.sort();
        assert_eq!(
            publish,
            [
                "auth_unavailable",
                "over_capacity",
                "rate_limited",
                "shutting_down",
                "store_unavailable",
                "token_expired"
            ]
        );
        let mut subscribe: Vec<&str> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.subscribe_is_retried())
            .map(ErrorCode::as_str)
            .collect();
        subscribe.sort();
        assert_eq!(
            subscribe,
            [
                "auth_unavailable",
                "over_capacity",
                "rate_limited",
                "store_unavailable"
            ]
        );
    }

    #[test]
    fn reconnect_policy_matches_the_documented_ranges() {
        for code in [
            close::GOING_AWAY,
            close::RESTART,
            close::TRY_AGAIN_LATER,
            close::RATE_LIMITED,
            close::SLOW_CONSUMER,
            close::HEARTBEAT_TIMEOUT,
            close::AUTH_UNAVAILABLE,
        ] {
            assert!(close::should_reconnect(code), "{code}");
        }
        for code in [
            close::UNAUTHENTICATED,
            close::FORBIDDEN,
            close::POLICY,
            close::TOO_BIG,
            close::PROTOCOL_ERROR,
            close::INVALID_DATA,
            close::DISCONNECTED,
            close::TOKEN_REVOKED,
        ] {
            assert!(!close::should_reconnect(code), "{code}");
        }
    }
}
