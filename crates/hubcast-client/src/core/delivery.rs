//! A room's cursor rules (docs/clients.md, "Delivery: at most once, in
//! order"): every event, from the socket or from a history page, is offered
//! here. At or below the cursor it is dropped (a duplicate, or a replay
//! overlapping what was delivered); right after it, it is delivered and the
//! cursor moves; past it, it is kept and the gap is healed (`heal`) before it
//! is delivered.
//!
//! In a no-echo room the server does not send us our own publishes: their
//! acked seqs count as delivered (`own`), and while a publish of ours is
//! unanswered a hole may be its seq, so events past it are held instead of
//! healed (docs/clients.md, "Echo").

use serde_json::value::RawValue;
use serde_json::Value;

use super::io::{Io, Output};
use super::room::{Cx, Room, Wire};
use crate::types::{Event, RoomUpdate};

/// Ahead-of-cursor events kept per room while a gap is healed.
pub const MAX_BUFFERED: usize = 10_000;

/// An event on its way to the application.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RoomEvent {
    pub seq: u64,
    pub ts: i64,
    pub data: Value,
}

impl RoomEvent {
    /// An event of a frame; `None` if its data is JSON no reader takes (`1e999`).
    pub fn from_frame(seq: u64, ts: i64, data: &RawValue) -> Option<RoomEvent> {
        Some(RoomEvent {
            seq,
            ts,
            data: serde_json::from_str(data.get()).ok()?,
        })
    }
}

/// Where an offered event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Socket,
    History,
}

impl Room {
    /// Delivers `event` if it is next, drops it if delivered, keeps it if ahead.
    pub(super) fn offer(&mut self, event: RoomEvent, source: Source, cx: &mut Cx) {
        if self.seq.is_none() {
            // A rewind start: the first event of the subscription sets the base.
            if source == Source::Socket {
                self.deliver(event, cx.io);
                self.drain(cx);
            }
            return;
        }
        self.skip_own();
        let Some(cursor) = self.seq else { return };
        if event.seq <= cursor {
            return; // a duplicate, a replay overlapping what was delivered, or our own
        }
        if event.seq == cursor + 1 {
            self.deliver(event, cx.io);
            self.drain(cx);
            return;
        }
        // A gap: keep the event and fetch what is missing before delivering it
        // (in a no-echo room, once no ack of ours can fill it).
        let target = event.seq - 1;
        if self.buffer.len() < MAX_BUFFERED {
            self.buffer.insert(event.seq, event);
        }
        if source == Source::Socket && self.holding(cx) {
            return;
        }
        self.request_heal(Some(target), cx);
    }

    fn deliver(&mut self, event: RoomEvent, io: &mut Io) {
        self.seq = Some(event.seq);
        let RoomEvent { seq, ts, data } = event;
        let event = Event {
            room: self.name.clone(),
            seq,
            ts,
            data,
            epoch: self.epoch.clone(),
        };
        io.emit(Output::Room {
            sub: self.sub,
            update: RoomUpdate::Event(event),
        });
    }

    /// Delivers kept events that became contiguous; heals again if some are still ahead.
    pub(super) fn drain(&mut self, cx: &mut Cx) {
        loop {
            self.skip_own();
            let Some(cursor) = self.seq else { break };
            let Some(next) = self.buffer.remove(&(cursor + 1)) else {
                break;
            };
            self.deliver(next, cx.io);
        }
        let Some(cursor) = self.seq else { return };
        if self.buffer.is_empty() {
            return;
        }
        self.buffer.retain(|&seq, _| seq > cursor);
        if let Some((&lowest, _)) = self.buffer.iter().next() {
            if self.holding(cx) && self.heal.is_none() {
                return; // an ack still on its way may explain the hole
            }
            self.request_heal(Some(lowest - 1), cx);
        }
    }

    /// A publish of ours to this room was answered (`own`: the seq of its
    /// ack). In a no-echo room the acked seq counts as delivered, and events
    /// held past a hole are delivered, or the hole healed once no answer can
    /// explain it.
    pub(super) fn publish_settled(&mut self, own: Option<u64>, cx: &mut Cx) {
        if self.echo || self.wire != Wire::Active {
            return;
        }
        if let (Some(seq), Some(cursor)) = (own, self.seq) {
            if seq > cursor {
                self.own.insert(seq);
            }
        }
        self.drain(cx);
    }

    /// Steps the cursor across our own acked seqs (no-echo rooms).
    fn skip_own(&mut self) {
        while let Some(cursor) = self.seq {
            if !self.own.remove(&(cursor + 1)) {
                break;
            }
            self.seq = Some(cursor + 1);
        }
        if let Some(cursor) = self.seq {
            self.own.retain(|&seq| seq > cursor);
        }
    }

    /// A no-echo room with publishes sent and not yet answered: a hole may be
    /// one of ours whose ack is still on its way, so it is not healed yet.
    fn holding(&self, cx: &Cx) -> bool {
        !self.echo && cx.publishes.holding(&self.name)
    }
}
