//! CORS for browser pages on other origins (history for gap healing, publish
//! from a page, event streams): the configured origins, or any origin when
//! none are configured. Without `auth.token_cookie` no cookies are involved,
//! so `*` is safe; with it, only the configured origins, with credentials.
//!
//! tower-http's layer does the work, but only for requests that carry an
//! `Origin` header, which every browser sends on a cross-origin request (and
//! on every `POST`). Server-side publishers send none, and for them the layer
//! only built a header map, joined its `Vary` list and merged both into the
//! response: ~6 allocations and ~4% of the server's CPU per durable publish.
//! Their answers get `Vary: Origin` instead, so a cache never hands an answer
//! made without CORS headers to a browser.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{header, HeaderName, HeaderValue, Method, Request};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

/// The CORS policy of a node with these allowed origins. With a token
/// cookie configured (`credentials`), those origins may send credentials
/// (`EventSource` with `withCredentials`); config requires a list then, as
/// credentials must never be allowed to `*`.
pub fn policy(allowed_origins: &[String], credentials: bool) -> CorsLayer {
    let origins: Vec<HeaderValue> = allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let origins_any = origins.is_empty();
    let allow_origin = if origins_any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins)
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .allow_credentials(credentials && !origins_any)
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(std::time::Duration::from_secs(600))
}

/// `inner`, with `policy` applied to the requests that have an `Origin`.
#[derive(Debug, Clone)]
pub struct BrowserCors<S> {
    plain: S,
    cors: Cors<S>,
}

impl<S: Clone> BrowserCors<S> {
    pub fn new(policy: &CorsLayer, inner: S) -> BrowserCors<S> {
        use tower::Layer;
        BrowserCors {
            cors: policy.layer(inner.clone()),
            plain: inner,
        }
    }
}

impl<S, B> tower::Service<Request<B>> for BrowserCors<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CorsFuture<S::Future, <Cors<S> as tower::Service<Request<B>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Both wrap the same router, which is always ready.
        match self.plain.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.cors.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.headers().contains_key(header::ORIGIN) {
            CorsFuture::Browser {
                inner: self.cors.call(request),
            }
        } else {
            CorsFuture::Plain {
                inner: self.plain.call(request),
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = CorsFutureProj]
    pub enum CorsFuture<P, C> {
        Plain { #[pin] inner: P },
        Browser { #[pin] inner: C },
    }
}

impl<P, C, E> Future for CorsFuture<P, C>
where
    P: Future<Output = Result<Response, E>>,
    C: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CorsFutureProj::Browser { inner } => inner.poll(cx),
            CorsFutureProj::Plain { inner } => {
                let mut response = std::task::ready!(inner.poll(cx))?;
                response
                    .headers_mut()
                    .append(header::VARY, HeaderValue::from_static("origin"));
                Poll::Ready(Ok(response))
            }
        }
    }
}
