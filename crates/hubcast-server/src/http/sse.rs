//! Server-Sent Event streams: `GET /v1/rooms/{room}/sse` and
//! `GET /v1/sse?room=a&room=b…`.
//!
//! Everything is decided before the stream starts, so every refusal is a
//! plain HTTP status with a JSON body (an `EventSource` that gets one stops
//! instead of reconnecting): the node stopping, the origin, the connect
//! rate, credentials (header, `?token=`, `auth.token_cookie`), every room's subscribe grant, the
//! `Last-Event-ID`, and a connection slot. The stream itself is a session
//! like a WebSocket's (`session::open_sse`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hubcast_protocol::sse::{parse_stream_id, RoomCursor};

use super::access;
use super::error::ApiError;
use super::extract::RoomPath;
use crate::auth::Action;
use crate::node::Node;
use crate::protocol::codes::ErrorCode;
use crate::protocol::request::{parse_sse_query, SseQuery};
use crate::protocol::SubscribeRequest;
use crate::room::RoomName;
use crate::session::{open_sse, SseStream};

/// `GET /v1/rooms/{room}/sse`: one room, named by the path.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/sse",
    operation_id = "open_room_stream",
    tag = "streams",
    summary = "A Server-Sent Event stream of one room",
    description = "Streams the room's events after `cursor` (or the `Last-Event-ID`), then live (docs/protocol.md, Server-Sent Events).",
    params(super::openapi::RoomParam, super::openapi::StreamParams),
    responses(
        (status = 200, description = "The stream (`text/event-stream`): `message` events carry the WebSocket `event` frame; `welcome`, `subscribed`, `caught_up`, `reset` and `close` are named events", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed query, room name or Last-Event-ID, or too many rooms", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "Origin not allowed, or no subscribe grant for a room", body = super::error::ErrorBody),
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
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = parse(query.as_deref())?;
    if !query.rooms.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "the room is named by the path; use /v1/sse?room=… for several",
        ));
    }
    stream(node, peer, &headers, vec![room], query)
}

/// `GET /v1/sse?room=a&room=b…`: several rooms on one stream.
#[utoipa::path(
    get,
    path = "/v1/sse",
    operation_id = "open_stream",
    tag = "streams",
    summary = "A Server-Sent Event stream of several rooms",
    description = "Streams several rooms' events on one stream; its ids carry every room's cursor (docs/protocol.md, Server-Sent Events).",
    params(super::openapi::StreamRooms, super::openapi::StreamParams),
    responses(
        (status = 200, description = "The stream (`text/event-stream`): `message` events carry the WebSocket `event` frame; `welcome`, `subscribed`, `caught_up`, `reset` and `close` are named events", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed query, room name or Last-Event-ID, or too many rooms", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "Origin not allowed, or no subscribe grant for a room", body = super::error::ErrorBody),
        (status = 429, description = "Connect rate limit", body = super::error::ErrorBody),
        (status = 503, description = "Connection capacity reached, or the node is stopping", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn multiplexed(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = parse(query.as_deref())?;
    if query.rooms.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "name at least one room: /v1/sse?room=a&room=b",
        ));
    }
    let mut rooms: Vec<RoomName> = Vec::with_capacity(query.rooms.len());
    for name in &query.rooms {
        let room = RoomName::parse(name)?;
        if rooms.contains(&room) {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("room {room} is named twice"),
            ));
        }
        rooms.push(room);
    }
    stream(node, peer, &headers, rooms, query)
}

fn parse(query: Option<&str>) -> Result<SseQuery, ApiError> {
    parse_sse_query(query.unwrap_or("")).map_err(|m| ApiError::new(ErrorCode::InvalidParameter, m))
}

fn stream(
    node: Arc<Node>,
    peer: SocketAddr,
    headers: &HeaderMap,
    rooms: Vec<RoomName>,
    query: SseQuery,
) -> Result<Response, ApiError> {
    let refused = |err: ApiError| {
        crate::metrics::get().connections_refused.increment(1);
        err
    };
    if node.shutdown.is_cancelled() {
        return Err(refused(ApiError::new(
            ErrorCode::ShuttingDown,
            "node is shutting down; connect to another",
        )));
    }
    let max = node
        .config
        .sse
        .max_rooms
        .min(node.config.limits.max_subscriptions);
    if rooms.len() > max {
        return Err(refused(ApiError::new(
            ErrorCode::TooManySubscriptions,
            format!("at most {max} rooms per stream"),
        )));
    }
    let ip = access::client_ip(&node, headers, peer);
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !node.auth.origin_allowed(origin) {
        access::note_refusal("origin", ip, origin.unwrap_or(""));
        return Err(refused(ApiError::new(
            ErrorCode::Forbidden,
            "origin not allowed",
        )));
    }
    node.limits
        .check_connect(ip)
        .map_err(|refusal| refused(access::limited(refusal, ip)))?;
    let credential = access::stream_credential(&node, headers, query.token.as_deref());
    let caller = access::identify(&node, headers, peer, credential).map_err(refused)?;
    for room in &rooms {
        node.auth
            .authorize(&caller.principal, Action::Subscribe, room)
            .map_err(|err| refused(access::refused(err, ip)))?;
    }
    let cursors = start_positions(headers, &query, rooms.len()).map_err(refused)?;
    let requests = rooms
        .into_iter()
        .zip(&cursors)
        .map(|(room, cursor)| SubscribeRequest {
            room,
            cursor: cursor.seq,
            epoch: cursor.epoch.clone(),
            // A position from the id is exact; the URL's rewind applies only
            // where there is none.
            rewind: if cursor.seq.is_some() {
                None
            } else {
                query.rewind
            },
            presence: false,
        })
        .collect();
    let slot = node
        .limits
        .open_connection(ip)
        .map_err(|refusal| refused(access::limited(refusal, ip)))?;
    let body = open_sse(
        node,
        SseStream {
            principal: caller.principal,
            ip,
            slot,
            requests,
            cursors,
        },
    );
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-transform"),
        ),
        // nginx buffers proxied responses unless told not to.
        (
            header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ];
    Ok((StatusCode::OK, headers, body).into_response())
}

/// Where each room starts: the `Last-Event-ID` (the header, else the
/// `lastEventId` parameter) wins over the URL's `cursor` and `epoch`; a room
/// the id gives no position (`-`) starts as the URL says.
fn start_positions(
    headers: &HeaderMap,
    query: &SseQuery,
    rooms: usize,
) -> Result<Vec<RoomCursor>, ApiError> {
    let from_url = RoomCursor {
        epoch: query.epoch.clone(),
        seq: query.cursor,
    };
    let header = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::new(ErrorCode::InvalidParameter, "Last-Event-ID is not ASCII")
        })?),
        None => None,
    };
    let Some(id) = header
        .or(query.last_event_id.as_deref())
        .filter(|id| !id.trim().is_empty())
    else {
        return Ok(vec![from_url; rooms]);
    };
    let from_id = parse_stream_id(id, rooms)
        .map_err(|err| ApiError::new(ErrorCode::InvalidParameter, err.to_string()))?;
    Ok(from_id
        .into_iter()
        .map(|cursor| {
            if cursor.seq.is_some() {
                cursor
            } else {
                from_url.clone()
            }
        })
        .collect())
}
