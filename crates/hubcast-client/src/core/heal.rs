//! Gap healing from the history route (docs/clients.md, "Gap healing"). A
//! room that sees an event past `cursor + 1`, or a `caught_up` past its
//! cursor, reads `GET /v1/rooms/{room}/events?after=CURSOR` page by page and
//! offers each event to the cursor rules, until everything up to the kept
//! event is delivered. It gives up and restarts the subscription from the
//! cursor (the server then replays the range or answers with a reset) when
//! the log was recreated, the range was pruned, a page brings no progress,
//! or the request fails. The reconciliation poll is a heal without a target:
//! a probe through whatever head the history route reports.

use hubcast_protocol::codes::sdk;
use serde::Deserialize;
use serde_json::Value;

use super::delivery::{RoomEvent, Source};
use super::frames::safe_integer;
use super::io::{HistoryResult, Output};
use super::room::{Cx, Room, Wire};
use crate::types::ClientError;

/// A heal under way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heal {
    /// A reconciliation poll: heal through the head the first page reports.
    probe: bool,
    start_seq: Option<u64>,
    phase: HealPhase,
}

#[derive(Debug, Clone, Copy)]
enum HealPhase {
    Fetching {
        req: u64,
        retried: bool,
        after: u64,
        limit: u64,
    },
    /// The history route answered 401: a fresh token is on its way.
    AwaitingRefresh { after: u64, limit: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HealOutcome {
    Done,
    Resync,
}

/// What a room asks of the core after a history answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterHistory {
    Nothing,
    /// The credentials ran out: get a fresh token; the request is retried with it, once.
    RefreshToken,
}

/// A page of `GET /v1/rooms/{room}/events` (docs/protocol.md, "history").
#[derive(Deserialize)]
struct HistoryPage {
    #[serde(default)]
    epoch: Option<String>,
    head: u64,
    #[serde(default = "first_seq")]
    earliest: u64,
    events: Vec<HistoryEvent>,
}

#[derive(Deserialize)]
struct HistoryEvent {
    seq: u64,
    #[serde(default)]
    ts: i64,
    #[serde(default)]
    data: Value,
}

fn first_seq() -> u64 {
    1
}

/// The `{"error", "message"}` body of a refused request.
#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
}

impl HistoryPage {
    fn parse(body: Value) -> Option<HistoryPage> {
        let page: HistoryPage = serde_json::from_value(body).ok()?;
        let mut seqs = [page.head, page.earliest]
            .into_iter()
            .chain(page.events.iter().map(|e| e.seq));
        seqs.all(safe_integer).then_some(page)
    }
}

impl Room {
    /// Makes sure everything through `target` gets delivered (`None`: a probe
    /// through the head the history route reports).
    pub(super) fn request_heal(&mut self, target: Option<u64>, cx: &mut Cx) {
        if let Some(target) = target {
            self.heal_target = self.heal_target.max(target);
        }
        if self.heal.is_some()
            || matches!(
                self.wire,
                Wire::Subscribing | Wire::Resyncing | Wire::Waiting
            )
        {
            return;
        }
        self.heal = Some(Heal {
            probe: target.is_none(),
            start_seq: self.seq,
            phase: HealPhase::AwaitingRefresh { after: 0, limit: 0 }, // replaced by heal_step
        });
        self.heal_step(cx);
    }

    /// Stops a heal and forgets what was kept for it (a reset, a reconnect, a resync, an unsubscribe).
    pub(super) fn cancel_heal(&mut self) {
        self.heal_target = 0;
        self.buffer.clear();
        self.heal = None;
    }

    /// Whether history request `req` is this room's.
    pub(super) fn is_fetching(&self, req: u64) -> bool {
        matches!(self.heal, Some(Heal { phase: HealPhase::Fetching { req: r, .. }, .. }) if r == req)
    }

    /// A fresh token arrived: a request refused with 401 is retried with it.
    pub(super) fn token_refreshed(&mut self, cx: &mut Cx) {
        if let Some(Heal {
            phase: HealPhase::AwaitingRefresh { after, limit },
            ..
        }) = self.heal
        {
            self.fetch_history(after, limit, true, cx);
        }
    }

    /// The top of the heal loop: fetch the next page, or finish.
    fn heal_step(&mut self, cx: &mut Cx) {
        let Some(heal) = self.heal else { return };
        let Some(after) = self.seq else {
            return self.heal_finish(HealOutcome::Done, cx);
        };
        if !heal.probe && after >= self.heal_target {
            return self.heal_finish(HealOutcome::Done, cx);
        }
        let page = cx.cfg.history_page_size.max(1);
        let limit = if heal.probe {
            page
        } else {
            page.min(self.heal_target - after).max(1)
        };
        self.fetch_history(after, limit, false, cx);
    }

    fn fetch_history(&mut self, after: u64, limit: u64, retried: bool, cx: &mut Cx) {
        let req = cx.io.new_req();
        if let Some(heal) = self.heal.as_mut() {
            heal.phase = HealPhase::Fetching {
                req,
                retried,
                after,
                limit,
            };
        }
        cx.io.emit(Output::HistoryGet {
            req,
            url: cx.urls.history(&self.name, after, limit),
            room: self.name.clone(),
            after,
            limit,
            authorization: cx.token.map(|t| format!("Bearer {t}")),
        });
    }

    /// The answer to this room's history request.
    pub(super) fn on_history(&mut self, result: HistoryResult, cx: &mut Cx) -> AfterHistory {
        let Some(Heal {
            phase:
                HealPhase::Fetching {
                    retried,
                    after,
                    limit,
                    ..
                },
            ..
        }) = self.heal
        else {
            return AfterHistory::Nothing;
        };
        let name = self.name.clone();
        let url = cx.urls.history(&name, after, limit);
        let unavailable =
            |message: String| ClientError::new(sdk::HISTORY_UNAVAILABLE, message).with_room(&name);
        let page = match result {
            HistoryResult::NetworkError(err) => Err(unavailable(format!(
                "history of {name} could not be read: {err}"
            ))),
            HistoryResult::Response { status, body } if !(200..300).contains(&status) => {
                if status == 401 && !retried && cx.cfg.has_token_provider {
                    // Credentials that ran out: one more try with a fresh token.
                    if let Some(heal) = self.heal.as_mut() {
                        heal.phase = HealPhase::AwaitingRefresh { after, limit };
                    }
                    return AfterHistory::RefreshToken;
                }
                let body = ErrorBody::deserialize(&body).unwrap_or_default();
                let code = body.error.as_deref().unwrap_or(sdk::HISTORY_UNAVAILABLE);
                let mut message = format!("GET {url}: {status} {code}");
                if let Some(m) = body.message {
                    message.push_str(&format!(": {m}"));
                }
                let mut err = unavailable(message);
                err.status = Some(status);
                Err(err)
            }
            HistoryResult::Response { body, .. } => HistoryPage::parse(body)
                .ok_or_else(|| unavailable(format!("GET {url}: unexpected answer"))),
        };
        match page {
            Ok(page) => self.heal_page(page, cx),
            Err(err) => self.heal_failed(err, cx),
        }
        AfterHistory::Nothing
    }

    fn heal_page(&mut self, page: HistoryPage, cx: &mut Cx) {
        let Some(current) = self.seq else {
            return self.heal_finish(HealOutcome::Done, cx);
        };
        if self.epoch.is_none() && page.epoch.is_some() {
            self.epoch = page.epoch.clone(); // a cursor given without its epoch
        }
        if page.epoch != self.epoch && !(page.epoch.is_none() && current == 0) {
            return self.heal_finish(HealOutcome::Resync, cx); // another epoch: the server decides with a reset
        }
        if current + 1 < page.earliest {
            return self.heal_finish(HealOutcome::Resync, cx); // pruned: the resubscribe gets a reset
        }
        for HistoryEvent { seq, ts, data } in page.events {
            self.offer(RoomEvent { seq, ts, data }, Source::History, cx);
            if self.heal.is_none() {
                return;
            }
        }
        if let Some(heal) = self.heal.as_mut() {
            if heal.probe {
                heal.probe = false;
                self.heal_target = self.heal_target.max(page.head);
            }
        }
        let now = self.seq.unwrap_or(current);
        if now >= self.heal_target {
            return self.heal_finish(HealOutcome::Done, cx);
        }
        if now == current {
            // No progress (the store has nothing usable past the cursor): ask the server again.
            return self.heal_finish(HealOutcome::Resync, cx);
        }
        self.heal_step(cx);
    }

    fn heal_finish(&mut self, outcome: HealOutcome, cx: &mut Cx) {
        let heal = self.heal.take();
        if outcome == HealOutcome::Resync {
            return self.resync(cx);
        }
        if let Some(heal) = heal {
            if self.seq != heal.start_seq {
                tracing::debug!(room = %self.name, "gap healed from history");
            }
        }
        self.heal_failures = 0;
        self.heal_target = 0;
        self.drain(cx);
    }

    fn heal_failed(&mut self, error: ClientError, cx: &mut Cx) {
        self.heal = None;
        let needed = !self.buffer.is_empty() || self.seq.is_some_and(|s| self.heal_target > s);
        if !needed {
            // A reconciliation poll that failed: best effort, the next one tries again.
            self.heal_target = 0;
            return;
        }
        self.emit_error(error, cx.io);
        // Fall back to the socket: resubscribing from the cursor replays the
        // missing range, after a backoff that grows while heals keep failing.
        let backoff = cx.cfg.reconnect.unwrap_or_default();
        self.resync_delay = Some(backoff.delay(self.heal_failures, (cx.random)()));
        self.heal_failures = self.heal_failures.saturating_add(1);
        self.resync(cx);
    }
}
