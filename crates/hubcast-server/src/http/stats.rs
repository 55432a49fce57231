//! Node-wide numbers: `GET /metrics` (Prometheus), `GET /v1/stats` (JSON for
//! people and the dashboard) and `GET /v1/rooms` (the active rooms, paged).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::error::ApiError;
use crate::node::Node;
use crate::protocol::codes::ErrorCode;
use crate::protocol::request::RoomsQuery;
use crate::room::RoomName;

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "node",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text exposition (docs/observability.md)", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials are not an admin's", body = super::error::ErrorBody),
        (status = 500, description = "No metrics recorder in this process", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn metrics(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(err) = super::access::require_admin(&node, &headers, peer) {
        return err.into_response();
    }
    match &node.prometheus {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::new(
            ErrorCode::Internal,
            "metrics recorder unavailable in this process",
        )
        .into_response(),
    }
}

/// Uptime, connections, rooms, totals, rates over the last minute, and the
/// per-second history they come from.
#[utoipa::path(
    get,
    path = "/v1/stats",
    operation_id = "node_stats",
    tag = "node",
    summary = "Node-wide numbers",
    description = "Version, uptime, store and bus kinds, connections, rooms, totals, rates over \
                   the last minute and the per-second history they come from (the dashboard's data).",
    responses(
        (status = 200, description = "The node's numbers", body = NodeStats),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials are not an admin's", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn stats(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    super::access::require_admin(&node, &headers, peer)?;
    let now = node.sample();
    let history = node.samples.snapshot();
    let (published_per_sec, delivered_per_sec) = crate::stats::rates(&history);
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": node.started.elapsed().as_secs(),
        "store": match node.config.store {
            crate::config::StoreUrl::Sqlite(_) => "sqlite",
            crate::config::StoreUrl::Postgres(_) => "postgres",
        },
        "bus": match node.config.bus {
            crate::config::BusUrl::Memory => "memory",
            crate::config::BusUrl::Nats(_) => "nats",
        },
        "connections": now.connections,
        "rooms": now.rooms,
        "totals": {"published": now.published, "delivered": now.delivered},
        "rates": {"published_per_sec": published_per_sec, "delivered_per_sec": delivered_per_sec, "window_secs": window(&history)},
        "webhooks": webhook_stats(&node),
        "history": history,
    })))
}

/// The webhook endpoints' backlog and delivery totals (`null` without `[[webhooks]]`).
fn webhook_stats(node: &Node) -> serde_json::Value {
    let Some(webhooks) = &node.webhooks else {
        return serde_json::Value::Null;
    };
    let totals = crate::webhook::tally::totals();
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "endpoints": webhooks.endpoints.len(),
        "backlog": crate::webhook_worker::backlog(webhooks),
        "delivered": load(&totals.delivered),
        "failed": load(&totals.failed),
        "dead_lettered": load(&totals.dead_lettered),
    })
}

/// The scheme of a store or bus URL, without credentials.
fn window(history: &[crate::stats::Sample]) -> f64 {
    match (history.first(), history.last()) {
        (Some(a), Some(b)) => (b.t - a.t) as f64 / 1000.0,
        _ => 0.0,
    }
}

/// The body of `GET /v1/stats`, as documented (the handler builds it with `json!`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct NodeStats {
    /// The server's version.
    version: String,
    uptime_secs: u64,
    /// `sqlite` or `postgres`.
    store: String,
    /// `memory` or `nats`.
    bus: String,
    connections: u64,
    rooms: u64,
    #[schema(value_type = Object)]
    totals: (),
    #[schema(value_type = Object)]
    rates: (),
    /// Per-second samples, oldest first.
    #[schema(value_type = Vec<Object>)]
    history: (),
}

/// A room with a hub on this node.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ActiveRoom {
    #[schema(value_type = super::openapi::RoomNameDoc)]
    room: RoomName,
    subscribers: usize,
    /// The last seq this node's hub delivered.
    head: u64,
}

/// A page of `GET /v1/rooms`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ActiveRooms {
    rooms: Vec<ActiveRoom>,
    /// Rooms with a hub on this node.
    total: usize,
    /// The `after` of the next page; `null` on the last.
    next: Option<String>,
}

/// The rooms with a hub on this node, by name, with subscribers and head.
#[utoipa::path(
    get,
    path = "/v1/rooms",
    operation_id = "active_rooms",
    tag = "rooms",
    summary = "The active rooms of this node",
    description = "Rooms with a hub on this node (subscribers or recent events), by name, paged.",
    params(super::openapi::RoomsParams),
    responses(
        (status = 200, description = "A page of rooms", body = ActiveRooms),
        (status = 400, description = "Malformed query", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials are not an admin's", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn rooms(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RoomsQuery>, QueryRejection>,
) -> Result<Json<ActiveRooms>, ApiError> {
    super::access::require_admin(&node, &headers, peer)?;
    let Query(query) = query
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    // At most `limit` rooms: `limit=0` is none, like history's.
    let limit = query.limit.unwrap_or(100).min(node.config.limits.max_page);
    let mut hubs = node.hubs.snapshot();
    hubs.sort_by(|a, b| a.0.cmp(&b.0));
    let after = query.after.unwrap_or_default();
    let total = hubs.len();
    let page: Vec<_> = hubs
        .into_iter()
        .filter(|(room, _)| room.as_str() > after.as_str())
        .take(limit)
        .collect();
    let mut rooms = Vec::with_capacity(page.len());
    for (room, hub) in page {
        if let Ok(stats) = hub.stats().await {
            rooms.push(ActiveRoom {
                room,
                subscribers: stats.subscribers,
                head: stats.last_seq,
            });
        }
    }
    let next = if rooms.len() == limit {
        rooms.last().map(|r| r.room.to_string())
    } else {
        None
    };
    Ok(Json(ActiveRooms { rooms, total, next }))
}
