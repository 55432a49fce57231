//! An HTTP client for the v1 routes of one server ([`Api`]), the receipts a
//! publish answers with, and the seq lists tests compare.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{chain, within, PHASE, STEP};

/// The v1 HTTP routes of one server. Cheap to clone into tasks.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub(super) fn new(base: String) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(STEP)
            .build()
            .expect("http client");
        Api { base, http }
    }

    /// `POST /v1/rooms/{room}/events` with a raw JSON body; the status and answer.
    pub async fn post(&self, room: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        self.try_post(room, body, key)
            .await
            .unwrap_or_else(|err| panic!("POST to room {room}: {}", chain(&err)))
    }

    /// Like [`post`](Self::post) but returns transport errors (for tests that
    /// kill the server under load).
    pub async fn try_post(
        &self,
        room: &str,
        body: &Value,
        key: Option<&str>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self
            .http
            .post(format!("{}/v1/rooms/{room}/events", self.base))
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await?;
        Ok((status, body))
    }

    /// `POST` a raw byte body with a JSON content type.
    pub async fn post_bytes(&self, room: &str, body: Vec<u8>) -> (u16, Value) {
        let response = within(
            STEP,
            "a raw POST",
            self.http
                .post(format!("{}/v1/rooms/{room}/events", self.base))
                .header("content-type", "application/json")
                .body(body)
                .send(),
        )
        .await
        .expect("raw POST");
        let status = response.status().as_u16();
        let text = within(STEP, "a raw POST's body", response.text())
            .await
            .expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer to a raw POST is not JSON: {text:?}"));
        (status, body)
    }

    /// Publishes `data` and returns the `201` receipt `{room, seq, epoch, ts}`.
    pub async fn publish(&self, room: &str, data: Value) -> Value {
        let (status, receipt) = within(
            STEP,
            "a publish",
            self.post(room, &json!({ "data": data }), None),
        )
        .await;
        assert_eq!(status, 201, "publish to {room} answered {receipt}");
        receipt
    }

    /// `POST path` (relative to the base URL) with a JSON body; the status and JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = within(
            STEP,
            "a POST",
            self.http
                .post(format!("{}{path}", self.base))
                .json(body)
                .send(),
        )
        .await
        .unwrap_or_else(|err| panic!("POST {path}: {}", chain(&err)));
        let status = response.status().as_u16();
        let body = within(STEP, "a POST body", response.json::<Value>())
            .await
            .unwrap_or_else(|err| panic!("POST {path}: answer is not JSON: {err}"));
        (status, body)
    }

    /// `GET path` (relative to the base URL); the status and JSON answer.
    /// The sum of the `/metrics` series whose line starts with `series`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = within(STEP, "GET /metrics", async {
            self.http
                .get(format!("{}/metrics", self.base))
                .send()
                .await?
                .text()
                .await
        })
        .await
        .expect("GET /metrics");
        text.lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = within(
            STEP,
            "a GET",
            self.http.get(format!("{}{path}", self.base)).send(),
        )
        .await
        .unwrap_or_else(|err| panic!("GET {path}: {}", chain(&err)));
        let status = response.status().as_u16();
        let body = within(STEP, "a GET body", response.json::<Value>())
            .await
            .unwrap_or_else(|err| panic!("GET {path}: answer is not JSON: {err}"));
        (status, body)
    }

    /// `GET /v1/rooms/{room}/events?after=&limit=`.
    pub async fn history(&self, room: &str, after: u64, limit: usize) -> Value {
        let (status, body) = self
            .get(&format!(
                "/v1/rooms/{room}/events?after={after}&limit={limit}"
            ))
            .await;
        assert_eq!(status, 200, "history of {room}: {body}");
        body
    }

    /// `GET /v1/rooms/{room}`.
    pub async fn room(&self, room: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/rooms/{room}")).await;
        assert_eq!(status, 200, "stats of {room}: {body}");
        body
    }

    /// Every retained event of `room`, oldest first, paging through history.
    pub async fn all_events(&self, room: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self.history(room, after, 1000).await;
            let batch = page["events"].as_array().expect("events array").clone();
            let Some(last) = batch.last() else {
                return events;
            };
            after = last["seq"].as_u64().expect("seq");
            events.extend(batch);
        }
    }

    /// Publishes `n` events with `workers` concurrent publishers; event `i`
    /// (0-based) carries `data(i)`. Returns the receipts, sorted by seq.
    pub async fn publish_many(
        &self,
        room: &str,
        n: usize,
        workers: usize,
        data: impl Fn(usize) -> Value + Send + Sync + 'static,
    ) -> Vec<Receipt> {
        let data = Arc::new(data);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (api, room, data, next) =
                (self.clone(), room.to_owned(), data.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut receipts = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return receipts;
                    }
                    let value = data(i);
                    let receipt = api.publish(&room, value.clone()).await;
                    receipts.push(Receipt::from_json(&receipt, value));
                }
            }));
        }
        let mut receipts = Vec::new();
        for task in tasks {
            receipts.extend(
                within(PHASE, "publishers to finish", task)
                    .await
                    .expect("publisher task"),
            );
        }
        receipts.sort_by_key(|r| r.seq);
        receipts
    }
}

/// A `201` receipt and the data that was published with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub seq: u64,
    pub epoch: String,
    pub ts: i64,
    pub data: Value,
}

impl Receipt {
    pub fn from_json(receipt: &Value, data: Value) -> Receipt {
        Receipt {
            seq: receipt["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("receipt without seq: {receipt}")),
            epoch: receipt["epoch"]
                .as_str()
                .unwrap_or_else(|| panic!("receipt without epoch: {receipt}"))
                .to_owned(),
            ts: receipt["ts"]
                .as_i64()
                .unwrap_or_else(|| panic!("receipt without ts: {receipt}")),
            data,
        }
    }
}

/// The seqs of a list of event frames or history events.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("event without seq: {e}"))
        })
        .collect()
}

/// `from..=to` as a Vec, for comparing with [`seqs`].
pub fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}
