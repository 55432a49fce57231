//! A session's outbound side as others see it: the bounded frame queue and the
//! switch that closes the session with a code.
//!
//! Hubs hold an [`Outbound`] per subscriber and only ever `offer` to it: a full
//! queue never makes a hub wait; it closes that session as a slow consumer
//! (4009), and its client resumes from its cursor, losing nothing.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::protocol::codes::close;

/// Shared close state of one session.
#[derive(Debug, Default)]
pub struct SessionControl {
    /// Cancelled when the session must end; both of its tasks watch it.
    pub token: CancellationToken,
    /// The close code to send; the first caller of `close` wins.
    code: AtomicU16,
    reason: Mutex<&'static str>,
}

impl SessionControl {
    /// The close state of a session that ends when `shutdown` is cancelled:
    /// its token is a child of the node's, so the session's tasks watch one
    /// token of their own and never poll the node-wide one (whose locks every
    /// session would share, once per delivery).
    pub fn child_of(shutdown: &CancellationToken) -> SessionControl {
        SessionControl { token: shutdown.child_token(), ..SessionControl::default() }
    }

    /// Asks the session to close with `code`. Later calls do not change the code.
    pub fn close(&self, code: u16, reason: &'static str) {
        if self.code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            if let Ok(mut r) = self.reason.lock() {
                *r = reason;
            }
        }
        self.token.cancel();
    }

    /// The code and reason set by the first `close`, if any.
    pub fn close_reason(&self) -> Option<(u16, &'static str)> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            code => Some((code, self.reason.lock().map(|r| *r).unwrap_or(""))),
        }
    }
}

/// What became of an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full: the session is now closing with 4009.
    SlowConsumer,
    /// The session is gone.
    Closed,
}

/// The handle hubs use to send frames to one session.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub session_id: u64,
    frames: mpsc::Sender<Utf8Bytes>,
    control: Arc<SessionControl>,
}

impl Outbound {
    pub fn new(session_id: u64, frames: mpsc::Sender<Utf8Bytes>, control: Arc<SessionControl>) -> Outbound {
        Outbound { session_id, frames, control }
    }

    /// Queues a frame without waiting. A full queue cuts the session (4009).
    pub fn offer(&self, frame: Utf8Bytes) -> Offer {
        match self.frames.try_send(frame) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(_)) => {
                self.control.close(close::SLOW_CONSUMER, "slow consumer");
                Offer::SlowConsumer
            }
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    /// Queues a frame, waiting for room. Only the session's own task may wait
    /// like this (replay, answers to its client's requests); hubs must `offer`.
    pub async fn send(&self, frame: Utf8Bytes) -> bool {
        tokio::select! {
            sent = self.frames.send(frame) => sent.is_ok(),
            _ = self.control.token.cancelled() => false,
        }
    }

    /// Waits until at least `n` frames fit in the queue (or the session ends).
    pub async fn wait_for_room(&self, n: usize) {
        let n = n.min(self.frames.max_capacity());
        tokio::select! {
            _ = self.frames.reserve_many(n) => {}
            _ = self.control.token.cancelled() => {}
        }
    }

    /// Asks the session to close with `code` (first code wins).
    pub fn close(&self, code: u16, reason: &'static str) {
        self.control.close(code, reason);
    }

    pub fn is_closed(&self) -> bool {
        self.control.token.is_cancelled()
    }
}
