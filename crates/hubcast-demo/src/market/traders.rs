//! Simulated traders (`hubcast demo --traders N`): tasks that buy through the
//! same [`super::buy`] path as the page, so prices move on their own.

use std::time::Duration;

use rand::RngExt;
use tokio_util::sync::CancellationToken;

use super::{buy, list, BuyOrder, BuyResult};
use hubcast_server::store::Backend;

/// How many traders `hubcast demo` runs unless told (`--traders N`): enough
/// that a first visitor sees prices move.
pub const DEFAULT_TRADERS: usize = 3;

/// The largest trade a simulated trader makes: small, so a price moves by
/// well under [`super::SUGGESTED_SLIPPAGE`] per trade and a person's buy fills.
pub const MAX_TRADE_SHARES: u32 = 5;

/// Starts `count` traders; they stop when `stop` is cancelled.
pub fn spawn(store: Backend, count: usize, stop: CancellationToken) {
    for trader in 0..count {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let pause = Duration::from_millis(rand::rng().random_range(400..2000));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                if let Err(err) = trade_once(&store).await {
                    tracing::debug!(trader, error = %err, "simulated trade failed");
                }
            }
        });
    }
}

async fn trade_once(store: &Backend) -> Result<(), super::MarketError> {
    let markets = list(store).await?;
    if markets.is_empty() {
        return Ok(());
    }
    let (market, order) = {
        let mut rng = rand::rng();
        let market = &markets[rng.random_range(0..markets.len())];
        let prices = market.prices();
        // Lean towards the cheaper outcomes, so prices wander instead of running off.
        let outcome = if rng.random_bool(0.6) {
            prices
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        } else {
            rng.random_range(0..prices.len())
        };
        let order = BuyOrder {
            outcome,
            shares: rng.random_range(1..=MAX_TRADE_SHARES) as f64,
            expected_price: prices[outcome],
            max_slippage: super::SUGGESTED_SLIPPAGE,
            expected_version: None,
        };
        (market.id.clone(), order)
    };
    match buy(store, &market, order).await? {
        BuyResult::Filled(_) => tracing::debug!(market, "simulated trade filled"),
        BuyResult::Refused { refusal, .. } => {
            tracing::debug!(market, %refusal, "simulated trade refused")
        }
        BuyResult::NoSuchMarket => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{lmsr, seeds, SUGGESTED_SLIPPAGE};

    /// Two of the largest trades, at the price where one moves it most (even
    /// odds), on the thinnest market, stay within the suggested tolerance: a
    /// person's quote survives the trades that land while they confirm.
    #[test]
    fn two_trader_trades_move_a_price_less_than_the_suggested_slippage() {
        for market in seeds() {
            let even = vec![0.0; market.outcomes.len()];
            let before = lmsr::prices(&even, market.liquidity)[0];
            let mut after = even.clone();
            after[0] += 2.0 * f64::from(MAX_TRADE_SHARES);
            let moved = lmsr::prices(&after, market.liquidity)[0] - before;
            assert!(
                moved < SUGGESTED_SLIPPAGE,
                "{}: two trades move {moved:.4}",
                market.id
            );
            // And a trade still moves it visibly.
            let mut one = even.clone();
            one[0] += 1.0;
            assert!(lmsr::prices(&one, market.liquidity)[0] - before > 0.001);
        }
    }

    /// The page's ticket starts with the suggested tolerance.
    #[test]
    fn the_ticket_starts_with_the_suggested_slippage() {
        let page = include_str!("../../../../examples/market/public/index.html");
        let input = page
            .lines()
            .find(|line| line.contains("id=\"slippage\""))
            .expect("the slippage input");
        let cents = SUGGESTED_SLIPPAGE * 100.0;
        assert!(
            input.contains(&format!("value=\"{cents}\"")),
            "{input} should start at {cents}"
        );
    }
}
