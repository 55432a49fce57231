//! A session's outbound side as others see it: the bounded frame queue and the
//! switch that closes the session with a code.
//!
//! Hubs hold an [`Outbound`] per subscriber and only ever `offer` to it: a full
//! queue never makes a hub wait; it closes that session as a slow consumer
//! (4009), and its client resumes from its cursor, losing nothing.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::protocol::codes::close;

/// How often a wait for queue room looks again without a wake-up.
const ROOM_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Shared close state of one session.
#[derive(Debug, Default)]
pub struct SessionControl {
    /// Cancelled when the session must end; both of its tasks watch it.
    pub token: CancellationToken,
    /// The close code to send; the first caller of `close` wins.
    code: AtomicU16,
    /// Owned only for an operator's disconnect reason; the server's own are static.
    reason: Mutex<Cow<'static, str>>,
    /// Woken by the writer after it drained frames, while `room_wanted` is set:
    /// how the session's own task waits for queue room without claiming any
    /// (a claim made while the queue is full takes every freed slot first,
    /// and the hubs' `offer`s would then fail).
    drained: tokio::sync::Notify,
    room_wanted: AtomicBool,
}

impl SessionControl {
    /// The close state of a session that ends when `shutdown` is cancelled:
    /// its token is a child of the node's, so the session's tasks watch one
    /// token of their own and never poll the node-wide one (whose locks every
    /// session would share, once per delivery).
    pub fn child_of(shutdown: &CancellationToken) -> SessionControl {
        SessionControl {
            token: shutdown.child_token(),
            ..SessionControl::default()
        }
    }

    /// Asks the session to close with `code`. Later calls do not change the code.
    pub fn close(&self, code: u16, reason: impl Into<Cow<'static, str>>) {
        if self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if let Ok(mut r) = self.reason.lock() {
                *r = reason.into();
            }
        }
        self.token.cancel();
    }

    /// Called by the writer after it drained frames from the queue.
    pub fn frames_drained(&self) {
        if self.room_wanted.load(Ordering::SeqCst) {
            self.drained.notify_waiters();
        }
    }

    /// The code and reason set by the first `close`, if any.
    pub fn close_reason(&self) -> Option<(u16, Cow<'static, str>)> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            code => Some((
                code,
                self.reason.lock().map(|r| r.clone()).unwrap_or_default(),
            )),
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
    pub fn new(
        session_id: u64,
        frames: mpsc::Sender<Utf8Bytes>,
        control: Arc<SessionControl>,
    ) -> Outbound {
        Outbound {
            session_id,
            frames,
            control,
        }
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

    /// Queues a frame that may be lost (an ephemeral message) while more than
    /// half of the queue is free; otherwise drops it and says so. Never cuts
    /// the session: the half it leaves free is for the events it must not
    /// lose, and a client that falls behind is better served by skipping a
    /// typing indicator than by a reconnect.
    pub fn offer_droppable(&self, frame: Utf8Bytes) -> bool {
        if self.frames.capacity() <= self.frames.max_capacity() / 2 {
            return false;
        }
        self.frames.try_send(frame).is_ok()
    }

    /// Queues a frame, waiting for room. Only the session's own task may wait
    /// like this (replay, answers to its client's requests); hubs must `offer`.
    pub async fn send(&self, frame: Utf8Bytes) -> bool {
        tokio::select! {
            sent = self.frames.send(frame) => sent.is_ok(),
            _ = self.control.token.cancelled() => false,
        }
    }

    /// Queues a replayed frame once half of the queue is free: the live
    /// frames that other rooms' hubs `offer` meanwhile find room, so a session
    /// that catches up on a backlog in one room while it follows others live
    /// is not cut as a slow consumer by its own replay.
    pub async fn send_replayed(&self, frame: Utf8Bytes) -> bool {
        self.wait_for_room(self.frames.max_capacity() / 2 + 1).await;
        self.send(frame).await
    }

    /// Waits until at least `n` frames fit in the queue (or the session ends),
    /// without claiming any slot meanwhile (see `SessionControl::drained`).
    pub async fn wait_for_room(&self, n: usize) {
        let n = n.min(self.frames.max_capacity());
        loop {
            let drained = self.control.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            self.control.room_wanted.store(true, Ordering::SeqCst);
            if self.frames.capacity() >= n || self.control.token.is_cancelled() {
                self.control.room_wanted.store(false, Ordering::SeqCst);
                return;
            }
            // The writer's wake-up is the fast path; the check every
            // ROOM_RECHECK bounds the wait whoever drains the queue.
            tokio::select! {
                _ = drained => {}
                _ = tokio::time::sleep(ROOM_RECHECK) => {}
                _ = self.control.token.cancelled() => {}
            }
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
