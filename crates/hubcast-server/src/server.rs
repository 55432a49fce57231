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
//! Request bodies have deadlines too (`http::deadline`), and a connection
//! closed with its request unread closes lingering ([`Lingering`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
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
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's `bind` do: a restarted node can bind at once,
    // while its old connections are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections until `stopping` is cancelled, then waits (bounded)
/// for in-flight requests. Upgraded WebSockets are not waited for here: the
/// sessions close themselves with 1012 and the node tracks them.
pub async fn accept_loop(
    listener: TcpListener,
    app: crate::http::App,
    stopping: CancellationToken,
    header_timeout: Duration,
) {
    let connections = TaskTracker::new();
    let (linger_time, linger_bytes) = app.lingering_close;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
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
        let io = TokioIo::new(Lingering::new(tcp, linger_time, linger_bytes));
        let connection = http
            .serve_connection(io, TowerToHyperService::new(app.connection(peer)))
            .with_upgrades();
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
    if tokio::time::timeout(REQUEST_DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish in time");
    }
}

/// A connection's socket that closes lingering, as nginx does: when hyper
/// closes the connection (its shutdown, after the last answer), the write
/// side is shut first, and what the client still sends is read and
/// discarded until it closes too, for at most `time` and `bytes`.
///
/// Without this, closing a socket with unread input resets it, and the reset
/// can destroy the answer before the client reads it: a client that writes a
/// whole oversized body before reading (Python's urllib, curl) saw
/// `Broken pipe` instead of `413 too_large`. The bounds keep a client from
/// holding the descriptor: nothing is read beyond them. A connection hyper
/// gives up on with an error (a header-read timeout) is dropped at once; an
/// upgraded one (a WebSocket) is never shut down by hyper, so never lingers.
pub struct Lingering {
    tcp: TcpStream,
    time: Duration,
    bytes: u64,
    state: Linger,
}

enum Linger {
    Open,
    Draining {
        drained: u64,
        until: Pin<Box<Sleep>>,
    },
    Closed,
}

impl Lingering {
    pub fn new(tcp: TcpStream, time: Duration, bytes: u64) -> Lingering {
        Lingering {
            tcp,
            time,
            bytes,
            state: Linger::Open,
        }
    }

    /// The socket, for a connection upgraded to a WebSocket (whose session
    /// lingers on its own close).
    pub fn into_tcp(self) -> TcpStream {
        self.tcp
    }

    /// Reads and discards input until the client closes or a bound is hit.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Linger::Draining { drained, until } = &mut self.state else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 8192];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.tcp).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    *drained += buf.filled().len() as u64;
                    if *drained >= self.bytes {
                        return Poll::Ready(());
                    }
                }
                // The client closed (or reset): nothing more can arrive.
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return until.as_mut().poll(cx),
            }
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Linger::Open = this.state {
            let shut = std::task::ready!(Pin::new(&mut this.tcp).poll_shutdown(cx));
            if shut.is_err() || this.time.is_zero() || this.bytes == 0 {
                this.state = Linger::Closed;
                return Poll::Ready(shut);
            }
            this.state = Linger::Draining {
                drained: 0,
                until: Box::pin(tokio::time::sleep(this.time)),
            };
        }
        std::task::ready!(this.poll_drain(cx));
        this.state = Linger::Closed;
        Poll::Ready(Ok(()))
    }
}
