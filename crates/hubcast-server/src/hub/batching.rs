//! Batching (a namespace with `batch_ms`): a room's live events coalesced
//! into one `batch` frame, encoded once and shared, sent when the batch holds
//! `batch_max` events, 256 KiB of data, or its window (counted from its first
//! event) ends. The tail keeps single `event` frames, so resumes are unchanged.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use super::{offer_all, Hub};
use crate::event::Event;
use crate::protocol::{BatchEvent, ServerMessage};

/// A batch is sent early once its events' data reach this many bytes, so one
/// frame stays far below what clients accept.
const BATCH_MAX_BYTES: usize = 256 * 1024;

/// Events waiting to go out as one `batch` frame.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) events: Vec<Arc<Event>>,
    pub(super) bytes: usize,
    pub(super) deadline: Option<Instant>,
}

impl Hub {
    /// In a batching room with subscribers, adds `event` to the pending batch
    /// (sending the batch when full) and returns `None`; otherwise gives the
    /// event back to be sent on its own.
    pub(super) fn hold_for_batch(&mut self, event: Arc<Event>) -> Option<Arc<Event>> {
        let Some((window, max)) = self.batching else {
            return Some(event);
        };
        if self.subscribers.is_empty() {
            return Some(event);
        }
        if !self.pending.events.is_empty()
            && self.pending.bytes + event.data.get().len() > BATCH_MAX_BYTES
        {
            self.flush();
        }
        self.pending.bytes += event.data.get().len();
        self.pending.events.push(event);
        if self.pending.deadline.is_none() {
            self.pending.deadline = Some(Instant::now() + window);
        }
        if self.pending.events.len() >= max {
            self.flush();
        }
        None
    }

    /// Sends the pending events as one `batch` frame, encoded once and shared
    /// (a subscriber whose replay already covered part of it gets the rest,
    /// and in a no-echo room a sender gets it without its own events).
    pub(super) fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let Some(last) = pending.events.last().map(|e| e.seq) else {
            return;
        };
        let started = std::time::Instant::now();
        let first = pending.events[0].seq;
        let items: Vec<BatchEvent> = pending
            .events
            .iter()
            .map(|e| BatchEvent {
                seq: e.seq,
                ts: e.ts,
                data: &e.data,
            })
            .collect();
        let frame: Utf8Bytes = ServerMessage::Batch {
            room: &self.room,
            events: &items,
        }
        .encode()
        .into();
        let room = &self.room;
        let origins: Vec<u64> = if self.echo {
            Vec::new()
        } else {
            pending.events.iter().filter_map(|e| e.origin).collect()
        };
        let mut events_offered = 0u64;
        let (_, gone) = offer_all(&mut self.subscribers, true, |sub| {
            let session = sub.out.session_id;
            if sub.skip_through >= last || sub.pusher.is_some() {
                // Pusher subscribers had these events one by one.
                None
            } else if origins.contains(&session) {
                let rest: Vec<BatchEvent> = pending
                    .events
                    .iter()
                    .zip(&items)
                    .filter(|(e, item)| item.seq > sub.skip_through && e.origin != Some(session))
                    .map(|(_, item)| *item)
                    .collect();
                events_offered += rest.len() as u64;
                (!rest.is_empty()).then(|| {
                    ServerMessage::Batch {
                        room,
                        events: &rest,
                    }
                    .encode()
                    .into()
                })
            } else if sub.skip_through < first {
                events_offered += items.len() as u64;
                Some(frame.clone())
            } else {
                let rest: Vec<BatchEvent> = items
                    .iter()
                    .copied()
                    .filter(|e| e.seq > sub.skip_through)
                    .collect();
                events_offered += rest.len() as u64;
                Some(
                    ServerMessage::Batch {
                        room,
                        events: &rest,
                    }
                    .encode()
                    .into(),
                )
            }
        });
        let ts: Vec<i64> = pending.events.iter().map(|e| e.ts).collect();
        let per_event = frame.len() / items.len().max(1);
        self.note_broadcast(started, events_offered, per_event, &ts);
        self.members_left(gone);
    }
}
