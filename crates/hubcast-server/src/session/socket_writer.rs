//! The writer task of a session on a [`DirectSocket`]: it writes what the
//! hubs could not write at once (the socket's backlog), sends the heartbeat's
//! pings, and at the end the close frame with the session's close code.
//!
//! Unlike `writer` (the Pusher protocol's, over a queue), it is not woken per
//! delivery: a hub writes to an idle socket itself, and this task wakes only
//! when a backlog forms, for a ping, or for the close.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::writer::{first_ping, on_ping_grid};
use crate::outbound::SessionControl;
use crate::protocol::codes::close;
use crate::socket::{DirectSocket, Frame};

/// How long the last frames and the close frame may take to go out before
/// the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn run(
    socket: Arc<DirectSocket>,
    control: Arc<SessionControl>,
    shutdown: CancellationToken,
    ping_every: Duration,
) {
    let ping = tokio::time::sleep_until(first_ping(ping_every));
    tokio::pin!(ping);
    let stop = control.token.cancelled();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = socket.backlogged() => {}
            _ = &mut ping => {
                ping.as_mut().reset(on_ping_grid(tokio::time::Instant::now() + ping_every, ping_every));
                socket.offer_control(Frame::ping());
            }
        }
        // A write to a client that stopped reading can pend forever: keep
        // listening for the close while it does.
        let drained = tokio::select! {
            biased;
            drained = socket.drain() => drained,
            _ = &mut stop => break,
        };
        if drained.is_err() {
            // The peer is gone: nothing more can be written.
            control.token.cancel();
            return;
        }
        control.frames_drained();
    }
    control.close_if_restarting(&shutdown);
    let (frame, unread) = match control.close_reason() {
        // Frames queued before the close go out first (a refusal queues the
        // `error` frame that says why just before it closes), but not to a
        // client that is not reading: its backlog would not move.
        Some((code, reason)) => (
            Frame::close(code, &reason),
            matches!(code, close::SLOW_CONSUMER | close::HEARTBEAT_TIMEOUT),
        ),
        // The client closed, or the session ended without a code: a close
        // frame without one, unless tungstenite already replied to the
        // client's close (the socket then refuses a second).
        None => (Frame::close_without_code(), false),
    };
    socket.close(frame, unread);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.drain()).await;
}
