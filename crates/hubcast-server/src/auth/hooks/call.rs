//! One hook call: POST JSON, classify the answer, measure it, and log
//! failures at a bounded rate.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};
use serde::de::DeserializeOwned;

use super::HookRefusal;
use crate::metrics::LogGate;

/// The largest answer read from a hook; a longer one is not an answer.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Which hook a call is for: the `hook` label of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Connect,
    Subscribe,
    Publish,
}

impl HookKind {
    const ALL: [HookKind; 3] = [HookKind::Connect, HookKind::Subscribe, HookKind::Publish];

    fn label(self) -> &'static str {
        match self {
            HookKind::Connect => "connect",
            HookKind::Subscribe => "subscribe",
            HookKind::Publish => "publish",
        }
    }
}

/// How a call ended: the `outcome` label of `hubcast_hook_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 200: allowed (the body says more).
    Allowed,
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden,
    Timeout,
    ConnectError,
    /// 5xx.
    ServerError,
    /// Any other status.
    BadStatus,
    /// 200 with a body that is not a valid answer.
    InvalidAnswer,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Allowed,
        Outcome::Unauthenticated,
        Outcome::Forbidden,
        Outcome::Timeout,
        Outcome::ConnectError,
        Outcome::ServerError,
        Outcome::BadStatus,
        Outcome::InvalidAnswer,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
            Outcome::ServerError => "server_error",
            Outcome::BadStatus => "bad_status",
            Outcome::InvalidAnswer => "invalid_answer",
        }
    }
}

/// A hook's metric handles, created once per hook kind.
struct HookMetrics {
    duration: Histogram,
    outcomes: [Counter; 8],
    cache_hits: Counter,
    failures: LogGate,
}

fn metrics_for(kind: HookKind) -> &'static HookMetrics {
    static ALL: OnceLock<[HookMetrics; 3]> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        HookKind::ALL.map(|kind| HookMetrics {
            duration: metrics::histogram!("hubcast_hook_duration_seconds", "hook" => kind.label()),
            outcomes: Outcome::ALL.map(|outcome| {
                metrics::counter!(
                    "hubcast_hook_calls_total",
                    "hook" => kind.label(),
                    "outcome" => outcome.label()
                )
            }),
            cache_hits: metrics::counter!("hubcast_hook_cache_hits_total", "hook" => kind.label()),
            failures: LogGate::default(),
        })
    });
    &all[kind as usize]
}

/// What the application decided.
pub enum Answer<T> {
    /// 200, with its body read as the hook's answer.
    Allowed(T),
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden,
}

/// Why a call got no decision.
enum Failure {
    Http(reqwest::Error),
    /// An answer longer than [`MAX_ANSWER_BYTES`].
    TooLong,
}

/// The HTTP client of one hook.
pub struct HookClient {
    kind: HookKind,
    url: reqwest::Url,
    http: reqwest::Client,
}

impl HookClient {
    pub fn new(kind: HookKind, url: &str, timeout_ms: u64) -> Result<HookClient, String> {
        let url = reqwest::Url::parse(url).map_err(|err| format!("{url}: {err}"))?;
        let http = reqwest::Client::builder()
            // The whole call: connect, request, and reading the answer.
            .timeout(Duration::from_millis(timeout_ms))
            // An answer is the endpoint's own; a redirect is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| format!("{} hook client: {err}", kind.label()))?;
        Ok(HookClient { kind, url, http })
    }

    /// POSTs `body` and classifies the answer: 200 (with a body `read`
    /// accepts), 401 and 403 decide; anything else is `Unavailable` (fail
    /// closed), counted by outcome and logged at a bounded rate.
    pub async fn call<T>(
        &self,
        body: &serde_json::Value,
        read: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Answer<T>, HookRefusal> {
        let started = Instant::now();
        let result = self.exchange(body).await;
        let metrics = metrics_for(self.kind);
        metrics.duration.record(started.elapsed());
        let (outcome, decided) = match result {
            Ok((200, body)) => match read(&body) {
                Ok(answer) => (Outcome::Allowed, Ok(Answer::Allowed(answer))),
                Err(detail) => (
                    Outcome::InvalidAnswer,
                    Err(format!("invalid answer: {detail}")),
                ),
            },
            Ok((401, _)) => (Outcome::Unauthenticated, Ok(Answer::Unauthenticated)),
            Ok((403, _)) => (Outcome::Forbidden, Ok(Answer::Forbidden)),
            Ok((status @ 500..=599, _)) => {
                (Outcome::ServerError, Err(format!("answered {status}")))
            }
            Ok((status, _)) => (Outcome::BadStatus, Err(format!("answered {status}"))),
            Err(Failure::TooLong) => (
                Outcome::InvalidAnswer,
                Err(format!("answer longer than {MAX_ANSWER_BYTES} bytes")),
            ),
            Err(Failure::Http(err)) if err.is_timeout() => (Outcome::Timeout, Err(chain(&err))),
            Err(Failure::Http(err)) => (Outcome::ConnectError, Err(chain(&err))),
        };
        metrics.outcomes[outcome as usize].increment(1);
        decided.map_err(|detail| self.failed(outcome, &detail))
    }

    pub fn note_cache_hit(&self) {
        metrics_for(self.kind).cache_hits.increment(1);
    }

    fn failed(&self, outcome: Outcome, detail: &str) -> HookRefusal {
        if let Some(suppressed) = metrics_for(self.kind).failures.admit() {
            tracing::warn!(
                hook = self.kind.label(),
                url = %self.url,
                outcome = outcome.label(),
                detail,
                suppressed,
                "hook failed; refused (fail closed)"
            );
        }
        HookRefusal::Unavailable(self.kind.label())
    }

    async fn exchange(&self, body: &serde_json::Value) -> Result<(u16, bytes::Bytes), Failure> {
        let mut response = self
            .http
            .post(self.url.clone())
            .json(body)
            .send()
            .await
            .map_err(Failure::Http)?;
        let status = response.status().as_u16();
        let mut answer = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(Failure::Http)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Failure::TooLong);
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((status, answer.freeze()))
    }
}

/// An error with its causes (reqwest's own message hides them: "error
/// sending request" says nothing of the refused connection behind it).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a 200 answer's body as JSON of type `T`.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| err.to_string())
}
