//! The prediction market's page and API (`hubcast demo`): `GET /demo/`
//! (examples/market/public, with the bundle built from examples/market/src,
//! embedded with `rust-embed`), `GET /demo/api/markets[/{id}]` and
//! `POST /demo/api/markets/{id}/buy`. A buy is authorized like any publish to
//! the market's room (credentials, publish grant, publish rate limit), then
//! checked and committed with its event inside one store transaction (see
//! [`super::buy`]); a stale quote is a 409 carrying the current market.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hubcast_server::page::serve_page_file;
use hubcast_server::{ApiError, ErrorCode, NodeHandle, RoomName};
use serde_json::json;

use super::{BuyOrder, BuyResult, MarketError, Refusal};

#[derive(rust_embed::Embed)]
#[folder = "../../examples/market/public/"]
struct Page;

/// The market's routes, on `node`.
pub fn routes(node: NodeHandle) -> Router {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { asset("index.html") }))
        .route("/demo/style.css", get(|| async { asset("style.css") }))
        .route("/demo/app.js", get(|| async { asset("app.js") }))
        .route("/demo/api/markets", get(list))
        .route("/demo/api/markets/{id}", get(one))
        .route("/demo/api/markets/{id}/buy", post(buy))
        .with_state(node)
}

fn asset(path: &str) -> Response {
    serve_page_file(path, Page::get(path).map(|file| file.data), "market asset")
}

impl From<MarketError> for ApiError {
    fn from(err: MarketError) -> ApiError {
        match err {
            MarketError::Store(err) => err.into(),
        }
    }
}

async fn list(State(node): State<NodeHandle>) -> Result<Response, ApiError> {
    let markets = super::list(node.backend()).await?;
    let views: Vec<_> = markets.iter().map(super::Market::view).collect();
    Ok(Json(json!({ "markets": views })).into_response())
}

async fn one(State(node): State<NodeHandle>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match super::get(node.backend(), &id).await? {
        Some(market) => Ok(Json(market.view()).into_response()),
        None => Err(no_market(&id)),
    }
}

fn no_market(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::new(ErrorCode::NotFound, format!("no market {shown:?}"))
}

async fn buy(
    State(node): State<NodeHandle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let room = RoomName::parse(&super::room_of(&id)).map_err(|_| no_market(&id))?;
    node.authorize_publish(&headers, peer, &room)?;
    // The body is JSON whatever its Content-Type says, as on `/v1`: `curl -d`
    // sends `application/x-www-form-urlencoded`.
    let order: BuyOrder = serde_json::from_slice(&body).map_err(|err| {
        let code = if err.is_syntax() || err.is_eof() {
            ErrorCode::InvalidJson
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, format!("body: {err}"))
    })?;
    let outcome = order.outcome;
    match super::buy(node.backend(), &id, order).await? {
        BuyResult::Filled(answer) => Ok((StatusCode::OK, Json(answer)).into_response()),
        BuyResult::NoSuchMarket => Err(no_market(&id)),
        BuyResult::Refused {
            refusal: Refusal::Invalid { message },
            ..
        } => Err(ApiError::new(ErrorCode::BadRequest, message)),
        BuyResult::Refused { refusal, market } => {
            let body = json!({
                "error": "stale_quote",
                "message": refusal.to_string(),
                "refusal": refusal,
                "current_price": market.get("prices").and_then(|p| p.get(outcome)).cloned().unwrap_or_default(),
                "current_version": market.get("version").cloned().unwrap_or_default(),
                "market": market,
            });
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
    }
}
