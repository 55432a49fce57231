//! The session: one client WebSocket connection, subscribed to any number of
//! rooms.
//!
//! The session's own task reads client messages and answers them; a second
//! task ([`writer`]) drains the bounded outbound queue to the socket. Replay
//! runs here, on the session's task, reading the store page by page and
//! waiting for queue room as it goes, then hands the session to the room's hub
//! (see [`crate::hub`]) which continues from exactly where the replay ended.

mod join_reports;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::event::RoomState;
use crate::hub::{HubHandle, Hubs, Joined};
use crate::node::Node;
use crate::protocol::codes::{close, ErrorCode};
use crate::protocol::{
    encode_error, encode_event, parse_client_message, ClientMessage, PresenceMember, ProtocolError, PublishRequest,
    ServerMessage, SubscribeRequest,
};
use crate::room::RoomName;
use crate::store::{AppendOutcome, AppendRequest, Store};
use crate::auth::{Action, Principal};
use crate::limits::rate_key;
use crate::metrics::note_refusal;
use crate::limits::{ConnectionSlot, Refusal};
use crate::metrics::CloseReason;
use join_reports::JoinReports;
use crate::outbound::{Outbound, SessionControl};

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
    store: &Arc<dyn Store>,
    hubs: &Hubs,
    out: &Outbound,
    room: &RoomName,
    after: u64,
    hub_tail: usize,
) -> Result<Option<HubHandle>, ProtocolError> {
    join_as(store, hubs, out, room, after, hub_tail, None).await
}

/// [`join`], entering the room's presence as `member` when given.
pub async fn join_as(
    store: &Arc<dyn Store>,
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
        match hub.subscribe_as(out.clone(), position, member.clone()).await {
            Ok(Joined::Live) => return Ok(Some(hub)),
            Ok(Joined::Full) => {
                return Err(ProtocolError::new(ErrorCode::OverCapacity, "room is at its subscriber limit on this node", None))
            }
            Ok(Joined::PresenceFull) => {
                return Err(ProtocolError::new(ErrorCode::OverCapacity, "room presence is at its member limit", None))
            }
            Ok(Joined::NeedStore { head }) => {
                crate::metrics::get().replays.increment(1);
                position = replay(store, out, room, position, head).await?;
            }
            Err(_gone) => hubs.forget(room, hub.id),
        }
    }
}

/// Queues the room's events after `from` from the store, at least through
/// `upto` (or the end of the log), waiting for queue room as needed.
/// Returns the last seq queued.
async fn replay(store: &Arc<dyn Store>, out: &Outbound, room: &RoomName, from: u64, upto: u64) -> Result<u64, ProtocolError> {
    let mut position = from;
    loop {
        let page = store
            .read(room, position, REPLAY_PAGE)
            .await
            .map_err(|err| ProtocolError::new(ErrorCode::StoreUnavailable, err.to_string(), None))?;
        let full_page = page.events.len() == REPLAY_PAGE;
        for event in &page.events {
            if event.seq != position + 1 {
                // Retention pruned what this replay still needed. Cut the
                // session: its client resumes and gets an explicit reset.
                out.close(close::SLOW_CONSUMER, "replay overtaken by retention");
                return Ok(position);
            }
            if !out.send(encode_event(event)).await {
                return Ok(position);
            }
            let metrics = crate::metrics::get();
            metrics.replayed_events.increment(1);
            metrics.deliveries.increment(1);
            metrics.totals.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            position = event.seq;
        }
        if !full_page || position >= upto {
            return Ok(position);
        }
    }
}

/// What the upgrade decided about a session before it opened.
pub struct Admission {
    pub principal: Principal,
    pub ip: std::net::IpAddr,
    /// The connection slot, or why none was free (the session is then closed
    /// with 1013 at once: browsers cannot read the status of a refused upgrade).
    pub slot: Result<ConnectionSlot, Refusal>,
    /// Bad credentials: the session sends this `error` and closes with 4001.
    pub refusal: Option<ProtocolError>,
}

/// Runs one session to its end. `first` is the subscription implied by a
/// room-scoped URL (`/v1/rooms/{room}/ws`).
///
/// The returned future lives, in the session's task, as long as the
/// connection, and an `async fn` future keeps its arguments for its whole life
/// and is as large as its largest await point. So everything that needs no
/// waiting (splitting the socket, starting the writer, building the
/// [`Session`]) is done here, before the future exists, and the rare, deep
/// steps (answering a message, subscribing, leaving) are boxed where they are
/// awaited: an idle session's task holds only what waiting for input needs
/// (its future 3.4 KiB → 1.9 KiB, the task ~5 KiB → ~2 KiB; `bench idle`,
/// BENCHMARKS.md).
pub fn run(
    node: Arc<Node>,
    socket: WebSocket,
    first: Option<SubscribeRequest>,
    admission: Admission,
) -> impl std::future::Future<Output = ()> + Send {
    let (id, name) = node.next_session_id();
    let span = tracing::info_span!("session", session = %name, client = %admission.ip);
    let url_room = first.as_ref().map(|r| r.room.clone());
    let opened = span.in_scope(|| open(node, socket, admission, id, name, url_room));
    tracing::Instrument::instrument(serve(opened, first), span)
}

/// A session whose writer runs and whose client has not yet been answered.
struct Opened {
    session: Session,
    stream: futures_util::stream::SplitStream<WebSocket>,
    joined: Arc<JoinReports<JoinResult>>,
    writer: tokio::task::JoinHandle<()>,
    /// Taken (released) once the session stops reading.
    slot: Option<Result<ConnectionSlot, Refusal>>,
    refusal: Option<Box<ProtocolError>>,
    opened_at: std::time::Instant,
}

fn open(node: Arc<Node>, socket: WebSocket, admission: Admission, id: u64, name: String, url_room: Option<RoomName>) -> Opened {
    let control = Arc::new(SessionControl::child_of(&node.shutdown));
    let (frames_tx, frames_rx) = mpsc::channel(node.config.limits.outbound_queue);
    let out = Outbound::new(id, frames_tx, control.clone());
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(writer::run(
        sink,
        frames_rx,
        control.clone(),
        node.shutdown.clone(),
        Duration::from_millis(node.config.heartbeat.interval_ms),
    ));
    tracing::debug!("session opened");
    let metrics = crate::metrics::get();
    metrics.connections.increment(1.0);
    metrics.connections_opened.increment(1);
    metrics.totals.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    let joined = Arc::new(JoinReports::new());
    let stale = Duration::from_millis(node.config.heartbeat.stale_ms);
    let Admission { principal, ip, slot, refusal } = admission;
    let message_rate = node.limits.session_messages();
    let mut session = Session {
        node,
        name,
        presence_rooms: std::collections::HashSet::new(),
        out,
        control,
        subscriptions: HashMap::new(),
        joined: joined.clone(),
        next_join: 0,
        stale,
        principal,
        ip,
        url_room,
        expiry: None,
        message_rate,
    };
    session.expiry = session.token_deadline();
    Opened {
        session,
        stream,
        joined,
        writer,
        slot: Some(slot),
        refusal: refusal.map(Box::new),
        opened_at: std::time::Instant::now(),
    }
}

/// The session's life once open. It works on `opened` in place: moving its
/// parts out into locals would hold them twice (see [`run`]).
async fn serve(mut opened: Opened, first: Option<SubscribeRequest>) {
    let session = &mut opened.session;
    if let Some(refusal) = opened.refusal.take() {
        Box::pin(session.reply_error(&refusal, None)).await;
        session.control.close(close::UNAUTHENTICATED, "invalid credentials");
    } else if let Some(Err(refusal)) = &opened.slot {
        note_refusal("over_capacity", session.ip, &refusal.to_string());
        session.control.close(close::TRY_AGAIN_LATER, "over capacity");
    } else {
        let welcome = ServerMessage::Welcome { session: &session.name, heartbeat_ms: session.node.config.heartbeat.interval_ms };
        let welcome = welcome.encode().into();
        Box::pin(session.reply(welcome)).await;
        if let Some(request) = first {
            Box::pin(session.subscribe(request)).await;
        }
        session.read_loop(&mut opened.stream, &opened.joined).await;
        opened.slot = None;
    }
    Box::pin(session.leave_all()).await;
    session.control.token.cancel();
    let _ = (&mut opened.writer).await;
    let close = session.control.close_reason();
    let metrics = crate::metrics::get();
    // The close is counted before the gauge drops: once the gauge reads zero,
    // every close has been counted (a scrape may still read the two apart).
    metrics.closed(CloseReason::from_code(close.map(|(code, _)| code))).increment(1);
    metrics.connection_duration.record(opened.opened_at.elapsed());
    metrics.connections.decrement(1.0);
    metrics.totals.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(close = ?close, "session closed");
}

/// A room the session follows.
enum Subscription {
    /// Replaying on its own task; the session keeps reading meanwhile. The
    /// id tells this join's report from that of an earlier, abandoned one.
    Joining { id: u64, task: tokio::task::JoinHandle<()> },
    /// Handed to the hub: live.
    Live(HubHandle),
}

/// What a join task reports when it ends.
type JoinResult = (RoomName, u64, Result<Option<HubHandle>, ProtocolError>);

struct Session {
    node: Arc<Node>,
    /// The session id as clients see it (the presence member id of a session
    /// whose credentials name no subject).
    name: String,
    /// Rooms subscribed with `presence: true`.
    presence_rooms: std::collections::HashSet<RoomName>,
    out: Outbound,
    control: Arc<SessionControl>,
    subscriptions: HashMap<RoomName, Subscription>,
    /// Where this session's subscription tasks leave their results.
    joined: Arc<JoinReports<JoinResult>>,
    next_join: u64,
    /// Also bounds how long an answer may wait for queue room.
    stale: Duration,
    /// Who this session is; replaced by an `auth` message.
    principal: Principal,
    ip: std::net::IpAddr,
    /// The room of a room-scoped URL: refusing it closes the session.
    url_room: Option<RoomName>,
    /// When the token runs out, and whether the grace period has begun.
    expiry: Option<(tokio::time::Instant, bool)>,
    message_rate: Option<governor::DefaultDirectRateLimiter>,
}

impl Session {
    /// Reads client messages until the session ends. Replays run on their own
    /// tasks, so the session keeps reading (and the heartbeat keeps counting)
    /// while they wait for a slow client.
    async fn read_loop(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        joined: &JoinReports<JoinResult>,
    ) {
        let mut deadline = tokio::time::Instant::now() + self.stale;
        loop {
            let next = tokio::select! {
                _ = self.control.token.cancelled() => return,
                report = joined.recv() => {
                    let (room, id, result) = report;
                    Box::pin(self.on_joined(room, id, result)).await;
                    continue;
                }
                _ = sleep_until(self.expiry.map(|(at, _)| at)) => {
                    if !Box::pin(self.on_token_expiry()).await {
                        return;
                    }
                    continue;
                }
                next = tokio::time::timeout_at(deadline, stream.next()) => next,
            };
            let message = match next {
                Err(_elapsed) => {
                    self.control.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(err))) => {
                    if is_too_big(err) {
                        self.control.close(close::TOO_BIG, "frame too big");
                    } else {
                        self.control.token.cancel();
                    }
                    return;
                }
                Ok(Some(Ok(message))) => message,
            };
            deadline = tokio::time::Instant::now() + self.stale;
            if matches!(message, Message::Text(_) | Message::Binary(_))
                && self.message_rate.as_ref().is_some_and(|limiter| limiter.check().is_err())
            {
                note_refusal("message_rate", self.ip, "too many messages");
                self.control.close(close::RATE_LIMITED, "too many messages");
                return;
            }
            match message {
                Message::Text(text) => {
                    let metrics = crate::metrics::get();
                    metrics.messages_in.increment(1);
                    metrics.bytes_in.increment(text.len() as u64);
                    Box::pin(self.on_text(&text)).await
                }
                Message::Binary(_) => {
                    self.control.close(close::POLICY, "binary frames are not accepted; send JSON text");
                    return;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Close(_) => return,
            }
        }
    }

    async fn on_text(&mut self, text: &str) {
        match parse_client_message(text) {
            Err(err) => self.reply_error(&err, None).await,
            Ok(ClientMessage::Subscribe(request)) => self.subscribe(request).await,
            Ok(ClientMessage::Unsubscribe { room }) => self.unsubscribe(room).await,
            Ok(ClientMessage::Publish(request)) => self.publish(request).await,
            Ok(ClientMessage::Ping) => self.reply(ServerMessage::Pong.encode().into()).await,
            Ok(ClientMessage::Auth { token }) => self.authenticate(&token).await,
            Ok(ClientMessage::Presence { room, id }) => self.presence(room, id).await,
        }
    }

    /// When the session's token expires (with the configured leeway).
    fn token_deadline(&self) -> Option<(tokio::time::Instant, bool)> {
        let Principal::Token(claims) = &self.principal else { return None };
        let exp = claims.exp?;
        let now = (crate::event::now_ms() / 1000).max(0) as u64;
        // Unsigned and saturating: a signed token may carry any `exp` up to
        // u64::MAX, which must neither wrap into "expired" nor overflow. The
        // timer is capped at a century (an Instant cannot be arbitrarily far).
        const CENTURY_SECS: u64 = 100 * 365 * 24 * 3600;
        let left = exp.saturating_add(self.node.config.auth.leeway_secs).saturating_sub(now).min(CENTURY_SECS);
        Some((tokio::time::Instant::now() + Duration::from_secs(left), false))
    }

    /// The token ran out: tell the client and give it the grace period to send
    /// a fresh one; when the grace period is over too, close with 4001.
    /// Returns whether the session goes on.
    async fn on_token_expiry(&mut self) -> bool {
        match self.expiry {
            Some((_, false)) => {
                let grace = Duration::from_millis(self.node.auth.expiry_grace_ms);
                self.expiry = Some((tokio::time::Instant::now() + grace, true));
                let err = ProtocolError::new(ErrorCode::TokenExpired, "token expired; send a fresh one with an auth message", None);
                self.reply_error(&err, None).await;
                true
            }
            _ => {
                note_refusal("token_expired", self.ip, "no fresh token within the grace period");
                self.control.close(close::UNAUTHENTICATED, "token expired");
                false
            }
        }
    }

    /// Takes a token sent in an `auth` message (first credentials or a
    /// refresh). Subscriptions the new token does not allow are ended.
    async fn authenticate(&mut self, token: &str) {
        let claims = match self.node.auth.verify_token(token) {
            Ok(claims) => claims,
            Err(err) => {
                let code = err.code();
                note_refusal(code.as_str(), self.ip, &err.to_string());
                self.reply_error(&ProtocolError::new(code, err.to_string(), None), None).await;
                self.control.close(close::UNAUTHENTICATED, "invalid token");
                return;
            }
        };
        self.principal = Principal::Token(claims);
        self.expiry = self.token_deadline();
        let (sub, exp) = match &self.principal {
            Principal::Token(claims) => (claims.sub.clone(), claims.exp),
            _ => (None, None),
        };
        self.reply(ServerMessage::Authenticated { sub: sub.as_deref(), exp }.encode().into()).await;
        let rooms: Vec<RoomName> = self.subscriptions.keys().cloned().collect();
        for room in rooms {
            let mut allowed = self.node.auth.authorize(&self.principal, Action::Subscribe, &room);
            if allowed.is_ok() && self.presence_rooms.contains(&room) {
                allowed = self.node.auth.authorize(&self.principal, Action::Presence, &room);
            }
            if let Err(err) = allowed {
                if let Some(subscription) = self.subscriptions.remove(&room) {
                    self.leave(&room, subscription).await;
                }
                let err = ProtocolError::new(err.code(), err.to_string(), None);
                self.reply_error(&err, Some(&room)).await;
            }
        }
    }

    /// Refuses a message the principal may not send. On a room-scoped URL,
    /// refusing its room closes the session with 4001, 4003 or 1013.
    async fn refuse(&mut self, room: &RoomName, err: ProtocolError) {
        if self.url_room.as_ref() == Some(room) {
            let code = match err.code {
                ErrorCode::Unauthenticated | ErrorCode::TokenExpired => Some(close::UNAUTHENTICATED),
                ErrorCode::Forbidden => Some(close::FORBIDDEN),
                ErrorCode::OverCapacity => Some(close::TRY_AGAIN_LATER),
                _ => None,
            };
            if let Some(code) = code {
                self.reply_error(&err, Some(room)).await;
                self.control.close(code, "subscription refused");
                return;
            }
        }
        self.reply_error(&err, Some(room)).await;
    }

    /// Queues an answer to the client. A client that lets its queue stay full
    /// for a whole stale period while it keeps sending is cut as a slow consumer.
    async fn reply(&self, frame: axum::extract::ws::Utf8Bytes) {
        if tokio::time::timeout(self.stale, self.out.send(frame)).await.is_err() {
            self.out.close(close::SLOW_CONSUMER, "slow consumer");
        }
    }

    async fn reply_error(&self, err: &ProtocolError, room: Option<&RoomName>) {
        crate::metrics::get().client_errors.increment(1);
        self.reply(encode_error(err, room.map(|r| r.as_str()))).await;
    }

    async fn subscribe(&mut self, request: SubscribeRequest) {
        let room = request.room.clone();
        let mut allowed = self.node.auth.authorize(&self.principal, Action::Subscribe, &room);
        if allowed.is_ok() && request.presence {
            allowed = self.node.auth.authorize(&self.principal, Action::Presence, &room);
        }
        if let Err(err) = allowed {
            let code = err.code();
            note_refusal(code.as_str(), self.ip, &err.to_string());
            return self.refuse(&room, ProtocolError::new(code, err.to_string(), None)).await;
        }
        if self.subscriptions.contains_key(&room) {
            let err = ProtocolError::new(ErrorCode::AlreadySubscribed, "already subscribed to this room", None);
            return self.reply_error(&err, Some(&room)).await;
        }
        if self.subscriptions.len() >= self.node.config.limits.max_subscriptions {
            let message = format!("at most {} subscriptions per session", self.node.config.limits.max_subscriptions);
            let err = ProtocolError::new(ErrorCode::TooManySubscriptions, message, None);
            return self.reply_error(&err, Some(&room)).await;
        }
        let (node, out, joined) = (self.node.clone(), self.out.clone(), self.joined.clone());
        let member = request.presence.then(|| self.member());
        if request.presence {
            self.presence_rooms.insert(room.clone());
        } else {
            self.presence_rooms.remove(&room);
        }
        self.next_join += 1;
        let id = self.next_join;
        let task = tokio::spawn(async move {
            let result = start_subscription(&node, &out, &request, member).await;
            joined.send((request.room, id, result));
        });
        self.subscriptions.insert(room, Subscription::Joining { id, task });
    }

    async fn on_joined(&mut self, room: RoomName, id: u64, result: Result<Option<HubHandle>, ProtocolError>) {
        // A report from a join that was abandoned (unsubscribed) is stale: its
        // hub registration was already undone by `leave`.
        let current = matches!(self.subscriptions.get(&room), Some(Subscription::Joining { id: current, .. }) if *current == id);
        if !current {
            return;
        }
        match result {
            Ok(Some(hub)) => {
                crate::metrics::get().subscriptions.increment(1.0);
                self.subscriptions.insert(room, Subscription::Live(hub));
            }
            Ok(None) => {} // The session is closing.
            Err(err) => {
                self.subscriptions.remove(&room);
                if err.code == ErrorCode::OverCapacity {
                    // The room's subscriber cap: a refusal like the others, counted and logged.
                    note_refusal(ErrorCode::OverCapacity.as_str(), self.ip, &err.message);
                }
                self.refuse(&room, err).await;
            }
        }
    }

    /// Who this session is in a room's presence: the token's `sub` with its
    /// `info` claim, or the session id.
    fn member(&self) -> PresenceMember {
        match &self.principal {
            Principal::Token(claims) => PresenceMember {
                id: claims.sub.clone().unwrap_or_else(|| self.name.clone()),
                info: claims.info.clone(),
            },
            _ => PresenceMember { id: self.name.clone(), info: None },
        }
    }

    /// Answers `presence {room, id?}` with the room's member list; `id` is
    /// echoed in the answer and in a refusal.
    async fn presence(&mut self, room: RoomName, id: Option<String>) {
        if let Err(err) = self.node.auth.authorize(&self.principal, Action::Presence, &room) {
            let code = err.code();
            note_refusal(code.as_str(), self.ip, &err.to_string());
            return self.reply_error(&ProtocolError::new(code, err.to_string(), id.as_deref()), Some(&room)).await;
        }
        loop {
            let hub = self.node.hubs.get_or_spawn(&room);
            match hub.presence().await {
                Ok(members) => {
                    let frame = ServerMessage::Presence { id: id.as_deref(), room: &room, members: &members };
                    return self.reply(frame.encode().into()).await;
                }
                Err(_gone) => self.node.hubs.forget(&room, hub.id),
            }
        }
    }

    async fn unsubscribe(&mut self, room: RoomName) {
        match self.subscriptions.remove(&room) {
            Some(subscription) => {
                self.leave(&room, subscription).await;
                self.reply(ServerMessage::Unsubscribed { room: &room }.encode().into()).await;
            }
            None => {
                let err = ProtocolError::new(ErrorCode::NotSubscribed, "not subscribed to this room", None);
                self.reply_error(&err, Some(&room)).await;
            }
        }
    }

    /// Takes the session out of the room's hub. When this returns the hub will
    /// not queue another frame of this room for this session.
    async fn leave(&self, room: &RoomName, subscription: Subscription) {
        let hub = match subscription {
            Subscription::Live(hub) => {
                crate::metrics::get().subscriptions.decrement(1.0);
                Some(hub)
            }
            Subscription::Joining { task, .. } => {
                // Wait until the join has really stopped: only then can it no
                // longer hand the session to a hub behind our back.
                task.abort();
                let _ = task.await;
                self.node.hubs.get(room)
            }
        };
        if let Some(hub) = hub {
            hub.unsubscribe(self.out.session_id).await;
        }
    }

    async fn leave_all(&mut self) {
        for (room, subscription) in std::mem::take(&mut self.subscriptions) {
            self.leave(&room, subscription).await;
        }
    }

    /// A publish over the socket takes the same write path as HTTP: the store
    /// first, then the bus; the hub never applies it. `id` is the idempotency
    /// key, so a retry after a reconnect is not appended twice.
    async fn publish(&mut self, request: PublishRequest) {
        let PublishRequest { id, room, data, expected_seq } = request;
        if let Err(err) = self.node.auth.authorize(&self.principal, Action::Publish, &room) {
            let code = err.code();
            note_refusal(code.as_str(), self.ip, &err.to_string());
            return self.reply_error(&ProtocolError::new(code, err.to_string(), Some(&id)), Some(&room)).await;
        }
        // The same per-credential quota as HTTP publishes: a second path must
        // not be a way around it.
        if let Err(refusal) = self.node.limits.check_publish(|| rate_key(&self.principal, self.ip)) {
            note_refusal(ErrorCode::RateLimited.as_str(), self.ip, &refusal.to_string());
            let err = ProtocolError::new(ErrorCode::RateLimited, refusal.to_string(), Some(&id));
            return self.reply_error(&err, Some(&room)).await;
        }
        let max = self.node.max_event_bytes(&room);
        if data.get().len() > max {
            let err = ProtocolError::new(ErrorCode::TooLarge, format!("event data is larger than {max} bytes"), Some(&id));
            return self.reply_error(&err, Some(&room)).await;
        }
        let request = AppendRequest {
            room: room.clone(),
            data,
            idem_key: Some(id.clone()),
            expected_seq,
            origin: Some(self.out.session_id),
        };
        let frame = match self.node.store.append(request).await {
            Ok(AppendOutcome::Appended(receipt) | AppendOutcome::Duplicate(receipt)) => {
                ServerMessage::Ack { id: &id, room: &room, seq: receipt.seq }.encode().into()
            }
            Ok(AppendOutcome::Conflict { head, .. }) => {
                crate::metrics::get().publish_conflicts.increment(1);
                let message = format!("expected_seq {} but the head is {head}", expected_seq.unwrap_or(0));
                ServerMessage::Error {
                    code: ErrorCode::Conflict.as_str(),
                    message: &message,
                    id: Some(&id),
                    room: Some(&room),
                    head: Some(head),
                }
                .encode().into()
            }
            Err(err) => {
                let err = ProtocolError::new(ErrorCode::StoreUnavailable, err.to_string(), Some(&id));
                encode_error(&err, Some(&room))
            }
        };
        self.reply(frame).await;
    }
}

/// Runs on its own task: resolves the start (cursor, epoch, rewind), sends
/// `subscribed` (and `reset` when the cursor cannot be served), then replays
/// and hands the session to the hub.
async fn start_subscription(
    node: &Node,
    out: &Outbound,
    request: &SubscribeRequest,
    member: Option<PresenceMember>,
) -> Result<Option<HubHandle>, ProtocolError> {
    let room = &request.room;
    let state = node
        .store
        .ensure_room(room)
        .await
        .map_err(|err| ProtocolError::new(ErrorCode::StoreUnavailable, err.to_string(), None))?;
    let start = plan_start(&state, request, node.config.limits.max_rewind);
    let echo = node.namespaces.for_room(room).echo();
    let subscribed = ServerMessage::Subscribed { room, epoch: &state.epoch, head: state.head, echo: (!echo).then_some(false) };
    if !out.send(subscribed.encode().into()).await {
        return Ok(None);
    }
    if start.reset {
        let reset = ServerMessage::Reset { room, epoch: &state.epoch, earliest: state.earliest };
        if !out.send(reset.encode().into()).await {
            return Ok(None);
        }
    }
    join_as(&node.store, &node.hubs, out, room, start.after, node.config.hub.tail, member).await
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
    let live = Start { after: state.head, reset: false };
    let reset = Start { after: state.head, reset: true };
    if let Some(cursor) = request.cursor {
        let epoch_matches = request.epoch.as_deref().map_or(true, |e| e == state.epoch);
        return if epoch_matches && state.can_serve(cursor) { Start { after: cursor, reset: false } } else { reset };
    }
    if let Some(rewind) = request.rewind {
        let back = rewind.min(max_rewind);
        let after = state.head.saturating_sub(back).max(state.earliest.saturating_sub(1));
        return Start { after, reset: false };
    }
    live
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Whether a read error means the client sent a frame over the size limit.
fn is_too_big(err: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = err.into_inner();
    matches!(inner.downcast_ref::<WsError>(), Some(WsError::Capacity(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: u64, earliest: u64, cursor: Option<u64>, epoch: Option<&str>, rewind: Option<u64>, expected: (u64, bool)) {
        let state = RoomState { epoch: "E".into(), head, earliest };
        let request = SubscribeRequest {
            room: RoomName::parse("r").unwrap(),
            cursor,
            epoch: epoch.map(str::to_owned),
            rewind,
            presence: false,
        };
        let start = plan_start(&state, &request, 100);
        assert_eq!((start.after, start.reset), expected, "head {head} earliest {earliest} cursor {cursor:?} epoch {epoch:?} rewind {rewind:?}");
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
