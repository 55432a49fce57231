//! The session: one client WebSocket connection, subscribed to any number of
//! rooms.
//!
//! The session's own task reads client messages and answers them. Frames
//! reach the socket through its [`DirectSocket`]: hubs write an idle socket
//! themselves, and a second task ([`socket_writer`]) writes what could not
//! go out at once, the pings and the close. Replay
//! runs here, on the session's task, reading the store page by page and
//! waiting for queue room as it goes, then hands the session to the room's hub
//! (see [`crate::hub`]) which continues from exactly where the replay ended.
//!
//! Files: this one, a session's life (admission, open, serve, close);
//! `join`, the replay-to-live hand-off; `messages`, reading and answering
//! client messages; `subscriptions`, subscribing and leaving;
//! `socket_writer`, the socket's writer task; `writer`, the queue-draining
//! writer of Pusher sessions; `join_reports`, the join tasks' mailbox.

mod join;
mod join_reports;
mod messages;
mod socket_writer;
mod sse;
mod sse_writer;
mod subscriptions;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::auth::Principal;
use crate::hub::HubHandle;
use crate::limits::{ConnectionSlot, Refusal};
use crate::metrics::note_refusal;
use crate::metrics::CloseReason;
use crate::node::Node;
use crate::outbound::{Outbound, SessionControl};
use crate::protocol::codes::close;
use crate::protocol::{ProtocolError, ServerMessage, SubscribeRequest};
use crate::room::RoomName;
use crate::socket::{ClientFrames, DirectSocket};
use join_reports::JoinReports;
pub use sse::{open_sse, SseStream};

#[cfg(feature = "testing")]
pub use join::join;
/// The replay-to-live hand-off, for the Pusher protocol's sessions.
pub(crate) use join::join_pusher;

/// What the upgrade decided about a session before it opened.
pub struct Admission {
    pub principal: Principal,
    pub ip: std::net::IpAddr,
    /// The connection slot, or why none was free (the session is then closed
    /// with 1013 at once: browsers cannot read the status of a refused upgrade).
    pub slot: Result<ConnectionSlot, Refusal>,
    /// Refused credentials: the session sends this `error` and closes with
    /// the code (4001, 4003, 4012 for a revoked token, or 4013 when the
    /// connect hook could not decide).
    pub refusal: Option<(ProtocolError, u16)>,
    /// The principal is the connect hook's answer: at its `expires_at` the
    /// session is closed with 1001 so the client reconnects and asks again.
    pub from_hook: bool,
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
    socket: (Arc<DirectSocket>, ClientFrames),
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
    stream: ClientFrames,
    joined: Arc<JoinReports<JoinResult>>,
    writer: tokio::task::JoinHandle<()>,
    /// Taken (released) once the session stops reading.
    slot: Option<Result<ConnectionSlot, Refusal>>,
    refusal: Option<Box<(ProtocolError, u16)>>,
    opened_at: std::time::Instant,
}

fn open(
    node: Arc<Node>,
    (socket, stream): (Arc<DirectSocket>, ClientFrames),
    admission: Admission,
    id: u64,
    name: String,
    url_room: Option<RoomName>,
) -> Opened {
    let Admission {
        principal,
        ip,
        slot,
        refusal,
        from_hook,
    } = admission;
    let parts = Session::with_queue(
        node,
        id,
        name,
        principal,
        ip,
        url_room,
        Transport::WebSocket,
        from_hook,
        Some(socket.clone()),
    );
    let writer = tokio::spawn(socket_writer::run(
        socket,
        parts.session.control.clone(),
        parts.session.node.shutdown.clone(),
        Duration::from_millis(parts.session.node.config.heartbeat.interval_ms),
    ));
    tracing::debug!("session opened");
    Opened {
        session: parts.session,
        stream,
        joined: parts.joined,
        writer,
        slot: Some(slot),
        refusal: refusal.map(Box::new),
        opened_at: std::time::Instant::now(),
    }
}

/// A new session and what its transport drains and watches.
struct SessionParts {
    session: Session,
    /// The outbound queue's receiving end, which the transport's writer
    /// drains (none for a session that writes its socket directly).
    frames: Option<mpsc::Receiver<axum::extract::ws::Utf8Bytes>>,
    joined: Arc<JoinReports<JoinResult>>,
}

impl Session {
    /// A session with its bounded outbound queue (or, given `socket`, its
    /// socket's backlog of the same limit), counted as open.
    #[allow(clippy::too_many_arguments)]
    fn with_queue(
        node: Arc<Node>,
        id: u64,
        name: String,
        principal: Principal,
        ip: std::net::IpAddr,
        url_room: Option<RoomName>,
        transport: Transport,
        from_hook: bool,
        socket: Option<Arc<DirectSocket>>,
    ) -> SessionParts {
        let control = Arc::new(SessionControl::child_of(&node.shutdown));
        let (out, frames) = match socket {
            Some(socket) => (Outbound::direct(id, socket, control.clone()), None),
            None => {
                let (frames_tx, frames) = mpsc::channel(node.config.limits.outbound_queue);
                (Outbound::new(id, frames_tx, control.clone()), Some(frames))
            }
        };
        let metrics = crate::metrics::get();
        metrics.connections.increment(1.0);
        metrics.connections_opened.increment(1);
        if transport == Transport::Sse {
            metrics.sse_connections.increment(1.0);
        }
        metrics
            .totals
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let joined = Arc::new(JoinReports::new());
        let stale = Duration::from_millis(node.config.heartbeat.stale_ms);
        let message_rate = match transport {
            Transport::WebSocket => node.limits.session_messages(),
            Transport::Sse => None,
        };
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
            transport,
            expiry: None,
            from_hook,
            message_rate,
        };
        session.expiry = session.token_deadline();
        session.enter_roster();
        SessionParts {
            session,
            frames,
            joined,
        }
    }

    /// Counts the session's close, by its close code, and its duration.
    /// Before [`Session::count_gone`]: once the gauge reads zero, every close
    /// has been counted (a scrape may still read the two apart).
    fn count_closed(&self, opened_at: std::time::Instant) {
        let close = self.control.close_reason();
        let metrics = crate::metrics::get();
        metrics
            .closed(CloseReason::from_code(
                close.as_ref().map(|(code, _)| *code),
            ))
            .increment(1);
        metrics.connection_duration.record(opened_at.elapsed());
        tracing::debug!(close = ?close, "session closed");
    }

    /// Counts the session as no longer open.
    fn count_gone(&self) {
        let metrics = crate::metrics::get();
        metrics.connections.decrement(1.0);
        if self.transport == Transport::Sse {
            metrics.sse_connections.decrement(1.0);
        }
        metrics
            .totals
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a session reaches its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket: the client subscribes, publishes and answers pings.
    WebSocket,
    /// A Server-Sent Event stream: rooms fixed by the URL, nothing read back.
    Sse,
}

/// The session's life once open. It works on `opened` in place: moving its
/// parts out into locals would hold them twice (see [`run`]).
async fn serve(mut opened: Opened, first: Option<SubscribeRequest>) {
    let session = &mut opened.session;
    if let Some(refusal) = opened.refusal.take() {
        let (error, code) = *refusal;
        Box::pin(session.reply_error(&error, None)).await;
        let reason = match code {
            close::AUTH_UNAVAILABLE => "auth hook unavailable",
            close::FORBIDDEN => "forbidden",
            close::TOKEN_REVOKED => "token revoked",
            _ => "invalid credentials",
        };
        session.control.close(code, reason);
    } else if let Some(Err(refusal)) = &opened.slot {
        note_refusal("over_capacity", session.ip, &refusal.to_string());
        session
            .control
            .close(close::TRY_AGAIN_LATER, "over capacity");
    } else {
        let welcome = ServerMessage::Welcome {
            session: &session.name,
            heartbeat_ms: session.node.config.heartbeat.interval_ms,
        };
        let welcome = welcome.encode().into();
        Box::pin(session.reply(welcome)).await;
        if let Some(request) = first {
            Box::pin(session.subscribe(request)).await;
        }
        session.read_loop(&mut opened.stream, &opened.joined).await;
        opened.slot = None;
    }
    Box::pin(session.leave_all()).await;
    session.node.roster.leave(session.out.session_id);
    session.control.token.cancel();
    let _ = (&mut opened.writer).await;
    session.count_closed(opened.opened_at);
    if session.control.close_reason().is_some() {
        Box::pin(linger(&mut opened.stream)).await;
    }
    session.count_gone();
}

/// A room the session follows.
enum Subscription {
    /// Replaying on its own task; the session keeps reading meanwhile. The
    /// id tells this join's report from that of an earlier, abandoned one.
    Joining {
        id: u64,
        task: tokio::task::JoinHandle<()>,
        answered: tokio::sync::watch::Receiver<bool>,
    },
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
    transport: Transport,
    /// When the token runs out, and whether the grace period has begun.
    expiry: Option<(tokio::time::Instant, bool)>,
    /// The principal came from the connect hook (until an `auth` message
    /// replaces it): its expiry closes the session with 1001, since a
    /// cookie session has no token to refresh; the reconnect asks the hook again.
    from_hook: bool,
    message_rate: Option<governor::DefaultDirectRateLimiter>,
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The close code and reason for credentials refused with `code`: a revoked
/// token gets its own (final) code, any other refusal 4001.
pub(crate) fn refusal_close(code: crate::protocol::codes::ErrorCode) -> (u16, &'static str) {
    match code {
        crate::protocol::codes::ErrorCode::TokenRevoked => (close::TOKEN_REVOKED, "token revoked"),
        _ => (close::UNAUTHENTICATED, "invalid credentials"),
    }
}

/// Whether a read error means the client sent a frame over the size limit.
/// The close code a read error ends the session with, or `None` when the
/// peer is simply gone (an I/O error: nothing can be sent).
pub(crate) fn close_for_read_error(err: axum::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match err.into_inner().downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => Some((close::TOO_BIG, "frame too big")),
        Some(WsError::Protocol(_)) => Some((close::PROTOCOL_ERROR, "websocket protocol violation")),
        Some(WsError::Utf8(_)) => Some((close::INVALID_DATA, "text frame is not valid utf-8")),
        _ => None,
    }
}

/// Most the lingering close reads after the server's close frame: in all,
/// and without hearing anything (a client that sends nothing more, or never
/// answers a close, is let go this soon).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_IDLE: Duration = Duration::from_millis(250);
const LINGER_BYTES: usize = 1024 * 1024;

/// After a close the server initiated, reads (and discards) what the client
/// still sends until its Close, EOF or a quiet [`LINGER_IDLE`], bounded in
/// time and bytes, as nginx's lingering close does. Dropping a socket with unread data makes the kernel
/// reset the connection, and a reset throws away the close frame the client
/// has not read yet: it would see 1006 instead of 4008, 1009 or 1012.
pub(crate) async fn linger<S>(stream: &mut S)
where
    S: Stream<Item = Result<axum::extract::ws::Message, axum::Error>> + Unpin,
{
    let drain = async {
        let mut read = 0usize;
        use axum::extract::ws::Message;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(LINGER_IDLE, stream.next()).await {
            read += match &message {
                Message::Text(text) => text.len(),
                Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
                Message::Close(_) => return,
            };
            if read > LINGER_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}
