//! One Pusher connection (`GET /app/{key}`, protocol 7): a hubcast session
//! that speaks Pusher.
//!
//! It reuses what a native session is made of: the bounded outbound queue
//! ([`Outbound`]) the hubs `offer` to, its writer task (with Pusher's close
//! codes), the hand-off to the room's hub (`session::join_pusher`, live
//! from the hub's position: Pusher has no resume), presence through the hub, the
//! roster (a signed-in user, for `terminate_connections`), the connection
//! slots and the per-session message rate. What is its own: the Pusher
//! messages, signature checks instead of grants, and the activity timeout.
//!
//! Subscribing runs on the connection's task and replays nothing: the hub
//! queues `subscription_succeeded` (and a cache channel's last event) as it
//! registers the socket, so it never waits long, and every answer is in
//! order with what follows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::channel::{Channel, ChannelKind};
use super::codes;
use super::frame::{self, ClientMessage, StoredEvent};
use super::App;
use crate::http::error::ApiError;
use crate::http::extract::Upgrade;
use crate::hub::{HubHandle, PusherWire};
use crate::limits::ConnectionSlot;
use crate::node::Node;
use crate::outbound::{Outbound, SessionControl};
use crate::protocol::codes::{close, ErrorCode};

/// How long a client has to answer the server's `pusher:ping` (Pusher's 30 s).
const PONG_WAIT: Duration = Duration::from_secs(30);

/// Room for Pusher's envelope around the largest event a client may send.
const FRAME_OVERHEAD: usize = 16 * 1024;

/// `GET /app/{key}?protocol=7&client=js&version=…`: admission that needs no
/// socket (the node is not stopping, the origin, the connect rate) is
/// answered in HTTP; an unknown app, a protocol version and the
/// connection quota are refused after the upgrade with `pusher:error` and
/// Pusher's close code, as pusher-js expects.
pub async fn upgrade(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    Upgrade(upgrade): Upgrade,
) -> Result<Response, ApiError> {
    if node.shutdown.is_cancelled() {
        crate::metrics::get().connections_refused.increment(1);
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "node is shutting down; connect to another",
        ));
    }
    let ip = crate::http::access::client_ip(&node, &headers, peer);
    let app = node.pusher.by_key(&key).cloned();
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let origin_ok = match &app {
        Some(app) => app.origin_allowed(|| node.auth.origin_allowed(origin), origin),
        None => node.auth.origin_allowed(origin),
    };
    if !origin_ok {
        crate::http::access::note_refusal("origin", ip, origin.unwrap_or(""));
        crate::metrics::get().connections_refused.increment(1);
        return Err(ApiError::new(ErrorCode::Forbidden, "origin not allowed"));
    }
    if let Err(refusal) = node.limits.check_connect(ip) {
        crate::metrics::get().connections_refused.increment(1);
        return Err(crate::http::access::limited(refusal, ip));
    }
    let refusal = match (&app, protocol_version(query.as_deref())) {
        (None, _) => Some((
            codes::APP_NOT_FOUND,
            format!("app key {key} not in this cluster"),
        )),
        (_, None) => Some((
            codes::NO_PROTOCOL,
            "no protocol version supplied".to_owned(),
        )),
        (_, Some(version)) if !(5..=7).contains(&version) => Some((
            codes::UNSUPPORTED_PROTOCOL,
            format!("unsupported protocol version {version}"),
        )),
        _ => None,
    };
    let slot = node.limits.open_connection(ip);
    let max_frame = node.config.limits.max_event_bytes + FRAME_OVERHEAD;
    Ok(upgrade
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| {
            let sessions = node.sessions.clone();
            sessions.track_future(async move {
                let opened = match (refusal, app, slot) {
                    (Some(refused), _, _) => Err(refused),
                    (None, _, Err(refusal)) => {
                        crate::metrics::note_refusal("over_capacity", ip, &refusal.to_string());
                        Err((codes::OVER_CAPACITY, "over capacity".to_owned()))
                    }
                    (None, Some(app), Ok(slot)) => open(&node, app, slot, ip),
                    (None, None, Ok(_)) => Err((codes::APP_NOT_FOUND, "no such app".to_owned())),
                };
                match opened {
                    Ok(session) => session.run(socket).await,
                    Err((code, message)) => refuse(socket, code, &message).await,
                }
            })
        }))
}

/// `protocol=N` of the query string.
fn protocol_version(query: Option<&str>) -> Option<u32> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("protocol="))
        .and_then(|v| v.parse().ok())
}

/// Whether a message is over `limiter`'s rate (never, without a limit).
fn over(limiter: &Option<governor::DefaultDirectRateLimiter>) -> bool {
    limiter
        .as_ref()
        .is_some_and(|limiter| limiter.check().is_err())
}

/// Tells the client why it cannot stay, in `pusher:error` and the close code.
async fn refuse(mut socket: WebSocket, code: u16, message: &str) {
    crate::metrics::get().connections_refused.increment(1);
    let _ = socket
        .send(Message::Text(frame::error(Some(code), message)))
        .await;
    let close = CloseFrame {
        code,
        reason: Utf8Bytes::from(message.to_owned()),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(close))),
    )
    .await;
}

/// A subscribed channel.
struct Subscribed {
    hub: HubHandle,
    channel: Channel,
    /// This connection's member id in a presence channel.
    member: Option<String>,
}

struct PusherSession {
    node: Arc<Node>,
    app: Arc<App>,
    id: u64,
    socket_id: String,
    out: Outbound,
    control: Arc<SessionControl>,
    frames: Option<mpsc::Receiver<Utf8Bytes>>,
    channels: HashMap<String, Subscribed>,
    /// The signed-in user (`pusher:signin`).
    user: Option<String>,
    ip: std::net::IpAddr,
    /// Every message but client events; over it the socket is closed.
    message_rate: Option<governor::DefaultDirectRateLimiter>,
    /// Client events, at the same rate in a bucket of their own: over it an
    /// event is dropped with error 4301 and the socket stays, as on Pusher.
    /// Apart so that a client flooding client events still gets its pongs
    /// and subscribes through instead of being closed for them.
    client_event_rate: Option<governor::DefaultDirectRateLimiter>,
    _slot: ConnectionSlot,
}

/// The session of an admitted connection, counted as open; refused when the
/// app is at its own connection quota.
fn open(
    node: &Arc<Node>,
    app: Arc<App>,
    slot: ConnectionSlot,
    ip: std::net::IpAddr,
) -> Result<PusherSession, (u16, String)> {
    let held = app.connections.fetch_add(1, Ordering::Relaxed);
    if app.max_connections > 0 && held >= app.max_connections {
        app.connections.fetch_sub(1, Ordering::Relaxed);
        return Err((
            codes::OVER_QUOTA,
            "over the app's connection quota".to_owned(),
        ));
    }
    let (id, _) = node.next_session_id();
    let control = Arc::new(SessionControl::child_of(&node.shutdown));
    let (frames_tx, frames) = mpsc::channel(node.config.limits.outbound_queue);
    let metrics = crate::metrics::get();
    metrics.connections.increment(1.0);
    metrics.pusher_connections.increment(1.0);
    metrics.connections_opened.increment(1);
    metrics.totals.connections.fetch_add(1, Ordering::Relaxed);
    Ok(PusherSession {
        node: node.clone(),
        socket_id: format!("{}.{id}", node.session_prefix()),
        out: Outbound::new(id, frames_tx, control.clone()),
        control,
        frames: Some(frames),
        channels: HashMap::new(),
        user: None,
        ip,
        message_rate: node.limits.session_messages(),
        client_event_rate: node.limits.session_messages(),
        app,
        id,
        _slot: slot,
    })
}

impl Drop for PusherSession {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::Relaxed);
        self.node.roster.leave(self.id);
        let metrics = crate::metrics::get();
        metrics.connections.decrement(1.0);
        metrics.pusher_connections.decrement(1.0);
        metrics.totals.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PusherSession {
    async fn run(mut self, socket: WebSocket) {
        let span = tracing::info_span!("pusher", app = %self.app.id, socket_id = %self.socket_id, client = %self.ip);
        let opened_at = std::time::Instant::now();
        let (sink, mut stream) = socket.split();
        let frames = self.frames.take().expect("frames are taken once");
        let writer = tokio::spawn(crate::session::writer::run(
            sink,
            frames,
            self.control.clone(),
            self.node.shutdown.clone(),
            Duration::from_millis(self.node.config.heartbeat.interval_ms),
            codes::close_code,
        ));
        let established =
            frame::connection_established(&self.socket_id, self.node.pusher.activity_timeout_secs);
        self.reply(established).await;
        tracing::Instrument::instrument(self.read_loop(&mut stream), span).await;
        for (_, subscribed) in std::mem::take(&mut self.channels) {
            subscribed.hub.unsubscribe(self.id).await;
            crate::metrics::get().subscriptions.decrement(1.0);
        }
        self.node.roster.leave(self.id);
        self.control.token.cancel();
        let _ = writer.await;
        let metrics = crate::metrics::get();
        let close = self.control.close_reason();
        metrics
            .closed(crate::metrics::CloseReason::from_code(
                close.as_ref().map(|(c, _)| *c),
            ))
            .increment(1);
        metrics.connection_duration.record(opened_at.elapsed());
        if close.is_some() {
            crate::session::linger(&mut stream).await;
        }
    }

    /// Reads client messages until the client leaves or the session is
    /// closed. Silence for the activity timeout gets a `pusher:ping`;
    /// silence for [`PONG_WAIT`] after it closes the connection (4201).
    async fn read_loop(&mut self, stream: &mut futures_util::stream::SplitStream<WebSocket>) {
        let activity = Duration::from_secs(self.node.pusher.activity_timeout_secs);
        let mut deadline = tokio::time::Instant::now() + activity;
        let mut pinged = false;
        loop {
            let message = tokio::select! {
                _ = self.control.token.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    if pinged {
                        self.control.close(close::HEARTBEAT_TIMEOUT, "pong reply not received");
                        return;
                    }
                    pinged = true;
                    deadline = tokio::time::Instant::now() + PONG_WAIT;
                    self.out.offer(frame::ping());
                    continue;
                }
                message = stream.next() => message,
            };
            pinged = false;
            deadline = tokio::time::Instant::now() + activity;
            match message {
                Some(Ok(Message::Text(text))) => Box::pin(self.on_text(&text)).await,
                Some(Ok(Message::Binary(_))) => {
                    self.control.close(
                        close::POLICY,
                        "binary frames are not part of the Pusher protocol",
                    );
                    return;
                }
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => {} // WebSocket pings and pongs: activity.
                Some(Err(err)) => {
                    if let Some((code, reason)) = crate::session::close_for_read_error(err) {
                        self.control.close(code, reason);
                    }
                    return;
                }
            }
            if self.control.token.is_cancelled() {
                return;
            }
        }
    }

    /// Queues an answer to this client, waiting for queue room (bounded by
    /// the session's close: a client that does not read is cut as slow).
    async fn reply(&self, frame: Utf8Bytes) {
        let _ = self.out.send(frame).await;
    }

    async fn on_text(&mut self, text: &str) {
        let message = ClientMessage::parse(text);
        // Client events have their own bucket (`client_event`); everything
        // else, malformed text included, counts here.
        if !matches!(message, Ok(ClientMessage::ClientEvent { .. })) && over(&self.message_rate) {
            crate::metrics::note_refusal(
                "rate_limited",
                self.ip,
                "pusher socket over its message rate",
            );
            self.control
                .close(close::RATE_LIMITED, "over the message rate");
            return;
        }
        let message = match message {
            Ok(message) => message,
            Err(err) => return self.reply(frame::error(None, &err.to_string())).await,
        };
        match message {
            ClientMessage::Ping => self.reply(frame::pong()).await,
            ClientMessage::Pong => {}
            ClientMessage::Subscribe {
                channel,
                auth,
                channel_data,
            } => self.subscribe(channel, auth, channel_data).await,
            ClientMessage::Unsubscribe { channel } => {
                if let Some(subscribed) = self.channels.remove(&channel) {
                    subscribed.hub.unsubscribe(self.id).await;
                    crate::metrics::get().subscriptions.decrement(1.0);
                }
            }
            ClientMessage::Signin { auth, user_data } => self.signin(&auth, &user_data).await,
            ClientMessage::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event(&event, &channel, &data).await,
        }
    }

    async fn subscribe(
        &mut self,
        name: String,
        auth: Option<String>,
        channel_data: Option<String>,
    ) {
        if self.channels.contains_key(&name) {
            return; // Already subscribed: Pusher ignores a repeat.
        }
        let channel = match Channel::parse(&name, &self.app.room_prefix) {
            Ok(channel) => channel,
            Err(err) => return self.refuse_subscription(&name, 400, &err.to_string()).await,
        };
        if channel.needs_auth() {
            let valid = auth.as_deref().is_some_and(|auth| {
                super::auth::channel_auth_valid(
                    &self.app.key,
                    &self.app.secret,
                    &self.socket_id,
                    &name,
                    channel_data
                        .as_deref()
                        .filter(|_| channel.kind == ChannelKind::Presence),
                    auth,
                )
            });
            if !valid {
                crate::metrics::note_refusal(
                    "forbidden",
                    self.ip,
                    "pusher channel authorization refused",
                );
                let message = format!(
                    "invalid signature: expected HMAC SHA256 hex digest of {}:{name}{}",
                    self.socket_id,
                    if channel.kind == ChannelKind::Presence {
                        ":<channel_data>"
                    } else {
                        ""
                    }
                );
                self.reply(frame::error(Some(codes::UNAUTHORIZED), &message))
                    .await;
                return self.refuse_subscription(&name, 401, &message).await;
            }
        }
        if let Some(user) = channel.user() {
            // A user's channel is its own: pusher-js subscribes to it after
            // `pusher:signin`, with no signature.
            if self.user.as_deref() != Some(user) {
                crate::metrics::note_refusal(
                    "forbidden",
                    self.ip,
                    "pusher server-to-user channel of another user",
                );
                let message =
                    "a server-to-user channel is only for a connection signed in as its user";
                return self.refuse_subscription(&name, 403, message).await;
            }
        }
        let member = if channel.kind == ChannelKind::Presence {
            match channel_data.as_deref().and_then(frame::presence_member) {
                Some(member) => Some(member),
                None => {
                    let message = "presence channel_data must be JSON with a user_id";
                    return self.refuse_subscription(&name, 400, message).await;
                }
            }
        } else {
            None
        };
        let max = self.node.config.limits.max_subscriptions;
        if self.channels.len() >= max {
            let message = format!("at most {max} subscriptions per connection");
            return self.refuse_subscription(&name, 400, &message).await;
        }
        let room = channel.room(&self.app.room_prefix);
        // The hub registers the socket and queues its subscription_succeeded
        // (or the member list) in one step: what is triggered after the
        // client hears it reaches the client (`session::join_pusher`).
        let wire = Arc::new(PusherWire {
            socket_id: self.socket_id.clone(),
            channel: name.clone(),
            cache: channel.cache,
            cache_missed: Default::default(),
        });
        let member_id = member.as_ref().map(|m| m.id.clone());
        let joined =
            crate::session::join_pusher(&self.node.hubs, &self.out, &room, member, wire.clone())
                .await;
        if wire.cache_missed.load(Ordering::Relaxed) {
            self.record_webhooks(|webhooks| webhooks.cache_miss(&room));
        }
        match joined {
            Ok(Some(hub)) => {
                crate::metrics::get().subscriptions.increment(1.0);
                self.channels.insert(
                    name,
                    Subscribed {
                        hub,
                        channel,
                        member: member_id,
                    },
                );
            }
            Ok(None) => {} // The session is closing.
            Err(err) => {
                if err.code == ErrorCode::OverCapacity {
                    crate::metrics::note_refusal(err.code.as_str(), self.ip, &err.message);
                }
                self.refuse_subscription(&name, 503, &err.message).await;
            }
        }
    }

    async fn refuse_subscription(&self, channel: &str, status: u16, message: &str) {
        self.reply(frame::subscription_error(channel, status, message))
            .await;
    }

    /// `pusher:signin`: a valid signature makes the connection this user's
    /// (listed in the roster, so `terminate_connections` finds it); an
    /// invalid one closes it, as Pusher does.
    async fn signin(&mut self, auth: &str, user_data: &str) {
        let valid = super::auth::user_auth_valid(
            &self.app.key,
            &self.app.secret,
            &self.socket_id,
            user_data,
            auth,
        );
        let Some(user) = frame::user_id(user_data).filter(|_| valid) else {
            crate::metrics::note_refusal("unauthenticated", self.ip, "pusher sign-in refused");
            self.reply(frame::error(
                Some(codes::UNAUTHORIZED),
                "invalid sign-in signature or user_data without an id",
            ))
            .await;
            self.control
                .close(close::UNAUTHENTICATED, "sign-in refused");
            return;
        };
        let claims = crate::auth::Claims {
            sub: Some(self.app.roster_user(&user)),
            ..crate::auth::Claims::default()
        };
        self.node
            .roster
            .enter(self.id, Arc::new(claims), self.control.clone());
        self.user = Some(user);
        self.reply(frame::signin_success(user_data)).await;
    }

    /// A `client-` event: relayed live (never stored, like Pusher's) to the
    /// channel's other subscribers on every node, when the app allows client
    /// events and the channel is a private or presence one this connection
    /// is subscribed to.
    async fn client_event(
        &mut self,
        event: &str,
        channel: &str,
        data: &serde_json::value::RawValue,
    ) {
        if over(&self.client_event_rate) {
            crate::metrics::note_refusal(
                "rate_limited",
                self.ip,
                "pusher client event over the message rate",
            );
            return self
                .reply(frame::error(
                    Some(codes::CLIENT_EVENT_RATE_LIMITED),
                    "client event rejected: over the rate limit",
                ))
                .await;
        }
        if !self.app.enable_client_messages {
            return self
                .reply(frame::error(
                    None,
                    "client events are not enabled for this app",
                ))
                .await;
        }
        let Some(subscribed) = self.channels.get(channel) else {
            return self
                .reply(frame::error(
                    None,
                    "client event rejected: not subscribed to the channel",
                ))
                .await;
        };
        if !subscribed.channel.takes_client_events() {
            return self
                .reply(frame::error(
                    None,
                    "client event rejected: only private and presence channels take client events",
                ))
                .await;
        }
        let room = subscribed.channel.room(&self.app.room_prefix);
        let max = self.node.max_event_bytes(&room);
        if data.get().len() > max {
            return self
                .reply(frame::error(
                    None,
                    &format!("client event rejected: data is larger than {max} bytes"),
                ))
                .await;
        }
        let stored = StoredEvent {
            event,
            data,
            socket_id: None,
            user_id: subscribed.member.as_deref(),
        }
        .to_raw();
        // Recorded beside the relay, not before it: a client event is
        // live-only, and its webhook must not hold it up.
        self.record_webhooks(|webhooks| {
            webhooks.client_event(&room, stored.get(), &self.socket_id)
        });
        self.node.publish_ephemeral(room, stored, Some(self.id));
    }

    /// Records the Pusher webhooks `messages` makes (none when no endpoint
    /// wants them) on a task of their own: the socket does not wait.
    fn record_webhooks(
        &self,
        messages: impl FnOnce(&crate::webhook::Webhooks) -> Vec<crate::webhook::NewWebhook>,
    ) {
        let Some(webhooks) = self.node.webhooks.as_ref() else {
            return;
        };
        let messages = messages(webhooks);
        if messages.is_empty() {
            return;
        }
        let outbox = self.node.backend.webhook_outbox();
        tokio::spawn(async move {
            if let Err(err) = outbox.record(messages).await {
                tracing::warn!(error = %err, "cannot record a Pusher webhook");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn protocol_versions() {
        assert_eq!(
            super::protocol_version(Some("protocol=7&client=js")),
            Some(7)
        );
        assert_eq!(
            super::protocol_version(Some("client=js&protocol=5")),
            Some(5)
        );
        assert_eq!(super::protocol_version(Some("client=js")), None);
        assert_eq!(super::protocol_version(None), None);
    }
}
