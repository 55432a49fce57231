//! Deadlines for request bodies, and the service one connection's requests
//! go through.
//!
//! hyper's header-read timeout covers only the request head: a client that
//! sends `Content-Length: 100` and then one byte (or none) would hold its
//! connection, its file descriptor and a handler forever. Every body is read
//! through [`TimedBody`]: a body that sends nothing for
//! `limits.body_read_timeout_ms`, or is not whole within
//! `limits.body_deadline_ms`, fails. Whatever the handler made of that
//! failure (an embedding application's extractor answers in its own way),
//! [`ConnectionService`] answers `408 request_timeout` in JSON, counts it
//! (`hubcast_refusals_total{reason="request_timeout"}`) and the connection
//! closes, since its body was not read to the end.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::request_timeout;

/// How long a request body may take.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadlines {
    /// The longest wait for the next bytes of a body.
    pub idle: Duration,
    /// The longest a whole body may take.
    pub total: Duration,
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimeout;

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTimeout`] when its client stalls.
    ///
    /// A body already buffered with its head (most publishes) is never
    /// pending, so it never allocates a timer; one is made at the first wait.
    pub struct TimedBody {
        #[pin]
        inner: Incoming,
        deadlines: BodyDeadlines,
        // When the whole body must be in: set at the first wait.
        deadline: Option<Instant>,
        timer: Option<Pin<Box<Sleep>>>,
        // Bytes arrived since the timer was last armed.
        progressed: bool,
        timed_out: Arc<AtomicBool>,
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.progressed = true;
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = Instant::now();
                let deadline = *this.deadline.get_or_insert(now + this.deadlines.total);
                let wake = deadline.min(now + this.deadlines.idle);
                match this.timer {
                    None => *this.timer = Some(Box::pin(tokio::time::sleep_until(wake))),
                    Some(timer) if *this.progressed => timer.as_mut().reset(wake),
                    Some(_) => {}
                }
                *this.progressed = false;
                let timer = this.timer.as_mut().expect("armed above");
                if timer.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The HTTP service of one accepted connection: gives each request the
/// client's address (`ConnectInfo`) and a [`TimedBody`], and answers 408 for
/// a request whose body timed out.
#[derive(Clone)]
pub struct ConnectionService<S> {
    inner: S,
    peer: SocketAddr,
    deadlines: BodyDeadlines,
    // One connection's requests come one at a time (HTTP/1), so one flag
    // serves them all, and a connection costs one allocation, not a request.
    timed_out: Arc<AtomicBool>,
}

impl<S> ConnectionService<S> {
    pub fn new(inner: S, peer: SocketAddr, deadlines: BodyDeadlines) -> ConnectionService<S> {
        ConnectionService {
            inner,
            peer,
            deadlines,
            timed_out: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<S> tower::Service<Request<Incoming>> for ConnectionService<S>
where
    S: tower::Service<Request<TimedBody>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TimedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let timed_out = self.timed_out.clone();
        let deadlines = self.deadlines;
        let mut request = request.map(|inner| TimedBody {
            inner,
            deadlines,
            deadline: None,
            timer: None,
            progressed: false,
            timed_out: timed_out.clone(),
        });
        request.extensions_mut().insert(ConnectInfo(self.peer));
        TimedResponse {
            inner: self.inner.call(request),
            timed_out,
            peer: self.peer,
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's answer, or 408 if the request's body timed out.
    pub struct TimedResponse<F> {
        #[pin]
        inner: F,
        timed_out: Arc<AtomicBool>,
        peer: SocketAddr,
    }
}

impl<F, E> Future for TimedResponse<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        if !this.timed_out.swap(false, Ordering::Relaxed) {
            return Poll::Ready(Ok(response));
        }
        crate::metrics::note_refusal(
            "request_timeout",
            this.peer.ip(),
            "request body not received in time",
        );
        // Keep the headers the layers added (request id, CORS), replace the rest.
        let (mut parts, _) = response.into_parts();
        let timeout = request_timeout();
        parts.status = timeout.status();
        for (name, value) in timeout.headers() {
            parts.headers.insert(name, value.clone());
        }
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        Poll::Ready(Ok(Response::from_parts(parts, timeout.into_body())))
    }
}
