//! The application heartbeat (docs/clients.md, "Heartbeat"). Browsers cannot
//! send or see WebSocket pings, so the SDKs check liveness themselves: any
//! frame from the server counts; after `interval_ms` of silence a `ping`
//! goes out, and if nothing at all arrives within `timeout_ms` after it the
//! socket is abandoned (handled as a close 4010). A dead connection is noticed
//! at most `interval_ms + timeout_ms` after its last frame.

use hubcast_protocol::ClientRequest;

use super::io::Io;
use super::timers::{Timer, TimerId};
use super::Millis;

/// The application heartbeat: a `ping` after `interval_ms` without a frame,
/// the socket abandoned if nothing arrives within `timeout_ms` after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat {
            interval_ms: 10_000,
            timeout_ms: 5_000,
        }
    }
}

/// What the heartbeat knows of the open socket.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    last_frame_at: Millis,
    frames_received: u64,
    /// A `ping` in flight: when it went out, and the frame count then.
    ping: Option<(Millis, u64)>,
    pub timer: Option<TimerId>,
}

impl Liveness {
    /// A frame (of any kind) arrived.
    pub fn frame(&mut self, now: Millis) {
        self.last_frame_at = now;
        self.frames_received += 1;
    }

    /// The socket opened: silence is counted from now.
    pub fn start(&mut self, heartbeat: Option<Heartbeat>, io: &mut Io) {
        self.last_frame_at = io.timers.now();
        self.ping = None;
        if let Some(hb) = heartbeat {
            self.schedule(hb.interval_ms, io);
        }
    }

    pub fn stop(&mut self, io: &mut Io) {
        io.timers.cancel(&mut self.timer);
        self.ping = None;
    }

    fn schedule(&mut self, ms: u64, io: &mut Io) {
        io.timers.cancel(&mut self.timer);
        self.timer = Some(io.timers.set(ms, Timer::Heartbeat));
    }

    /// The heartbeat timer fired. Returns `true` when the socket is to be
    /// abandoned: a `ping` went unanswered (and nothing else came) for `timeout_ms`.
    pub fn tick(&mut self, hb: Heartbeat, io: &mut Io) -> bool {
        if !io.is_open() {
            return false;
        }
        let now = io.timers.now();
        if let Some((sent_at, frames)) = self.ping {
            if self.frames_received > frames {
                self.ping = None;
            } else {
                let waited = now - sent_at;
                if waited >= hb.timeout_ms {
                    return true;
                }
                self.schedule(hb.timeout_ms - waited, io);
                return false;
            }
        }
        let idle = now.saturating_sub(self.last_frame_at);
        if idle >= hb.interval_ms {
            io.send(ClientRequest::Ping);
            self.ping = Some((now, self.frames_received));
            self.schedule(hb.timeout_ms, io);
        } else {
            self.schedule(hb.interval_ms - idle, io);
        }
        false
    }
}
