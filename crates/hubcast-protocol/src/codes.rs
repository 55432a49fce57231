//! Every client-visible error code and WebSocket close code, in one place.
//!
//! Close codes are split the way clients need them: codes after which a client
//! should reconnect and resume from its cursor, and terminal codes after which
//! reconnecting with the same credentials cannot help.

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

    /// Whether a client should reconnect (and resume) after this close code.
    pub fn should_reconnect(code: u16) -> bool {
        !matches!(code, UNAUTHENTICATED | FORBIDDEN | POLICY | TOO_BIG | PROTOCOL_ERROR | INVALID_DATA)
    }
}

/// Machine-readable error codes, used as `error` in HTTP JSON bodies and as
/// `code` in WebSocket `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The credentials do not grant this.
    Forbidden,
    /// A rate limit was exceeded; retry later.
    RateLimited,
    /// A capacity limit was reached; retry later.
    OverCapacity,
    /// The store could not be reached; retry later.
    StoreUnavailable,
    /// The node is shutting down.
    ShuttingDown,
    /// A bug or an unexpected failure; logged on the server.
    Internal,
}

impl ErrorCode {
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
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::OverCapacity => "over_capacity",
            ErrorCode::StoreUnavailable => "store_unavailable",
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
            ErrorCode::Unauthenticated | ErrorCode::TokenExpired => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::OverCapacity => 503,
            ErrorCode::StoreUnavailable | ErrorCode::ShuttingDown => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_policy_matches_the_documented_ranges() {
        for code in [close::GOING_AWAY, close::RESTART, close::TRY_AGAIN_LATER, close::RATE_LIMITED, close::SLOW_CONSUMER, close::HEARTBEAT_TIMEOUT] {
            assert!(close::should_reconnect(code), "{code}");
        }
        for code in [close::UNAUTHENTICATED, close::FORBIDDEN, close::POLICY, close::TOO_BIG, close::PROTOCOL_ERROR, close::INVALID_DATA] {
            assert!(!close::should_reconnect(code), "{code}");
        }
    }
}
