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
    Ack, ClientError, ConnectionState, Cursor, Event, PresenceMember, PresenceUpdate, Reset,
    RoomUpdate, StateChange,
};
pub use hubcast_protocol::room::RoomName;

use hubcast_protocol::codes::{sdk, ErrorCode};
use serde_json::Value;

/// The crate README's example, compiled by `cargo test --doc` so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Publishes one event with `POST /v1/rooms/{room}/events`; returns the HTTP
/// status and the JSON answer (`201`/`200` receipt, or the error body).
pub async fn http_publish(
    http: &reqwest::Client,
    base: &str,
    room: &str,
    data: &Value,
    idempotency_key: Option<&str>,
    expected_seq: Option<u64>,
) -> Result<(u16, Value), ClientError> {
    RoomName::parse(room).map_err(|e| {
        ClientError::new(ErrorCode::InvalidRoom.as_str(), e.to_string()).with_room(room)
    })?;
    let urls = urls::Urls::derive(base)?;
    let url = format!("{}/v1/rooms/{room}/events", urls.http);
    let mut body = serde_json::json!({ "data": data });
    if let Some(expected) = expected_seq {
        body["expected_seq"] = expected.into();
    }
    let mut request = http.post(url).json(&body);
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ClientError::new(sdk::NETWORK_ERROR, e.to_string()).with_room(room))?;
    let status = response.status().as_u16();
    let answer = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, answer))
}
