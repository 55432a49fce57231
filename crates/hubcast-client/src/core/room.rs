//! One room subscription: where it stands on the current socket (its `Wire`
//! state), the server frames addressed to it, its refusals, and its presence
//! member list. The cursor and what is kept ahead of it are in `delivery`,
//! gap healing from the history route in `heal`; both are more `impl Room`.
//!
//! A room's methods get a [`Cx`] instead of the core: the outbox, the
//! settings, and what a room reads of the rest of the client (the publishes
//! waiting for an answer, the names being unsubscribed). That is what lets
//! them take `&mut self` instead of a room index.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use hubcast_protocol::codes::{ErrorCode, ReceivedErrorCode};
use hubcast_protocol::ClientRequest;

use super::config::Config;
use super::delivery::{RoomEvent, Source};
use super::heal::Heal;
use super::io::{Io, Output};
use super::publish::Publishes;
use super::timers::{Timer, TimerId};
use crate::types::{ClientError, Cursor, PresenceMember, PresenceUpdate, Reset, RoomUpdate};
use crate::urls::Urls;

/// Where a subscription stands on the current socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    /// Not on the server (no socket yet, or the socket closed).
    Idle,
    /// Waits for the `unsubscribed` of an earlier subscription of its name.
    Waiting,
    /// `subscribe` sent, `subscribed` not yet received.
    Subscribing,
    Active,
    /// Restarting from the cursor: `unsubscribe` sent, `subscribe` follows on `unsubscribed`.
    Resyncing,
    /// Refused or ended by the server; the next connection tries again.
    Failed,
}

/// What a room's methods reach besides the room itself.
pub(super) struct Cx<'a> {
    pub io: &'a mut Io,
    pub cfg: &'a Config,
    pub urls: &'a Urls,
    pub token: Option<&'a str>,
    pub random: &'a mut (dyn FnMut() -> f64 + Send),
    /// The publishes waiting for an answer (in a no-echo room a hole may be
    /// the seq of one of them: see `delivery`).
    pub publishes: &'a Publishes,
    /// Names whose unsubscribe, asked for by the application, is still on its
    /// way: a new subscription of the name waits for its `unsubscribed`.
    pub draining: &'a HashSet<String>,
}

pub(super) struct Room {
    pub sub: u64,
    pub name: String,
    /// The cursor: the room's epoch and the seq of the last event delivered
    /// (`None` until the start is known).
    pub epoch: Option<String>,
    pub seq: Option<u64>,
    pub rewind: Option<u64>,
    pub wire: Wire,
    /// The head and epoch of the last `subscribed`.
    pub subscribed_head: u64,
    pub subscribed_epoch: String,
    /// `subscribed` named another epoch than the cursor's: a reset is due,
    /// surfaced by the client itself if the server does not send one.
    pub awaiting_reset: bool,
    pub subscribe_attempts: u32,
    /// Heals that failed in a row: the resubscribe after one waits a backoff,
    /// so an event the client cannot take (or a history route that keeps
    /// failing) never turns into a hot loop of resubscribes.
    pub heal_failures: u32,
    /// Set while a resync after a failed heal is to wait this many ms.
    pub resync_delay: Option<u64>,
    pub subscribe_retry: Option<TimerId>,
    /// Events past a gap, kept until the gap is healed.
    pub buffer: BTreeMap<u64, RoomEvent>,
    /// Deliver everything through this seq (the heal's goal).
    pub heal_target: u64,
    pub heal: Option<Heal>,
    pub presence: bool,
    pub members: Vec<PresenceMember>,
    /// `false` when the server said `"echo": false`: our own socket publishes
    /// are not delivered to us, their acked seqs count as delivered.
    pub echo: bool,
    /// Acked seqs of our own publishes past the cursor (no-echo rooms): the
    /// cursor steps across them when it gets there.
    pub own: BTreeSet<u64>,
}

impl Room {
    pub fn new(
        sub: u64,
        name: &str,
        cursor: Option<Cursor>,
        rewind: Option<u64>,
        presence: bool,
    ) -> Room {
        let (epoch, seq) = match cursor {
            Some(c) => (c.epoch, Some(c.seq)),
            None => (None, None),
        };
        Room {
            sub,
            name: name.to_owned(),
            epoch,
            seq,
            rewind,
            wire: Wire::Idle,
            subscribed_head: 0,
            subscribed_epoch: String::new(),
            awaiting_reset: false,
            subscribe_attempts: 0,
            heal_failures: 0,
            resync_delay: None,
            subscribe_retry: None,
            buffer: BTreeMap::new(),
            heal_target: 0,
            heal: None,
            presence,
            members: Vec::new(),
            echo: true,
            own: BTreeSet::new(),
        }
    }

    pub fn cursor(&self) -> Option<Cursor> {
        self.seq.map(|seq| Cursor {
            epoch: self.epoch.clone(),
            seq,
        })
    }

    /// Whether the server holds (or is setting up) a subscription of ours for the room.
    pub fn on_server(&self) -> bool {
        matches!(
            self.wire,
            Wire::Subscribing | Wire::Active | Wire::Resyncing
        )
    }

    /// Sends `subscribe` from the cursor (or with `rewind`, or live), unless
    /// the socket is not open or the room is already under way.
    pub fn subscribe_now(&mut self, cx: &mut Cx) {
        if !cx.io.is_open() || self.on_server() {
            return;
        }
        if cx.draining.contains(&self.name) {
            self.wire = Wire::Waiting;
            return;
        }
        // From the cursor (with its epoch when known); else with `rewind`; else live.
        let request = ClientRequest::Subscribe {
            room: &self.name,
            cursor: self.seq,
            epoch: self.seq.and(self.epoch.as_deref()),
            rewind: if self.seq.is_none() {
                self.rewind
            } else {
                None
            },
            presence: self.presence,
        };
        if cx.io.send(request) {
            self.wire = Wire::Subscribing;
        }
    }

    /// The socket is gone: nothing of this room is on the server any more.
    pub fn socket_closed(&mut self, io: &mut Io) {
        self.wire = Wire::Idle;
        self.awaiting_reset = false;
        self.resync_delay = None;
        io.timers.cancel(&mut self.subscribe_retry);
        self.cancel_heal();
    }

    /// The client closed (for good, or after a terminal close code: `error`).
    pub fn client_closed(&mut self, io: &mut Io, error: Option<ClientError>) {
        self.socket_closed(io);
        io.emit(Output::RoomEnd {
            sub: self.sub,
            error,
        });
    }

    pub fn on_subscribed(&mut self, epoch: String, head: u64, echo: bool) {
        if self.wire != Wire::Subscribing {
            return;
        }
        self.wire = Wire::Active;
        self.echo = echo;
        self.subscribe_attempts = 0;
        self.subscribed_head = head;
        self.awaiting_reset =
            self.seq.is_some() && self.epoch.as_ref().is_some_and(|e| *e != epoch);
        if self.epoch.is_none() {
            self.epoch = Some(epoch.clone());
        }
        if self.seq.is_none() && self.rewind.is_none() {
            self.seq = Some(head); // a live start
        }
        self.subscribed_epoch = epoch;
    }

    /// `reset` (or one the client surfaces itself: `earliest` unknown). The
    /// cursor moves to the reset's `head` when it has one (a live reset: the
    /// room's log was deleted), else to the head of the `subscribed` before it.
    pub fn on_reset(
        &mut self,
        epoch: String,
        earliest: Option<u64>,
        head: Option<u64>,
        io: &mut Io,
    ) {
        if self.wire != Wire::Active {
            return;
        }
        let previous = self.cursor();
        self.cancel_heal();
        self.awaiting_reset = false;
        self.epoch = Some(epoch.clone());
        if let Some(head) = head {
            self.subscribed_head = head;
            self.subscribed_epoch = epoch.clone();
        }
        self.seq = Some(self.subscribed_head);
        self.own.clear(); // seqs of another log
        let reset = Reset {
            room: self.name.clone(),
            epoch,
            earliest,
            head: self.subscribed_head,
            previous,
        };
        io.emit(Output::Room {
            sub: self.sub,
            update: RoomUpdate::Reset(reset),
        });
    }

    /// A reset is due and the server went on without one: surface it now.
    fn settle_awaited_reset(&mut self, io: &mut Io) {
        if self.awaiting_reset {
            let epoch = self.subscribed_epoch.clone();
            self.on_reset(epoch, None, None, io);
        }
    }

    /// An `event` (or one of a `batch`) from the socket.
    pub fn on_event(&mut self, event: RoomEvent, cx: &mut Cx) {
        if self.wire != Wire::Active {
            return;
        }
        self.settle_awaited_reset(cx.io);
        self.offer(event, Source::Socket, cx);
    }

    pub fn on_caught_up(&mut self, seq: u64, cx: &mut Cx) {
        if self.wire != Wire::Active {
            return;
        }
        self.settle_awaited_reset(cx.io);
        match self.seq {
            None => self.seq = Some(seq), // a rewind that found no events
            Some(cursor) if seq > cursor => self.request_heal(Some(seq), cx),
            Some(_) => {}
        }
    }

    /// The member list of this presence subscription.
    pub fn on_presence(&mut self, mut members: Vec<PresenceMember>, io: &mut Io) {
        if !self.presence || self.wire != Wire::Active {
            return;
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        self.members = members.clone();
        let update = PresenceUpdate::Members {
            room: self.name.clone(),
            members,
        };
        io.emit(Output::Presence {
            sub: self.sub,
            update,
        });
    }

    /// `join` (or `leave`) of a member.
    /// An ephemeral message of this room: passed on while the subscription
    /// is live; it has no seq, so delivery order and the cursor are untouched.
    pub fn on_ephemeral(&mut self, ts: i64, data: serde_json::Value, io: &mut Io) {
        if self.wire != Wire::Active {
            return;
        }
        io.emit(Output::Room {
            sub: self.sub,
            update: RoomUpdate::Ephemeral(crate::types::Ephemeral {
                room: self.name.clone(),
                ts,
                data,
            }),
        });
    }

    pub fn on_membership(&mut self, join: bool, member: PresenceMember, io: &mut Io) {
        if !self.presence || self.wire != Wire::Active {
            return;
        }
        self.members.retain(|m| m.id != member.id);
        if join {
            self.members.push(member.clone());
            self.members.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let (room, members) = (self.name.clone(), self.members.clone());
        let update = if join {
            PresenceUpdate::Join {
                room,
                member,
                members,
            }
        } else {
            PresenceUpdate::Leave {
                room,
                member,
                members,
            }
        };
        io.emit(Output::Presence {
            sub: self.sub,
            update,
        });
    }

    /// `unsubscribed` (or `not_subscribed`) for this room: a resync goes on.
    pub fn unsubscribed(&mut self, cx: &mut Cx) {
        if self.wire == Wire::Resyncing {
            self.wire = Wire::Idle;
            match self.resync_delay.take() {
                None => self.subscribe_now(cx),
                Some(delay) => {
                    cx.io.timers.cancel(&mut self.subscribe_retry);
                    self.subscribe_retry =
                        Some(cx.io.timers.set(delay, Timer::SubscribeRetry(self.sub)));
                }
            }
        }
    }

    /// An `error` about this subscription (a `room` and no `id`), with the
    /// server's `retry_after_ms` when it said when to ask again.
    /// docs/clients.md, "Subscription errors".
    pub fn on_subscription_error(
        &mut self,
        code: &ReceivedErrorCode,
        message: &str,
        retry_after_ms: Option<u64>,
        cx: &mut Cx,
    ) {
        let error = ClientError::new(code.as_str(), message).with_room(self.name.clone());
        match code.known() {
            Some(ErrorCode::AlreadySubscribed) => {
                // The server still holds an older subscription of ours: restart it from the cursor.
                if self.wire == Wire::Subscribing {
                    self.wire = Wire::Active;
                    self.resync(cx);
                }
            }
            Some(ErrorCode::NotSubscribed) => {
                self.unsubscribed(cx);
                return; // expected while resyncing; not worth an error
            }
            Some(code) if code.subscribe_is_retried() => {
                // Refused for now (nothing subscribed): ask again after a backoff.
                if matches!(self.wire, Wire::Subscribing | Wire::Active) {
                    self.wire = Wire::Idle;
                    self.cancel_heal();
                    // The server's `retry_after_ms` first, then the usual
                    // jittered backoff, so refused clients do not all come
                    // back at the same moment.
                    let backoff = cx.cfg.reconnect.unwrap_or_default();
                    let delay = retry_after_ms.unwrap_or(0)
                        + backoff.delay(self.subscribe_attempts, (cx.random)());
                    self.subscribe_attempts += 1;
                    cx.io.timers.cancel(&mut self.subscribe_retry);
                    self.subscribe_retry =
                        Some(cx.io.timers.set(delay, Timer::SubscribeRetry(self.sub)));
                }
            }
            _ => {
                // Refused or ended by the server: nothing more comes for this room on
                // this socket. The next connection tries again.
                if self.on_server() {
                    self.wire = Wire::Failed;
                    self.cancel_heal();
                }
            }
        }
        self.emit_error(error, cx.io);
    }

    /// An error of this room: on its stream, and once on the client.
    pub fn emit_error(&self, error: ClientError, io: &mut Io) {
        io.emit(Output::Room {
            sub: self.sub,
            update: RoomUpdate::Error(error.clone()),
        });
        io.emit(Output::Error(error));
    }

    /// Restarts the subscription from the cursor: `unsubscribe`, then `subscribe` on `unsubscribed`.
    pub fn resync(&mut self, cx: &mut Cx) {
        self.cancel_heal();
        if self.wire != Wire::Active || !cx.io.is_open() {
            return; // the next (re)subscribe starts from the cursor anyway
        }
        if cx.io.send(ClientRequest::Unsubscribe { room: &self.name }) {
            self.wire = Wire::Resyncing;
        }
    }

    /// The reconciliation poll: read the history route past the cursor.
    pub fn reconcile(&mut self, cx: &mut Cx) {
        if self.seq.is_none()
            || matches!(
                self.wire,
                Wire::Subscribing | Wire::Resyncing | Wire::Waiting
            )
        {
            return;
        }
        self.request_heal(None, cx);
    }
}
