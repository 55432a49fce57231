//! WebSocket upgrades: `GET /v1/ws` (subscribe with messages) and
//! `GET /v1/rooms/{room}/ws` (subscribed to one room from the URL).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::error::ApiError;
use crate::node::Node;
use crate::protocol::codes::ErrorCode;
use crate::protocol::SubscribeRequest;
use crate::room::RoomName;
use crate::session;

/// Room of the WebSocket protocol's own per-frame overhead allowed on top of
/// the largest event, so a `publish` of a maximal event still fits.
const FRAME_OVERHEAD: usize = 16 * 1024;

#[derive(Deserialize)]
pub struct RoomSocketQuery {
    cursor: Option<u64>,
    epoch: Option<String>,
    rewind: Option<u64>,
}

pub async fn multiplexed(State(node): State<Arc<Node>>, upgrade: WebSocketUpgrade) -> Result<Response, ApiError> {
    refuse_while_stopping(&node)?;
    Ok(upgrade_session(node, upgrade, None))
}

pub async fn room(
    State(node): State<Arc<Node>>,
    Path(room): Path<String>,
    query: Result<Query<RoomSocketQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    refuse_while_stopping(&node)?;
    let room = RoomName::parse(&room)?;
    let Query(query) = query.map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    let first = SubscribeRequest { room, cursor: query.cursor, epoch: query.epoch, rewind: query.rewind };
    Ok(upgrade_session(node, upgrade, Some(first)))
}

fn refuse_while_stopping(node: &Node) -> Result<(), ApiError> {
    if node.shutdown.is_cancelled() {
        crate::metrics::get().connections_refused.increment(1);
        return Err(ApiError::new(ErrorCode::ShuttingDown, "node is shutting down; connect to another"));
    }
    Ok(())
}

fn upgrade_session(node: Arc<Node>, upgrade: WebSocketUpgrade, first: Option<SubscribeRequest>) -> Response {
    let max_frame = node.config.limits.max_event_bytes + FRAME_OVERHEAD;
    // Small buffers keep idle sockets cheap; they grow only while a large
    // frame is in flight. Frames queued together are written together: the
    // writer feeds a burst and flushes once, and up to 8 KiB of it leaves in
    // one write.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| {
            let sessions = node.sessions.clone();
            sessions.track_future(session::run(node, socket, first))
        })
}
