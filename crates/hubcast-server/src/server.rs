//! The accept loop: one HTTP/1 connection per accepted socket, served by
//! hyper with the router, upgrades allowed (WebSockets).
//!
//! Why our own loop instead of `axum::serve`: a client that opens a socket and
//! never finishes its request head must not hold a file descriptor forever.
//! hyper enforces `limits.header_read_timeout_ms` only when given a timer,
//! which `axum::serve` does not do. HTTP/1 only: WebSocket upgrades and the
//! JSON API need nothing else, and HTTP/2 detection would read the first
//! bytes without a timeout.
//!
//! Request bodies have deadlines too (`http::deadline`).

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::throttle::LogThrottle;

/// How long in-flight HTTP requests get to finish once the node stops.
const REQUEST_DRAIN: Duration = Duration::from_secs(10);

/// Pending connections the kernel may queue for `accept` (it caps this at
/// `net.core.somaxconn`). tokio's `TcpListener::bind` asks for 1,024; a storm
/// of connects (every client of a restarted node reconnecting at once, or
/// `bench idle`) overflows that while the loop is busy, and the kernel then
/// drops SYNs and handshake ACKs, which clients only retry after 1 s, 3 s, ….
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the node's listening socket with [`LISTEN_BACKLOG`].
pub fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's and tokio's `bind` do: a restarted node can bind at once,
    // while its old connections are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections until `stopping` is cancelled, then waits (bounded)
/// for in-flight requests. Upgraded WebSockets are not waited for here: the
/// sessions close themselves with 1012 and the node tracks them.
pub async fn accept_loop(listener: TcpListener, app: crate::http::App, stopping: CancellationToken, header_timeout: Duration) {
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, most likely: back off instead of
                // spinning, and log it once a second, not at every retry.
                static ACCEPT_FAILED: LogThrottle = LogThrottle::new();
                if let Some(suppressed) = ACCEPT_FAILED.admit() {
                    tracing::warn!(error = %err, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // TCP_NODELAY: a frame must leave at once, not wait behind an
        // unacknowledged one (Nagle). It also gets a close frame onto the wire
        // before the socket is dropped with unread input (which resets it).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let connection = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.connection(peer))).with_upgrades();
        let stop = stopping.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    // Finish the request in flight, take no more on this connection.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(client = %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(REQUEST_DRAIN, connections.wait()).await.is_err() {
        tracing::warn!("some requests did not finish in time");
    }
}

