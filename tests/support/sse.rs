//! A Server-Sent Events reader for the SSE routes ([`SseStream`]): raw
//! `reqwest` with the headers a test chooses, parsed by the Rust SDK's
//! event-stream parser (the Python, Node and browser tests use others').

use hubcast_client::sse::{SseEvent, SseParser};
use serde_json::Value;

use super::{within, STEP};

/// One open `text/event-stream` response.
pub struct SseStream {
    response: reqwest::Response,
    parser: SseParser,
    pending: std::collections::VecDeque<SseEvent>,
    /// Every comment-only chunk seen (heartbeats).
    pub comments: usize,
}

impl SseStream {
    /// `GET base+path` with `headers`; panics unless it answers 200 with an
    /// event stream. For refusals use [`SseStream::refused`].
    pub async fn open(base: &str, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let response = send(base, path, headers).await;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            panic!("GET {path}: {status} {body}");
        }
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "GET {path}"
        );
        SseStream {
            response,
            parser: SseParser::new(),
            pending: Default::default(),
            comments: 0,
        }
    }

    /// `GET base+path`, expected to be refused: the status and JSON body.
    pub async fn refused(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let response = send(base, path, headers).await;
        let status = response.status().as_u16();
        let body = within(STEP, "a refusal's body", response.json::<Value>())
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {status} without a JSON body: {err}"));
        (status, body)
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let chunk = within(STEP, "an SSE chunk", self.response.chunk()).await;
            match chunk {
                Ok(Some(bytes)) => {
                    if bytes.starts_with(b":") {
                        self.comments += 1;
                    }
                    let events = self.parser.push(&bytes);
                    self.pending.extend(events);
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event named `name` (skipping others), its data as JSON.
    pub async fn expect(&mut self, name: &str) -> (SseEvent, Value) {
        loop {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream ended before a `{name}` event"));
            if event.event == name {
                let data = serde_json::from_str(&event.data).expect("event data is JSON");
                return (event, data);
            }
        }
    }

    /// The `message` events (as JSON) until every room in `heads` has had its
    /// event with that seq; other events are skipped.
    pub async fn events_until(&mut self, heads: &[(&str, u64)]) -> Vec<Value> {
        let mut events: Vec<Value> = Vec::new();
        let reached = |events: &[Value]| {
            heads.iter().all(|(room, head)| {
                events
                    .iter()
                    .any(|e| e["room"] == *room && e["seq"].as_u64() >= Some(*head))
            })
        };
        while !reached(&events) {
            let event = self.next().await.expect("the stream ended early");
            if event.event == "message" {
                events.push(serde_json::from_str(&event.data).expect("event data is JSON"));
            }
        }
        events
    }

    /// The id the client would resume from.
    pub fn last_id(&self) -> String {
        self.parser.last_id().to_owned()
    }
}

async fn send(base: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let mut request = http.get(format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    within(STEP, "an SSE response", request.send())
        .await
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
}

/// The seqs of `room` among `events`, in order.
pub fn room_seqs(events: &[Value], room: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["room"] == room)
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}
