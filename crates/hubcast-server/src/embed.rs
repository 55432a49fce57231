//! Embedding hubcast in an application: start a node, add the application's
//! routes, reach its store, run it. `hubcast serve` is the same thing with no
//! routes added; `hubcast demo` is an application written only against this.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::error::ApiError;
use crate::node::Node;
use crate::room::RoomName;
use crate::store::{Backend, Store};

/// How long sessions get to receive their close frame during shutdown.
const SESSION_DRAIN: Duration = Duration::from_secs(5);

/// Why a node could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error(transparent)]
    Bus(#[from] crate::bus::OpenError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the listener has no local address: {0}")]
    Listener(#[from] std::io::Error),
}

/// A started node that does not serve yet: its store, bus and background
/// tasks are running, and an application can add its routes before [`run`].
///
/// [`run`]: Server::run
pub struct Server {
    node: Arc<Node>,
    stopping: CancellationToken,
    routes: Router,
}

impl Server {
    /// Opens the store and the bus and starts the node's background tasks.
    pub async fn start(config: Config) -> Result<Server, ServeError> {
        let stopping = CancellationToken::new();
        let node = Node::start(config, stopping.clone()).await?;
        crate::admin::start(&node).await;
        crate::node::answer_count_queries(&node).await;
        Ok(Server {
            node,
            stopping,
            routes: Router::new(),
        })
    }

    /// The handle an application's routes and tasks use.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle {
            node: self.node.clone(),
        }
    }

    /// Adds an application's routes beside hubcast's (they get the same CORS,
    /// request ids, body limit and JSON 404/405 as every route).
    pub fn merge(mut self, routes: Router) -> Server {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then stops gracefully:
    /// stops accepting, closes every session with 1012 (its client resumes
    /// elsewhere), lets in-flight publishes finish, and flushes the store.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            node,
            stopping,
            routes,
        } = self;
        let app = crate::http::app(node.clone(), routes);
        let address = listener.local_addr()?;
        let without_password =
            |url: String| crate::config::redact::url_without_password(&url).unwrap_or(url);
        tracing::info!(
            listen = %address,
            store = %without_password(node.config.store.to_string()),
            bus = %without_password(node.config.bus.to_string()),
            "hubcast serving"
        );
        tracing::info!(
            "dashboard at http://{address}/ (HTTP API reference at http://{address}/v1/docs)"
        );
        {
            let stopping = stopping.clone();
            tokio::spawn(async move {
                shutdown.await;
                tracing::info!("shutting down: closing sessions with 1012");
                stopping.cancel();
            });
        }
        let header_timeout = Duration::from_millis(node.config.limits.header_read_timeout_ms);
        crate::server::accept_loop(listener, app, stopping, header_timeout).await;
        node.sessions.close();
        if tokio::time::timeout(SESSION_DRAIN, node.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close in time");
        }
        node.store.close().await;
        tracing::info!("hubcast stopped");
        Ok(())
    }
}

/// What an embedding application may use of a running node.
#[derive(Clone)]
pub struct NodeHandle {
    node: Arc<Node>,
}

impl NodeHandle {
    /// The store, for appends and reads through its contract.
    pub fn store(&self) -> Arc<dyn Store> {
        self.node.store.clone()
    }

    /// The store's backend, for application transactions: run the
    /// application's own writes and its event in one transaction with
    /// [`SqliteStore::transact`](crate::store::sqlite::SqliteStore::transact) or
    /// [`PostgresStore::transact`](crate::store::postgres::PostgresStore::transact).
    pub fn backend(&self) -> &Backend {
        &self.node.backend
    }

    /// Refuses a publish to `room` that `/v1/rooms/{room}/events` would
    /// refuse: the caller's credentials (bearer header), its publish grant
    /// and the publish rate limit, each refusal counted and logged like any other.
    pub fn authorize_publish(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        room: &RoomName,
    ) -> Result<(), ApiError> {
        crate::http::access::authorize_publish(&self.node, headers, peer, room)
    }

    /// Cancelled when the node begins its graceful shutdown: an application's
    /// background tasks stop on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.node.shutdown.clone()
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.node.config
    }
}
