//! WebSocket upgrades: `GET /v1/ws` (subscribe with messages) and
//! `GET /v1/rooms/{room}/ws` (subscribed to one room from the URL).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::access;
use super::error::ApiError;
use super::extract::{RoomPath, Upgrade};
use crate::auth::Principal;
use crate::node::Node;
use crate::protocol::codes::ErrorCode;
use crate::protocol::request::{RoomSocketQuery, SocketQuery};
use crate::protocol::SubscribeRequest;
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
    Upgrade(upgrade): Upgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    let admission = admit(&node, &headers, peer, query.token.as_deref())?;
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
    Upgrade(upgrade): Upgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    let admission = admit(&node, &headers, peer, query.token.as_deref())?;
    let first = SubscribeRequest {
        room,
        cursor: query.cursor,
        epoch: query.epoch,
        rewind: query.rewind,
        presence: query.presence.unwrap_or(false),
    };
    Ok(upgrade_session(node, upgrade, Some(first), admission))
}

/// Everything decided before an upgrade: the node is not stopping, the
/// browser origin is allowed, the address is within its connect rate.
/// Refusals here are plain HTTP answers with JSON bodies. Credentials (header
/// or `?token=`) and capacity are decided too, but refused after the upgrade
/// with an `error` frame and 4001 or 1013: a browser cannot read the status
/// of a refused upgrade, and must know not to retry a bad token.
fn admit(
    node: &Node,
    headers: &HeaderMap,
    peer: SocketAddr,
    token: Option<&str>,
) -> Result<Admission, ApiError> {
    if node.shutdown.is_cancelled() {
        crate::metrics::get().connections_refused.increment(1);
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "node is shutting down; connect to another",
        ));
    }
    let ip = access::client_ip(node, headers, peer);
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
    let (principal, refusal) = match access::identify(node, headers, peer, token) {
        Ok(caller) => (caller.principal, None),
        Err(err) => {
            crate::metrics::get().connections_refused.increment(1);
            (
                Principal::Anonymous { trusted: false },
                Some(crate::protocol::ProtocolError::new(
                    err.code,
                    err.message,
                    None,
                )),
            )
        }
    };
    Ok(Admission {
        principal,
        ip,
        slot: node.limits.open_connection(ip),
        refusal,
    })
}

fn upgrade_session(
    node: Arc<Node>,
    upgrade: WebSocketUpgrade,
    first: Option<SubscribeRequest>,
    admission: Admission,
) -> Response {
    let max_frame = node.config.limits.max_event_bytes + FRAME_OVERHEAD;
    // Boxed: axum keeps this callback's captures in the upgrade task for the
    // connection's whole life; a box is freed once the session has opened.
    let start = Box::new((node, first, admission));
    // Small buffers keep idle sockets cheap. The read buffer is allocated up
    // front for every socket and clients send little; a larger frame makes
    // tungstenite reserve its whole length at once, so a small buffer costs
    // no extra reads. 4 KiB → 1 KiB took an idle connection from 18.0 to
    // 14.7 KiB of server RSS, 1 KiB → 512 B saved another ~0.5 KiB (`bench
    // idle`, BENCHMARKS.md). Frames queued together are written together:
    // the writer feeds a burst and flushes once, and up to 8 KiB of it leaves
    // in one write.
    upgrade
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| {
            let (node, first, admission) = *start;
            let sessions = node.sessions.clone();
            sessions.track_future(session::run(node, socket, first, admission))
        })
}
