//! Simulated traders (`hubcast demo --traders N`): tasks that buy through the
//! same [`super::buy`] path as the page, so prices move on their own.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{buy, list, BuyOrder, BuyResult};
use hubcast_server::store::Backend;

/// Starts `count` traders; they stop when `stop` is cancelled.
pub fn spawn(store: Backend, count: usize, stop: CancellationToken) {
    for trader in 0..count {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let pause = Duration::from_millis(rand::thread_rng().gen_range(400..2000));
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
        let mut rng = rand::thread_rng();
        let market = &markets[rng.gen_range(0..markets.len())];
        let prices = market.prices();
        // Lean towards the cheaper outcomes, so prices wander instead of running off.
        let outcome = if rng.gen_bool(0.6) {
            prices
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        } else {
            rng.gen_range(0..prices.len())
        };
        let order = BuyOrder {
            outcome,
            shares: rng.gen_range(1..=25) as f64,
            expected_price: prices[outcome],
            max_slippage: 0.02,
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
