//! The logarithmic market scoring rule (Hanson): an automated market maker
//! that always quotes a price. With outstanding shares `q` and liquidity `b`,
//! the cost function is `C(q) = b · ln Σ exp(q_i / b)`; the price of outcome
//! `i` is `∂C/∂q_i = softmax(q / b)_i`, and buying `Δ` shares of `i` costs
//! `C(q + Δ·e_i) − C(q)`. Prices are positive and sum to 1.

/// `C(q)`, computed with the max subtracted so large `q / b` cannot overflow.
pub fn cost(q: &[f64], b: f64) -> f64 {
    let max = q.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = q.iter().map(|qi| ((qi - max) / b).exp()).sum();
    max + b * sum.ln()
}

/// Every outcome's price (the softmax of `q / b`).
pub fn prices(q: &[f64], b: f64) -> Vec<f64> {
    let max = q.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = q.iter().map(|qi| ((qi - max) / b).exp()).collect();
    let sum: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / sum).collect()
}

/// What buying `shares` of `outcome` costs at `q`.
pub fn cost_of_buy(q: &[f64], b: f64, outcome: usize, shares: f64) -> f64 {
    let mut after = q.to_vec();
    after[outcome] += shares;
    cost(&after, b) - cost(q, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-9;

    #[test]
    fn prices_sum_to_one() {
        for q in [
            vec![0.0, 0.0],
            vec![10.0, -3.0, 250.0],
            vec![1e6, 0.0, 5.0, 7.0],
        ] {
            let p = prices(&q, 100.0);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < EPS, "{p:?}");
            assert!(p.iter().all(|&x| (0.0..=1.0).contains(&x)), "{p:?}");
        }
        assert_eq!(prices(&[0.0, 0.0, 0.0, 0.0], 50.0), vec![0.25; 4]);
    }

    #[test]
    fn a_buy_costs_the_difference_of_the_cost_function() {
        let q = [12.0, 30.0, 4.0];
        let b = 40.0;
        let mut after = q;
        after[1] += 7.5;
        let expected = cost(&after, b) - cost(&q, b);
        assert!((cost_of_buy(&q, b, 1, 7.5) - expected).abs() < EPS);
        // The cost is between the prices before and after, times the shares.
        let (before, after) = (prices(&q, b)[1], prices(&after, b)[1]);
        let paid = cost_of_buy(&q, b, 1, 7.5);
        assert!(before * 7.5 < paid && paid < after * 7.5);
    }

    #[test]
    fn buying_raises_its_price_and_lowers_the_others() {
        let b = 25.0;
        let mut q = vec![0.0, 0.0, 0.0];
        let mut last = prices(&q, b);
        for _ in 0..20 {
            q[0] += 5.0;
            let now = prices(&q, b);
            assert!(now[0] > last[0]);
            assert!(now[1] < last[1] && now[2] < last[2]);
            last = now;
        }
        // The cost of equal buys grows as the price does.
        assert!(cost_of_buy(&q, b, 0, 5.0) > cost_of_buy(&[0.0, 0.0, 0.0], b, 0, 5.0));
    }

    #[test]
    fn cost_is_stable_for_large_quantities() {
        let c = cost(&[1e5, 0.0], 10.0);
        assert!(c.is_finite() && (c - 1e5).abs() < 1e-6);
    }
}
