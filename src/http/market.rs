//! The prediction-market demo's page and API, served only by `hubcast demo`
//! (`Config::market`): `GET /demo/` (examples/market/public, with the bundle built
//! from examples/market/src, embedded with `rust-embed`), `GET /demo/api/markets[/{id}]` and
//! `POST /demo/api/markets/{id}/buy`. The buy is checked and committed with its
//! event inside one store transaction (see `crate::market`); a stale quote is
//! a 409 carrying the current market.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use crate::market::{self, BuyOrder, BuyResult, MarketError, Refusal};
use crate::node::Node;
use crate::protocol::codes::ErrorCode;

#[derive(rust_embed::Embed)]
#[folder = "examples/market/public/"]
struct Page;

/// The market routes, merged into the router when the market demo is on.
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { asset("index.html") }))
        .route("/demo/style.css", get(|| async { asset("style.css") }))
        .route("/demo/app.js", get(|| async { asset("app.js") }))
        .route("/demo/api/markets", get(list))
        .route("/demo/api/markets/{id}", get(one))
        .route("/demo/api/markets/{id}/buy", post(buy))
}

fn asset(path: &str) -> Response {
    super::demo::serve_page_file(path, Page::get(path), "market asset")
}

impl From<MarketError> for ApiError {
    fn from(err: MarketError) -> ApiError {
        match err {
            MarketError::Store(err) => err.into(),
        }
    }
}

async fn list(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let markets = market::list(&node.store).await?;
    let views: Vec<_> = markets.iter().map(market::Market::view).collect();
    Ok(Json(json!({ "markets": views })).into_response())
}

async fn one(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match market::get(&node.store, &id).await? {
        Some(market) => Ok(Json(market.view()).into_response()),
        None => Err(no_market(&id)),
    }
}

fn no_market(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::new(ErrorCode::NotFound, format!("no market {shown:?}"))
}

async fn buy(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    order: Result<Json<BuyOrder>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(order) = order.map_err(|rejection| ApiError::new(ErrorCode::BadRequest, rejection.body_text()))?;
    let outcome = order.outcome;
    match market::buy(&node.store, &id, order).await? {
        BuyResult::Filled(answer) => Ok((StatusCode::OK, Json(answer)).into_response()),
        BuyResult::NoSuchMarket => Err(no_market(&id)),
        BuyResult::Refused { refusal: Refusal::Invalid { message }, .. } => Err(ApiError::new(ErrorCode::BadRequest, message)),
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
