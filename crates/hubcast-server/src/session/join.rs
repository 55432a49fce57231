//! The replay-to-live hand-off: where a subscription starts (cursor, epoch,
//! rewind), the store replay, and the hub taking the session over from
//! exactly where the replay ended.

use std::sync::Arc;

use crate::event::RoomState;
use crate::hub::{HubHandle, Hubs, Joined, PusherWire};
use crate::node::Node;
use crate::outbound::Outbound;
use crate::protocol::codes::{close, ErrorCode};
use crate::protocol::{
    encode_event, PresenceMember, ProtocolError, ServerMessage, SubscribeRequest,
};
use crate::room::RoomName;
use crate::store::reads::Reads;
use crate::store::StoreError;

/// Events read from the store per page during replay.
const REPLAY_PAGE: usize = 1000;

/// Replays `room` to `out` from `after` and hands it to the room's hub, which
/// continues live from exactly where the replay ended: the hub answers from its
/// tail when it reaches back far enough, otherwise the store is read page by
/// page (waiting for queue room, never cut as slow) and the hub is asked again.
/// Returns the hub now delivering to `out`, or `None` if the session closed.
/// (Sessions call [`join_as`]; this is the hand-off the property test drives.)
#[cfg(feature = "testing")]
pub async fn join(
    reads: &Reads,
    hubs: &Hubs,
    out: &Outbound,
    room: &RoomName,
    after: u64,
    hub_tail: usize,
) -> Result<Option<HubHandle>, ProtocolError> {
    join_as(reads, hubs, out, room, after, hub_tail, None).await
}

/// [`join`], entering the room's presence as `member` when given.
pub async fn join_as(
    reads: &Reads,
    hubs: &Hubs,
    out: &Outbound,
    room: &RoomName,
    after: u64,
    hub_tail: usize,
    member: Option<PresenceMember>,
) -> Result<Option<HubHandle>, ProtocolError> {
    let mut position = after;
    loop {
        if out.is_closed() {
            return Ok(None);
        }
        let hub = hubs.get_or_spawn(room);
        // The hub queues up to a tail's worth of frames without waiting; make
        // sure they fit so a resume is not cut as a slow consumer.
        out.wait_for_room(hub_tail + 2).await;
        match hub
            .subscribe_as(out.clone(), position, member.clone(), None)
            .await
        {
            Ok(Joined::Live) => return Ok(Some(hub)),
            Ok(Joined::Full) => return Err(full_room()),
            Ok(Joined::PresenceFull) => return Err(presence_full()),
            Ok(Joined::NeedStore { head }) => {
                crate::metrics::get().replays.increment(1);
                position = replay(reads, out, room, position, head).await?;
            }
            Err(_gone) => hubs.forget(room, hub.id),
        }
    }
}

/// Hands a Pusher connection to the room's hub, live from the hub's
/// position (Pusher has no resume). The hub registers it and queues its
/// `pusher_internal:subscription_succeeded` (with the member list on a
/// presence channel, and a cache channel's last event or
/// `pusher:cache_miss` after it) in one step, so everything the hub
/// delivers after the client hears it reaches the client: Pusher's
/// guarantee that what is triggered after `subscription_succeeded`
/// arrives.
pub async fn join_pusher(
    hubs: &Hubs,
    out: &Outbound,
    room: &RoomName,
    member: Option<PresenceMember>,
    wire: Arc<PusherWire>,
) -> Result<Option<HubHandle>, ProtocolError> {
    loop {
        if out.is_closed() {
            return Ok(None);
        }
        let hub = hubs.get_or_spawn(room);
        if hub.is_full() {
            return Err(full_room());
        }
        // Room for the greeting the hub queues without waiting.
        out.wait_for_room(4).await;
        match hub
            .subscribe_as(out.clone(), 0, member.clone(), Some(wire.clone()))
            .await
        {
            Ok(Joined::Live) => return Ok(Some(hub)),
            Ok(Joined::Full) => return Err(full_room()),
            Ok(Joined::PresenceFull) => return Err(presence_full()),
            Ok(Joined::NeedStore { .. }) => {
                // A hub never asks a Pusher subscriber to replay.
                return Err(ProtocolError::new(
                    ErrorCode::Internal,
                    "the room's hub asked a Pusher subscription to replay",
                    None,
                ));
            }
            Err(_gone) => hubs.forget(room, hub.id),
        }
    }
}

fn presence_full() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::OverCapacity,
        "room presence is at its member limit",
        None,
    )
}

fn full_room() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::OverCapacity,
        "room is at its subscriber limit on this node",
        None,
    )
}

/// Queues the room's events after `from` from the store, at least through
/// `upto` (or the end of the log), waiting for queue room as needed.
/// Returns the last seq queued.
async fn replay(
    reads: &Reads,
    out: &Outbound,
    room: &RoomName,
    from: u64,
    upto: u64,
) -> Result<u64, ProtocolError> {
    let mut position = from;
    loop {
        // Subscribers resuming the room from the same position share the read.
        let page = reads
            .page(room, position, REPLAY_PAGE)
            .await
            .map_err(store_refusal)?;
        let full_page = page.events.len() == REPLAY_PAGE;
        for event in &page.events {
            if event.seq != position + 1 {
                // Retention pruned what this replay still needed. Cut the
                // session: its client resumes and gets an explicit reset.
                out.close(close::SLOW_CONSUMER, "replay overtaken by retention");
                return Ok(position);
            }
            if !out.send_replayed(encode_event(event)).await {
                return Ok(position);
            }
            let metrics = crate::metrics::get();
            metrics.replayed_events.increment(1);
            metrics.deliveries.increment(1);
            metrics
                .totals
                .delivered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            position = event.seq;
        }
        if !full_page || position >= upto {
            return Ok(position);
        }
    }
}

/// Runs on its own task: resolves the start (cursor, epoch, rewind), sends
/// `subscribed` (and `reset` when the cursor cannot be served), then replays
/// and hands the session to the hub. With `zero_is_earliest` (SSE URLs), a
/// cursor of 0 without an epoch means "from the start of retention" rather
/// than a position that retention may have pruned.
pub(super) async fn start_subscription(
    node: &Node,
    out: &Outbound,
    request: &SubscribeRequest,
    member: Option<PresenceMember>,
    answered: &tokio::sync::watch::Sender<bool>,
    zero_is_earliest: bool,
) -> Result<Option<HubHandle>, ProtocolError> {
    let room = &request.room;
    let known = known_state(node, room).await?;
    let state = if needs_store(&known, request) {
        node.reads.state(room).await.map_err(store_refusal)?
    } else {
        known
    };
    let start = if zero_is_earliest && request.cursor == Some(0) && request.epoch.is_none() {
        let from_earliest = SubscribeRequest {
            cursor: Some(state.earliest.saturating_sub(1)),
            ..request.clone()
        };
        plan_start(&state, &from_earliest, node.config.limits.max_rewind)
    } else {
        plan_start(&state, request, node.config.limits.max_rewind)
    };
    let echo = node.namespaces.for_room(room).echo();
    let subscribed = ServerMessage::Subscribed {
        room,
        epoch: &state.epoch,
        head: state.head,
        echo: (!echo).then_some(false),
    };
    if !out.send(subscribed.encode().into()).await {
        return Ok(None);
    }
    answered.send_replace(true);
    if start.reset {
        let reset = ServerMessage::Reset {
            room,
            epoch: &state.epoch,
            earliest: state.earliest,
            head: None,
        };
        if !out.send(reset.encode().into()).await {
            return Ok(None);
        }
    }
    join_as(
        &node.reads,
        &node.hubs,
        out,
        room,
        start.after,
        node.config.hub.tail,
        member,
    )
    .await
}

/// The room's state as the node's hub knows it: no store read per
/// subscriber (the hub read it once when it started, shared by every
/// subscriber that came meanwhile, and follows it since). Refused when the
/// room is at its subscriber limit on this node.
pub(crate) async fn known_state(node: &Node, room: &RoomName) -> Result<RoomState, ProtocolError> {
    loop {
        let hub = node.hubs.get_or_spawn(room);
        if hub.is_full() {
            return Err(full_room());
        }
        match hub.state().await {
            Ok(state) => return Ok(state),
            Err(_gone) => node.hubs.forget(room, hub.id),
        }
    }
}

/// Whether the hub's view of the room cannot judge this subscription's
/// cursor, so the store must: a cursor past the hub's head (its client saw
/// events on another node that this one has not delivered yet), or an epoch
/// other than the hub's (the room was deleted, and this node may not have
/// heard). Everything else (no cursor, a cursor the hub has passed, a
/// rewind) is decided from the hub's view.
pub fn needs_store(known: &RoomState, request: &SubscribeRequest) -> bool {
    request.cursor.is_some_and(|cursor| {
        cursor > known.head || request.epoch.as_deref().is_some_and(|e| e != known.epoch)
    })
}

/// A store failure as a subscription's refusal: for now (`store_unavailable`,
/// with the `retry_after_ms` clients wait) or for good (`internal`).
fn store_refusal(err: StoreError) -> ProtocolError {
    let code = err.code();
    let refusal = ProtocolError::new(code, err.to_string(), None);
    match code.subscribe_retry_after_ms() {
        Some(ms) => refusal.retry_after(ms),
        None => refusal,
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Deliver events with seq greater than this.
    pub after: u64,
    /// The client's cursor cannot be served: it is told with `reset` and
    /// continues live from the head.
    pub reset: bool,
}

/// Decides where a subscription starts from the client's cursor, epoch or rewind.
pub fn plan_start(state: &RoomState, request: &SubscribeRequest, max_rewind: u64) -> Start {
    let live = Start {
        after: state.head,
        reset: false,
    };
    let reset = Start {
        after: state.head,
        reset: true,
    };
    if let Some(cursor) = request.cursor {
        let epoch_matches = request.epoch.as_deref().map_or(true, |e| e == state.epoch);
        return if epoch_matches && state.can_serve(cursor) {
            Start {
                after: cursor,
                reset: false,
            }
        } else {
            reset
        };
    }
    if let Some(rewind) = request.rewind {
        let back = rewind.min(max_rewind);
        let after = state
            .head
            .saturating_sub(back)
            .max(state.earliest.saturating_sub(1));
        return Start {
            after,
            reset: false,
        };
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        head: u64,
        earliest: u64,
        cursor: Option<u64>,
        epoch: Option<&str>,
        rewind: Option<u64>,
        expected: (u64, bool),
    ) {
        let state = RoomState {
            epoch: "E".into(),
            head,
            earliest,
        };
        let request = SubscribeRequest {
            room: RoomName::parse("r").unwrap(),
            cursor,
            epoch: epoch.map(str::to_owned),
            rewind,
            presence: false,
        };
        let start = plan_start(&state, &request, 100);
        assert_eq!(
            (start.after, start.reset),
            expected,
            "head {head} earliest {earliest} cursor {cursor:?} epoch {epoch:?} rewind {rewind:?}"
        );
    }

    #[test]
    fn subscription_start() {
        check(10, 1, None, None, None, (10, false));
        check(10, 1, Some(4), None, None, (4, false));
        check(10, 1, Some(4), Some("E"), None, (4, false));
        check(10, 1, Some(0), Some("E"), None, (0, false));
        check(10, 1, Some(10), Some("E"), None, (10, false));
        check(10, 1, Some(4), Some("other"), None, (10, true));
        check(10, 6, Some(4), Some("E"), None, (10, true));
        check(10, 6, Some(5), Some("E"), None, (5, false));
        check(10, 1, Some(11), None, None, (10, true));
        check(10, 1, None, None, Some(3), (7, false));
        check(10, 1, None, None, Some(50), (0, false));
        check(10, 6, None, None, Some(50), (5, false));
        check(500, 1, None, None, Some(1000), (400, false));
        check(10, 1, Some(2), None, Some(3), (2, false));
        check(0, 1, Some(0), None, None, (0, false));
    }
}
