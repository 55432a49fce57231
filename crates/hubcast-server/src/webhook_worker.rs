//! Webhook delivery: one worker task per endpoint per node, apart from the
//! write path and the hubs, so a slow or dead endpoint never slows publishing
//! or fan-out — its messages wait in the store's outbox instead.
//!
//! Each round reads what is due (`WebhookOutbox::due`: per room, oldest
//! first, rooms waiting for a retry left out), sends each room's messages
//! one after another (rooms in parallel, up to [`PARALLEL_ROOMS`]), stops a
//! room at its first failure, and writes the round's outcome in one
//! transaction: delivered messages are deleted, failed ones get their next
//! attempt time (exponential backoff with jitter, `Endpoint::backoff`),
//! failures older than the endpoint's `max_age` are dead-lettered. A message
//! keeps its `webhook-id` and body across attempts. Delivery is at least
//! once: a crash between a 2xx and the round's commit sends it again.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use metrics::{counter, gauge, histogram};
use tokio_util::sync::CancellationToken;

use crate::event::now_ms;
use crate::store::webhook_outbox::{DeliveryReport, PendingWebhook, WebhookOutbox};
use crate::webhook::tally::{count, totals, FAILURE_LOG, ROUND_LOG};
use crate::webhook::{Endpoint, Webhooks};

/// Rooms of one endpoint delivered to at the same time.
pub const PARALLEL_ROOMS: usize = 16;
/// Messages of one room read per round.
const PER_ROOM: usize = 128;
/// How long an idle worker sleeps before looking again (retries come due,
/// another node's records) when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Undelivered messages over every endpoint, as last counted.
pub fn backlog(webhooks: &Webhooks) -> u64 {
    webhooks
        .endpoints
        .iter()
        .map(|e| e.backlog.load(Ordering::Relaxed))
        .sum()
}

/// Starts a worker per endpoint, and the task that recounts backlogs.
pub fn start(webhooks: Arc<Webhooks>, outbox: Arc<dyn WebhookOutbox>, shutdown: CancellationToken) {
    totals();
    for endpoint in &webhooks.endpoints {
        let client = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hubcast-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        tokio::spawn(run(
            endpoint.clone(),
            webhooks.clone(),
            outbox.clone(),
            client,
            shutdown.clone(),
        ));
    }
    tokio::spawn(recount(webhooks, outbox, shutdown));
}

/// Re-reads every endpoint's backlog from the store every few seconds: the
/// writer's count drifts when a batch rolls back, and other nodes add to it.
async fn recount(
    webhooks: Arc<Webhooks>,
    outbox: Arc<dyn WebhookOutbox>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(counts) = outbox.backlog().await else {
            continue;
        };
        for endpoint in &webhooks.endpoints {
            let n = counts
                .iter()
                .find(|(name, _)| *name == endpoint.name)
                .map_or(0, |(_, n)| *n);
            endpoint.backlog.store(n, Ordering::Relaxed);
            gauge!("hubcast_webhook_backlog", "endpoint" => endpoint.name.clone()).set(n as f64);
        }
    }
}

async fn run(
    endpoint: Arc<Endpoint>,
    webhooks: Arc<Webhooks>,
    outbox: Arc<dyn WebhookOutbox>,
    client: reqwest::Client,
    shutdown: CancellationToken,
) {
    loop {
        // Register for the wake-up before reading, so a commit in between is not missed.
        let recorded = webhooks.recorded.notified();
        tokio::pin!(recorded);
        recorded.as_mut().enable();
        let progressed = match round(&endpoint, &*outbox, &client).await {
            Ok(progressed) => progressed,
            Err(err) => {
                if ROUND_LOG.allow() {
                    tracing::warn!(endpoint = %endpoint.name, error = %err, "webhook delivery round failed; retrying");
                }
                false
            }
        };
        if progressed {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = recorded => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// How long a round's rooms are claimed (PostgreSQL: other nodes leave them
/// alone meanwhile; a node that dies mid-round holds them this long).
fn lease(endpoint: &Endpoint) -> Duration {
    (endpoint.timeout * 4).max(Duration::from_secs(30))
}

/// One round; returns whether any message was delivered (so there may be more).
async fn round(
    endpoint: &Endpoint,
    outbox: &dyn WebhookOutbox,
    client: &reqwest::Client,
) -> Result<bool, crate::store::StoreError> {
    let lease = lease(endpoint);
    let started = Instant::now();
    let due = outbox
        .due(
            &endpoint.name,
            now_ms(),
            PARALLEL_ROOMS * 4,
            PER_ROOM,
            lease.as_millis() as i64,
        )
        .await?;
    // Stop starting attempts while one could still outlast the claim.
    let deadline = started + lease.saturating_sub(endpoint.timeout * 2);
    if due.is_empty() {
        return Ok(false);
    }
    let mut rooms: BTreeMap<String, Vec<PendingWebhook>> = BTreeMap::new();
    for message in due {
        rooms.entry(message.room.clone()).or_default().push(message);
    }
    let reports: Vec<DeliveryReport> = stream::iter(rooms.into_values())
        .map(|messages| deliver_room(endpoint, client, messages, deadline))
        .buffer_unordered(PARALLEL_ROOMS)
        .collect()
        .await;
    let mut report = DeliveryReport::default();
    for r in reports {
        report.delivered.extend(r.delivered);
        report.retry.extend(r.retry);
        report.dead.extend(r.dead);
    }
    let delivered = report.delivered.len() as u64;
    let dead = report.dead.len() as u64;
    let progressed = delivered > 0 || dead > 0;
    outbox.finish(report).await?;
    let _ = endpoint
        .backlog
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(delivered + dead))
        });
    Ok(progressed)
}

/// Sends one room's messages in order, stopping at the first failure.
async fn deliver_room(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    messages: Vec<PendingWebhook>,
    deadline: Instant,
) -> DeliveryReport {
    let mut report = DeliveryReport::default();
    for message in messages {
        if Instant::now() >= deadline {
            break; // the rest goes in a later round
        }
        match send(endpoint, client, &message).await {
            Ok(()) => {
                count(endpoint, "delivered", 1);
                totals().delivered.fetch_add(1, Ordering::Relaxed);
                report.delivered.push(message.id);
            }
            Err(error) => {
                let attempts = message.attempts + 1;
                let age = Duration::from_millis(
                    now_ms().saturating_sub(message.created_at).max(0) as u64
                );
                if age >= endpoint.max_age {
                    count(endpoint, "dead_lettered", 1);
                    totals().dead_lettered.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %endpoint.name, room = %message.room, msg_id = %message.msg_id, attempts, %error, "webhook dead-lettered after max_age");
                    report.dead.push((message.id, error));
                    // The next message of the room goes on in the next round.
                } else {
                    count(endpoint, "failed", 1);
                    totals().failed.fetch_add(1, Ordering::Relaxed);
                    if FAILURE_LOG.allow() {
                        tracing::warn!(endpoint = %endpoint.name, room = %message.room, attempts, %error, "webhook delivery failed; will retry");
                    }
                    let next = now_ms() + endpoint.backoff(attempts).as_millis() as i64;
                    report.retry.push((message.id, attempts, next, error));
                }
                break;
            }
        }
    }
    report
}

/// One attempt: POST the body with the Standard Webhooks headers; 2xx is success.
async fn send(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    message: &PendingWebhook,
) -> Result<(), String> {
    let timestamp = now_ms() / 1000;
    let mut request = client
        .post(endpoint.url.clone())
        .header("content-type", "application/json");
    request = match &endpoint.pusher {
        None => {
            let signature =
                crate::webhook::sign(&endpoint.key, &message.msg_id, timestamp, &message.body);
            request
                .header("webhook-id", &message.msg_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
        }
        Some(format) => {
            let [(key_name, key), (signature_name, signature)] =
                crate::webhook::pusher::headers(format, &message.body);
            request
                .header(key_name, key)
                .header(signature_name, signature)
        }
    };
    let started = Instant::now();
    let answer = request.body(message.body.clone()).send().await;
    histogram!("hubcast_webhook_delivery_seconds", "endpoint" => endpoint.name.clone())
        .record(started.elapsed());
    let status = match &answer {
        Ok(response) => response.status().as_str().to_owned(),
        Err(err) if err.is_timeout() => "timeout".to_owned(),
        Err(_) => "error".to_owned(),
    };
    counter!("hubcast_webhook_responses_total", "endpoint" => endpoint.name.clone(), "status" => status)
        .increment(1);
    match answer {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("answered {}", response.status())),
        Err(err) if err.is_timeout() => Err(format!("timed out after {:?}", endpoint.timeout)),
        Err(err) => Err(format!("request failed: {err}")),
    }
}
