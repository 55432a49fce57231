//! The writer task of a Pusher session: drains its outbound queue to the
//! socket (hubcast's own sessions write their socket directly:
//! `socket_writer`). The heartbeat's ping grid is shared by both.
//!
//! It writes every frame already queued (up to [`MAX_BURST`]) before one flush,
//! so a burst of events costs one syscall, not one per event. It also sends the
//! WebSocket pings of the heartbeat and, when the session ends, the close frame
//! with the code the session was closed with.
//!
//! It is woken once per delivery, so its wake-up path touches only the
//! session's own queue, token and socket, never node-wide state.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::outbound::SessionControl;
use crate::protocol::codes::close;

/// Most frames written before a flush.
const MAX_BURST: usize = 256;

/// How long a close frame may take to go out before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

type Sink = SplitSink<WebSocket, Message>;

/// `close_code` turns the session's close code into the one sent: the
/// identity for hubcast's protocol, Pusher's codes for a Pusher socket
/// (`pusher::codes::close_code`), whose client acts on Pusher's ranges.
pub async fn run(
    mut sink: Sink,
    mut frames: mpsc::Receiver<Utf8Bytes>,
    control: Arc<SessionControl>,
    shutdown: CancellationToken,
    ping_every: Duration,
    close_code: fn(u16) -> u16,
) {
    let ping = tokio::time::sleep_until(first_ping(ping_every));
    tokio::pin!(ping);
    // One wait for the end, registered once for the writer's whole life (not
    // once per wake-up), and polled only when there is nothing to write or a
    // write pends: a writer woken for a frame goes straight to the socket.
    let stop = control.token.cancelled();
    tokio::pin!(stop);
    loop {
        let written = tokio::select! {
            biased;
            // A closed session takes no more frames from its queue (the close
            // path below decides which still go out). The check locks only
            // this session's own token.
            _ = std::future::ready(()), if control.token.is_cancelled() => break,
            frame = frames.recv() => match frame {
                // A write to a client that stopped reading can pend forever:
                // keep listening for the close while it does.
                Some(frame) => tokio::select! {
                    biased;
                    written = write_burst(&mut sink, &mut frames, frame) => written,
                    _ = &mut stop => break,
                },
                None => break,
            },
            _ = &mut stop => break,
            _ = &mut ping => {
                ping.as_mut().reset(on_ping_grid(tokio::time::Instant::now() + ping_every, ping_every));
                tokio::select! {
                    biased;
                    sent = sink.send(Message::Ping(Default::default())) => sent,
                    _ = &mut stop => break,
                }
            },
        };
        if written.is_err() {
            // The peer closed (its Close was read: frames may no longer be
            // sent, but the close reply must still be flushed) or is gone
            // (then the close below fails at once).
            control.token.cancel();
            break;
        }
        control.frames_drained();
    }
    control.close_if_restarting(&shutdown);
    if let Some((code, reason)) = control.close_reason() {
        // Frames queued before the close go out first: a refusal queues the
        // `error` frame that says why (forbidden, unauthenticated,
        // over_capacity) just before it closes. Not for a client that is not
        // reading (slow consumer, heartbeat timeout): its queue would not move.
        if !matches!(code, close::SLOW_CONSUMER | close::HEARTBEAT_TIMEOUT) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_queued(&mut sink, &mut frames)).await;
        }
        let frame = CloseFrame {
            code: close_code(code),
            reason: match reason {
                std::borrow::Cow::Borrowed(reason) => Utf8Bytes::from_static(reason),
                std::borrow::Cow::Owned(reason) => Utf8Bytes::from(reason),
            },
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    } else {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    }
}

/// The step of the node-wide grid pings are sent on (an eighth of the
/// interval when that is shorter, so short test intervals keep their rate).
///
/// A ping wakes the session's writer, and its pong the reader. At a few
/// pings per millisecond each wake-up found the runtime's other worker parked
/// and unparked it (a futex and two context switches) for one socket: with
/// 102,000 idle sockets over 6 nodes, the nodes spent 33–50% of a core, mostly
/// in the scheduler. On a grid, the timer wheel fires every ping due in a step
/// at once and one wake-up serves a batch of writers (at 17,000 sockets a node
/// and a 15 s heartbeat, ~280 a step, ~1.5 ms of writes).
const PING_GRID: Duration = Duration::from_millis(250);

/// `at`, rounded up to the ping grid (anchored once per process).
pub(super) fn on_ping_grid(at: tokio::time::Instant, ping_every: Duration) -> tokio::time::Instant {
    static ANCHOR: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let anchor = *ANCHOR.get_or_init(tokio::time::Instant::now);
    let since = at.saturating_duration_since(anchor).as_nanos();
    let step = PING_GRID.min(ping_every / 8).as_nanos().max(1);
    let steps = since.div_ceil(step);
    anchor + Duration::from_nanos((steps * step) as u64)
}

/// When the first ping goes out: somewhere in the second half of the first
/// interval (on the grid), so that sockets that connected together (the
/// clients of a killed node resuming within a second) spread over the
/// interval rather than pinging together every interval from then on.
pub(super) fn first_ping(ping_every: Duration) -> tokio::time::Instant {
    on_ping_grid(
        tokio::time::Instant::now() + ping_every.mul_f64(0.5 + rand::random::<f64>() * 0.5),
        ping_every,
    )
}

/// Writes what is already queued (at most [`MAX_BURST`] frames), then flushes.
async fn write_queued(
    sink: &mut Sink,
    frames: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    for _ in 0..MAX_BURST {
        match frames.try_recv() {
            Ok(frame) => sink.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    sink.flush().await
}

/// Writes `first` and whatever else is queued, then flushes once.
async fn write_burst(
    sink: &mut Sink,
    frames: &mut mpsc::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> Result<(), axum::Error> {
    sink.feed(Message::Text(first)).await?;
    for _ in 1..MAX_BURST {
        match frames.try_recv() {
            Ok(frame) => sink.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    sink.flush().await
}
