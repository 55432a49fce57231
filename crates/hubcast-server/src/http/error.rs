//! HTTP errors: every refusal is a status with a JSON body `{error, message}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::throttle::LogThrottle;
use crate::protocol::codes::ErrorCode;
use crate::room::RoomNameError;
use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The room's head and epoch, on a 409 conflict.
    pub head: Option<(u64, String)>,
    /// On a batch's 409: the index of the item that conflicted, and its room.
    pub item: Option<(usize, String)>,
}

/// The JSON body of every refusal (`ApiError`, the 404/405 fallbacks, 408).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// The machine-readable code (docs/protocol.md, "Error codes").
    #[schema(schema_with = super::openapi::error_code_schema)]
    error: &'a str,
    /// What went wrong, for people.
    message: &'a str,
    /// On a 409 conflict: the room's head.
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<u64>,
    /// On a 409 conflict: the room's epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            head: None,
            item: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: self.code.as_str(),
            message: &self.message,
            head: self.head.as_ref().map(|(head, _)| *head),
            epoch: self.head.as_ref().map(|(_, epoch)| epoch.as_str()),
            index: self.item.as_ref().map(|(index, _)| *index),
            room: self.item.as_ref().map(|(_, room)| room.as_str()),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The body may be left unread, so the connection cannot be reused:
            // say so, or a keep-alive client sends its next request into a
            // connection that is being closed.
            response
                .headers_mut()
                .insert("connection", axum::http::HeaderValue::from_static("close"));
        }
        response
    }
}

/// The code of a `408`: a request body that stalled or trickled past its
/// deadline (`limits.body_read_timeout_ms`, `limits.body_deadline_ms`).
///
/// Not an [`ErrorCode`]: it is never sent on a socket, and is answered by the
/// connection (`http::deadline`), not by a handler.
pub const REQUEST_TIMEOUT: &str = "request_timeout";

/// `408 {"error":"request_timeout"}`, closing the connection (the rest of the
/// body is not read).
pub fn request_timeout() -> Response {
    let body = ErrorBody {
        error: REQUEST_TIMEOUT,
        message: "request body not received in time",
        head: None,
        epoch: None,
        index: None,
        room: None,
    };
    let mut response = (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response();
    response
        .headers_mut()
        .insert("connection", axum::http::HeaderValue::from_static("close"));
    response
}

impl From<RoomNameError> for ApiError {
    fn from(err: RoomNameError) -> ApiError {
        ApiError::new(ErrorCode::InvalidRoom, err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        // During an outage every request fails the same way: one line a
        // second says so (hubcast_store_errors_total counts every failure).
        static STORE_ERRORS: LogThrottle = LogThrottle::new();
        if let Some(suppressed) = STORE_ERRORS.admit() {
            tracing::warn!(error = %err, suppressed, "store error answered with {}", err.code().http_status());
        }
        ApiError::new(err.code(), err.to_string())
    }
}
