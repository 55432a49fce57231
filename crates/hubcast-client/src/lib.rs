//! hubcast's Rust client SDK (tokio): one WebSocket, many room subscriptions,
//! each event at most once and in order, resume from `(epoch, seq)` cursors
//! after any disconnect, gap healing from the history route, acknowledged
//! publishes with idempotency ids. The contract is docs/clients.md; the shared
//! test vectors in clients/test-vectors pin it down.
//!
//! - [`Client`]: the tokio client (see the crate README for an example),
//!   with replaceable transports ([`Connector`], [`HistoryFetcher`]).
//! - [`core`]: the state machine underneath, without I/O, driven by the tests
//!   with a fake socket, a fake history route and a fake clock.
//! - [`http_publish`]: a one-shot publish over HTTP (`hubcast pub`).
//! - [`tls`]: the rustls config for `https://` and `wss://` (extra CA files).
//! - [`sse`]: a listen-only subscriber over Server-Sent Events, resuming with
//!   `Last-Event-ID` (for networks where WebSocket does not pass).
//!
//! Frames are encoded (`ClientRequest`) and decoded (`ServerFrame`), and every
//! error and close code is named, by the `hubcast-protocol` crate the server
//! uses too: this crate knows no JSON shape of a frame, and no code but the
//! SDK's own (`hubcast_protocol::codes::sdk`).
//!
//! # Layout
//! - `client`: [`ClientBuilder`], [`Client`], [`Subscription`]: what an application holds.
//! - `driver`: the task that runs the [`core::Core`] and carries out its outputs.
//! - `transport`: the WebSocket connector and the history fetcher (defaults and traits).
//! - [`core`]: the rules (its own docs map its files).
//! - `types`: the values an application sees; [`urls`]: endpoints from the base URL.

mod client;
pub mod core;
mod driver;
pub mod sse;
pub mod tls;
mod transport;
mod types;
pub mod urls;

pub use crate::client::{
    Client, ClientBuilder, ClientEvent, PublishOptions, SubscribeOptions, Subscription,
};
pub use crate::core::{Backoff, Heartbeat};
pub use crate::transport::{
    Connection, Connector, HistoryFetcher, ReqwestHistory, SocketCommand, SocketEvent,
    TokenProvider, WsConnector,
};
pub use crate::types::{
    Ack, ClientError, ConnectionState, Cursor, Ephemeral, Event, PresenceMember, PresenceUpdate,
    Reset, RoomUpdate, StateChange,
};
pub use hubcast_protocol::room::RoomName;

use hubcast_protocol::codes::{sdk, ErrorCode};
use serde_json::Value;

/// The crate README's example, compiled by `cargo test --doc` so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// An error with its causes ("error sending request: … invalid peer
/// certificate: UnknownIssuer"): reqwest's own message leaves out why.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

/// One HTTP publish: what [`http_publish`] sends besides the room and data.
#[derive(Debug, Clone, Default)]
pub struct HttpPublish<'a> {
    /// `Idempotency-Key`: a retry with the same key is not appended twice.
    pub idempotency_key: Option<&'a str>,
    /// Append only if the room's head is this seq (else 409).
    pub expected_seq: Option<u64>,
    /// An API key or a token, sent as `Authorization: Bearer`.
    pub credential: Option<&'a str>,
    /// Live only: not stored, no seq (the room's namespace must allow it).
    pub ephemeral: bool,
}

/// Publishes one event with `POST /v1/rooms/{room}/events`; returns the HTTP
/// status and the JSON answer (`201`/`200` receipt, `202` for an ephemeral
/// message, or the error body). `http` decides TLS ([`tls::http_client`]).
pub async fn http_publish(
    http: &reqwest::Client,
    base: &str,
    room: &str,
    data: &Value,
    options: &HttpPublish<'_>,
) -> Result<(u16, Value), ClientError> {
    let HttpPublish {
        idempotency_key,
        expected_seq,
        credential,
        ephemeral,
    } = *options;
    RoomName::parse(room).map_err(|e| {
        ClientError::new(ErrorCode::InvalidRoom.as_str(), e.to_string()).with_room(room)
    })?;
    let urls = urls::Urls::derive(base)?;
    let url = format!("{}/v1/rooms/{room}/events", urls.http);
    let mut body = serde_json::json!({ "data": data });
    if let Some(expected) = expected_seq {
        body["expected_seq"] = expected.into();
    }
    if ephemeral {
        body["ephemeral"] = true.into();
    }
    let mut request = http.post(url).json(&body);
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ClientError::new(sdk::NETWORK_ERROR, with_causes(&e)).with_room(room))?;
    let status = response.status().as_u16();
    let answer = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, answer))
}

/// Publishes several events atomically over HTTP (`POST /v1/events`): all
/// appended in one transaction or none. Each event is `(room, data,
/// expected_seq)`. Returns the status and the JSON answer (`201 {"events":
/// [{room, seq, epoch, ts}, …]}`, or the error body: `409` names the item's
/// `index` and its room's `head`).
pub async fn http_publish_batch(
    http: &reqwest::Client,
    base: &str,
    events: &[(String, Value, Option<u64>)],
    idempotency_key: Option<&str>,
    credential: Option<&str>,
) -> Result<(u16, Value), ClientError> {
    for (room, _, _) in events {
        RoomName::parse(room).map_err(|e| {
            ClientError::new(ErrorCode::InvalidRoom.as_str(), e.to_string()).with_room(room)
        })?;
    }
    let urls = urls::Urls::derive(base)?;
    let url = format!("{}/v1/events", urls.http);
    let events: Vec<Value> = events
        .iter()
        .map(|(room, data, expected_seq)| {
            let mut event = serde_json::json!({ "room": room, "data": data });
            if let Some(expected) = expected_seq {
                event["expected_seq"] = (*expected).into();
            }
            event
        })
        .collect();
    let mut request = http
        .post(url)
        .json(&serde_json::json!({ "events": events }));
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ClientError::new(sdk::NETWORK_ERROR, e.to_string()))?;
    let status = response.status().as_u16();
    let answer = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, answer))
}
