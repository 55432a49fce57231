//! The SSE transport: a listen-only subscriber to one or more rooms over
//! `text/event-stream` (`GET /v1/sse?room=…`), for networks where WebSocket
//! does not pass. It resumes by itself: after a dropped connection it
//! reconnects with the last `id` it saw as `Last-Event-ID`, which carries
//! every room's cursor, so nothing is missed and nothing repeats. Publishing
//! goes over HTTP ([`crate::http_publish`]).
//!
//! - [`SseParser`]: the event-stream format (WHATWG HTML §9.2), fed bytes.
//! - [`SseSubscriber`]: the connection, the reconnects, and the frames.

use std::time::Duration;

use hubcast_protocol::codes::{CloseCode, Reconnect};
use hubcast_protocol::frame::ErrorFrame;
use hubcast_protocol::sse::CloseEvent;
use hubcast_protocol::ServerFrame;

use crate::types::ClientError;
use crate::urls::{encode_component, Urls};

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` unless the server named it (`caught_up`, `reset`, `close`…).
    pub event: String,
    /// The stream's last id when the event was dispatched (the id to resume from).
    pub id: String,
    pub data: String,
}

/// Parses `text/event-stream` bytes into events, as browsers do: lines end
/// with CRLF, LF or CR; `data` lines join with `\n`; an event is dispatched
/// on a blank line; comments (`:`) and unknown fields are ignored; the last
/// `id` persists across events.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The last byte was a CR: a following LF belongs to the same line end.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: String,
    /// The last `retry:` the server sent, in milliseconds.
    pub retry_ms: Option<u64>,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// The last id seen (what a reconnect sends as `Last-Event-ID`).
    pub fn last_id(&self) -> &str {
        &self.last_id
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.on_line(&String::from_utf8_lossy(&line)) {
                        events.push(event);
                    }
                }
                _ => self.line.push(b),
            }
        }
        events
    }

    fn on_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            if !self.has_data {
                return None;
            }
            self.has_data = false;
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the last `\n`
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                id: self.last_id.clone(),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
        None
    }
}

/// What a subscriber receives.
#[derive(Debug)]
pub enum SseItem {
    /// A frame, exactly as a WebSocket would carry it (`event`, `caught_up`,
    /// `reset`, `subscribed`, `welcome` …).
    Frame(ServerFrame),
    /// The stream was lost (or the server ended it with a code that means
    /// "resume"); the subscriber reconnects with its last id on the next call.
    Reconnecting { code: Option<u16> },
}

/// A listen-only subscription over Server-Sent Events, resuming by itself.
pub struct SseSubscriber {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    parser: SseParser,
    response: Option<reqwest::Response>,
    pending: std::collections::VecDeque<SseEvent>,
    /// Set after a lost stream: wait this long before reconnecting.
    wait: Option<Duration>,
}

impl SseSubscriber {
    /// A subscriber to `rooms` on the server at `base` (`http(s)://host:port`).
    /// `query` is appended to the URL as given (`cursor=0`, `rewind=10` …).
    pub fn new(base: &str, rooms: &[&str], query: &str) -> Result<SseSubscriber, ClientError> {
        let urls = Urls::derive(base)?;
        let mut url = format!("{}/v1/sse?", urls.http);
        for room in rooms {
            url.push_str("room=");
            url.push_str(&encode_component(room));
            url.push('&');
        }
        url.push_str(query);
        let http = reqwest::Client::builder().build().map_err(|e| {
            ClientError::new(hubcast_protocol::codes::sdk::NETWORK_ERROR, e.to_string())
        })?;
        Ok(SseSubscriber {
            http,
            url: url.trim_end_matches('&').to_owned(),
            token: None,
            parser: SseParser::new(),
            response: None,
            pending: Default::default(),
            wait: None,
        })
    }

    /// Sends `Authorization: Bearer TOKEN` on every connect.
    pub fn with_token(mut self, token: &str) -> SseSubscriber {
        self.token = Some(token.to_owned());
        self
    }

    /// Resumes from a stream id saved earlier (`Last-Event-ID`).
    pub fn with_last_event_id(mut self, id: &str) -> SseSubscriber {
        self.parser.last_id = id.to_owned();
        self
    }

    /// The id to resume from: every room's cursor.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_id()
    }

    /// The next item. Errors are final: a refused connect (401, 403, 400…)
    /// or a `close` whose code means "do not reconnect".
    pub async fn next(&mut self) -> Result<SseItem, ClientError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if let Some(item) = self.on_event(event)? {
                    return Ok(item);
                }
                continue;
            }
            if self.response.is_none() {
                if let Some(wait) = self.wait.take() {
                    tokio::time::sleep(wait).await;
                }
                self.connect().await?;
            }
            let Some(response) = self.response.as_mut() else {
                continue;
            };
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    let events = self.parser.push(&bytes);
                    self.pending.extend(events);
                }
                Ok(None) | Err(_) => {
                    self.lost(None);
                    return Ok(SseItem::Reconnecting { code: None });
                }
            }
        }
    }

    fn lost(&mut self, code: Option<u16>) {
        self.response = None;
        self.pending.clear();
        let retry = self.parser.retry_ms.unwrap_or(2000);
        self.wait = Some(match code.map(CloseCode::from).map(CloseCode::reconnect) {
            Some(Reconnect::AtOnce) => Duration::ZERO,
            _ => Duration::from_millis(retry),
        });
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let mut request = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if !self.parser.last_id().is_empty() {
            request = request.header("last-event-id", self.parser.last_id());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => {
                // The server is not there (yet): try again after the retry.
                self.lost(None);
                return Ok(());
            }
        };
        let status = response.status().as_u16();
        if status == 200 {
            self.response = Some(response);
            return Ok(());
        }
        if matches!(status, 429 | 502 | 503 | 504) {
            self.lost(None);
            return Ok(());
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let code = body["error"].as_str().unwrap_or("bad_request").to_owned();
        let message = body["message"].as_str().unwrap_or("").to_owned();
        Err(ClientError::new(code, format!("HTTP {status}: {message}")))
    }

    fn on_event(&mut self, event: SseEvent) -> Result<Option<SseItem>, ClientError> {
        if event.event == "close" {
            let close: CloseEvent<ErrorFrame> = serde_json::from_str(&event.data).map_err(|e| {
                ClientError::new(hubcast_protocol::codes::sdk::PROTOCOL_ERROR, e.to_string())
            })?;
            let code = CloseCode::from(close.code);
            if code.reconnect() == Reconnect::Never {
                let error = code.terminal_error_code().unwrap_or("closed");
                let message = close.error.map_or(close.reason, |e| e.message);
                return Err(ClientError::new(error, message));
            }
            self.lost(Some(close.code));
            return Ok(Some(SseItem::Reconnecting {
                code: Some(close.code),
            }));
        }
        match ServerFrame::decode(&event.data) {
            Ok(frame) => Ok(Some(SseItem::Frame(frame))),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_event_stream_format() {
        let mut parser = SseParser::new();
        let mut events =
            parser.push(b"retry: 1500\n: comment\n\nid: e/1\ndata: {\"a\":\r\ndata: 1}\n\n");
        events.extend(parser.push(b"event: caught_up\rdata: x\r\n\r\nevent: close"));
        events.extend(parser.push(b"\ndata:y\n\ndata\n\n"));
        assert_eq!(parser.retry_ms, Some(1500));
        let got: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| (e.event.as_str(), e.id.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("message", "e/1", "{\"a\":\n1}"),
                ("caught_up", "e/1", "x"),
                ("close", "e/1", "y"),
                ("message", "e/1", ""),
            ]
        );
    }
}
