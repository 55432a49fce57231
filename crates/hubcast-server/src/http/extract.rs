//! Extractors whose refusals are JSON like every other answer: axum's own
//! (`Path`, `WebSocketUpgrade`) refuse in plain text, which a client cannot
//! tell apart from a proxy's error page and which carries no error code.

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::protocol::codes::ErrorCode;
use crate::room::RoomName;

/// The `{room}` of a route's path, a valid room name: `400 invalid_room`
/// otherwise (a name outside the charset, or percent-escapes that are not
/// UTF-8, like `%ff`).
pub struct RoomPath(pub RoomName);

impl<S: Send + Sync> FromRequestParts<S> for RoomPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<RoomPath, ApiError> {
        let Path(room) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection: PathRejection| {
                ApiError::new(ErrorCode::InvalidRoom, rejection.body_text())
            })?;
        Ok(RoomPath(RoomName::parse(&room)?))
    }
}

/// A WebSocket handshake: `400 bad_request` (with `Sec-WebSocket-Version:
/// 13` when that was the fault, as RFC 6455 asks) or `405
/// method_not_allowed` when the request is not one.
pub struct Upgrade(pub WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Upgrade, Response> {
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(Upgrade)
            .map_err(refused_handshake)
    }
}

fn refused_handshake(rejection: WebSocketUpgradeRejection) -> Response {
    let code = match rejection.status() {
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        _ => ErrorCode::BadRequest,
    };
    let wrong_version = matches!(
        rejection,
        WebSocketUpgradeRejection::InvalidWebSocketVersionHeader(_)
    );
    let mut response = ApiError::new(
        code,
        format!("not a WebSocket handshake: {}", rejection.body_text()),
    )
    .into_response();
    if wrong_version {
        response
            .headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
    }
    response
}
