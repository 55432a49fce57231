//! Publish tracking (docs/clients.md, "Publish"): the publishes waiting for
//! their `ack`, each with its id (the server's idempotency key), sent in call
//! order once the socket opens, paced by a token bucket, resent with the same
//! id after every reconnect and after a refusal that appended nothing, until
//! an `ack` or an `error` settles it.

use hubcast_protocol::batch::BatchEventOut;
use hubcast_protocol::codes::{sdk, ErrorCode};
use hubcast_protocol::ClientRequest;
use serde_json::Value;

use super::config::Config;
use super::io::Io;
use super::reconnect::Backoff;
use super::timers::{Timer, TimerId};
use super::Millis;
use crate::types::ClientError;

/// The longest publish id (it is also the server's idempotency key).
pub const MAX_ID_BYTES: usize = hubcast_protocol::MAX_ID_LEN;

pub(super) struct PendingPublish {
    pub key: u64,
    pub id: String,
    /// The room (a batch's first room), named in its errors.
    pub room: String,
    /// Every room it appends to (one, or a batch's rooms).
    pub rooms: Vec<String>,
    /// An atomic batch (`publish_batch`), settled with every receipt.
    pub batch: bool,
    frame: String,
    /// The socket generation it was last sent on (0: not sent on the current socket).
    sent_on: u64,
    attempts: u32,
    retry_timer: Option<TimerId>,
    timeout_timer: Option<TimerId>,
}

#[derive(Default)]
pub(super) struct Publishes {
    pending: Vec<PendingPublish>,
    /// The pacing bucket: publishes that may go out now, refilled at the rate.
    budget: f64,
    budget_at: Option<Millis>,
    pub pump_timer: Option<TimerId>,
}

impl Publishes {
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn get(&self, idx: usize) -> &PendingPublish {
        &self.pending[idx]
    }

    /// The pending publish with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.pending.iter().position(|p| p.id == id)
    }

    /// Whether a publish to `room` went out on this socket and has no answer yet.
    pub fn holding(&self, room: &str) -> bool {
        self.pending
            .iter()
            .any(|p| p.sent_on != 0 && p.rooms.iter().any(|r| r == room))
    }

    /// The `publish` frame for `data`, or why it cannot be queued (checked
    /// before anything is sent: too big, or too many waiting).
    pub fn frame(
        &self,
        room: &str,
        id: &str,
        data: &Value,
        expected_seq: Option<u64>,
        cfg: &Config,
    ) -> Result<String, ClientError> {
        let refuse = |code: &str, message: String| {
            ClientError::new(code, message).with_room(room).with_id(id)
        };
        let data = serde_json::value::to_raw_value(data).map_err(|e| {
            refuse(
                ErrorCode::BadRequest.as_str(),
                format!("data is not JSON: {e}"),
            )
        })?;
        if data.get().len() > cfg.max_event_bytes {
            return Err(refuse(
                ErrorCode::TooLarge.as_str(),
                format!("data is larger than {} bytes", cfg.max_event_bytes),
            ));
        }
        if self.pending.len() >= cfg.max_queued_publishes {
            return Err(refuse(
                sdk::QUEUE_FULL,
                "too many publishes waiting for an ack".into(),
            ));
        }
        Ok(ClientRequest::Publish {
            id,
            room,
            data: &data,
            expected_seq,
            ephemeral: false,
        }
        .encode())
    }

    /// The `publish_batch` frame for `events` (`(room, data, expected_seq)`),
    /// or why it cannot be queued (each event's size, too many waiting).
    pub fn batch_frame(
        &self,
        id: &str,
        events: &[(String, Value, Option<u64>)],
        cfg: &Config,
    ) -> Result<String, ClientError> {
        let first = events.first().map(|e| e.0.clone()).unwrap_or_default();
        let refuse = |code: &str, message: String| {
            ClientError::new(code, message)
                .with_room(first.clone())
                .with_id(id)
        };
        if events.is_empty() {
            return Err(refuse(
                ErrorCode::BadRequest.as_str(),
                "a batch holds at least one event".into(),
            ));
        }
        let mut raw = Vec::with_capacity(events.len());
        for (index, (_, data, _)) in events.iter().enumerate() {
            let data = serde_json::value::to_raw_value(data).map_err(|e| {
                refuse(
                    ErrorCode::BadRequest.as_str(),
                    format!("events[{index}].data is not JSON: {e}"),
                )
            })?;
            if data.get().len() > cfg.max_event_bytes {
                return Err(refuse(
                    ErrorCode::TooLarge.as_str(),
                    format!(
                        "events[{index}].data is larger than {} bytes",
                        cfg.max_event_bytes
                    ),
                ));
            }
            raw.push(data);
        }
        if self.pending.len() >= cfg.max_queued_publishes {
            return Err(refuse(
                sdk::QUEUE_FULL,
                "too many publishes waiting for an ack".into(),
            ));
        }
        let out: Vec<BatchEventOut<'_>> = events
            .iter()
            .zip(&raw)
            .map(|((room, _, expected_seq), data)| BatchEventOut {
                room,
                data,
                expected_seq: *expected_seq,
            })
            .collect();
        Ok(ClientRequest::PublishBatch { id, events: &out }.encode())
    }

    /// Queues a publish (its `frame` from [`Publishes::frame`]); it fails with
    /// `timeout` after `timeout_ms` (0: never).
    /// A batch (its `frame` from [`Publishes::batch_frame`]) is pushed with
    /// all its `rooms` and `batch` set.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        key: u64,
        id: String,
        rooms: Vec<String>,
        batch: bool,
        frame: String,
        timeout_ms: u64,
        io: &mut Io,
    ) {
        let timeout_timer =
            (timeout_ms > 0).then(|| io.timers.set(timeout_ms, Timer::PublishTimeout(key)));
        self.pending.push(PendingPublish {
            key,
            id,
            room: rooms.first().cloned().unwrap_or_default(),
            rooms,
            batch,
            frame,
            sent_on: 0,
            attempts: 0,
            retry_timer: None,
            timeout_timer,
        });
    }

    /// Sends pending publishes not yet sent on socket `generation`, in call
    /// order, at most `rate` per second (0: unpaced).
    pub fn pump(&mut self, io: &mut Io, generation: u64, rate: u32) {
        if !io.is_open() || self.pump_timer.is_some() {
            return;
        }
        for idx in 0..self.pending.len() {
            if self.pending[idx].retry_timer.is_some() || self.pending[idx].sent_on == generation {
                continue;
            }
            if rate > 0 && !self.take_token(rate, io.timers.now()) {
                let wait = 1000_u64.div_ceil(rate as u64);
                self.pump_timer = Some(io.timers.set(wait, Timer::Pump));
                return;
            }
            if !io.send_text(|| self.pending[idx].frame.clone()) {
                return;
            }
            self.pending[idx].sent_on = generation;
        }
    }

    fn take_token(&mut self, rate: u32, now: Millis) -> bool {
        let rate = rate as f64;
        self.budget = match self.budget_at {
            None => rate,
            Some(at) => rate.min(self.budget + (now.saturating_sub(at)) as f64 * rate / 1000.0),
        };
        self.budget_at = Some(now);
        if self.budget < 1.0 {
            return false;
        }
        self.budget -= 1.0;
        true
    }

    /// Refused with a code after which nothing was appended: send it again
    /// (same id) after a backoff that doubles per try.
    pub fn retry_later(&mut self, idx: usize, backoff: Backoff, random: f64, io: &mut Io) {
        let entry = &mut self.pending[idx];
        let delay = backoff.delay(entry.attempts, random);
        entry.retry_timer = Some(io.timers.set(delay, Timer::PublishRetry(entry.key)));
        entry.sent_on = 0;
        entry.attempts += 1;
    }

    /// The retry timer of publish `key` fired; `true` if it is still pending.
    pub fn retry_due(&mut self, key: u64) -> bool {
        match self.pending.iter_mut().find(|p| p.key == key) {
            Some(entry) => {
                entry.retry_timer = None;
                true
            }
            None => false,
        }
    }

    /// The timeout of publish `key` fired: its index, if it is still pending.
    pub fn timed_out(&mut self, key: u64) -> Option<usize> {
        let idx = self.pending.iter().position(|p| p.key == key)?;
        self.pending[idx].timeout_timer = None;
        Some(idx)
    }

    /// Takes a publish out to settle it, with its timers.
    pub fn remove(&mut self, idx: usize, io: &mut Io) -> PendingPublish {
        let mut entry = self.pending.remove(idx);
        io.timers.cancel(&mut entry.retry_timer);
        io.timers.cancel(&mut entry.timeout_timer);
        entry
    }

    /// The socket is gone: every publish is sent again on the next one.
    pub fn socket_gone(&mut self) {
        for entry in &mut self.pending {
            entry.sent_on = 0;
        }
    }
}
