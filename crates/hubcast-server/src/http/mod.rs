//! The HTTP surface: routes, and the mapping of every error to a status with a
//! JSON body.

pub mod access;
mod admin;
mod batch;
mod cors;
mod dashboard;
pub mod deadline;
pub mod error;
mod events;
pub mod extract;
pub mod openapi;
pub mod page;
mod request_id;
mod rooms;
mod sse;
mod stats;
pub mod throttle;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::node::Node;
use crate::protocol::codes::ErrorCode;
use error::ApiError;

/// The most `/readyz` waits for the store and the bus.
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Room for the JSON envelope around the largest event in a publish body.
const BODY_OVERHEAD: usize = 64 * 1024;

/// The routes inside CORS and request ids: wrapped once around the router.
/// (`Router::layer` would wrap every route in them, each a boxed service
/// cloned and a boxed future per request.)
pub type Routes = cors::BrowserCors<request_id::RequestId<Router>>;

/// The whole HTTP surface as the accept loop serves it: the routes, and how
/// long a request body may take.
#[derive(Clone)]
pub struct App {
    routes: Routes,
    body: deadline::BodyDeadlines,
    /// How long, and how many bytes, a connection closed with its request
    /// unread drains its client's input (`limits.lingering_close_*`).
    pub lingering_close: (Duration, u64),
}

impl App {
    /// The service of one accepted connection from `peer`.
    pub fn connection(&self, peer: SocketAddr) -> deadline::ConnectionService<Routes> {
        deadline::ConnectionService::new(self.routes.clone(), peer, self.body)
    }
}

/// The router inside CORS and request ids, with an embedding application's
/// `extra` routes beside hubcast's.
pub fn app(node: Arc<Node>, extra: Router) -> App {
    use tower::Layer;
    let policy = cors::policy(
        &node.auth.allowed_origins,
        node.config.auth.token_cookie.is_some(),
    );
    let limits = &node.config.limits;
    let body = deadline::BodyDeadlines {
        idle: Duration::from_millis(limits.body_read_timeout_ms),
        total: Duration::from_millis(limits.body_deadline_ms),
    };
    let lingering_close = (
        Duration::from_millis(limits.lingering_close_ms),
        limits.lingering_close_bytes,
    );
    App {
        routes: cors::BrowserCors::new(
            &policy,
            request_id::RequestIdLayer.layer(router(node, extra)),
        ),
        body,
        lingering_close,
    }
}

/// The largest request body: the largest event and its JSON envelope.
pub fn body_limit(node: &Node) -> usize {
    node.config.limits.max_event_bytes + BODY_OVERHEAD
}

/// All routes of the v1 interface, and the application's.
fn router(node: Arc<Node>, extra: Router) -> Router {
    let body_limit = body_limit(&node);
    // The API's routes come with their OpenAPI description; the pages are
    // not part of the API.
    let (documented, description) =
        openapi::documented_routes(node.config.limits.max_batch_bytes).split_for_parts();
    let routes = documented
        .route("/v1/openapi.json", openapi::serve_json(&description))
        .route("/v1/docs", get(openapi::docs))
        .route("/", get(dashboard::index))
        .route("/dashboard/{*path}", get(dashboard::asset))
        // The Pusher protocol and HTTP API: Pusher's own interface, documented
        // in docs/pusher.md rather than in hubcast's OpenAPI description.
        .merge(crate::pusher::routes())
        .with_state(node);
    routes
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// The body of `/healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok`, or `failed` when the store can never write again.
    status: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'static str>,
}

/// The body of `/readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// `ok`, or why the store did not answer.
    store: String,
    /// `ok`, or why the bus did not answer.
    bus: String,
    /// The node is shutting down.
    stopping: bool,
}

/// Liveness: the process answers.
///
/// Fails (503) once the store can never write again (its writer thread
/// died): a supervisor then restarts the node instead of keeping a zombie.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "node",
    summary = "Liveness",
    description = "200 while the process answers; 503 once the store can never write again \
                   (a supervisor should restart the node).",
    responses(
        (status = 200, description = "The process answers", body = Health),
        (status = 503, description = "The store can never write again: restart the node", body = Health),
    ),
)]
async fn healthz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    if node.store.is_alive() {
        (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                store: None,
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "failed",
                store: Some("cannot write any more"),
            }),
        )
    }
}

/// Readiness: the store and the bus answer, and the node is not stopping.
///
/// Answers within its own deadline ([`READY_DEADLINE`]) even when a store or
/// bus does not: a probe that hangs is a probe that fails.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "node",
    summary = "Readiness",
    description = "200 when the store and the bus answer (each within 2 s) and the node is not stopping.",
    responses(
        (status = 200, description = "The store and the bus answer", body = Readiness),
        (status = 503, description = "The store or the bus does not answer, or the node is stopping", body = Readiness),
    ),
)]
async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let timed_out = |what: &str| {
        format!(
            "{what} did not answer within {} ms",
            READY_DEADLINE.as_millis()
        )
    };
    let (store, bus) = tokio::join!(
        tokio::time::timeout(READY_DEADLINE, node.store.check()),
        tokio::time::timeout(READY_DEADLINE, node.bus.check()),
    );
    let store = store.unwrap_or_else(|_| {
        Err(crate::store::StoreError::Unavailable(timed_out(
            "the store",
        )))
    });
    let bus = bus.unwrap_or_else(|_| Err(crate::bus::BusError::Unavailable(timed_out("the bus"))));
    let stopping = node.shutdown.is_cancelled();
    let ready = store.is_ok() && bus.is_ok() && !stopping;
    let describe = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_owned());
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        store: describe(store.map_err(|e| e.to_string())),
        bus: describe(bus.map_err(|e| e.to_string())),
        stopping,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
