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

#[derive(Serialize)]
struct Receipts {
    events: Vec<Receipt>,
}

/// Validates, admits (grants, rate, limits) and appends a batch; durable
/// when this answers 201. The bus is told by the commit feed, after commit.
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
