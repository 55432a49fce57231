//! Extractors whose refusals are JSON like every other answer: axum's own
//! (`Path`, `WebSocketUpgrade`) refuse in plain text, which a client cannot
//! tell apart from a proxy's error page and which carries no error code.

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
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

/// A WebSocket handshake hubcast completes itself, for sessions that write
/// their socket directly (`crate::socket`): checked and refused exactly as
/// [`Upgrade`], answered with the same `101`, and the upgraded connection
/// handed over as the TCP stream under it.
pub struct RawUpgrade {
    on_upgrade: OnUpgrade,
    key: HeaderValue,
}

impl<S: Send + Sync> FromRequestParts<S> for RawUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<RawUpgrade, Response> {
        // axum's extractor checks the handshake and takes the upgrade; the
        // upgrade is shared, and only ours is ever awaited.
        let on_upgrade = parts.extensions.get::<OnUpgrade>().cloned();
        let Upgrade(_checked) = Upgrade::from_request_parts(parts, state).await?;
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        match (on_upgrade, key) {
            (Some(on_upgrade), Some(key)) => Ok(RawUpgrade { on_upgrade, key }),
            // The server speaks HTTP/1.1 only, where axum requires both.
            _ => Err(ApiError::new(
                ErrorCode::BadRequest,
                "not a WebSocket handshake: the connection cannot be upgraded",
            )
            .into_response()),
        }
    }
}

impl RawUpgrade {
    /// The `101 Switching Protocols` answer.
    pub fn switching_protocols(&self) -> Response {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(axum::body::Body::empty())
            .unwrap_or_default()
    }

    /// The connection once the answer is sent: its TCP stream and what the
    /// client already sent after its handshake. `None` (logged) when the
    /// upgrade failed or the connection is not the accept loop's.
    pub async fn into_tcp(self) -> Option<(tokio::net::TcpStream, Vec<u8>)> {
        let upgraded = match self.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "websocket upgrade failed");
                return None;
            }
        };
        match upgraded.downcast::<hyper_util::rt::TokioIo<crate::server::Lingering>>() {
            Ok(parts) => Some((parts.io.into_inner().into_tcp(), parts.read_buf.to_vec())),
            Err(_) => {
                tracing::error!("upgraded connection is not a TCP stream of the accept loop");
                None
            }
        }
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
