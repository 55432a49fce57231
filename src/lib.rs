//! hubcast: a self-hosted real-time event fan-out server.
//!
//! Applications publish events to named **rooms**; every WebSocket client
//! subscribed to a room receives them in order, within milliseconds. The store
//! is authoritative (every event gets the room's next gapless `seq` in a
//! transaction before anyone hears of it); the WebSocket is the fast path, and
//! a client that reconnects with its cursor gets exactly what it missed.
//!
//! # Layout
//! - [`config`]: layered configuration (file, `[env.NAME]`, `HUBCAST_*`, flags).
//! - [`node`]: one process's shared state and background tasks (commit
//!   forwarding, reconcile, retention).
//! - [`http`]: routes; every error becomes a status with a JSON body.
//! - [`session`]: one WebSocket connection: reads client messages, replays,
//!   and a writer task that drains its bounded queue.
//! - [`hub`]: the per-room actor that fans each event out once to all sessions.
//! - [`store`]: the authoritative log (`sqlite`), with its contract.
//! - [`bus`]: node-to-node notifications (`memory`), with its contract.
//! - [`metrics`]: Prometheus metrics and the live totals behind `/v1/stats`.
//! - [`stats`]: the per-second samples behind `/v1/stats`.
//! - [`protocol`]: the wire format and every error and close code.
//! - [`auth`]: credentials (API keys, JWT), grants, namespaces, protected mode.
//! - [`limits`]: rate limits and connection caps.
//! - [`room`], [`event`]: the domain's nouns.
//! - [`client`]: the Rust client SDK (the `hubcast-client` crate), used by
//!   `hubcast sub`, `hubcast pub` and `hubcast bench replay`.
//! - [`server`]: the accept loop (HTTP/1 with a header-read timeout, upgrades).
//! - [`shutdown`]: turning signals into a graceful stop.
//! - [`bench`]: the load generator behind `hubcast bench`.
//! - [`market`]: the prediction-market demo behind `hubcast demo` (LMSR
//!   pricing, buys checked and committed with their event in one store
//!   transaction through `Store::transact`).

pub mod auth;
pub mod bench;
pub mod bus;
pub use hubcast_client as client;
pub mod config;
pub mod event;
pub mod http;
pub mod hub;
pub mod limits;
pub mod market;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod room;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stats;
pub mod store;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// How long sessions get to receive their close frame during shutdown.
const SESSION_DRAIN: Duration = Duration::from_secs(5);

/// Runs a node on `listener` until `shutdown` resolves, then stops gracefully:
/// stops accepting, closes every session with 1012 (its client resumes
/// elsewhere), lets in-flight publishes finish, and flushes the store.
///
/// The caller binds the listener, so a test can serve on `127.0.0.1:0`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let stopping = CancellationToken::new();
    let node = node::Node::start(config, stopping.clone()).await?;
    if let Some(market) = &node.config.market {
        market::setup(&node.store, market.reset).await?;
        market::traders::spawn(node.store.clone(), market.traders, stopping.clone());
    }
    let app = http::app(node.clone());
    tracing::info!(listen = %listener.local_addr()?, store = %node.config.store, bus = %node.config.bus, "hubcast serving");
    {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: closing sessions with 1012");
            stopping.cancel();
        });
    }
    let header_timeout = Duration::from_millis(node.config.limits.header_read_timeout_ms);
    server::accept_loop(listener, app, stopping.clone(), header_timeout).await;
    node.sessions.close();
    if tokio::time::timeout(SESSION_DRAIN, node.sessions.wait()).await.is_err() {
        tracing::warn!("some sessions did not close in time");
    }
    node.store.close().await;
    tracing::info!("hubcast stopped");
    Ok(())
}
