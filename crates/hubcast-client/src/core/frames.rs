//! What each server frame does. Frames are decoded by the protocol crate
//! ([`ServerFrame`]), the same definition the server encodes through; a frame
//! that does not decode (not JSON, or a known `type` with a missing or
//! mistyped field) is surfaced as `protocol_violation` and ignored, and an
//! unknown `type` is ignored (docs/clients.md, "Errors an application sees").
//! Frames about a room go to its [`super::room::Room`]; the rest is here.

use hubcast_protocol::codes::{ErrorCode, ReceivedErrorCode};
use hubcast_protocol::frame::{AckFrame, BatchAckFrame, ErrorFrame, ServerFrame};

use super::delivery::RoomEvent;
use super::{Core, Output};
use crate::types::{Ack, ClientError};

/// The largest integer a double holds exactly (2^53 − 1). Seqs past it are
/// refused, as by the TypeScript SDK whose numbers are doubles, so both SDKs
/// read the same streams (and the cursor's `+ 1` cannot overflow).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

pub(super) fn safe_integer(n: u64) -> bool {
    n <= MAX_SAFE_INTEGER
}

/// Whether the frame's seqs and heads are all within [`MAX_SAFE_INTEGER`].
fn safe_integers(frame: &ServerFrame) -> bool {
    match frame {
        ServerFrame::Subscribed(f) => safe_integer(f.head),
        ServerFrame::Event(f) => safe_integer(f.seq),
        ServerFrame::Batch(f) => f.events.iter().all(|e| safe_integer(e.seq)),
        ServerFrame::CaughtUp(f) => safe_integer(f.seq),
        ServerFrame::Reset(f) => safe_integer(f.earliest) && f.head.map_or(true, safe_integer),
        ServerFrame::Ack(f) => f.seq.map_or(true, safe_integer),
        ServerFrame::BatchAck(f) => f.events.iter().all(|r| safe_integer(r.seq)),
        _ => true,
    }
}

impl Core {
    /// A text frame arrived on socket `gen`.
    pub fn on_frame(&mut self, gen: u64, text: &str) {
        if self.io.open() != Some(gen) {
            return;
        }
        self.liveness.frame(self.io.timers.now());
        let frame = match ServerFrame::decode(text) {
            Ok(frame) if safe_integers(&frame) => frame,
            Ok(_) => {
                return self
                    .io
                    .protocol_violation(&format!("a seq past 2^53: {}", excerpt(text)))
            }
            Err(err) if err.is_data() => {
                return self
                    .io
                    .protocol_violation(&format!("a malformed frame ({err}): {}", excerpt(text)))
            }
            Err(_) => {
                return self.io.protocol_violation(&format!(
                    "a frame that is not a JSON object: {}",
                    excerpt(text)
                ))
            }
        };
        match frame {
            ServerFrame::Welcome(f) => {
                self.welcomed = true;
                self.failed_attempts = 0;
                self.session = Some(f.session.clone());
                self.io.emit(Output::Welcome {
                    session: f.session,
                    heartbeat_ms: f.heartbeat_ms,
                });
            }
            ServerFrame::Subscribed(f) => {
                if let Some(i) = self.room_named(&f.room) {
                    self.rooms[i].on_subscribed(f.epoch, f.head, f.echo != Some(false));
                }
            }
            ServerFrame::Reset(f) => {
                if let Some(i) = self.room_named(&f.room) {
                    self.rooms[i].on_reset(f.epoch, Some(f.earliest), f.head, &mut self.io);
                }
            }
            ServerFrame::Event(f) => {
                let Some(event) = RoomEvent::from_frame(f.seq, f.ts, &f.data) else {
                    return self
                        .io
                        .protocol_violation("an event whose data no JSON reader takes");
                };
                if let Some(i) = self.room_named(&f.room) {
                    let (room, mut cx) = self.room(i);
                    room.on_event(event, &mut cx);
                }
            }
            ServerFrame::Ephemeral(f) => {
                let Ok(data) = serde_json::from_str(f.data.get()) else {
                    return self.io.protocol_violation(
                        "an ephemeral message whose data no JSON reader takes",
                    );
                };
                if let Some(i) = self.room_named(&f.room) {
                    self.rooms[i].on_ephemeral(f.ts, data, &mut self.io);
                }
            }
            ServerFrame::Batch(f) => {
                // Consecutive live events of a batching room: processed one by one, exactly like `event` frames.
                for item in f.events {
                    let Some(event) = RoomEvent::from_frame(item.seq, item.ts, &item.data) else {
                        self.io.protocol_violation(
                            "an event in a batch whose data no JSON reader takes",
                        );
                        continue; // the missing seq is a gap, healed like any other
                    };
                    if let Some(i) = self.room_named(&f.room) {
                        let (room, mut cx) = self.room(i);
                        room.on_event(event, &mut cx);
                    }
                }
            }
            ServerFrame::Presence(f) => match f.id {
                // The answer to a presence request.
                Some(id) => self.presence.settle(&id, Ok(f.members), &mut self.io),
                // The member list of a presence subscription.
                None => {
                    if let Some(i) = self.room_named(&f.room) {
                        self.rooms[i].on_presence(f.members, &mut self.io);
                    }
                }
            },
            ServerFrame::Join(f) => {
                if let Some(i) = self.room_named(&f.room) {
                    self.rooms[i].on_membership(true, f.member, &mut self.io);
                }
            }
            ServerFrame::Leave(f) => {
                if let Some(i) = self.room_named(&f.room) {
                    self.rooms[i].on_membership(false, f.member, &mut self.io);
                }
            }
            ServerFrame::CaughtUp(f) => {
                if let Some(i) = self.room_named(&f.room) {
                    let (room, mut cx) = self.room(i);
                    room.on_caught_up(f.seq, &mut cx);
                }
            }
            ServerFrame::Unsubscribed(f) => self.on_unsubscribed(&f.room),
            ServerFrame::Ack(f) => self.on_ack(f),
            ServerFrame::BatchAck(f) => self.on_batch_ack(f),
            ServerFrame::Error(f) => self.on_error_frame(f),
            ServerFrame::Authenticated(f) => self.io.emit(Output::Authenticated {
                sub: f.sub,
                exp: f.exp,
            }),
            ServerFrame::Pong | ServerFrame::Unknown { .. } => {} // liveness is recorded above
        }
    }

    fn on_unsubscribed(&mut self, name: &str) {
        let Some(i) = self.room_named(name) else {
            self.draining.remove(name);
            return;
        };
        let drained = self.draining.remove(name);
        let (room, mut cx) = self.room(i);
        if drained {
            // An unsubscribe the app asked for finished; a new subscription of the name may be waiting.
            room.subscribe_now(&mut cx);
        } else {
            room.unsubscribed(&mut cx);
        }
    }

    fn on_ack(&mut self, frame: AckFrame) {
        let Some(idx) = self.publishes.position(&frame.id) else {
            return;
        }; // settled, or a duplicate ack
        let Some(seq) = frame.seq else {
            // This client sends no ephemeral publishes: only they are acked without a seq.
            return self
                .io
                .protocol_violation("an ack without a seq for a durable publish");
        };
        self.settle(
            idx,
            Ok(vec![Ack {
                id: frame.id,
                room: frame.room,
                seq,
            }]),
        );
    }

    fn on_batch_ack(&mut self, frame: BatchAckFrame) {
        let Some(idx) = self.publishes.position(&frame.id) else {
            return;
        }; // settled, or a duplicate ack
        let acks = frame
            .events
            .into_iter()
            .map(|receipt| Ack {
                id: frame.id.clone(),
                room: receipt.room,
                seq: receipt.seq,
            })
            .collect();
        self.settle(idx, Ok(acks));
    }

    fn on_error_frame(&mut self, frame: ErrorFrame) {
        let ErrorFrame {
            code,
            message,
            id,
            room,
            head,
            retry_after_ms,
            ..
        } = frame;
        if let Some(id) = &id {
            if self.presence.is_sent(id) {
                let mut err = ClientError::new(code.as_str(), message);
                err.room = room;
                return self.presence.settle(id, Err(err), &mut self.io);
            }
            if let Some(idx) = self.publishes.position(id) {
                if let (true, Some(backoff)) = (retried(&code), self.cfg.reconnect) {
                    // Nothing was appended: send again (same id) after a backoff.
                    let random = (self.random)();
                    return self
                        .publishes
                        .retry_later(idx, backoff, random, &mut self.io);
                }
                let entry = self.publishes.get(idx);
                let mut err = ClientError::new(code.as_str(), message)
                    .with_room(room.clone().unwrap_or_else(|| entry.room.clone()))
                    .with_id(id);
                err.head = head;
                return self.settle(idx, Err(err));
            }
        }
        if code == ErrorCode::TokenExpired
            && room.is_none()
            && id.is_none()
            && self.cfg.has_token_provider
        {
            // The session's token ran out: send a fresh one within the server's grace period.
            return self.refresh_token();
        }
        if let Some(name) = &room {
            if self.draining.contains(name) && code == ErrorCode::NotSubscribed {
                return self.on_unsubscribed(name);
            }
            if let Some(i) = self.room_named(name) {
                let (room, mut cx) = self.room(i);
                return room.on_subscription_error(&code, &message, retry_after_ms, &mut cx);
            }
        }
        let mut err = ClientError::new(code.as_str(), message);
        err.room = room;
        self.io.emit(Output::Error(err));
    }
}

/// Whether a publish refused with `code` is sent again.
fn retried(code: &ReceivedErrorCode) -> bool {
    code.known().is_some_and(ErrorCode::publish_is_retried)
}

/// The start of a frame, for an error message.
fn excerpt(text: &str) -> String {
    text.chars().take(100).collect()
}
