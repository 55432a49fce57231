//! A hubcast WebSocket's TCP socket, written by whoever has a frame for it.
//!
//! Server-to-client frames are not masked, so a broadcast's frame is the
//! same bytes for every subscriber: its payload is encoded once by the hub
//! and only a 2–10 byte header is built per socket, on the stack. A hub that
//! offers a frame to a socket with nothing waiting to go out writes it itself,
//! at once, with one `writev`: no queue, no writer task woken, no per-send
//! framing. Only what cannot be written at once (the kernel's send buffer is
//! full, or frames are already waiting) goes into the socket's backlog, which
//! the session's writer task (`session::socket_writer`) writes out, several
//! frames per `writev`, when the socket is writable again.
//!
//! The backlog's lock is held only across a non-blocking write, so frames
//! leave whole and in the order they were offered whoever writes them.
//! Reading stays with tungstenite ([`SocketIo`]): what it writes on its own
//! (pongs, the reply to a client's close) goes through the same lock.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// Most frames one `writev` of the backlog carries (two slices each).
const MAX_SLICES: usize = 64;

/// Frames up to this size are sent from one buffer on the stack.
const SMALL_FRAME: usize = 512;

/// One WebSocket frame on its way out: its header and payload, kept apart
/// so the payload (shared by every subscriber) is never copied.
pub struct Frame {
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
}

impl Frame {
    /// A text frame (the payload is UTF-8 JSON).
    pub fn text(payload: Bytes) -> Frame {
        Frame::new(0x1, payload)
    }

    /// A ping with no payload.
    pub fn ping() -> Frame {
        Frame::new(0x9, Bytes::new())
    }

    /// A close frame with `code` and `reason` (cut to fit a control frame).
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut reason = reason;
        while reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        Frame::new(0x8, payload.into())
    }

    /// A close frame without a code (the reply to a client's close).
    pub fn close_without_code() -> Frame {
        Frame::new(0x8, Bytes::new())
    }

    /// Bytes already framed (tungstenite's pongs and close replies).
    fn raw(bytes: Bytes) -> Frame {
        Frame {
            header: [0; 10],
            header_len: 0,
            payload: bytes,
        }
    }

    fn new(opcode: u8, payload: Bytes) -> Frame {
        let mut header = [0u8; 10];
        header[0] = 0x80 | opcode;
        let len = payload.len();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if len <= u16::MAX as usize {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Frame {
            header,
            header_len,
            payload,
        }
    }

    fn len(&self) -> usize {
        self.header_len as usize + self.payload.len()
    }

    /// The frame's bytes from `offset` on, as at most two slices.
    fn slices(&self, offset: usize) -> [&[u8]; 2] {
        let header = &self.header[..self.header_len as usize];
        if offset < header.len() {
            [&header[offset..], &self.payload]
        } else {
            [&[], &self.payload[offset - header.len()..]]
        }
    }
}

/// What became of an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Written to the socket (the kernel has it) or queued behind others.
    Taken,
    /// The backlog holds its limit of frames: the client is not reading.
    Full,
    /// The socket is closing or failed: no more frames go out.
    Closed,
}

/// The write side of one WebSocket connection, shared by the hubs that
/// deliver to it, its session and its writer task.
pub struct DirectSocket {
    /// Inline, not behind an `Arc` of its own: a hub's write then reads the
    /// descriptor from the cache lines the backlog's lock just brought in
    /// (a separate allocation was a cache miss per delivery, ~4% of its CPU).
    tcp: TcpStream,
    backlog: Mutex<Backlog>,
    /// Most frames the backlog holds (`limits.outbound_queue`).
    limit: usize,
    /// Wakes the writer task: the backlog went from empty to not.
    pending: Notify,
}

#[derive(Default)]
struct Backlog {
    frames: VecDeque<Frame>,
    /// Bytes of the first frame already written.
    written: usize,
    /// The close frame is queued (or the socket failed): nothing more is taken.
    closed: bool,
}

impl DirectSocket {
    pub fn new(tcp: TcpStream, limit: usize) -> DirectSocket {
        DirectSocket {
            tcp,
            backlog: Mutex::new(Backlog::default()),
            limit: limit.max(1),
            pending: Notify::new(),
        }
    }

    /// The backlog's limit in frames.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Frames waiting in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Writes `frame` now if nothing is ahead of it, else queues it (within
    /// the limit) for the writer task.
    pub fn offer(&self, frame: Frame) -> Offered {
        self.push(frame, true, true)
    }

    /// Queues `frame` (within the limit) for the writer task, even if the
    /// socket is idle: it goes out with whatever else waits by then.
    pub fn offer_to_writer(&self, frame: Frame) -> Offered {
        self.push(frame, true, false)
    }

    /// As `offer`, but a full backlog gives the frame back (for a sender
    /// that waits for room); `Err(None)` when the socket is closed.
    pub fn offer_if_room(&self, frame: Frame) -> Result<(), Option<Frame>> {
        let mut backlog = self.lock();
        if backlog.closed {
            return Err(None);
        }
        if backlog.frames.len() >= self.limit {
            return Err(Some(frame));
        }
        if self.push_locked(&mut backlog, frame) {
            Ok(())
        } else {
            Err(None)
        }
    }

    /// Queues `frame` past the limit: a ping, which must go out even to a
    /// client whose backlog is full, so that a stalled one is noticed.
    pub fn offer_control(&self, frame: Frame) -> Offered {
        self.push(frame, false, true)
    }

    /// Queues frames tungstenite framed (past the limit, like a ping). A
    /// close among them is the reply to the client's close: nothing may
    /// follow it, so the socket takes no more.
    fn offer_framed(&self, bytes: Bytes) {
        let closes = holds_close(&bytes);
        let mut backlog = self.lock();
        if backlog.closed {
            return;
        }
        self.push_locked(&mut backlog, Frame::raw(bytes));
        backlog.closed |= closes;
    }

    /// Queues the close frame: frames offered after it are refused. With
    /// `drop_backlog`, the frames still waiting are dropped first (but the one
    /// being written is finished, or the close would land inside it).
    pub fn close(&self, frame: Frame, drop_backlog: bool) {
        let mut backlog = self.lock();
        if backlog.closed {
            return;
        }
        if drop_backlog {
            let keep = usize::from(backlog.written > 0);
            backlog.frames.truncate(keep);
        }
        self.push_locked(&mut backlog, frame);
        backlog.closed = true;
    }

    /// Marks the socket closed without a close frame (the peer is gone).
    pub fn shut(&self) {
        self.lock().closed = true;
    }

    fn push(&self, frame: Frame, limited: bool, write_now: bool) -> Offered {
        let mut backlog = self.lock();
        if backlog.closed {
            return Offered::Closed;
        }
        if limited && backlog.frames.len() >= self.limit {
            return Offered::Full;
        }
        if !write_now {
            backlog.frames.push_back(frame);
            if backlog.frames.len() == 1 {
                self.pending.notify_one();
            }
            return Offered::Taken;
        }
        if self.push_locked(&mut backlog, frame) {
            Offered::Taken
        } else {
            Offered::Closed
        }
    }

    /// Writes or queues `frame`; false if the socket failed.
    fn push_locked(&self, backlog: &mut Backlog, frame: Frame) -> bool {
        if backlog.frames.is_empty() {
            match self.send(&frame) {
                Ok(n) if n == frame.len() => return true,
                Ok(n) => backlog.written = n,
                Err(err)
                    if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) =>
                {
                    backlog.written = 0
                }
                Err(_) => {
                    backlog.closed = true;
                    return false;
                }
            }
            backlog.frames.push_back(frame);
            self.pending.notify_one();
        } else {
            backlog.frames.push_back(frame);
        }
        true
    }

    /// One `send` of a whole frame, straight to the socket: a small frame is
    /// copied behind its header on the stack and sent as one buffer.
    ///
    /// Not through tokio's `try_write`: its readiness check is a cache miss
    /// per socket, and `writev` a longer path in the kernel than `send`
    /// (together ~12% of the CPU of a delivery at 1,000 subscribers). Its
    /// readiness is then stale after a `WouldBlock`; the writer task's own
    /// write (through tokio) finds that out and waits properly.
    fn send(&self, frame: &Frame) -> io::Result<usize> {
        let socket = socket2::SockRef::from(&self.tcp);
        let [header, payload] = frame.slices(0);
        let len = frame.len();
        if len <= SMALL_FRAME {
            let mut bytes = [0u8; SMALL_FRAME];
            bytes[..header.len()].copy_from_slice(header);
            bytes[header.len()..len].copy_from_slice(payload);
            socket.send(&bytes[..len])
        } else {
            socket.send_vectored(&[IoSlice::new(header), IoSlice::new(payload)])
        }
    }

    /// Waits until the backlog has frames (the writer task's wait).
    pub async fn backlogged(&self) {
        self.pending.notified().await
    }

    /// Writes the backlog out until it is empty, waiting for the socket to
    /// be writable between writes. Errors when the peer is gone.
    pub async fn drain(&self) -> io::Result<()> {
        loop {
            match self.write_backlog() {
                Ok(true) => return Ok(()),
                Ok(false) => self.tcp.writable().await?,
                Err(err) => {
                    self.shut();
                    return Err(err);
                }
            }
        }
    }

    /// One `writev` of the backlog's head; true once the backlog is empty.
    fn write_backlog(&self) -> io::Result<bool> {
        let mut backlog = self.lock();
        loop {
            if backlog.frames.is_empty() {
                return Ok(true);
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES * 2];
            let mut count = 0;
            for (i, frame) in backlog.frames.iter().take(MAX_SLICES).enumerate() {
                let offset = if i == 0 { backlog.written } else { 0 };
                for part in frame.slices(offset) {
                    if !part.is_empty() {
                        slices[count] = IoSlice::new(part);
                        count += 1;
                    }
                }
            }
            let mut n = match self.tcp.try_write_vectored(&slices[..count]) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            };
            // Drop the frames written whole; remember how far into the next.
            while let Some(head) = backlog.frames.front() {
                let left = head.len() - backlog.written;
                if n < left {
                    backlog.written += n;
                    break;
                }
                n -= left;
                backlog.written = 0;
                backlog.frames.pop_front();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Backlog> {
        // A panic while holding the lock leaves a consistent backlog (every
        // change is a push or a pop): carry on with it.
        self.backlog.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The socket as tungstenite sees it: reads come from the TCP stream, and
/// what tungstenite writes by itself (a pong, the reply to the client's
/// close) is queued on the [`DirectSocket`] like any other frame.
///
/// tungstenite hands over whole frames: it buffers them and writes its
/// buffer in one `write`, which this always takes whole.
pub struct SocketIo {
    socket: Arc<DirectSocket>,
}

impl AsyncRead for SocketIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.socket.tcp.poll_read_ready(cx))?;
            match self.socket.tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: poll again, which registers the waker.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // After the server's close frame nothing more may follow it (a
        // close reply included): `Closed` drops it, as the RFC allows.
        self.socket.offer_framed(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A new connection's two sides: the socket to write to, and the client's
/// messages, read by tungstenite (`prefix`: bytes the client sent right
/// after its handshake, already read by the HTTP server).
pub async fn accept(
    tcp: TcpStream,
    prefix: Vec<u8>,
    limit: usize,
    config: WebSocketConfig,
) -> (Arc<DirectSocket>, ClientFrames) {
    let socket = Arc::new(DirectSocket::new(tcp, limit));
    let io = SocketIo {
        socket: socket.clone(),
    };
    let stream = WebSocketStream::from_partially_read(io, prefix, Role::Server, Some(config)).await;
    (socket, ClientFrames(stream))
}

/// The client's messages, as axum's `WebSocket` would give them.
pub struct ClientFrames(WebSocketStream<SocketIo>);

impl Stream for ClientFrames {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let message = match ready!(Pin::new(&mut self.0).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(err)) => return Poll::Ready(Some(Err(axum::Error::new(err)))),
                Some(Ok(message)) => message,
            };
            let message = match message {
                WsMessage::Text(text) => {
                    let bytes: &Bytes = text.as_ref();
                    match Utf8Bytes::try_from(bytes.clone()) {
                        Ok(text) => Message::Text(text),
                        Err(err) => return Poll::Ready(Some(Err(axum::Error::new(err)))),
                    }
                }
                WsMessage::Binary(data) => Message::Binary(data),
                WsMessage::Ping(data) => Message::Ping(data),
                WsMessage::Pong(data) => Message::Pong(data),
                WsMessage::Close(_) => {
                    // tungstenite has queued its reply (the client's code
                    // echoed); it writes it on its next write or flush, and
                    // the session reads no further: flush now. The socket
                    // then takes nothing more.
                    let _ = Sink::<WsMessage>::poll_flush(Pin::new(&mut self.0), cx);
                    Message::Close(None)
                }
                // Only ever produced for writing.
                WsMessage::Frame(_) => continue,
            };
            return Poll::Ready(Some(Ok(message)));
        }
    }
}

/// Whether server frames `bytes` (whole, unmasked) include a close frame.
fn holds_close(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 2 {
        if bytes[0] & 0x0f == 0x8 {
            return true;
        }
        let (header, len): (usize, usize) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 if bytes.len() >= 10 => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&bytes[2..10]);
                (10, u64::from_be_bytes(len) as usize)
            }
            126 | 127 => return false,
            len => (2, len as usize),
        };
        bytes = bytes.get(header.saturating_add(len)..).unwrap_or_default();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        assert_eq!(Frame::text(Bytes::from_static(b"hi")).slices(0)[0], &[0x81, 2]);
        let medium = Frame::text(Bytes::from(vec![b'x'; 300]));
        assert_eq!(medium.slices(0)[0], &[0x81, 126, 1, 44]);
        let large = Frame::text(Bytes::from(vec![b'x'; 70_000]));
        assert_eq!(large.slices(0)[0], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(large.len(), 70_010);
    }

    #[test]
    fn a_close_is_found_behind_other_frames() {
        let mut bytes = vec![0x8a, 3, 1, 2, 3];
        assert!(!holds_close(&bytes));
        bytes.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
        assert!(holds_close(&bytes));
    }

    #[test]
    fn slices_resume_inside_the_header_or_the_payload() {
        let frame = Frame::text(Bytes::from_static(b"abc"));
        assert_eq!(frame.slices(1), [&[3u8][..], &b"abc"[..]]);
        assert_eq!(frame.slices(3), [&[][..], &b"bc"[..]]);
    }

    #[test]
    fn close_frames_carry_the_code_and_a_reason_cut_on_a_char_boundary() {
        let frame = Frame::close(4009, &"é".repeat(100));
        let [header, payload] = frame.slices(0);
        assert_eq!(header, &[0x88, 124]);
        assert_eq!(&payload[..2], &4009u16.to_be_bytes());
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
