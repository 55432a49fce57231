//! A session's outbound side as others see it: where its frames go (the
//! socket itself, or a bounded queue a writer task drains) and the switch
//! that closes the session with a code.
//!
//! Hubs hold an [`Outbound`] per subscriber and only ever `offer` to it: a full
//! queue never makes a hub wait; it closes that session as a slow consumer
//! (4009), and its client resumes from its cursor, losing nothing.
//!
//! hubcast's own WebSocket sessions take frames on their [`DirectSocket`]
//! (written at once when nothing waits ahead, else backlogged, within the
//! same limit); Pusher and SSE sessions through a queue and their writer.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::protocol::codes::close;
use crate::socket::{DirectSocket, Frame, Offered};

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

    /// For a writer about to close: the session's token is a child of the
    /// node's, so a shutdown cancelled it without a code. Close with 1012
    /// then, so the client resumes elsewhere at once.
    pub fn close_if_restarting(&self, shutdown: &CancellationToken) {
        if shutdown.is_cancelled() {
            self.close(close::RESTART, "server restarting");
        }
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
#[derive(Clone)]
pub struct Outbound {
    pub session_id: u64,
    route: Route,
    control: Arc<SessionControl>,
}

/// Where a session's frames go.
#[derive(Clone)]
enum Route {
    /// A queue its writer task drains (Pusher, SSE).
    Queue(mpsc::Sender<Utf8Bytes>),
    /// Its socket, written by whoever offers (hubcast's WebSocket).
    Socket(Arc<DirectSocket>),
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn new(
        session_id: u64,
        frames: mpsc::Sender<Utf8Bytes>,
        control: Arc<SessionControl>,
    ) -> Outbound {
        Outbound {
            session_id,
            route: Route::Queue(frames),
            control,
        }
    }

    /// The outbound side of a session that writes its socket directly.
    pub fn direct(
        session_id: u64,
        socket: Arc<DirectSocket>,
        control: Arc<SessionControl>,
    ) -> Outbound {
        Outbound {
            session_id,
            route: Route::Socket(socket),
            control,
        }
    }

    /// Sends a frame without waiting. A full queue cuts the session (4009).
    pub fn offer(&self, frame: Utf8Bytes) -> Offer {
        match &self.route {
            Route::Queue(frames) => match frames.try_send(frame) {
                Ok(()) => Offer::Queued,
                Err(TrySendError::Full(_)) => {
                    self.control.close(close::SLOW_CONSUMER, "slow consumer");
                    Offer::SlowConsumer
                }
                Err(TrySendError::Closed(_)) => Offer::Closed,
            },
            Route::Socket(socket) => self.socket_offered(socket.offer(Frame::text(frame.into()))),
        }
    }

    /// As `offer`, but never written by the caller: a socket's writer task
    /// writes it, with whatever else is waiting by then (a hub that is
    /// behind; see `hub::Pace`).
    pub fn offer_to_writer(&self, frame: Utf8Bytes) -> Offer {
        let Route::Socket(socket) = &self.route else {
            return self.offer(frame);
        };
        self.socket_offered(socket.offer_to_writer(Frame::text(frame.into())))
    }

    fn socket_offered(&self, offered: Offered) -> Offer {
        match offered {
            Offered::Taken => Offer::Queued,
            Offered::Full => {
                self.control.close(close::SLOW_CONSUMER, "slow consumer");
                Offer::SlowConsumer
            }
            Offered::Closed => {
                // Closed by its session, or a write failed: the peer is gone.
                self.control.token.cancel();
                Offer::Closed
            }
        }
    }

    /// Room left in the queue or backlog, in frames, and its limit.
    fn room(&self) -> (usize, usize) {
        match &self.route {
            Route::Queue(frames) => (frames.capacity(), frames.max_capacity()),
            Route::Socket(socket) => {
                let limit = socket.limit();
                (limit.saturating_sub(socket.backlog_len()), limit)
            }
        }
    }

    /// Queues a frame that may be lost (an ephemeral message) while more than
    /// half of the queue is free; otherwise drops it and says so. Never cuts
    /// the session: the half it leaves free is for the events it must not
    /// lose, and a client that falls behind is better served by skipping a
    /// typing indicator than by a reconnect.
    pub fn offer_droppable(&self, frame: Utf8Bytes) -> bool {
        let (room, limit) = self.room();
        if room <= limit / 2 {
            return false;
        }
        match &self.route {
            Route::Queue(frames) => frames.try_send(frame).is_ok(),
            Route::Socket(socket) => socket.offer(Frame::text(frame.into())) == Offered::Taken,
        }
    }

    /// Queues a frame, waiting for room. Only the session's own task may wait
    /// like this (replay, answers to its client's requests); hubs must `offer`.
    pub async fn send(&self, frame: Utf8Bytes) -> bool {
        match &self.route {
            Route::Queue(frames) => tokio::select! {
                sent = frames.send(frame) => sent.is_ok(),
                _ = self.control.token.cancelled() => false,
            },
            Route::Socket(socket) => {
                let mut frame = Frame::text(frame.into());
                loop {
                    self.wait_for_room(1).await;
                    if self.control.token.is_cancelled() {
                        return false;
                    }
                    // Only this session's own task waits, but a hub may have
                    // taken the slot meanwhile: then wait again.
                    match socket.offer_if_room(frame) {
                        Ok(()) => return true,
                        Err(Some(back)) => frame = back,
                        Err(None) => return false,
                    }
                }
            }
        }
    }

    /// Queues a replayed frame once half of the queue is free: the live
    /// frames that other rooms' hubs `offer` meanwhile find room, so a session
    /// that catches up on a backlog in one room while it follows others live
    /// is not cut as a slow consumer by its own replay.
    pub async fn send_replayed(&self, frame: Utf8Bytes) -> bool {
        self.wait_for_room(self.room().1 / 2 + 1).await;
        self.send(frame).await
    }

    /// Waits until at least `n` frames fit in the queue (or the session ends),
    /// without claiming any slot meanwhile (see `SessionControl::drained`).
    pub async fn wait_for_room(&self, n: usize) {
        let n = n.min(self.room().1);
        loop {
            let drained = self.control.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            self.control.room_wanted.store(true, Ordering::SeqCst);
            if self.room().0 >= n || self.control.token.is_cancelled() {
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
