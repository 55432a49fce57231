//! A session over Server-Sent Events: the same [`Session`] as a WebSocket's
//! (subscriptions, the replay-to-live hand-off, the bounded outbound queue
//! and its slow-consumer rule), with its rooms fixed by the URL and nothing
//! read back from the client. The response body ([`super::sse_writer`])
//! drains the queue instead of a socket writer.

use std::sync::Arc;
use std::time::Duration;

use hubcast_protocol::sse::RoomCursor;

use super::join_reports::JoinReports;
use super::sse_writer::SseWriter;
use super::{sleep_until, JoinResult, Session, Transport};
use crate::auth::Principal;
use crate::limits::ConnectionSlot;
use crate::metrics::note_refusal;
use crate::node::Node;
use crate::protocol::codes::{close, ErrorCode};
use crate::protocol::{ProtocolError, ServerMessage, SubscribeRequest};

/// An admitted SSE stream: who, from where, and where each room starts.
pub struct SseStream {
    pub principal: Principal,
    pub ip: std::net::IpAddr,
    pub slot: ConnectionSlot,
    /// One per room, in URL order.
    pub requests: Vec<SubscribeRequest>,
    /// Each room's position as the client gave it (for the stream's ids).
    pub cursors: Vec<RoomCursor>,
}

/// Opens the session and returns the response body that streams it. The
/// session runs on its own task (tracked, so shutdown waits for it) until
/// the client goes away, the node stops or the session is closed.
pub fn open_sse(node: Arc<Node>, stream: SseStream) -> axum::body::Body {
    let SseStream {
        principal,
        ip,
        slot,
        requests,
        cursors,
    } = stream;
    let (id, name) = node.next_session_id();
    let span = tracing::info_span!("session", session = %name, client = %ip, transport = "sse");
    let parts = span.in_scope(|| {
        tracing::debug!("sse session opened");
        Session::with_queue(
            node.clone(),
            id,
            name,
            principal,
            ip,
            None,
            Transport::Sse,
            false,
            None,
        )
    });
    let rooms = requests.iter().map(|r| r.room.clone()).collect();
    let writer = SseWriter::new(
        parts.frames.expect("an SSE session has a queue"),
        parts.session.control.clone(),
        node.shutdown.clone(),
        &node.config.sse,
        rooms,
        cursors,
    );
    let task = serve(parts.session, parts.joined, requests, slot);
    tokio::spawn(
        node.sessions
            .track_future(tracing::Instrument::instrument(task, span)),
    );
    writer.into_body()
}

/// The session's life: subscribe to every room, take the join reports, end
/// the stream when the token runs out (it cannot be refreshed over SSE).
async fn serve(
    mut session: Session,
    joined: Arc<JoinReports<JoinResult>>,
    requests: Vec<SubscribeRequest>,
    slot: ConnectionSlot,
) {
    let opened_at = std::time::Instant::now();
    let welcome = ServerMessage::Welcome {
        session: &session.name,
        heartbeat_ms: session.node.config.sse.heartbeat_ms,
    };
    session.reply(welcome.encode().into()).await;
    for request in requests {
        if session.control.token.is_cancelled() {
            break;
        }
        Box::pin(session.subscribe(request)).await;
    }
    loop {
        tokio::select! {
            _ = session.control.token.cancelled() => break,
            (room, id, result) = joined.recv() => {
                Box::pin(session.on_joined(room, id, result)).await;
            }
            _ = sleep_until(session.expiry.map(|(at, _)| at)) => {
                note_refusal("token_expired", session.ip, "sse stream's token expired");
                let err = ProtocolError::new(
                    ErrorCode::TokenExpired,
                    "token expired; reconnect with a fresh one",
                    None,
                );
                // Bounded: a client that does not read is cut as slow instead.
                let _ = tokio::time::timeout(Duration::from_secs(1), session.reply_error(&err, None)).await;
                session.control.close(close::UNAUTHENTICATED, "token expired");
                break;
            }
        }
    }
    if session.node.shutdown.is_cancelled() {
        session.control.close(close::RESTART, "server restarting");
    }
    drop(slot);
    Box::pin(session.leave_all()).await;
    session.node.roster.leave(session.out.session_id);
    session.control.token.cancel();
    session.count_closed(opened_at);
    session.count_gone();
}
