//! WebSocket upgrades: `GET /v1/ws` (subscribe with messages) and
//! `GET /v1/rooms/{room}/ws` (subscribed to one room from the URL).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::access;
use super::error::ApiError;
use super::extract::{RawUpgrade, RoomPath};
use crate::auth::hooks::{ConnectHookMode, ConnectRequest, HookRefusal};
use crate::auth::Principal;
use crate::node::Node;
use crate::protocol::codes::{close, ErrorCode};
use crate::protocol::request::{RoomSocketQuery, SocketQuery};
use crate::protocol::{ProtocolError, SubscribeRequest};
use crate::room::RoomName;
use crate::session::{self, Admission};

/// Room of the WebSocket protocol's own per-frame overhead allowed on top of
/// the largest event, so a `publish` of a maximal event still fits.
const FRAME_OVERHEAD: usize = 16 * 1024;

/// A session that subscribes to rooms with `subscribe` messages.
#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "open_session",
    tag = "websocket",
    summary = "Open a WebSocket session",
    description = "Upgrades to a WebSocket; subscribe to rooms with messages (docs/protocol.md).",
    params(super::openapi::SocketParams, super::openapi::HandshakeHeaders),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake, or a malformed query", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "Origin not allowed, or the credentials do not allow connecting", body = super::error::ErrorBody),
        (status = 429, description = "Connect rate limit", body = super::error::ErrorBody),
        (status = 503, description = "Connection capacity reached, or the node is stopping", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn multiplexed(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<SocketQuery>, QueryRejection>,
    RawQuery(raw_query): RawQuery,
    upgrade: RawUpgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    let request = UpgradeRequest {
        headers: &headers,
        peer,
        token: query.token.as_deref(),
        raw_query: raw_query.as_deref(),
        room: None,
    };
    let admission = admit(&node, &request).await?;
    Ok(upgrade_session(node, upgrade, None, admission))
}

/// A session subscribed to one room from the URL (Durable-Object style).
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/ws",
    operation_id = "open_room_socket",
    tag = "websocket",
    summary = "Open a WebSocket subscribed to one room",
    description = "Upgrades to a WebSocket subscribed to the room, resuming after `cursor` (docs/protocol.md).",
    params(super::openapi::RoomParam, super::openapi::RoomSocketParams, super::openapi::HandshakeHeaders),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake, or a malformed query", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "Origin not allowed, or the credentials do not allow connecting", body = super::error::ErrorBody),
        (status = 429, description = "Connect rate limit", body = super::error::ErrorBody),
        (status = 503, description = "Connection capacity reached, or the node is stopping", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn room(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RoomPath(room): RoomPath,
    query: Result<Query<RoomSocketQuery>, QueryRejection>,
    RawQuery(raw_query): RawQuery,
    upgrade: RawUpgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    let request = UpgradeRequest {
        headers: &headers,
        peer,
        token: query.token.as_deref(),
        raw_query: raw_query.as_deref(),
        room: Some(&room),
    };
    let admission = admit(&node, &request).await?;
    let first = SubscribeRequest {
        room,
        cursor: query.cursor,
        epoch: query.epoch,
        rewind: query.rewind,
        presence: query.presence.unwrap_or(false),
    };
    Ok(upgrade_session(node, upgrade, Some(first), admission))
}

/// What the upgrade request says that admission reads.
struct UpgradeRequest<'a> {
    headers: &'a HeaderMap,
    peer: SocketAddr,
    /// `?token=`.
    token: Option<&'a str>,
    /// The whole query string, for the connect hook.
    raw_query: Option<&'a str>,
    /// The room of a room-scoped URL.
    room: Option<&'a RoomName>,
}

/// Everything decided before an upgrade: the node is not stopping, the
/// browser origin is allowed, the address is within its connect rate.
/// Refusals here are plain HTTP answers with JSON bodies. Credentials (header
/// or `?token=`, or the connect hook's answer) and capacity are decided too,
/// but refused after the upgrade with an `error` frame and 4001, 4003, 4013
/// or 1013: a browser cannot read the status of a refused upgrade, and must
/// know whether to retry.
async fn admit(node: &Node, request: &UpgradeRequest<'_>) -> Result<Admission, ApiError> {
    let headers = request.headers;
    if node.shutdown.is_cancelled() {
        crate::metrics::get().connections_refused.increment(1);
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "node is shutting down; connect to another",
        ));
    }
    let ip = access::client_ip(node, headers, request.peer);
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !node.auth.origin_allowed(origin) {
        access::note_refusal("origin", ip, origin.unwrap_or(""));
        crate::metrics::get().connections_refused.increment(1);
        return Err(ApiError::new(ErrorCode::Forbidden, "origin not allowed"));
    }
    if let Err(refusal) = node.limits.check_connect(ip) {
        crate::metrics::get().connections_refused.increment(1);
        return Err(access::limited(refusal, ip));
    }
    let slot = node.limits.open_connection(ip);
    let credential = access::stream_credential(node, headers, request.token);
    let identified = node.auth.identify(credential, ip);
    // The connect hook decides when it is asked for every connection, or
    // (fallback) when the connection has no valid credential of its own; a
    // credential that fails is then no refusal of its own.
    // A session refused for capacity (1013) costs the application nothing.
    let ask_hook = slot.is_ok()
        && match node.auth.hooks.connect_mode() {
            Some(ConnectHookMode::Always) => true,
            Some(ConnectHookMode::Fallback) => !matches!(
                &identified,
                Ok(principal) if !matches!(principal, Principal::Anonymous { .. })
            ),
            None => false,
        };
    let (principal, refusal, from_hook) = if ask_hook {
        let hook_request = ConnectRequest {
            headers,
            remote_addr: ip,
            origin,
            query: request.raw_query,
            room: request.room,
        };
        match node.auth.hooks.connect(&hook_request).await {
            Ok(claims) => (Principal::Token(claims), None, true),
            Err(refusal) => {
                let (code, close) = match refusal {
                    HookRefusal::Unauthenticated => {
                        (ErrorCode::Unauthenticated, close::UNAUTHENTICATED)
                    }
                    HookRefusal::Forbidden => (ErrorCode::Forbidden, close::FORBIDDEN),
                    HookRefusal::Unavailable(_) => {
                        (ErrorCode::AuthUnavailable, close::AUTH_UNAVAILABLE)
                    }
                };
                access::note_refusal(code.as_str(), ip, &refusal.to_string());
                crate::metrics::get().connections_refused.increment(1);
                let error = ProtocolError::new(code, refusal.to_string(), None);
                (
                    Principal::Anonymous { trusted: false },
                    Some((error, close)),
                    false,
                )
            }
        }
    } else {
        match identified {
            Ok(principal) => (principal, None, false),
            Err(err) => {
                let err = access::refused(err, ip);
                crate::metrics::get().connections_refused.increment(1);
                let (close, _) = crate::session::refusal_close(err.code);
                let error = ProtocolError::new(err.code, err.message, None);
                (
                    Principal::Anonymous { trusted: false },
                    Some((error, close)),
                    false,
                )
            }
        }
    };
    Ok(Admission {
        principal,
        ip,
        slot,
        refusal,
        from_hook,
    })
}

fn upgrade_session(
    node: Arc<Node>,
    upgrade: RawUpgrade,
    first: Option<SubscribeRequest>,
    admission: Admission,
) -> Response {
    let max_frame = node.config.limits.max_event_bytes + FRAME_OVERHEAD;
    // Small buffers keep idle sockets cheap. The read buffer is allocated up
    // front for every socket and clients send little; a larger frame makes
    // tungstenite reserve its whole length at once, so a small buffer costs
    // no extra reads. 4 KiB → 1 KiB took an idle connection from 18.0 to
    // 14.7 KiB of server RSS, 1 KiB → 512 B saved another ~0.5 KiB (`bench
    // idle`, BENCHMARKS.md). tungstenite writes only its pongs and close
    // replies, each at once (the session's frames go out through the
    // socket's own writes).
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    let response = upgrade.switching_protocols();
    // Boxed: the task keeps these for the connection's whole life; a box is
    // freed once the session has opened.
    let start = Box::new((node, first, admission));
    tokio::spawn(async move {
        let Some((tcp, prefix)) = upgrade.into_tcp().await else {
            return;
        };
        let (node, first, admission) = *start;
        let limit = node.config.limits.outbound_queue;
        let connection = crate::socket::accept(tcp, prefix, limit, config).await;
        let sessions = node.sessions.clone();
        sessions
            .track_future(session::run(node, connection, first, admission))
            .await;
    });
    response
}
