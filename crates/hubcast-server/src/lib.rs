//! hubcast's server as a library: durable rooms with a gapless sequence,
//! exact replay, and fan-out over WebSockets.
//!
//! Applications publish events to named **rooms**; every WebSocket client
//! subscribed to a room receives them in order, within milliseconds. The store
//! is authoritative (every event gets the room's next gapless `seq` in a
//! transaction before anyone hears of it); the WebSocket is the fast path, and
//! a client that reconnects with its cursor gets exactly what it missed.
//!
//! # Public API
//! - [`serve`]: run a node on a listener until a shutdown future resolves.
//! - [`Server`]: the same, in steps, for an application that embeds hubcast:
//!   start the node, add its own routes, reach the store through a
//!   [`NodeHandle`] (its publishes go through the same auth and rate limits as
//!   `/v1`, its own state commits with its event in one transaction through
//!   the backend's extension: [`store::sqlite::SqliteWork`],
//!   [`store::postgres::PostgresWork`]), then run.
//! - [`config`]: the configuration types and their layering.
//! - [`store`] and [`bus`]: the two seams with more than one implementation,
//!   each a trait with a written contract.
//! - [`listen`] and [`shutdown_signal`]: the listener and the signal future
//!   the binary uses.
//!
//! Everything else is private to the crate. What the in-process tests drive
//! is in `testing`, behind the `testing` feature.
//!
//! # Layout
//! - `node`: one process's shared state and background tasks (commit
//!   forwarding, reconcile, retention).
//! - `http`: routes; every error becomes a status with a JSON body.
//! - `session`: one WebSocket connection: reads client messages, replays,
//!   and a writer task that drains its bounded queue.
//! - `hub`: the per-room actor that fans each event out once to all sessions.
//! - `outbound`: a session's bounded queue as hubs hold it (`try_send` only).
//! - `metrics`, `stats`: Prometheus metrics, the totals behind `/v1/stats`.
//! - `protocol`: the server's frame encoders over `hubcast-protocol`.
//! - `auth`, `limits`: credentials and grants; rate limits and caps.
//! - `namespace`: the per-namespace rules, resolved once per room.
//! - `room`, `event`: the domain's nouns.
//! - `server`: the accept loop (HTTP/1 with a header-read timeout, upgrades).
//! - `shutdown`: turning signals into a graceful stop.
//! - `pusher`: the Pusher Channels protocol (`/app/{key}`) and HTTP API
//!   (`/apps/{id}/…`) over the same rooms, hubs and sessions.

mod admin;
mod auth;
mod batch;
pub mod bus;
pub mod config;
mod embed;
mod event;
mod http;
mod hub;
mod limits;
mod metrics;
mod namespace;
mod node;
mod occupancy;
mod outbound;
mod protocol;
mod pusher;
mod room;
mod roster;
mod server;
mod session;
mod shutdown;
mod socket;
mod stats;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhook;
mod webhook_worker;

pub use config::Config;
pub use embed::{NodeHandle, ServeError, Server};
pub use event::{Event, RoomState};
pub use http::error::ApiError;
pub use http::openapi::description as openapi;
pub use http::page;
pub use hubcast_protocol::codes::ErrorCode;
pub use room::{RoomName, RoomNameError};
pub use server::listen;
pub use shutdown::signal as shutdown_signal;

use std::future::Future;

use tokio::net::TcpListener;

/// Runs a node on `listener` until `shutdown` resolves, then stops gracefully:
/// stops accepting, closes every session with 1012 (its client resumes
/// elsewhere), lets in-flight publishes finish, and flushes the store.
///
/// The caller binds the listener, so a test can serve on `127.0.0.1:0`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::start(config).await?.run(listener, shutdown).await
}
