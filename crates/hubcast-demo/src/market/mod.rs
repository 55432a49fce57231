//! The prediction-market demo (`hubcast demo`): a small application on top of
//! hubcast, written the way an application should be.
//!
//! Each market's state (outstanding shares per outcome, a version) lives in
//! `demo_markets`, beside hubcast's tables. A buy carries the quote the buyer
//! saw (price, optionally version) and a slippage tolerance; [`buy`] checks it
//! against the locked current state and, if it holds, updates the market,
//! records the trade and appends a `trade` event to the market's room, all in
//! one database transaction through the store backend's extension
//! (`hubcast_server::store::transaction`). The room fans out
//! from the commit feed after the commit; nothing here talks to a hub.
//! Prices come from [`lmsr`].

pub mod lmsr;
mod routes;
mod sql;
pub mod traders;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use hubcast_server::store::transaction::TxOutcome;
use hubcast_server::store::{Backend, StoreError};
use hubcast_server::RoomName;

pub use routes::routes;

/// What `hubcast demo` asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarketSettings {
    /// Simulated traders buying through the same path as the page.
    pub traders: usize,
    /// Put every market back to its seed state on start.
    pub reset: bool,
}

/// Sets the market up on a started node and returns its routes, with the
/// traders running until the node stops: what `hubcast demo` adds to a node.
pub async fn attach(
    node: &hubcast_server::NodeHandle,
    settings: &MarketSettings,
) -> Result<axum::Router, MarketError> {
    setup(node.backend(), settings.reset).await?;
    traders::spawn(
        node.backend().clone(),
        settings.traders,
        node.shutdown_token(),
    );
    Ok(routes(node.clone()))
}

/// A market as stored (and as the page is sent it, with its prices).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Market {
    pub id: String,
    pub title: String,
    pub outcomes: Vec<String>,
    /// LMSR liquidity `b`: how many shares move the price noticeably.
    pub liquidity: f64,
    /// Outstanding shares per outcome (`q`).
    pub shares: Vec<f64>,
    /// Incremented by every trade.
    pub version: u64,
    /// Total paid for all trades.
    pub volume: f64,
}

impl Market {
    pub fn prices(&self) -> Vec<f64> {
        lmsr::prices(&self.shares, self.liquidity)
    }

    /// The market with its prices and room, as the API and events show it.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "outcomes": self.outcomes,
            "liquidity": self.liquidity,
            "shares": self.shares,
            "version": self.version,
            "volume": self.volume,
            "prices": self.prices(),
            "room": room_of(&self.id),
        })
    }
}

/// The room a market's trades are announced in.
pub fn room_of(market: &str) -> String {
    format!("demo.market.{market}")
}

/// A buy order: the quote the buyer saw and how far it may move.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyOrder {
    pub outcome: usize,
    pub shares: f64,
    /// The price of `outcome` the buyer was shown.
    pub expected_price: f64,
    /// How far (absolute, in price units 0–1) the price may have moved.
    pub max_slippage: f64,
    /// When given, the market must still be at this version (no trade since).
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// The most shares one buy may take.
pub const MAX_SHARES: f64 = 10_000.0;

/// The tolerance the page's ticket starts with (5 price points): with the
/// default traders, a price moves less than this between a person's quote
/// and confirm unless several trades land in between, so buys fill while
/// stale quotes are still refused (`traders` keeps its trades small enough).
pub const SUGGESTED_SLIPPAGE: f64 = 0.05;

/// A trade that passed the check, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub outcome: usize,
    pub shares: f64,
    pub cost: f64,
    /// The price of `outcome` the trade was checked against.
    pub price_before: f64,
    pub after: Market,
}

/// Why a buy was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    #[error("{message}")]
    Invalid { message: String },
    #[error("the market is at version {current}, the quote was for version {expected}")]
    StaleVersion { expected: u64, current: u64 },
    #[error(
        "the price moved from {expected:.4} to {current:.4}, beyond the {slippage:.4} tolerance"
    )]
    PriceMoved {
        expected: f64,
        current: f64,
        slippage: f64,
    },
}

impl BuyOrder {
    fn validate(&self, market: &Market) -> Result<(), Refusal> {
        if self.outcome >= market.outcomes.len() {
            return Err(Refusal::Invalid {
                message: format!("outcome must be 0 to {}", market.outcomes.len() - 1),
            });
        }
        if !(self.shares.is_finite() && self.shares > 0.0 && self.shares <= MAX_SHARES) {
            return Err(Refusal::Invalid {
                message: format!("shares must be more than 0 and at most {MAX_SHARES}"),
            });
        }
        if !(0.0..=1.0).contains(&self.expected_price) {
            return Err(Refusal::Invalid {
                message: "expected_price must be between 0 and 1".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.max_slippage) {
            return Err(Refusal::Invalid {
                message: "max_slippage must be between 0 and 1".into(),
            });
        }
        Ok(())
    }
}

/// The check itself, on the state read under the transaction's lock.
pub fn decide(market: &Market, order: &BuyOrder) -> Result<Trade, Refusal> {
    order.validate(market)?;
    if let Some(expected) = order.expected_version {
        if expected != market.version {
            return Err(Refusal::StaleVersion {
                expected,
                current: market.version,
            });
        }
    }
    let price = market.prices()[order.outcome];
    if (price - order.expected_price).abs() > order.max_slippage {
        return Err(Refusal::PriceMoved {
            expected: order.expected_price,
            current: price,
            slippage: order.max_slippage,
        });
    }
    let cost = lmsr::cost_of_buy(
        &market.shares,
        market.liquidity,
        order.outcome,
        order.shares,
    );
    let mut after = market.clone();
    after.shares[order.outcome] += order.shares;
    after.version += 1;
    after.volume += cost;
    Ok(Trade {
        outcome: order.outcome,
        shares: order.shares,
        cost,
        price_before: price,
        after,
    })
}

/// The `trade` event a committed buy appends to the market's room.
pub fn trade_event(trade: &Trade, ts: i64) -> Value {
    json!({
        "type": "trade",
        "market": trade.after.id,
        "version": trade.after.version,
        "outcome": trade.outcome,
        "shares": trade.shares,
        "cost": trade.cost,
        "price_before": trade.price_before,
        "prices": trade.after.prices(),
        "outstanding": trade.after.shares,
        "volume": trade.after.volume,
        "ts": ts,
    })
}

/// How a buy ended.
#[derive(Debug)]
pub enum BuyResult {
    /// Committed: the trade, the market after it, and the event's seq.
    Filled(Value),
    /// Refused by the check (nothing changed), with the current market.
    Refused {
        refusal: Refusal,
        market: Value,
    },
    NoSuchMarket,
}

/// Why the market could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Buys: the check, the update, the trade record and the room's event in one
/// store transaction.
pub async fn buy(store: &Backend, market: &str, order: BuyOrder) -> Result<BuyResult, MarketError> {
    let outcome = store
        .transact(sql::Buy {
            market: market.to_owned(),
            order,
        })
        .await?;
    Ok(match outcome {
        TxOutcome::Committed { receipt, answer } => {
            let mut answer = answer;
            if let (Some(receipt), Some(object)) = (receipt, answer.as_object_mut()) {
                object.insert("seq".into(), json!(receipt.seq));
                object.insert("epoch".into(), json!(receipt.epoch));
            }
            BuyResult::Filled(answer)
        }
        TxOutcome::Aborted(answer) => match serde_json::from_value::<sql::Aborted>(answer) {
            Ok(sql::Aborted::NotFound) | Err(_) => BuyResult::NoSuchMarket,
            Ok(sql::Aborted::Refused { refusal, market }) => BuyResult::Refused { refusal, market },
        },
    })
}

/// Every market, in id order.
pub async fn list(store: &Backend) -> Result<Vec<Market>, MarketError> {
    let answer = committed(store.transact(sql::List).await?);
    Ok(serde_json::from_value(answer).unwrap_or_default())
}

/// One market, if it exists.
pub async fn get(store: &Backend, id: &str) -> Result<Option<Market>, MarketError> {
    Ok(list(store).await?.into_iter().find(|m| m.id == id))
}

/// Creates the tables and seeds the markets on first start (all of them
/// again with `reset`: each reset market's room gets a `reset` event, so open
/// pages start over too).
pub async fn setup(store: &Backend, reset: bool) -> Result<(), MarketError> {
    store.transact(sql::Setup).await?;
    for seed in seeds() {
        let room = RoomName::parse(&room_of(&seed.id))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        store
            .transact(sql::Seed {
                market: seed,
                room,
                reset,
            })
            .await?;
    }
    Ok(())
}

fn committed(outcome: TxOutcome) -> Value {
    match outcome {
        TxOutcome::Committed { answer, .. } | TxOutcome::Aborted(answer) => answer,
    }
}

/// The demo's markets, as they start.
pub fn seeds() -> Vec<Market> {
    let market = |id: &str, title: &str, outcomes: &[&str], liquidity: f64| Market {
        id: id.into(),
        title: title.into(),
        outcomes: outcomes.iter().map(|o| o.to_string()).collect(),
        liquidity,
        shares: vec![0.0; outcomes.len()],
        version: 0,
        volume: 0.0,
    };
    vec![
        market(
            "mars-2030",
            "Humans land on Mars by 2030?",
            &["Yes", "No"],
            100.0,
        ),
        market(
            "rain-lisbon",
            "Rain in Lisbon tomorrow?",
            &["Yes", "No"],
            60.0,
        ),
        market(
            "world-cup",
            "Who wins the next World Cup?",
            &["Brazil", "France", "Argentina", "Other"],
            150.0,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(expected_price: f64, max_slippage: f64) -> BuyOrder {
        BuyOrder {
            outcome: 0,
            shares: 10.0,
            expected_price,
            max_slippage,
            expected_version: None,
        }
    }

    #[test]
    fn a_quote_within_tolerance_fills() {
        let market = &seeds()[0];
        let trade = decide(market, &order(0.5, 0.01)).unwrap();
        assert_eq!(trade.after.version, 1);
        assert_eq!(trade.after.shares, vec![10.0, 0.0]);
        assert!(trade.after.prices()[0] > 0.5);
        assert!((trade.after.volume - trade.cost).abs() < 1e-12);
    }

    #[test]
    fn a_moved_price_or_version_is_refused() {
        let market = decide(&seeds()[0], &order(0.5, 0.01)).unwrap().after;
        assert!(matches!(
            decide(&market, &order(0.5, 0.01)),
            Err(Refusal::PriceMoved { .. })
        ));
        assert!(decide(&market, &order(0.5, 0.1)).is_ok());
        let stale = BuyOrder {
            expected_version: Some(0),
            ..order(0.5, 0.1)
        };
        assert_eq!(
            decide(&market, &stale),
            Err(Refusal::StaleVersion {
                expected: 0,
                current: 1
            })
        );
    }

    #[test]
    fn nonsense_orders_are_invalid() {
        let market = &seeds()[0];
        for bad in [
            BuyOrder {
                outcome: 2,
                ..order(0.5, 0.1)
            },
            BuyOrder {
                shares: 0.0,
                ..order(0.5, 0.1)
            },
            BuyOrder {
                shares: f64::NAN,
                ..order(0.5, 0.1)
            },
            order(1.5, 0.1),
            order(0.5, -1.0),
        ] {
            assert!(
                matches!(decide(market, &bad), Err(Refusal::Invalid { .. })),
                "{bad:?}"
            );
        }
    }
}
