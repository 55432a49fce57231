//! A byte-level WebSocket client ([`RawWs`]) for clients that misbehave: it
//! never answers a ping and stops reading whenever the test says so.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{within, PHASE, STEP};

/// A WebSocket client on a bare `TcpStream`: the handshake and framing are
/// done by hand, and nothing is ever sent unless the test says so — it never
/// answers a ping and can stop reading for as long as the test likes.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    /// Pings skipped by [`next_json`](Self::next_json).
    pub pings: usize,
}

/// One frame from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;

    pub fn json(&self) -> Option<Value> {
        (self.opcode == Frame::TEXT)
            .then(|| serde_json::from_slice(&self.payload).ok())
            .flatten()
    }

    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == Frame::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl RawWs {
    /// Connects to `path` on `addr` and completes the upgrade by hand.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let mut stream = within(STEP, "a TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        within(
            STEP,
            "the upgrade request",
            stream.write_all(request.as_bytes()),
        )
        .await
        .expect("write upgrade");
        let mut buf = Vec::new();
        let header_end = within(STEP, "the upgrade response", async {
            loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return i + 4;
                }
                let mut chunk = [0u8; 4096];
                let n = stream
                    .read(&mut chunk)
                    .await
                    .expect("read upgrade response");
                assert!(n > 0, "connection closed during the upgrade");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        buf.drain(..header_end);
        RawWs {
            stream,
            buf,
            eof: false,
            pings: 0,
        }
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_raw(0x81, text.as_bytes()).await
    }

    /// Sends one masked frame with this first byte (FIN, RSV bits, opcode) and
    /// payload, whatever they are: the way to send what no client library would.
    pub async fn send_raw(&mut self, first_byte: u8, payload: &[u8]) {
        let mut frame = vec![first_byte];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        within(STEP, "a raw frame write", self.stream.write_all(&frame))
            .await
            .expect("raw frame write");
    }

    /// The next complete frame, or `None` once the server has closed the TCP
    /// connection (a trailing partial frame is dropped).
    pub async fn next_frame(&mut self) -> Option<Frame> {
        within(STEP, "a raw frame", async {
            loop {
                if let Some(frame) = self.parse() {
                    return Some(frame);
                }
                if self.eof {
                    return None;
                }
                self.fill().await;
            }
        })
        .await
    }

    /// The next text frame as JSON, skipping pings.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let frame = self
                .next_frame()
                .await
                .expect("connection ended while a frame was expected");
            match frame.opcode {
                Frame::PING => self.pings += 1,
                Frame::TEXT => return frame.json().expect("text frame is JSON"),
                other => panic!("unexpected frame with opcode {other}: {frame:?}"),
            }
        }
    }

    /// Reads every remaining frame until the server closes the connection.
    /// Returns the frames and whether the stream ended inside a frame.
    pub async fn drain_to_end(&mut self) -> (Vec<Frame>, bool) {
        let mut frames = Vec::new();
        within(PHASE, "the server to close the raw connection", async {
            loop {
                while let Some(frame) = self.parse() {
                    frames.push(frame);
                }
                if self.eof {
                    return;
                }
                self.fill().await;
            }
        })
        .await;
        (frames, !self.buf.is_empty())
    }

    async fn fill(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            at += 4;
            Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            None
        };
        if b.len() < at + len {
            return None;
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(mask) = mask {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, byte)| *byte ^= mask[i % 4]);
        }
        self.buf.drain(..at + len);
        Some(Frame { opcode, payload })
    }
}
