//! The OpenAPI 3.1 description of the HTTP API, generated from the code:
//! every documented route is registered through [`documented_routes`], which
//! records the handler's `#[utoipa::path]` annotation as it adds the route, so
//! a route cannot be served without being described (and vice versa).
//!
//! Served at `GET /v1/openapi.json`, and browsable at `GET /v1/docs` (an
//! embedded page that renders it: no CDN). Schemathesis checks the running
//! server against it in the test suite (`tests/openapi/run.sh`).
//!
//! The parameter types here mirror the query shapes of
//! `hubcast_protocol::request`, which stays free of documentation macros.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

use super::error::REQUEST_TIMEOUT;
use super::{admin, batch, events, rooms, sse, stats, ws};
use crate::node::Node;
use crate::protocol::codes::ErrorCode;

/// The description's header: title, version, security scheme, tags. The
/// operations come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hubcast",
        description = "Real-time event fan-out: durable rooms with a gapless sequence, exact replay. \
                       WebSocket messages are described in docs/protocol.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "events", description = "Publish and read a room's events"),
        (name = "rooms", description = "Room state"),
        (name = "websocket", description = "WebSocket upgrades (the messages: docs/protocol.md)"),
        (name = "streams", description = "Server-Sent Event streams (docs/protocol.md, Server-Sent Events)"),
        (name = "admin", description = "Cluster-wide control: presence, disconnects, token revocation, deleting a room (admin credentials)"),
        (name = "node", description = "Health, readiness and node-wide numbers"),
    )
)]
struct ApiDoc;

/// `Authorization: Bearer <API key or JWT>`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key or a JWT. Without credentials configured, anonymous \
                         clients are accepted from loopback addresses only.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every documented route of the v1 interface, each added together with its
/// description. A new route goes here, its handler annotated with
/// `#[utoipa::path]` (see docs/architecture.md, "How to add a route").
///
/// `max_batch_bytes` is the body limit of `POST /v1/events`
/// (`limits.max_batch_bytes`).
pub fn documented_routes(max_batch_bytes: usize) -> OpenApiRouter<Arc<Node>> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    OpenApiRouter::with_openapi(doc)
        .routes(routes!(events::history, events::publish))
        .routes(
            // Its own body limit: a batch is bounded by
            // `limits.max_batch_bytes`, not by the largest single event.
            routes!(batch::publish_batch).layer(DefaultBodyLimit::max(max_batch_bytes)),
        )
        .routes(routes!(rooms::stats, admin::delete_room))
        .routes(routes!(admin::presence))
        .routes(routes!(admin::disconnect))
        .routes(routes!(admin::revocations, admin::revoke))
        .routes(routes!(ws::room))
        .routes(routes!(ws::multiplexed))
        .routes(routes!(sse::room))
        .routes(routes!(sse::multiplexed))
        .routes(routes!(stats::rooms))
        .routes(routes!(stats::stats))
        .routes(routes!(stats::metrics))
        .routes(routes!(super::healthz))
        .routes(routes!(super::readyz))
}

/// The whole description, as `/v1/openapi.json` serves it (without a
/// running node: for tools that print or check it).
pub fn description() -> utoipa::openapi::OpenApi {
    documented_routes(crate::config::LimitsConfig::default().max_batch_bytes)
        .split_for_parts()
        .1
}

/// `GET /v1/openapi.json`, serialized once when the router is built.
pub fn serve_json(doc: &utoipa::openapi::OpenApi) -> axum::routing::MethodRouter<Arc<Node>> {
    let json: Arc<str> = doc
        .to_json()
        .expect("the OpenAPI description serializes")
        .into();
    axum::routing::get(move || {
        let json = json.clone();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                json.to_string(),
            )
                .into_response()
        }
    })
}

/// `GET /v1/docs`: the embedded page that renders `/v1/openapi.json`.
pub async fn docs(headers: axum::http::HeaderMap) -> Response {
    super::dashboard::page("api.html", &headers)
}

/// A room name, as `hubcast_protocol::room::RoomName` accepts it (named
/// `RoomName` in the description).
pub struct RoomNameDoc;

impl utoipa::PartialSchema for RoomNameDoc {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(crate::room::MAX_ROOM_NAME_LEN))
            .pattern(Some(r"^[A-Za-z0-9_\-:.@=]+$"))
            .description(Some("1 to 128 bytes of `A-Z a-z 0-9 _ - : . @ =`"))
            .into()
    }
}

impl ToSchema for RoomNameDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "RoomName".into()
    }
}

/// The `{room}` of a route's path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct RoomParam {
    /// The room.
    #[param(value_type = RoomNameDoc)]
    room: String,
}

/// `?after=&limit=` of `GET /v1/rooms/{room}/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistoryParams {
    /// Events with a seq greater than this (default 0: from the start).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    after: Option<u64>,
    /// At most this many events (default 100, capped by `limits.max_page`);
    /// 0 answers the room's state alone.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    limit: Option<u64>,
}

/// `?after=&limit=` of `GET /v1/rooms`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RoomsParams {
    /// Rooms whose name sorts after this one (the previous page's `next`).
    after: Option<String>,
    /// At most this many rooms (default 100, capped by `limits.max_page`).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    limit: Option<u64>,
}

/// The query of `GET /v1/rooms/{room}/ws`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RoomSocketParams {
    /// The last seq the client processed: the events after it are replayed.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    cursor: Option<u64>,
    /// The epoch the cursor belongs to; another epoch gets a `reset`.
    epoch: Option<String>,
    /// Replay the last N events (when there is no cursor).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    rewind: Option<u64>,
    /// Enter the room's presence.
    presence: Option<bool>,
    /// A credential, for clients that cannot set `Authorization`.
    token: Option<String>,
}

/// The query of `GET /v1/ws`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SocketParams {
    /// A credential, for clients that cannot set `Authorization`.
    token: Option<String>,
}

/// The query of `GET /v1/rooms/{room}/sse` and `GET /v1/sse`: where every
/// room of the stream starts, and credentials.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StreamParams {
    /// The last seq the client processed, for every room (0: from the start of retention).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    cursor: Option<u64>,
    /// The epoch the cursor belongs to; another epoch gets a `reset` event.
    epoch: Option<String>,
    /// Replay the last N events of each room (when there is no cursor).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    rewind: Option<u64>,
    /// A credential, for clients that cannot set `Authorization`.
    token: Option<String>,
    /// The stream id to resume from, for clients that cannot send the
    /// `Last-Event-ID` header (the header wins).
    #[param(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// The rooms of `GET /v1/sse`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StreamRooms {
    /// A room of the stream; repeat the parameter for each (at most `sse.max_rooms`).
    #[param(value_type = Vec<RoomNameDoc>, style = Form, explode)]
    room: Vec<String>,
}

/// The headers of a WebSocket handshake (RFC 6455).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct HandshakeHeaders {
    #[param(rename = "Upgrade", value_type = String, pattern = "^websocket$")]
    upgrade: String,
    #[param(rename = "Connection", value_type = String, pattern = "^Upgrade$")]
    connection: String,
    #[param(rename = "Sec-WebSocket-Version", value_type = String, pattern = "^13$")]
    version: String,
    /// 16 random bytes, base64.
    #[param(
        rename = "Sec-WebSocket-Key",
        value_type = String,
        pattern = "^[A-Za-z0-9+/]{22}==$"
    )]
    key: String,
}

/// The `error` of an error body: one of the protocol's error codes, or
/// `request_timeout` (a request body that did not arrive in time).
pub fn error_code_schema() -> impl Into<RefOr<Schema>> {
    let codes = ErrorCode::ALL
        .iter()
        .map(|code| code.as_str())
        .chain([REQUEST_TIMEOUT]);
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes))
}
