//! A WebSocket client on tokio-tungstenite ([`Ws`]): what a well-behaved
//! client library does, with a limit on every read.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{within, Server, PHASE, STEP};

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client (tokio-tungstenite). It answers pings only while it is
/// being read from, as a real client does.
pub struct Ws {
    inner: WsStream,
    /// The `welcome` frame.
    pub welcome: Value,
}

impl Ws {
    /// Connects and reads the `welcome` frame.
    pub async fn connect(url: &str) -> Ws {
        let (inner, _) = within(
            STEP,
            "a WebSocket connect",
            tokio_tungstenite::connect_async(url),
        )
        .await
        .unwrap_or_else(|err| panic!("connect {url}: {err}"));
        let mut ws = Ws {
            inner,
            welcome: Value::Null,
        };
        let welcome = ws.next_json().await;
        assert_eq!(
            welcome["type"], "welcome",
            "first frame must be welcome: {welcome}"
        );
        assert!(
            welcome["session"].is_string() && welcome["heartbeat_ms"].is_u64(),
            "{welcome}"
        );
        ws.welcome = welcome;
        ws
    }

    /// Connects without reading anything (for a connection the server
    /// refuses after the upgrade: an `error` frame and a close, no `welcome`).
    pub async fn connect_raw(url: &str) -> Ws {
        let (inner, _) = within(
            STEP,
            "a WebSocket connect",
            tokio_tungstenite::connect_async(url),
        )
        .await
        .unwrap_or_else(|err| panic!("connect {url}: {err}"));
        Ws {
            inner,
            welcome: Value::Null,
        }
    }

    /// Connects to `/v1/rooms/{room}/ws{query}` and reads `welcome` and `subscribed`.
    /// Returns the client and the `subscribed` frame.
    pub async fn room(server: &Server, room: &str, query: &str) -> (Ws, Value) {
        let mut ws = Ws::connect(&server.room_ws_url(room, query)).await;
        let subscribed = ws.expect_type("subscribed").await;
        assert_eq!(subscribed["room"], room);
        (ws, subscribed)
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_owned())).await;
    }

    pub async fn send(&mut self, message: Message) {
        within(STEP, "a WebSocket send", self.inner.send(message))
            .await
            .expect("WebSocket send");
    }

    /// Sends `subscribe` and reads the `subscribed` answer. `extra` adds
    /// `cursor`, `epoch` or `rewind`.
    pub async fn subscribe(&mut self, room: &str, extra: Value) -> Value {
        let mut message = json!({"type": "subscribe", "room": room});
        if let (Some(message), Some(extra)) = (message.as_object_mut(), extra.as_object()) {
            message.extend(extra.clone());
        }
        self.send_json(message).await;
        let subscribed = self.expect_type("subscribed").await;
        assert_eq!(subscribed["room"], room, "{subscribed}");
        subscribed
    }

    /// The next JSON text frame (pings and pongs are skipped). Fails the test
    /// on a close, an error or [`STEP`] without a frame.
    pub async fn next_json(&mut self) -> Value {
        match self.next_json_within(STEP).await {
            Some(value) => value,
            None => panic!("no frame within {STEP:?}"),
        }
    }

    /// The next JSON text frame, or `None` if none arrives within `limit`.
    pub async fn next_json_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Ok(next) => next,
                Err(_) => return None,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Some(
                        serde_json::from_str(text.as_str())
                            .unwrap_or_else(|err| panic!("frame is not JSON ({err}): {text}")),
                    )
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(bytes))) => {
                    panic!("unexpected binary frame of {} bytes", bytes.len())
                }
                Some(Ok(Message::Close(frame))) => {
                    panic!("connection closed while a frame was expected: {frame:?}")
                }
                Some(Err(err)) => panic!("WebSocket error while a frame was expected: {err}"),
                None => panic!("connection ended while a frame was expected"),
            }
        }
    }

    /// The next frame, which must have `type` `kind`.
    pub async fn expect_type(&mut self, kind: &str) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["type"], kind, "expected a {kind} frame, got {frame}");
        frame
    }

    /// Reads until the server closes; returns the close code. Text frames
    /// before the close are skipped. Fails if the connection ends without a
    /// close frame.
    pub async fn expect_close(&mut self) -> u16 {
        let (code, frames) = self.close_after_frames().await;
        code.unwrap_or_else(|| panic!("connection ended without a close frame (after {frames:?})"))
    }

    /// Reads until the server closes; returns the close code and reason and
    /// the JSON frames before the close. Fails without a close frame.
    pub async fn expect_close_frame(&mut self) -> (u16, String, Vec<Value>) {
        let mut frames = Vec::new();
        let close = within(STEP, "the server to close the connection", async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(text))) => {
                        frames.push(serde_json::from_str(text.as_str()).unwrap_or(Value::Null))
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map(|f| (u16::from(f.code), f.reason.to_string()))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await;
        let (code, reason) = close
            .unwrap_or_else(|| panic!("connection ended without a close frame (after {frames:?})"));
        (code, reason, frames)
    }

    /// Reads until the connection ends; returns the close code (if a close
    /// frame came) and the JSON frames read before it.
    pub async fn close_after_frames(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut frames = Vec::new();
        let code = within(STEP, "the server to close the connection", async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(text))) => {
                        frames.push(serde_json::from_str(text.as_str()).unwrap_or(Value::Null))
                    }
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        frames.push(json!({"transport_error": err.to_string()}));
                        return None;
                    }
                    None => return None,
                }
            }
        })
        .await;
        (code, frames)
    }

    /// Reads event frames of `room` until seq `upto`, checking each is the
    /// next after `after`. `caught_up` frames may appear anywhere and must
    /// name the last seq delivered; any other frame fails the test.
    pub async fn events_until(&mut self, room: &str, after: u64, upto: u64) -> Vec<Value> {
        let mut events = Vec::new();
        let mut last = after;
        within(PHASE, &format!("events of {room} through {upto}"), async {
            while last < upto {
                let frame = self.next_json().await;
                match frame["type"].as_str() {
                    Some("event") => {
                        assert_eq!(frame["room"], room, "{frame}");
                        let seq = frame["seq"].as_u64().expect("seq");
                        assert_eq!(
                            seq,
                            last + 1,
                            "expected seq {} in {room}, got {frame}",
                            last + 1
                        );
                        last = seq;
                        events.push(frame);
                    }
                    Some("caught_up") => {
                        assert_eq!(frame["room"], room, "{frame}");
                        assert_eq!(
                            frame["seq"], last,
                            "caught_up must name the last seq delivered: {frame}"
                        );
                    }
                    _ => panic!("unexpected frame while reading events of {room}: {frame}"),
                }
            }
        })
        .await;
        events
    }

    /// Reads frames until `caught_up` for `room`; returns the events before it,
    /// checking they follow `after` without a gap.
    pub async fn until_caught_up(&mut self, room: &str, after: u64) -> (Vec<Value>, u64) {
        let mut events = Vec::new();
        let mut last = after;
        loop {
            let frame = self.next_json().await;
            match frame["type"].as_str() {
                Some("event") => {
                    assert_eq!(frame["room"], room, "{frame}");
                    let seq = frame["seq"].as_u64().expect("seq");
                    assert_eq!(
                        seq,
                        last + 1,
                        "expected seq {} in {room}, got {frame}",
                        last + 1
                    );
                    last = seq;
                    events.push(frame);
                }
                Some("caught_up") => {
                    assert_eq!(frame["room"], room, "{frame}");
                    assert_eq!(
                        frame["seq"], last,
                        "caught_up must name the last seq delivered: {frame}"
                    );
                    return (events, last);
                }
                _ => panic!("unexpected frame before caught_up of {room}: {frame}"),
            }
        }
    }

    /// Closes politely (close frame, then waits briefly for the server's answer).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(STEP, self.inner.close(None)).await;
    }

    // Upgrades with headers (credentials, origins, proxies) and capacity closes.

    /// Upgrades `url` with extra request headers (`Authorization`, `Origin`,
    /// `X-Forwarded-For` …) and does not read `welcome` (its `welcome` is
    /// `Null`): a session refused for capacity gets only a close frame. A
    /// refused upgrade returns the HTTP status and the JSON body (a non-JSON
    /// body as a JSON string).
    pub async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<Ws, (u16, Value)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url
            .into_client_request()
            .unwrap_or_else(|err| panic!("bad WebSocket URL {url}: {err}"));
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request
                .headers_mut()
                .append(name, HeaderValue::from_str(value).expect("header value"));
        }
        match within(
            STEP,
            "a WebSocket upgrade",
            tokio_tungstenite::connect_async(request),
        )
        .await
        {
            Ok((inner, _)) => Ok(Ws {
                inner,
                welcome: Value::Null,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let text = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .to_string();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                Err((response.status().as_u16(), body))
            }
            Err(err) => panic!("upgrade of {url} failed: {err}"),
        }
    }

    /// The next JSON text frame, or the close code (`None`: no close frame)
    /// if the connection ends first. Fails after [`STEP`].
    pub async fn next_or_close(&mut self) -> Result<Value, Option<u16>> {
        within(STEP, "a frame or a close", async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return Ok(serde_json::from_str(text.as_str())
                            .unwrap_or_else(|err| panic!("frame is not JSON ({err}): {text}")))
                    }
                    Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Err(None),
                }
            }
        })
        .await
    }
}
