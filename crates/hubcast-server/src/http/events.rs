//! `POST /v1/rooms/{room}/events` (publish) and `GET …/events` (history).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;

use super::access::{authorize_publish, require_read};
use super::error::ApiError;
use super::extract::RoomPath;
use crate::event::Event;
use crate::node::Node;
use crate::protocol::codes::ErrorCode;
use crate::protocol::request::{idempotency_key, parse_publish_body, HistoryQuery};
use crate::store::{AppendOutcome, AppendRequest};

/// The body of a publish (`hubcast_protocol::request::PublishBody`, which
/// refuses unknown fields).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PublishRequest {
    /// The event: any JSON value (at most `limits.max_event_bytes`).
    #[schema(value_type = Value)]
    data: (),
    /// Append only if the room's head is this seq, else 409 with the head.
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    expected_seq: Option<u64>,
    /// Deliver to the room's current subscribers without storing it (the
    /// namespace must allow ephemeral messages); answered 202.
    ephemeral: Option<bool>,
}

/// Appends one event: validate, append (durable when this returns), answer.
/// The bus is told by the store's commit feed, after the commit.
///
/// It takes the whole request rather than a `HeaderMap` extractor, which
/// would copy every header of every publish.
#[utoipa::path(
    post,
    path = "/v1/rooms/{room}/events",
    operation_id = "publish",
    tag = "events",
    summary = "Publish an event",
    description = "Appends one event to the room's log: the answer (201) means it is durable. \
                   A retry with the same `Idempotency-Key` returns the first receipt (200). \
                   With `\"ephemeral\": true` in a namespace that allows it (or any publish in an \
                   `ephemeral = \"only\"` one) the data is handed to the room's current \
                   subscribers and not stored (202).",
    params(
        super::openapi::RoomParam,
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters: a retry with the same key is not appended twice", pattern = "^[!-~]{1,128}$"),
    ),
    request_body(content = PublishRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Appended", body = crate::store::Receipt),
        (status = 200, description = "A retry of an earlier publish with the same Idempotency-Key: its receipt", body = crate::store::Receipt),
        (status = 202, description = "An ephemeral message, handed to the room's current subscribers (not stored, no seq)", body = EphemeralReceipt),
        (status = 400, description = "Malformed body, room name or header", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials (`token_revoked` for a revoked token)", body = super::error::ErrorBody),
        (status = 403, description = "The credentials do not grant publishing to this room, or `ephemeral_not_allowed`", body = super::error::ErrorBody),
        (status = 409, description = "`expected_seq` is not the head: the body carries `head` and `epoch`", body = super::error::ErrorBody),
        (status = 413, description = "The event is larger than the limit", body = super::error::ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for another event", body = super::error::ErrorBody),
        (status = 429, description = "Publish rate limit", body = super::error::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn publish(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    RoomPath(room): RoomPath,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    authorize_publish(&node, headers, peer, &room)?;
    let idem_key = headers.get("idempotency-key").cloned();
    let max = node.config.limits.max_event_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("body is larger than the limit for {max}-byte events"),
        )
    };
    // A declared length over the limit is answered before any of the body is
    // read: a client that waits for `100 Continue` learns at once, and one
    // that sends anyway is drained by the lingering close, so it reads the 413.
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > super::body_limit(&node) as u64) {
        return Err(too_large());
    }
    let body: Result<Bytes, BytesRejection> = Bytes::from_request(request, &()).await;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        _ => ApiError::new(ErrorCode::BadRequest, rejection.body_text()),
    })?;
    let body = parse_publish_body(&body).map_err(|(code, message)| ApiError::new(code, message))?;
    let max = node.max_event_bytes(&room);
    if body.data.get().len() > max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("event data is larger than {max} bytes"),
        ));
    }
    if node
        .resolve_ephemeral(&room, body.ephemeral, body.expected_seq)
        .map_err(|(code, message)| ApiError::new(code, message))?
    {
        // Live only: no store, no seq, no idempotency (nothing to retry against).
        let ts = node.publish_ephemeral(room.clone(), body.data, None);
        let receipt = EphemeralReceipt {
            room: &room,
            ts,
            ephemeral: true,
        };
        return Ok((StatusCode::ACCEPTED, Json(receipt)).into_response());
    }
    let idem_key = match idem_key {
        None => None,
        Some(value) => Some(
            idempotency_key(value.as_bytes())
                .map_err(|(code, message)| ApiError::new(code, message))?
                .to_owned(),
        ),
    };
    let expected_seq = body.expected_seq;
    let request = AppendRequest {
        room,
        data: body.data,
        idem_key,
        expected_seq,
        origin: None,
    };
    match node.store.append(request).await? {
        AppendOutcome::Appended(receipt) => Ok((StatusCode::CREATED, Json(receipt)).into_response()),
        AppendOutcome::Duplicate(receipt) => {
            crate::metrics::get().publish_duplicates.increment(1);
            Ok((StatusCode::OK, Json(receipt)).into_response())
        }
        AppendOutcome::Mismatch(receipt) => Err(ApiError::new(
            ErrorCode::IdempotencyMismatch,
            format!(
                "Idempotency-Key was already used for seq {} with a different body or expected_seq; use a new key for a new event",
                receipt.seq
            ),
        )),
        AppendOutcome::Conflict { head, epoch } => {
            crate::metrics::get().publish_conflicts.increment(1);
            Err(ApiError {
            code: ErrorCode::Conflict,
            message: format!("expected_seq {} but the head is {head}", expected_seq.unwrap_or(0)),
            head: Some((head, epoch)),
            item: None,
        })
        }
    }
}

/// The 202 answer to an ephemeral publish: handed to the subscribers, not stored.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EphemeralReceipt<'a> {
    room: &'a str,
    /// The accepting node's clock, in milliseconds since the Unix epoch.
    ts: i64,
    /// Always `true`.
    ephemeral: bool,
}

/// One event of a history page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryEvent<'a> {
    #[schema(minimum = 1)]
    seq: u64,
    /// Milliseconds since the Unix epoch, set by the store.
    ts: i64,
    #[schema(value_type = Value)]
    data: &'a RawValue,
}

/// A page of a room's history.
#[derive(Serialize, utoipa::ToSchema)]
pub struct History<'a> {
    #[schema(value_type = super::openapi::RoomNameDoc)]
    room: &'a str,
    epoch: Option<&'a str>,
    head: u64,
    earliest: u64,
    events: Vec<HistoryEvent<'a>>,
}

/// Retained events after `after`, oldest first: for history and for polling
/// reconciliation. `earliest` tells a poller whether its cursor was pruned.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/events",
    operation_id = "history",
    tag = "events",
    summary = "Read a room's history",
    description = "The retained events after `after`, oldest first, with the room's head, epoch \
                   and earliest retained seq (a cursor below `earliest` was pruned).",
    params(super::openapi::RoomParam, super::openapi::HistoryParams),
    responses(
        (status = 200, description = "A page of events", body = History),
        (status = 400, description = "Malformed room name or query", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials do not grant reading this room", body = super::error::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn history(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    RoomPath(room): RoomPath,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_read(&node, &headers, peer, &room)?;
    let Query(query) = query
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    // At most `limit` events, as documented: `limit=0` is the room's state
    // with no events (a poller's cheapest look at the head).
    let limit = query.limit.unwrap_or(100).min(node.config.limits.max_page);
    let page = node
        .store
        .read(&room, query.after.unwrap_or(0), limit)
        .await?;
    let events: &[Event] = &page.events;
    // A room never written reports the epoch it will be born with, as its
    // subscribers are told: one epoch for a room, whoever asks.
    let unborn = page.state.is_none().then(|| node.store.epoch_for(&room));
    let body = History {
        room: &room,
        epoch: page
            .state
            .as_ref()
            .map(|s| s.epoch.as_str())
            .or(unborn.as_deref()),
        head: page.state.as_ref().map_or(0, |s| s.head),
        earliest: page.state.as_ref().map_or(1, |s| s.earliest),
        events: events
            .iter()
            .map(|e| HistoryEvent {
                seq: e.seq,
                ts: e.ts,
                data: &e.data,
            })
            .collect(),
    };
    Ok(Json(body).into_response())
}
