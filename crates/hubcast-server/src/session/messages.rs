//! Reading a session's client messages and answering them: the read loop
//! (heartbeat deadline, message rate, frame checks), token expiry and
//! re-authentication, and socket publishes.

use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::StreamExt;

use super::join_reports::JoinReports;
use super::{close_for_read_error, sleep_until, JoinResult, Session};
use crate::auth::hooks::{Asker, HookRefusal};
use crate::auth::{Action, Principal};
use crate::limits::rate_key;
use crate::metrics::note_refusal;
use crate::protocol::codes::{close, ErrorCode};
use crate::protocol::{
    batch::{BatchEventRequest, BatchReceipt},
    encode_error, parse_client_message, ClientMessage, ProtocolError, PublishRequest,
    ServerMessage,
};
use crate::room::RoomName;
use crate::store::{AppendOutcome, AppendRequest, BatchOutcome};

impl Session {
    /// Reads client messages until the session ends. Replays run on their own
    /// tasks, so the session keeps reading (and the heartbeat keeps counting)
    /// while they wait for a slow client.
    pub(super) async fn read_loop(
        &mut self,
        stream: &mut crate::socket::ClientFrames,
        joined: &JoinReports<JoinResult>,
    ) {
        let mut deadline = tokio::time::Instant::now() + self.stale;
        loop {
            let next = tokio::select! {
                _ = self.control.token.cancelled() => return,
                report = joined.recv() => {
                    let (room, id, result) = report;
                    Box::pin(self.on_joined(room, id, result)).await;
                    continue;
                }
                _ = sleep_until(self.expiry.map(|(at, _)| at)) => {
                    if !Box::pin(self.on_token_expiry()).await {
                        return;
                    }
                    continue;
                }
                next = tokio::time::timeout_at(deadline, stream.next()) => next,
            };
            let message = match next {
                Err(_elapsed) => {
                    self.control
                        .close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(err))) => {
                    match close_for_read_error(err) {
                        Some((code, reason)) => self.control.close(code, reason),
                        None => self.control.token.cancel(),
                    }
                    return;
                }
                Ok(Some(Ok(message))) => message,
            };
            deadline = tokio::time::Instant::now() + self.stale;
            if matches!(message, Message::Text(_) | Message::Binary(_))
                && self
                    .message_rate
                    .as_ref()
                    .is_some_and(|limiter| limiter.check().is_err())
            {
                note_refusal("message_rate", self.ip, "too many messages");
                self.control.close(close::RATE_LIMITED, "too many messages");
                return;
            }
            match message {
                Message::Text(text) => {
                    let metrics = crate::metrics::get();
                    metrics.messages_in.increment(1);
                    metrics.bytes_in.increment(text.len() as u64);
                    Box::pin(self.on_text(&text)).await
                }
                Message::Binary(_) => {
                    self.control.close(
                        close::POLICY,
                        "binary frames are not accepted; send JSON text",
                    );
                    return;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Close(_) => return,
            }
        }
    }

    pub(super) async fn on_text(&mut self, text: &str) {
        match parse_client_message(text) {
            Err(err) => self.reply_error(&err, None).await,
            Ok(ClientMessage::Subscribe(request)) => self.subscribe(request).await,
            Ok(ClientMessage::Unsubscribe { room }) => self.unsubscribe(room).await,
            Ok(ClientMessage::Publish(request)) => self.publish(request).await,
            Ok(ClientMessage::PublishBatch { id, events }) => self.publish_batch(id, events).await,
            Ok(ClientMessage::Ping) => self.reply(ServerMessage::Pong.encode().into()).await,
            Ok(ClientMessage::Auth { token }) => self.authenticate(&token).await,
            Ok(ClientMessage::Presence { room, id }) => self.presence(room, id).await,
        }
    }

    /// When the session's token expires (with the configured leeway).
    pub(super) fn token_deadline(&self) -> Option<(tokio::time::Instant, bool)> {
        let Principal::Token(claims) = &self.principal else {
            return None;
        };
        let exp = claims.exp?;
        let now = (crate::event::now_ms() / 1000).max(0) as u64;
        // Unsigned and saturating: a signed token may carry any `exp` up to
        // u64::MAX, which must neither wrap into "expired" nor overflow. The
        // timer is capped at a century (an Instant cannot be arbitrarily far).
        const CENTURY_SECS: u64 = 100 * 365 * 24 * 3600;
        let left = exp
            .saturating_add(self.node.config.auth.leeway_secs)
            .saturating_sub(now)
            .min(CENTURY_SECS);
        Some((
            tokio::time::Instant::now() + Duration::from_secs(left),
            false,
        ))
    }

    /// Lists the session in the node's roster while it holds a token, so an
    /// operator's disconnect or a revocation finds it. A revocation that came
    /// between the token's check and this is caught here: the list is read
    /// again once the session can be found.
    pub(super) fn enter_roster(&self) {
        if let Principal::Token(claims) = &self.principal {
            self.node.roster.enter(
                self.out.session_id,
                std::sync::Arc::new(claims.clone()),
                self.control.clone(),
            );
            if self.node.auth.is_revoked(claims) {
                self.control.close(close::TOKEN_REVOKED, "token revoked");
            }
        }
    }

    /// The token ran out: tell the client and give it the grace period to send
    /// a fresh one; when the grace period is over too, close with 4001.
    /// Returns whether the session goes on.
    pub(super) async fn on_token_expiry(&mut self) -> bool {
        if self.from_hook {
            // Nothing to refresh: reconnecting asks the connect hook again.
            self.control
                .close(close::GOING_AWAY, "session expired; reconnect");
            return false;
        }
        match self.expiry {
            Some((_, false)) => {
                let grace = Duration::from_millis(self.node.auth.expiry_grace_ms);
                self.expiry = Some((tokio::time::Instant::now() + grace, true));
                let err = ProtocolError::new(
                    ErrorCode::TokenExpired,
                    "token expired; send a fresh one with an auth message",
                    None,
                );
                self.reply_error(&err, None).await;
                true
            }
            _ => {
                note_refusal(
                    "token_expired",
                    self.ip,
                    "no fresh token within the grace period",
                );
                self.control.close(close::UNAUTHENTICATED, "token expired");
                false
            }
        }
    }

    /// Takes a token sent in an `auth` message (first credentials or a
    /// refresh). Subscriptions the new token does not allow are ended.
    pub(super) async fn authenticate(&mut self, token: &str) {
        let claims = match self.node.auth.verify_token(token) {
            Ok(claims) => claims,
            Err(err) => {
                let code = err.code();
                note_refusal(code.as_str(), self.ip, &err.to_string());
                self.reply_error(&ProtocolError::new(code, err.to_string(), None), None)
                    .await;
                let (close_code, reason) = super::refusal_close(code);
                self.control.close(close_code, reason);
                return;
            }
        };
        self.principal = Principal::Token(claims);
        self.from_hook = false;
        self.expiry = self.token_deadline();
        self.enter_roster();
        let (sub, exp) = match &self.principal {
            Principal::Token(claims) => (claims.sub.clone(), claims.exp),
            _ => (None, None),
        };
        self.reply(
            ServerMessage::Authenticated {
                sub: sub.as_deref(),
                exp,
            }
            .encode()
            .into(),
        )
        .await;
        let rooms: Vec<RoomName> = self.subscriptions.keys().cloned().collect();
        for room in rooms {
            let mut allowed = self
                .node
                .auth
                .authorize(&self.principal, Action::Subscribe, &room);
            if allowed.is_ok() && self.presence_rooms.contains(&room) {
                allowed = self
                    .node
                    .auth
                    .authorize(&self.principal, Action::Presence, &room);
            }
            if let Err(err) = allowed {
                if let Some(subscription) = self.subscriptions.remove(&room) {
                    self.leave(&room, subscription).await;
                }
                let err = ProtocolError::new(err.code(), err.to_string(), None);
                self.reply_error(&err, Some(&room)).await;
            }
        }
    }

    /// Refuses a message the principal may not send. On a room-scoped URL,
    /// refusing its room closes the session with 4001, 4003, 4013 or 1013. An
    /// SSE stream's rooms are all the URL's, and it cannot be told anything
    /// else: any refusal ends it (1013, try again later, for the rest).
    pub(super) async fn refuse(&mut self, room: &RoomName, err: ProtocolError) {
        let sse = self.transport == super::Transport::Sse;
        if sse || self.url_room.as_ref() == Some(room) {
            let code = match err.code {
                ErrorCode::Unauthenticated | ErrorCode::TokenExpired => {
                    Some(close::UNAUTHENTICATED)
                }
                ErrorCode::Forbidden => Some(close::FORBIDDEN),
                // Refused for now: the client reconnects (with its cursor)
                // rather than stay on a socket subscribed to nothing.
                ErrorCode::OverCapacity | ErrorCode::StoreUnavailable | ErrorCode::RateLimited => {
                    Some(close::TRY_AGAIN_LATER)
                }
                ErrorCode::AuthUnavailable => Some(close::AUTH_UNAVAILABLE),
                _ if sse => Some(close::TRY_AGAIN_LATER),
                _ => None,
            };
            if let Some(code) = code {
                self.reply_error(&err, Some(room)).await;
                self.control.close(code, "subscription refused");
                return;
            }
        }
        self.reply_error(&err, Some(room)).await;
    }

    /// Queues an answer to the client. A client that lets its queue stay full
    /// for a whole stale period while it keeps sending is cut as a slow consumer.
    pub(super) async fn reply(&self, frame: axum::extract::ws::Utf8Bytes) {
        if tokio::time::timeout(self.stale, self.out.send(frame))
            .await
            .is_err()
        {
            self.out.close(close::SLOW_CONSUMER, "slow consumer");
        }
    }

    pub(super) async fn reply_error(&self, err: &ProtocolError, room: Option<&RoomName>) {
        crate::metrics::get().client_errors.increment(1);
        self.reply(encode_error(err, room.map(|r| r.as_str())))
            .await;
    }

    /// A publish over the socket takes the same write path as HTTP: the store
    /// first, then the bus; the hub never applies it. `id` is the idempotency
    /// key, so a retry after a reconnect is not appended twice.
    pub(super) async fn publish(&mut self, request: PublishRequest) {
        let PublishRequest {
            id,
            room,
            data,
            expected_seq,
            ephemeral,
        } = request;
        if let Err(err) = self
            .node
            .auth
            .authorize(&self.principal, Action::Publish, &room)
        {
            let code = err.code();
            note_refusal(code.as_str(), self.ip, &err.to_string());
            return self
                .reply_error(
                    &ProtocolError::new(code, err.to_string(), Some(&id)),
                    Some(&room),
                )
                .await;
        }
        // The same per-credential quota as HTTP publishes: a second path must
        // not be a way around it.
        if let Err(refusal) = self
            .node
            .limits
            .check_publish(|| rate_key(&self.principal, self.ip))
        {
            note_refusal(
                ErrorCode::RateLimited.as_str(),
                self.ip,
                &refusal.to_string(),
            );
            let err = ProtocolError::new(ErrorCode::RateLimited, refusal.to_string(), Some(&id));
            return self.reply_error(&err, Some(&room)).await;
        }
        let max = self.node.max_event_bytes(&room);
        if data.get().len() > max {
            let err = ProtocolError::new(
                ErrorCode::TooLarge,
                format!("event data is larger than {max} bytes"),
                Some(&id),
            );
            return self.reply_error(&err, Some(&room)).await;
        }
        let ephemeral = match self.node.resolve_ephemeral(&room, ephemeral, expected_seq) {
            Ok(ephemeral) => ephemeral,
            Err((code, message)) => {
                let err = ProtocolError::new(code, message, Some(&id));
                return self.reply_error(&err, Some(&room)).await;
            }
        };
        // The application's publish hook, after the grants and the size
        // check: it may deny the publish or replace its data (which must then
        // fit the limit too).
        let hooked = {
            let user = self.hook_user();
            let asker = Asker {
                user: user.as_deref(),
                session: &self.name,
            };
            self.node.auth.hooks.publish(&asker, &room, &data).await
        };
        let data = match hooked {
            Ok(Some(rewritten)) if rewritten.get().len() > max => {
                let message = format!("the publish hook's data is larger than {max} bytes");
                let err = ProtocolError::new(ErrorCode::TooLarge, message, Some(&id));
                return self.reply_error(&err, Some(&room)).await;
            }
            Ok(Some(rewritten)) => rewritten,
            Ok(None) => data,
            Err(refusal) => {
                let code = hook_refusal_code(&refusal);
                note_refusal(code.as_str(), self.ip, &refusal.to_string());
                let err = ProtocolError::new(code, refusal.to_string(), Some(&id));
                return self.reply_error(&err, Some(&room)).await;
            }
        };
        if ephemeral {
            self.node
                .publish_ephemeral(room.clone(), data, Some(self.out.session_id));
            let ack = ServerMessage::Ack {
                id: &id,
                room: &room,
                seq: None,
                ephemeral: true,
            };
            return self.reply(ack.encode().into()).await;
        }
        let request = AppendRequest {
            room: room.clone(),
            data,
            idem_key: Some(id.clone()),
            expected_seq,
            origin: Some(self.out.session_id),
        };
        let frame = match self.node.store.append(request).await {
            Ok(AppendOutcome::Appended(receipt) | AppendOutcome::Duplicate(receipt)) => {
                ServerMessage::Ack {
                    id: &id,
                    room: &room,
                    seq: Some(receipt.seq),
                    ephemeral: false,
                }
                .encode()
                .into()
            }
            Ok(AppendOutcome::Mismatch(receipt)) => {
                let message = format!(
                    "publish id was already used for seq {} with a different body or expected_seq; use a new id for a new event",
                    receipt.seq
                );
                encode_error(
                    &ProtocolError::new(ErrorCode::IdempotencyMismatch, message, Some(&id)),
                    Some(&room),
                )
            }
            Ok(AppendOutcome::Conflict { head, .. }) => {
                crate::metrics::get().publish_conflicts.increment(1);
                let message = format!(
                    "expected_seq {} but the head is {head}",
                    expected_seq.unwrap_or(0)
                );
                ServerMessage::Error {
                    code: ErrorCode::Conflict.as_str(),
                    message: &message,
                    id: Some(&id),
                    room: Some(&room),
                    head: Some(head),
                    index: None,
                    retry_after_ms: None,
                }
                .encode()
                .into()
            }
            Err(err) => {
                let err = ProtocolError::new(err.code(), err.to_string(), Some(&id));
                encode_error(&err, Some(&room))
            }
        };
        self.reply(frame).await;
    }

    /// An atomic batch over the socket: the same checks and store call as
    /// `POST /v1/events`, answered by one `batch_ack` (or one `error`) with
    /// the batch's `id`, which is also its idempotency key.
    pub(super) async fn publish_batch(&mut self, id: String, events: Vec<BatchEventRequest>) {
        if let Err(refusal) = crate::batch::admit(&self.node, &self.principal, self.ip, &events) {
            let err = ProtocolError::new(refusal.code, refusal.message, Some(&id));
            let room = refusal.room.and_then(|r| RoomName::parse(&r).ok());
            return self.reply_error(&err, room.as_ref()).await;
        }
        let expected: Vec<Option<u64>> = events.iter().map(|e| e.expected_seq).collect();
        let request = crate::batch::request(events, Some(id.clone()), Some(self.out.session_id));
        let receipts = |receipts: Vec<crate::store::Receipt>| -> Vec<BatchReceipt> {
            receipts
                .into_iter()
                .map(|r| BatchReceipt {
                    room: r.room.to_string(),
                    seq: r.seq,
                })
                .collect()
        };
        let frame = match self.node.store.append_batch(request).await {
            Ok(BatchOutcome::Appended(done) | BatchOutcome::Duplicate(done)) => {
                ServerMessage::BatchAck {
                    id: &id,
                    events: &receipts(done),
                }
                .encode()
                .into()
            }
            Ok(BatchOutcome::Mismatch) => encode_error(
                &ProtocolError::new(
                    ErrorCode::IdempotencyMismatch,
                    "publish_batch id was already used for another batch; use a new id for a new batch",
                    Some(&id),
                ),
                None,
            ),
            Ok(BatchOutcome::Conflict {
                index, room, head, ..
            }) => {
                crate::metrics::get().publish_conflicts.increment(1);
                let message = format!(
                    "events[{index}]: expected_seq {} but the head of {room} is {head}; nothing was appended",
                    expected[index].unwrap_or(0)
                );
                ServerMessage::Error {
                    code: ErrorCode::Conflict.as_str(),
                    message: &message,
                    id: Some(&id),
                    room: Some(&room),
                    head: Some(head),
                    index: Some(index),
                    retry_after_ms: None,
                }
                .encode()
                .into()
            }
            Err(err) => {
                let err = ProtocolError::new(err.code(), err.to_string(), Some(&id));
                encode_error(&err, None)
            }
        };
        self.reply(frame).await;
    }
}

/// The error code a client is told when a room hook refused.
pub(super) fn hook_refusal_code(refusal: &HookRefusal) -> ErrorCode {
    match refusal {
        HookRefusal::Unauthenticated | HookRefusal::Forbidden => ErrorCode::Forbidden,
        HookRefusal::Unavailable(_) => ErrorCode::AuthUnavailable,
    }
}
