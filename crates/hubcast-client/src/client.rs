//! The tokio client an application holds: [`ClientBuilder`] for the settings
//! and transports, [`Client`] (cheap to clone) for subscribing, publishing and
//! asking for presence, and [`Subscription`], a `Stream` of one room's
//! updates. Each call is a [`Command`] to the driver task, which owns the
//! state machine (`crate::driver`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use hubcast_protocol::codes::sdk;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::core::{Backoff, Config, Core, Heartbeat};
use crate::driver::Driver;
use crate::transport::{Connector, HistoryFetcher, ReqwestHistory, TokenProvider, WsConnector};
use crate::types::{
    Ack, ClientError, ConnectionState, Cursor, PresenceMember, RoomUpdate, StateChange,
};

/// Builds a [`Client`]. Defaults follow docs/clients.md.
pub struct ClientBuilder {
    config: Config,
    connector: Arc<dyn Connector>,
    history: Arc<dyn HistoryFetcher>,
    token: Option<TokenProvider>,
    random: Box<dyn FnMut() -> f64 + Send>,
}

impl ClientBuilder {
    /// Reconnect backoff window (`min_delay`, `max_delay`); full jitter.
    pub fn reconnect(mut self, min_delay: Duration, max_delay: Duration) -> Self {
        let b = self.config.reconnect.unwrap_or_default();
        self.config.reconnect = Some(Backoff {
            min_delay_ms: min_delay.as_millis() as u64,
            max_delay_ms: max_delay.as_millis() as u64,
            ..b
        });
        self
    }

    /// The whole backoff policy (`None`: never reconnect).
    pub fn backoff(mut self, backoff: Option<Backoff>) -> Self {
        self.config.reconnect = backoff;
        self
    }

    /// Application heartbeat (`None`: off).
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.config.heartbeat = heartbeat;
        self
    }

    /// Abandon an attempt that has not opened within this (`None`: never).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.connect_timeout_ms = timeout.map_or(0, |t| t.as_millis() as u64);
        self
    }

    /// Reconciliation poll of the history route (`None`: off).
    pub fn reconcile(mut self, every: Option<Duration>) -> Self {
        self.config.reconcile_ms = every.map_or(0, |t| t.as_millis() as u64);
        self
    }

    pub fn history_page_size(mut self, size: u64) -> Self {
        self.config.history_page_size = size.max(1);
        self
    }

    /// Socket publishes per second (0: unpaced).
    pub fn max_publishes_per_second(mut self, rate: u32) -> Self {
        self.config.max_publishes_per_second = rate;
        self
    }

    pub fn publish_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.publish_timeout_ms = timeout.map_or(0, |t| t.as_millis() as u64);
        self
    }

    /// Connect on the first subscription or publish (default), or only on [`Client::connect`].
    pub fn auto_connect(mut self, auto: bool) -> Self {
        self.config.auto_connect = auto;
        self
    }

    /// A token provider: its token goes as `?token=` (or in an `auth` message,
    /// with `send_token_as_message`) and as `Authorization: Bearer` on history reads.
    pub fn token_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Option<String>, String>> + Send + 'static,
    {
        self.token = Some(Arc::new(move || Box::pin(provider())));
        self
    }

    pub fn send_token_as_message(mut self, yes: bool) -> Self {
        self.config.send_token_as_message = yes;
        self
    }

    /// The TLS config of `wss://` sockets and `https://` history reads
    /// (default: the system roots; [`crate::tls::client_config`] adds CA files).
    /// Replaces the connector and the history fetcher with the default ones on it.
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.history = Arc::new(ReqwestHistory::with_tls(&tls));
        self.connector = Arc::new(WsConnector::with_tls(tls));
        self
    }

    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    pub fn history(mut self, history: impl HistoryFetcher) -> Self {
        self.history = Arc::new(history);
        self
    }

    /// The jitter source (uniform in `[0, 1)`).
    pub fn random(mut self, random: impl FnMut() -> f64 + Send + 'static) -> Self {
        self.random = Box::new(random);
        self
    }

    /// The raw settings.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Starts the client's task (needs a tokio runtime).
    pub fn build(mut self) -> Result<Client, ClientError> {
        self.config.has_token_provider = self.token.is_some();
        let core = Core::new(self.config, self.random)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(ConnectionState::Idle);
        let (events_tx, _) = broadcast::channel(256);
        let driver = Driver::new(
            core,
            self.connector,
            self.history,
            self.token,
            state_tx,
            events_tx.clone(),
        );
        tokio::spawn(driver.run(cmd_rx));
        Ok(Client {
            commands: cmd_tx,
            state: state_rx,
            events: events_tx,
        })
    }
}

/// What the client reports besides room updates.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    State(StateChange),
    /// An error surfaced on the client (room errors included).
    Error(ClientError),
    Welcome {
        session: String,
        heartbeat_ms: u64,
    },
    Authenticated {
        sub: Option<String>,
        exp: Option<u64>,
    },
}

/// Where a subscription starts.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Resume after this cursor (the epoch may be unknown).
    pub cursor: Option<Cursor>,
    /// Else: the last N retained events, then live. Neither: live from the head.
    pub rewind: Option<u64>,
    /// Also enter the room's presence (needs the token's `presence` grant): the
    /// stream then yields [`RoomUpdate::Presence`] (the member list after
    /// every (re)subscribe, then each join and leave).
    pub presence: bool,
}

/// Options of one publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Append only if the room's head is this seq (else `conflict` with `head`).
    pub expected_seq: Option<u64>,
    /// The idempotency key (default: 128 random bits, hex).
    pub id: Option<String>,
    /// Fail with `timeout` if not acknowledged in time (it may still be appended).
    pub timeout: Option<Duration>,
}

/// What a [`Client`] or a [`Subscription`] asks of the driver.
pub(crate) enum Command {
    Subscribe {
        room: String,
        options: SubscribeOptions,
        reply: oneshot::Sender<Result<Subscription, ClientError>>,
        commands: mpsc::UnboundedSender<Command>,
    },
    Unsubscribe {
        sub: u64,
    },
    Publish {
        room: String,
        data: Value,
        options: PublishOptions,
        reply: oneshot::Sender<Result<Ack, ClientError>>,
    },
    PublishBatch {
        events: Vec<(String, Value, Option<u64>)>,
        options: PublishOptions,
        reply: oneshot::Sender<Result<Vec<Ack>, ClientError>>,
    },
    Presence {
        room: String,
        reply: oneshot::Sender<Result<Vec<PresenceMember>, ClientError>>,
    },
    Connect,
    RefreshToken,
    Close {
        done: oneshot::Sender<()>,
    },
}

/// A hubcast client: one WebSocket, any number of room subscriptions, and
/// acknowledged publishes. Cheap to clone. See docs/clients.md.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
    events: broadcast::Sender<ClientEvent>,
}

fn gone() -> ClientError {
    ClientError::new(sdk::CLOSED, "the client task is gone")
}

impl Client {
    /// A builder for the server at `url` (`http(s)://host:port` or `ws(s)://…`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            config: Config::new(url),
            connector: Arc::new(WsConnector::default()),
            history: Arc::new(ReqwestHistory::default()),
            token: None,
            random: Box::new(rand::random::<f64>),
        }
    }

    /// A client with the default settings.
    pub fn new(url: impl Into<String>) -> Result<Client, ClientError> {
        Client::builder(url).build()
    }

    /// Subscribes to `room`. The subscription is a `Stream` of [`RoomUpdate`]s:
    /// each event at most once and in seq order, resets in order with them.
    /// A room may have one subscription at a time (else `already_subscribed`).
    pub async fn subscribe(
        &self,
        room: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        let (reply, answer) = oneshot::channel();
        let commands = self.commands.clone();
        self.commands
            .send(Command::Subscribe {
                room: room.to_owned(),
                options,
                reply,
                commands,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Publishes `data` to `room` over the socket; resolves with the ack (the
    /// event is durable). Queued while offline and resent with the same id
    /// after every reconnect until it settles.
    pub async fn publish(
        &self,
        room: &str,
        data: Value,
        options: PublishOptions,
    ) -> Result<Ack, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                room: room.to_owned(),
                data,
                options,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Publishes several events, to one or more rooms, atomically: one
    /// `publish_batch` message, appended all in one transaction or not at
    /// all. Resolves with one ack per event, in order. Each event is
    /// `(room, data, expected_seq)`; `options.expected_seq` is not used.
    /// Queued and resent with the same id like [`publish`](Self::publish);
    /// a `conflict` names the room and its head.
    pub async fn publish_batch(
        &self,
        events: Vec<(String, Value, Option<u64>)>,
        options: PublishOptions,
    ) -> Result<Vec<Ack>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::PublishBatch {
                events,
                options,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The members of `room`'s presence (sorted by `id`). Needs the token's
    /// `presence` grant, no subscription. Queued while offline and asked again
    /// after a reconnect; fails with the server's error (`forbidden`) or `closed`.
    pub async fn presence(&self, room: &str) -> Result<Vec<PresenceMember>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Presence {
                room: room.to_owned(),
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Connects now (skipping a pending backoff); restarts a closed client.
    pub fn connect(&self) {
        let _ = self.commands.send(Command::Connect);
    }

    /// Gets a fresh token and sends it to the session in an `auth` message.
    pub fn refresh_token(&self) {
        let _ = self.commands.send(Command::RefreshToken);
    }

    /// Closes for good: pending publishes fail with `closed`, subscriptions end.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Close { done }).is_ok() {
            let _ = wait.await;
        }
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// Watches the connection state.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// State changes, errors, welcomes (a lagging receiver loses the oldest).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }
}

/// One room subscription: a `Stream` of [`RoomUpdate`]s. Dropping it unsubscribes.
pub struct Subscription {
    room: String,
    sub: u64,
    updates: mpsc::UnboundedReceiver<RoomUpdate>,
    cursor: Arc<Mutex<Option<Cursor>>>,
    members: Arc<Mutex<Vec<PresenceMember>>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    pub(crate) fn new(
        room: String,
        sub: u64,
        updates: mpsc::UnboundedReceiver<RoomUpdate>,
        cursor: Arc<Mutex<Option<Cursor>>>,
        members: Arc<Mutex<Vec<PresenceMember>>>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Subscription {
        Subscription {
            room,
            sub,
            updates,
            cursor,
            members,
            commands,
        }
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    /// The cursor of the last event delivered by the client to this stream
    /// (`None` until the start is known). Persist it to resume later; it may
    /// be ahead of what this stream's consumer has read.
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor.lock().map(|c| c.clone()).unwrap_or(None)
    }

    /// The member list of a presence subscription as the client last received
    /// it (sorted by `id`; empty before the first list and without `presence`).
    /// Like the cursor it may be ahead of what this stream's consumer has read.
    pub fn members(&self) -> Vec<PresenceMember> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Stops the subscription (also done on drop).
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe { sub: self.sub });
    }
}

impl Stream for Subscription {
    type Item = RoomUpdate;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoomUpdate>> {
        self.updates.poll_recv(cx)
    }
}
