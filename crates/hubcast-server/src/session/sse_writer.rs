//! The body of an SSE response: drains the session's outbound queue as
//! `text/event-stream`, the SSE counterpart of [`super::writer`].
//!
//! Frames arrive exactly as a WebSocket gets them (one encoding per event,
//! shared by every subscriber). An `event` frame is sent unchanged as the
//! `data` of a default (`message`) event; its `id` is the stream's cursor
//! (`hubcast_protocol::sse`), which this writer keeps per room from the
//! frames it passes on. An `event` frame's room and seq are read from its
//! first bytes (`peek_event`); other frames' `type`, `room` and `seq` from a
//! scan of their top-level fields without allocating; only
//! `batch` frames (namespaces with `batch_ms`) are split and re-encoded per
//! stream, one `event` per batched event.
//!
//! Frames already queued are written as one chunk (one write, as the
//! WebSocket writer's bursts). A comment line goes out every `sse.heartbeat_ms`
//! of silence. When the session ends, a `close` event says why (the code a
//! WebSocket would carry), except for a client that is not reading (4009):
//! its connection is aborted, and it resumes from its last id.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use hubcast_protocol::sse::{self as wire, RoomCursor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SseConfig;
use crate::outbound::SessionControl;
use crate::protocol::codes::close;
use crate::protocol::{ServerFrame, ServerMessage};
use crate::room::RoomName;

/// Most frames written into one chunk.
const MAX_BURST: usize = 256;

/// The fields of a frame the stream's cursor needs; the rest (`data`) is skipped.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    seq: Option<u64>,
    #[serde(borrow)]
    epoch: Option<Cow<'a, str>>,
}

pub struct SseWriter {
    frames: mpsc::Receiver<Utf8Bytes>,
    control: Arc<SessionControl>,
    shutdown: CancellationToken,
    heartbeat: tokio::time::Interval,
    /// An opening comment, so the response starts at once.
    preamble: Option<Bytes>,
    /// The `retry:` line, sent with the `welcome` event (not alone: some
    /// clients dispatch an event without data for a block with only `retry`).
    retry: String,
    /// The stream's rooms in URL order, and each one's position.
    rooms: Vec<RoomName>,
    cursors: Vec<RoomCursor>,
    /// Each room's epoch as `subscribed` told it: a cursor given without an
    /// epoch takes it with its first event (not before: a `cursor=0` from
    /// the URL means "from the start of retention" only without one).
    epochs: Vec<Option<String>>,
    /// The last `error` frame: said by the `close` event if the stream ends.
    last_error: Option<Utf8Bytes>,
    done: bool,
}

impl SseWriter {
    pub fn new(
        frames: mpsc::Receiver<Utf8Bytes>,
        control: Arc<SessionControl>,
        shutdown: CancellationToken,
        config: &SseConfig,
        rooms: Vec<RoomName>,
        cursors: Vec<RoomCursor>,
    ) -> SseWriter {
        let every = Duration::from_millis(config.heartbeat_ms);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let preamble = Bytes::from_static(b": hubcast\n");
        SseWriter {
            frames,
            control,
            shutdown,
            heartbeat,
            preamble: Some(preamble),
            retry: format!("retry: {}\n", config.retry_ms),
            epochs: vec![None; rooms.len()],
            rooms,
            cursors,
            last_error: None,
            done: false,
        }
    }

    pub fn into_body(self) -> axum::body::Body {
        let chunks = futures_util::stream::unfold(self, |mut writer| async move {
            let chunk = writer.next_chunk().await?;
            Some((chunk, writer))
        });
        axum::body::Body::from_stream(chunks)
    }

    /// The next piece of the body, or `None` at its end.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        if let Some(preamble) = self.preamble.take() {
            return Some(Ok(preamble));
        }
        loop {
            tokio::select! {
                biased;
                _ = std::future::ready(()), if self.control.token.is_cancelled() => {
                    return self.finish();
                }
                frame = self.frames.recv() => {
                    let Some(frame) = frame else { return self.finish() };
                    let mut out = Vec::new();
                    self.translate(&frame, &mut out);
                    for _ in 1..MAX_BURST {
                        match self.frames.try_recv() {
                            Ok(frame) => self.translate(&frame, &mut out),
                            Err(_) => break,
                        }
                    }
                    self.control.frames_drained();
                    if !out.is_empty() {
                        self.heartbeat.reset();
                        return Some(Ok(Bytes::from(out)));
                    }
                }
                _ = self.control.token.cancelled() => return self.finish(),
                // A comment line alone, without the blank line that ends an
                // event: some clients (httpx-sse) dispatch an empty `message`
                // for a blank line once they have seen an id.
                _ = self.heartbeat.tick() => return Some(Ok(Bytes::from_static(b":\n"))),
            }
        }
    }

    /// The end of the stream: what is still queued and the `close` event,
    /// or an abort for a client that is not reading.
    fn finish(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        self.done = true;
        if self.shutdown.is_cancelled() {
            self.control.close(close::RESTART, "server restarting");
        }
        let (code, reason) = self.control.close_reason()?;
        if matches!(code, close::SLOW_CONSUMER | close::HEARTBEAT_TIMEOUT) {
            // Its queue would not move; more bytes would only wait in the
            // socket. An error aborts the connection.
            return Some(Err(std::io::Error::other(reason)));
        }
        let mut out = Vec::new();
        while let Ok(frame) = self.frames.try_recv() {
            self.translate(&frame, &mut out);
        }
        let data = wire::encode_close(code, &reason, self.last_error.as_deref());
        wire::write_event(&mut out, Some("close"), None, &data);
        Some(Ok(Bytes::from(out)))
    }

    fn room_index(&self, room: Option<&str>) -> Option<usize> {
        let room = room?;
        self.rooms.iter().position(|r| r.as_str() == room)
    }

    /// Room `i` is now at `seq`, in the epoch it was subscribed in.
    fn advance(&mut self, i: usize, seq: Option<u64>) {
        let cursor = &mut self.cursors[i];
        cursor.seq = seq;
        if cursor.epoch.is_none() {
            cursor.epoch = self.epochs[i].clone();
        }
    }

    fn id(&self) -> String {
        wire::stream_id(&self.cursors)
    }

    /// Appends what `frame` becomes on the stream to `out`.
    fn translate(&mut self, frame: &Utf8Bytes, out: &mut Vec<u8>) {
        let text: &str = frame.as_str();
        // The common case, without parsing: an event of one of the rooms.
        if let Some((room, seq)) = wire::peek_event(text) {
            if let Some(i) = self.room_index(Some(room)) {
                self.advance(i, Some(seq));
                wire::write_event(out, None, Some(&self.id()), text);
                return;
            }
        }
        let Ok(peek) = serde_json::from_str::<Peek>(text) else {
            tracing::warn!("sse: a frame that does not parse was skipped");
            return;
        };
        let index = self.room_index(peek.room.as_deref());
        match (peek.kind.as_ref(), index) {
            ("event", Some(i)) => {
                self.advance(i, peek.seq);
                wire::write_event(out, None, Some(&self.id()), text);
            }
            ("batch", Some(i)) => self.split_batch(text, i, out),
            ("subscribed", Some(i)) => {
                // A known epoch that differs is left as it is: the `reset`
                // that follows replaces it, so no id in between can claim a
                // position in the new epoch.
                self.epochs[i] = peek.epoch.map(Cow::into_owned);
                wire::write_event(out, Some("subscribed"), None, text);
            }
            ("caught_up", Some(i)) => {
                self.advance(i, peek.seq);
                wire::write_event(out, Some("caught_up"), Some(&self.id()), text);
            }
            ("reset", Some(i)) => {
                // No id: a reconnect before `caught_up` resumes from the old
                // cursor and is told `reset` again.
                self.cursors[i] = RoomCursor {
                    epoch: peek.epoch.map(Cow::into_owned),
                    seq: None,
                };
                wire::write_event(out, Some("reset"), None, text);
            }
            ("error", _) => self.last_error = Some(frame.clone()),
            ("welcome", _) => {
                out.extend_from_slice(self.retry.as_bytes());
                wire::write_event(out, Some("welcome"), None, text);
            }
            (kind, _) if kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                // A frame kind added later: passed on under its own name.
                wire::write_event(out, Some(kind), None, text);
            }
            _ => {}
        }
    }

    /// A `batch` frame is one `event` per batched event on a stream.
    fn split_batch(&mut self, text: &str, index: usize, out: &mut Vec<u8>) {
        let Ok(ServerFrame::Batch(batch)) = ServerFrame::decode(text) else {
            return;
        };
        for event in &batch.events {
            self.advance(index, Some(event.seq));
            let frame = ServerMessage::Event {
                room: &batch.room,
                seq: event.seq,
                ts: event.ts,
                data: &event.data,
            }
            .encode();
            wire::write_event(out, None, Some(&self.id()), &frame);
        }
    }
}

impl Drop for SseWriter {
    /// The body is dropped when the client goes away: the session ends too.
    fn drop(&mut self) {
        self.control.token.cancel();
    }
}
