//! `POST /v1/events`: an atomic batch publish. Every event is appended in
//! one store transaction, or none is; the answer lists the receipts in
//! request order.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::access::identify;
use super::error::ApiError;
use crate::node::Node;
use crate::protocol::batch::parse_batch_body;
use crate::protocol::codes::ErrorCode;
use crate::protocol::request::idempotency_key;
use crate::store::{BatchOutcome, Receipt};

/// The answer to a batch: one receipt per event, in request order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Receipts {
    events: Vec<Receipt>,
}

/// The body of `POST /v1/events` (parsed by `hubcast_protocol::batch`, which
/// refuses unknown fields).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchRequest {
    /// The events, appended in this order, all or none (at most
    /// `limits.max_batch_events`).
    #[schema(min_items = 1)]
    events: Vec<BatchItem>,
}

/// One event of a batch.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchItem {
    #[schema(value_type = super::openapi::RoomNameDoc)]
    room: String,
    /// The event: any JSON value.
    #[schema(value_type = Value)]
    data: (),
    /// Append the batch only if this room's head is this seq (as the earlier
    /// items of the batch left it), else 409 naming the item.
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    expected_seq: Option<u64>,
}

/// Validates, admits (grants, rate, limits) and appends a batch; durable
/// when this answers 201. The bus is told by the commit feed, after commit.
#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "publish_batch",
    tag = "events",
    summary = "Publish an atomic batch",
    description = "Appends events to one or more rooms in one transaction: every event or none. \
                   Each event counts against the publish rate and needs the publish grant on its room. \
                   A retry with the same `Idempotency-Key` returns the first receipts (200).",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters: the whole batch's key", pattern = "^[!-~]{1,128}$"),
    ),
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Every event appended", body = Receipts),
        (status = 200, description = "A retry of an earlier batch with the same Idempotency-Key: its receipts", body = Receipts),
        (status = 400, description = "Malformed body, room name or header", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials do not grant publishing to one of the rooms", body = super::error::ErrorBody),
        (status = 409, description = "An item's `expected_seq` is not its room's head: nothing was appended; the body names the item (`index`, `room`) and the `head`", body = super::error::ErrorBody),
        (status = 413, description = "Too many events, or the body or an event is over its limit", body = super::error::ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for another batch", body = super::error::ErrorBody),
        (status = 429, description = "Publish rate limit", body = super::error::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn publish_batch(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let caller = identify(&node, headers, peer, None)?;
    let idem_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            idempotency_key(value.as_bytes())
                .map_err(|(code, message)| ApiError::new(code, message))?
                .to_owned(),
        ),
    };
    let max = node.config.limits.max_batch_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("a batch body is at most {max} bytes (limits.max_batch_bytes)"),
        )
    };
    // A declared length over the limit is answered before the body is read.
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    let body: Result<Bytes, BytesRejection> = Bytes::from_request(request, &()).await;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        _ => ApiError::new(ErrorCode::BadRequest, rejection.body_text()),
    })?;
    let events = parse_batch_body(&body).map_err(|(code, message)| ApiError::new(code, message))?;
    crate::batch::admit(&node, &caller.principal, caller.ip, &events)
        .map_err(|refusal| ApiError::new(refusal.code, refusal.message))?;
    let expected: Vec<Option<u64>> = events.iter().map(|e| e.expected_seq).collect();
    let request = crate::batch::request(events, idem_key, None);
    match node.store.append_batch(request).await? {
        BatchOutcome::Appended(events) => {
            Ok((StatusCode::CREATED, Json(Receipts { events })).into_response())
        }
        BatchOutcome::Duplicate(events) => {
            crate::metrics::get().publish_duplicates.increment(1);
            Ok((StatusCode::OK, Json(Receipts { events })).into_response())
        }
        BatchOutcome::Mismatch => Err(ApiError::new(
            ErrorCode::IdempotencyMismatch,
            "Idempotency-Key was already used for another batch (or retention pruned part of it); use a new key for a new batch",
        )),
        BatchOutcome::Conflict {
            index,
            room,
            head,
            epoch,
        } => {
            crate::metrics::get().publish_conflicts.increment(1);
            Err(ApiError {
                code: ErrorCode::Conflict,
                message: format!(
                    "events[{index}]: expected_seq {} but the head of {room} is {head}; nothing was appended",
                    expected[index].unwrap_or(0)
                ),
                head: Some((head, epoch)),
                item: Some((index, room.to_string())),
            })
        }
    }
}
