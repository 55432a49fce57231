//! The webhook counters: Prometheus series by endpoint and outcome, the
//! totals `/v1/stats` reads, and log lines limited to one a second. Here,
//! beside the definitions, because the writer counts a full backlog too.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram};

use super::Endpoint;
use crate::event::now_ms;

/// Lets a warning through at most once a second, so a dead endpoint cannot
/// flood the log.
pub struct LogGate(std::sync::atomic::AtomicI64);

impl LogGate {
    const fn new() -> LogGate {
        LogGate(std::sync::atomic::AtomicI64::new(0))
    }

    pub fn allow(&self) -> bool {
        let now = now_ms();
        let last = self.0.load(Ordering::Relaxed);
        now - last >= 1000
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

pub static BACKLOG_LOG: LogGate = LogGate::new();
pub static ROUND_LOG: LogGate = LogGate::new();
pub static FAILURE_LOG: LogGate = LogGate::new();

/// Totals for `/v1/stats`, beside the Prometheus series.
#[derive(Default)]
pub struct WebhookTotals {
    pub delivered: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub dead_lettered: std::sync::atomic::AtomicU64,
}

/// The node's webhook totals.
pub fn totals() -> &'static WebhookTotals {
    static TOTALS: OnceLock<WebhookTotals> = OnceLock::new();
    TOTALS.get_or_init(|| {
        describe_counter!(
            "hubcast_webhook_deliveries_total",
            "Webhook delivery attempts by endpoint and outcome (delivered, failed, dead_lettered, backlog_full)"
        );
        describe_counter!(
            "hubcast_webhook_responses_total",
            "Webhook delivery attempts by endpoint and answer (the HTTP status, timeout or error)"
        );
        describe_histogram!(
            "hubcast_webhook_delivery_seconds",
            metrics::Unit::Seconds,
            "Time from a delivery attempt's start to its answer, by endpoint"
        );
        describe_gauge!(
            "hubcast_webhook_backlog",
            "Undelivered webhook messages by endpoint"
        );
        WebhookTotals::default()
    })
}

pub fn count(endpoint: &Endpoint, outcome: &'static str, n: u64) {
    counter!("hubcast_webhook_deliveries_total", "endpoint" => endpoint.name.clone(), "outcome" => outcome)
        .increment(n);
}

/// A message an endpoint at its `max_backlog` did not take.
pub fn note_backlog_full(endpoint: &Endpoint) {
    count(endpoint, "backlog_full", 1);
    totals().dead_lettered.fetch_add(1, Ordering::Relaxed);
    if BACKLOG_LOG.allow() {
        tracing::warn!(endpoint = %endpoint.name, max_backlog = endpoint.max_backlog, "webhook backlog full; new messages are dead-lettered");
    }
}
