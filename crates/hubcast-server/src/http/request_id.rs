//! Every request's id: in a span around its handling (so its log lines carry
//! it) and in the `x-request-id` response header (so a client can quote it).
//!
//! A plain tower layer rather than `axum::middleware::from_fn`: that one
//! clones the router and boxes a future per request, which was about a tenth
//! of the server's CPU per durable publish (`bench publish`, BENCHMARKS.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Numbers the node's requests from 1.
static NEXT: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for RequestId<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        // Only the id: the fmt subscriber formats a span's fields when the
        // span is made, once per request, and method and path cost as much again.
        let span = tracing::info_span!("request", request = id);
        let inner = span.in_scope(|| self.inner.call(request));
        RequestIdFuture { inner, span, id }
    }
}

pin_project_lite::pin_project! {
    /// The handler's future, polled inside the request's span; adds the
    /// header to the response.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        id: u64,
    }
}

impl<F, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), HeaderValue::from(*this.id));
        Poll::Ready(Ok(response))
    }
}
