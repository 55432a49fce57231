//! The admin routes, cluster-wide: a room's presence, disconnecting a user,
//! token revocations, deleting a room's log. Each needs admin access (an
//! admin API key, a token with the `admin` grant, or protected mode's
//! loopback), and each action is logged with who took it and counted
//! (`hubcast_admin_actions_total`). What reaches other nodes goes through
//! `admin::act` (this node, then the bus).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::access::{admin_caller, Caller};
use super::error::ApiError;
use super::extract::RoomPath;
use crate::admin::now_secs;
use crate::auth::revocation::Revocation;
use crate::bus::ControlMessage;
use crate::metrics::AdminAction;
use crate::node::Node;
use crate::protocol::codes::{close, ErrorCode};
use crate::room::RoomName;

/// The longest close reason a WebSocket close frame carries (RFC 6455: 125
/// bytes of payload, two of them the code).
const MAX_REASON_BYTES: usize = 123;

/// The longest user or token id the routes accept.
const MAX_ID_BYTES: usize = 256;

/// Counts and logs an admin action taken by `caller`.
fn note(action: AdminAction, caller: &Caller, target: &str) {
    crate::metrics::get().admin_action(action).increment(1);
    tracing::info!(
        action = action.label(),
        by = %caller.principal.describe(),
        client = %caller.ip,
        target,
        "admin action"
    );
}

/// Parses an optional JSON body: empty is `T::default()`; malformed JSON is
/// `400 invalid_json`, the wrong shape `400 bad_request`.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    let text = body.trim_ascii();
    if text.is_empty() || text == b"null" {
        return Ok(T::default());
    }
    // Serde reads a struct from a JSON array too: only an object is a body.
    if text.first() != Some(&b'{') {
        let code = match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
            Ok(_) => ErrorCode::BadRequest,
            Err(_) => ErrorCode::InvalidJson,
        };
        return Err(ApiError::new(code, "the body must be a JSON object"));
    }
    serde_json::from_slice(body).map_err(|err| {
        let code = if err.is_syntax() || err.is_eof() {
            ErrorCode::InvalidJson
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, format!("body: {err}"))
    })
}

fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{what} must be 1 to {MAX_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A room's members on every node.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PresenceList {
    #[schema(value_type = super::openapi::RoomNameDoc)]
    room: RoomName,
    members: Vec<MemberEntry>,
}

/// One member of a room's presence.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberEntry {
    /// The token's `sub`, or the session id of a session without one.
    id: String,
    /// The token's `info` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    info: Option<serde_json::Value>,
    /// When the member entered (ms since the Unix epoch).
    since: i64,
}

/// `GET /v1/rooms/{room}/presence`: the room's members on every node, as a
/// `presence` request on a socket sees them.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/presence",
    operation_id = "room_presence",
    tag = "admin",
    summary = "A room's members, cluster-wide",
    params(super::openapi::RoomParam),
    responses(
        (status = 200, description = "The members", body = PresenceList),
        (status = 400, description = "Malformed room name", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials are not an admin's", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn presence(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RoomPath(room): RoomPath,
    headers: HeaderMap,
) -> Result<Json<PresenceList>, ApiError> {
    let caller = admin_caller(&node, &headers, peer)?;
    note(AdminAction::Presence, &caller, &room);
    let members = loop {
        let hub = node.hubs.get_or_spawn(&room);
        match hub.presence_since().await {
            Ok(members) => break members,
            // The hub went idle meanwhile: ask a fresh one.
            Err(_gone) => node.hubs.forget(&room, hub.id),
        }
    };
    let members = members
        .into_iter()
        .map(|(member, since)| MemberEntry {
            id: member.id,
            info: member.info,
            since,
        })
        .collect();
    Ok(Json(PresenceList { room, members }))
}

/// The optional body of a disconnect.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    /// The close reason the sessions get (at most 123 bytes; default `disconnected`).
    #[schema(max_length = 123)]
    reason: Option<String>,
    /// The close code (default 4011, which the SDKs treat as final).
    #[schema(minimum = 4000, maximum = 4999)]
    code: Option<u16>,
}

/// What a disconnect did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Disconnected {
    user: String,
    code: u16,
    reason: String,
}

/// `POST /v1/users/{user}/disconnect` `{reason?, code?}`: closes every
/// session of the user (a token's `sub`) on every node, with `code` (4011 by
/// default; 4000–4999, the application range).
#[utoipa::path(
    post,
    path = "/v1/users/{user}/disconnect",
    operation_id = "disconnect_user",
    tag = "admin",
    summary = "Close every session of a user, cluster-wide",
    params(("user" = String, Path, description = "The token subject (`sub`), 1 to 256 bytes")),
    request_body(content = Option<DisconnectBody>, content_type = "application/json"),
    responses(
        (status = 202, description = "Every node was told; the sessions close", body = Disconnected),
        (status = 400, description = "Malformed body, code or reason", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials are not an admin's", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn disconnect(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Disconnected>), ApiError> {
    let caller = admin_caller(&node, &headers, peer)?;
    let Path(user) = user
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    check_id("the user", &user)?;
    let body: DisconnectBody = parse_body(&body)?;
    let code = body.code.unwrap_or(close::DISCONNECTED);
    if !(4000..=4999).contains(&code) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "code must be from 4000 to 4999 (default 4011)",
        ));
    }
    let reason = body.reason.unwrap_or_else(|| "disconnected".to_owned());
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("reason must be at most {MAX_REASON_BYTES} bytes"),
        ));
    }
    note(AdminAction::Disconnect, &caller, &user);
    let message = ControlMessage::Disconnect {
        user: user.clone(),
        code,
        reason: reason.clone(),
    };
    crate::admin::act(&node, message).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Disconnected { user, code, reason }),
    ))
}

/// A revocation to add: `{"jti"}` (one token) or `{"user", "issued_before"}`
/// (every token of the user issued before then, or without `iat`).
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationBody {
    /// The token's `jti` claim.
    #[schema(min_length = 1, max_length = 256)]
    jti: Option<String>,
    /// The tokens' `sub` claim.
    #[schema(min_length = 1, max_length = 256)]
    user: Option<String>,
    /// Seconds since the Unix epoch: tokens whose `iat` is earlier are revoked.
    issued_before: Option<i64>,
    /// When the entry may be forgotten (seconds since the Unix epoch; default
    /// `revocations.default_ttl_secs` from now).
    expires_at: Option<i64>,
}

/// Every revocation in force.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevocationList {
    revocations: Vec<Revocation>,
}

/// A deleted room's new, empty log.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RoomDeleted {
    #[schema(value_type = super::openapi::RoomNameDoc)]
    room: RoomName,
    /// The new epoch.
    epoch: String,
    /// Always 0.
    head: u64,
}

impl RevocationBody {
    /// The revocation it asks for, its `expires_at` defaulted from
    /// `default_ttl` (seconds) after `now` (or after `issued_before`, for
    /// a cut-off in the future).
    fn revocation(self, now: i64, default_ttl: i64) -> Result<Revocation, ApiError> {
        let invalid = |message: &str| ApiError::new(ErrorCode::InvalidParameter, message);
        let revocation = match (self.jti, self.user, self.issued_before) {
            (Some(jti), None, None) => {
                check_id("jti", &jti)?;
                Revocation::Token {
                    jti,
                    expires_at: self.expires_at.unwrap_or(now.saturating_add(default_ttl)),
                }
            }
            (None, Some(user), Some(issued_before)) => {
                check_id("user", &user)?;
                Revocation::User {
                    user,
                    issued_before,
                    expires_at: self
                        .expires_at
                        .unwrap_or(now.max(issued_before).saturating_add(default_ttl)),
                }
            }
            _ => {
                return Err(invalid(
                    r#"give {"jti": …} or {"user": …, "issued_before": SECONDS}"#,
                ))
            }
        };
        if revocation.expires_at() <= now {
            return Err(invalid("expires_at is not in the future"));
        }
        Ok(revocation)
    }
}

/// `POST /v1/revocations`: stores the revocation (durable when this
/// answers), refuses the tokens it covers on every node, and closes their
/// sessions (4012).
#[utoipa::path(
    post,
    path = "/v1/revocations",
    operation_id = "revoke",
    tag = "admin",
    summary = "Revoke a token, or a user's tokens",
    request_body(content = RevocationBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored; every node refuses the tokens and closes their sessions (4012)", body = Revocation),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials are not an admin's", body = super::error::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn revoke(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Revocation>), ApiError> {
    let caller = admin_caller(&node, &headers, peer)?;
    let body: RevocationBody = parse_body(&body)?;
    let default_ttl = node
        .config
        .revocations
        .default_ttl_secs
        .min(i64::MAX as u64) as i64;
    let revocation = body.revocation(now_secs(), default_ttl)?;
    let target = match &revocation {
        Revocation::Token { jti, .. } => format!("jti:{jti}"),
        Revocation::User { user, .. } => format!("user:{user}"),
    };
    node.store.add_revocation(revocation.clone()).await?;
    note(AdminAction::Revoke, &caller, &target);
    let message = ControlMessage::Revoke {
        revocation: revocation.clone(),
    };
    crate::admin::act(&node, message).await;
    Ok((StatusCode::CREATED, Json(revocation)))
}

/// `GET /v1/revocations`: every revocation in force, from the store.
#[utoipa::path(
    get,
    path = "/v1/revocations",
    operation_id = "list_revocations",
    tag = "admin",
    summary = "Every revocation in force",
    responses(
        (status = 200, description = "The revocations", body = RevocationList),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials are not an admin's", body = super::error::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn revocations(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<RevocationList>, ApiError> {
    let caller = admin_caller(&node, &headers, peer)?;
    note(AdminAction::ListRevocations, &caller, "");
    let revocations = node.store.revocations(now_secs()).await?;
    Ok(Json(RevocationList { revocations }))
}

/// `DELETE /v1/rooms/{room}`: deletes the room's log. Subscribers on every
/// node get a live `reset` into the new, empty log, whose epoch this answers
/// with; the next publish is its seq 1.
#[utoipa::path(
    delete,
    path = "/v1/rooms/{room}",
    operation_id = "delete_room",
    tag = "admin",
    summary = "Delete a room's log",
    description = "Subscribers on every node get a live `reset` into the new, empty log; the next publish is its seq 1.",
    params(super::openapi::RoomParam),
    responses(
        (status = 200, description = "Deleted: the new epoch", body = RoomDeleted),
        (status = 400, description = "Malformed room name", body = super::error::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::error::ErrorBody),
        (status = 403, description = "The credentials are not an admin's", body = super::error::ErrorBody),
        (status = 404, description = "The room has no log (it was never written)", body = super::error::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::error::ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn delete_room(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RoomPath(room): RoomPath,
    headers: HeaderMap,
) -> Result<Json<RoomDeleted>, ApiError> {
    let caller = admin_caller(&node, &headers, peer)?;
    let Some(epoch) = node.store.delete_room(&room).await? else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the room has no log (it was never written)",
        ));
    };
    note(AdminAction::DeleteRoom, &caller, &room);
    let message = ControlMessage::RoomDeleted {
        room: room.to_string(),
        epoch: epoch.clone(),
    };
    crate::admin::act(&node, message).await;
    Ok(Json(RoomDeleted {
        room,
        epoch,
        head: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Result<Revocation, ErrorCode> {
        let body: RevocationBody = parse_body(&Bytes::from(json.to_owned())).map_err(|e| e.code)?;
        body.revocation(1000, 60).map_err(|e| e.code)
    }

    #[test]
    fn revocation_bodies() {
        assert_eq!(
            body(r#"{"jti":"a"}"#),
            Ok(Revocation::Token {
                jti: "a".into(),
                expires_at: 1060
            })
        );
        assert_eq!(
            body(r#"{"user":"u","issued_before":2000}"#),
            Ok(Revocation::User {
                user: "u".into(),
                issued_before: 2000,
                expires_at: 2060
            })
        );
        assert_eq!(
            body(r#"{"user":"u","issued_before":5,"expires_at":1001}"#).map(|r| r.expires_at()),
            Ok(1001)
        );
        for bad in [
            r#"{}"#,
            r#"{"jti":"a","user":"u"}"#,
            r#"{"user":"u"}"#,
            r#"{"jti":""}"#,
            r#"{"jti":"a","expires_at":999}"#,
        ] {
            assert_eq!(body(bad), Err(ErrorCode::InvalidParameter), "{bad}");
        }
        assert_eq!(body(r#"{"jti":"#), Err(ErrorCode::InvalidJson));
        assert_eq!(body(r#"{"jti":1}"#), Err(ErrorCode::BadRequest));
        assert_eq!(body(r#"{"nope":1}"#), Err(ErrorCode::BadRequest));
    }
}
