//! `GET /v1/rooms/{room}`: a room's head, epoch, subscribers and retention.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::extract::RoomPath;
use crate::node::Node;
use crate::room::RoomName;

/// A room's state.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RoomStats {
    #[schema(value_type = super::openapi::RoomNameDoc)]
    room: RoomName,
    /// The room's epoch (for a room never written, the one it will be born with).
    epoch: Option<String>,
    head: u64,
    earliest: u64,
    retained: u64,
    /// Subscribers on this node.
    subscribers: usize,
}

#[utoipa::path(
    get,
    path = "/v1/rooms/{room}",
    operation_id = "room_stats",
    tag = "rooms",
    summary = "A room's state",
    description = "Head, epoch, earliest retained seq, events retained, and subscribers on this node.",
    params(super::openapi::RoomParam),
    responses(
        (status = 200, description = "The room's state", body = RoomStats),
        (status = 400, description = "Malformed room name", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials do not grant reading this room", body = super::error::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn stats(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    RoomPath(room): RoomPath,
    headers: HeaderMap,
) -> Result<Json<RoomStats>, ApiError> {
    super::access::require_read(&node, &headers, peer, &room)?;
    let state = node.store.room_state(&room).await?;
    let subscribers = match node.hubs.get(&room) {
        Some(hub) => hub.stats().await.map(|s| s.subscribers).unwrap_or(0),
        None => 0,
    };
    Ok(Json(RoomStats {
        // A room never written: the epoch it will be born with (as subscribers are told).
        epoch: Some(
            state
                .as_ref()
                .map_or_else(|| node.store.epoch_for(&room), |s| s.epoch.clone()),
        ),
        head: state.as_ref().map_or(0, |s| s.head),
        earliest: state.as_ref().map_or(1, |s| s.earliest),
        retained: state.as_ref().map_or(0, |s| s.retained()),
        room,
        subscribers,
    }))
}
