//! The tokio driver: runs a [`Core`] in a task, with a replaceable socket
//! connector, history fetcher, token provider and random source.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::core::{Backoff, Config, Core, Heartbeat, HistoryResult, Output};
use crate::types::{Ack, ClientError, ConnectionState, Cursor, PresenceMember, RoomUpdate, StateChange};

// ------------------------------------------------------------- transports

/// What a socket reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketEvent {
    Text(String),
    Binary,
    /// The socket closed (1006: dropped without a close frame).
    Closed { code: u16, reason: String },
}

/// What the client asks of a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketCommand {
    Send(String),
    Close { code: u16, reason: String },
}

/// An open socket: commands in, events out. Dropping `commands` closes it.
pub struct Connection {
    pub commands: mpsc::UnboundedSender<SocketCommand>,
    pub events: mpsc::UnboundedReceiver<SocketEvent>,
}

/// Opens WebSockets. Replace it in tests (or to add TLS settings, proxies…).
pub trait Connector: Send + Sync + 'static {
    /// Opens a socket to `url`; an error is a connection that failed before opening.
    fn connect(&self, url: String) -> BoxFuture<'static, Result<Connection, String>>;
}

/// Reads the history route. Replace it in tests.
pub trait HistoryFetcher: Send + Sync + 'static {
    /// `GET url` with an optional `Authorization` header: the status and the JSON body
    /// (`Value::Null` if it is not JSON), or a network error.
    fn get(&self, url: String, authorization: Option<String>) -> BoxFuture<'static, Result<(u16, Value), String>>;
}

/// Returns the token to connect with (`None`: none). Called before every
/// connection attempt and on `token_expired`.
pub type TokenProvider = Arc<dyn Fn() -> BoxFuture<'static, Result<Option<String>, String>> + Send + Sync>;

/// The default connector: tokio-tungstenite.
pub struct WsConnector;

impl Connector for WsConnector {
    fn connect(&self, url: String) -> BoxFuture<'static, Result<Connection, String>> {
        Box::pin(async move {
            let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| e.to_string())?;
            let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
            let (ev_tx, ev_rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let (mut sink, mut stream) = ws.split();
                loop {
                    tokio::select! {
                        command = cmd_rx.recv() => match command {
                            Some(SocketCommand::Send(text)) => {
                                if sink.send(Message::Text(text.into())).await.is_err() {
                                    let _ = ev_tx.send(SocketEvent::Closed { code: 1006, reason: "write failed".into() });
                                    break;
                                }
                            }
                            Some(SocketCommand::Close { code, reason }) => {
                                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(Some(frame)))).await;
                                break;
                            }
                            None => {
                                let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                                break;
                            }
                        },
                        message = stream.next() => match message {
                            Some(Ok(Message::Text(text))) => { let _ = ev_tx.send(SocketEvent::Text(text.to_string())); }
                            Some(Ok(Message::Binary(_))) => { let _ = ev_tx.send(SocketEvent::Binary); }
                            Some(Ok(Message::Close(frame))) => {
                                let (code, reason) = frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                                let _ = ev_tx.send(SocketEvent::Closed { code, reason });
                                break;
                            }
                            Some(Ok(_)) => {} // pings are answered by tungstenite
                            Some(Err(err)) => {
                                let _ = ev_tx.send(SocketEvent::Closed { code: 1006, reason: err.to_string() });
                                break;
                            }
                            None => {
                                let _ = ev_tx.send(SocketEvent::Closed { code: 1006, reason: String::new() });
                                break;
                            }
                        },
                    }
                }
            });
            Ok(Connection { commands: cmd_tx, events: ev_rx })
        })
    }
}

/// The default history fetcher: reqwest, with a timeout.
pub struct ReqwestHistory {
    pub http: reqwest::Client,
    pub timeout: Duration,
}

impl Default for ReqwestHistory {
    fn default() -> ReqwestHistory {
        ReqwestHistory { http: reqwest::Client::new(), timeout: Duration::from_secs(10) }
    }
}

impl HistoryFetcher for ReqwestHistory {
    fn get(&self, url: String, authorization: Option<String>) -> BoxFuture<'static, Result<(u16, Value), String>> {
        let mut request = self.http.get(url).timeout(self.timeout);
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        Box::pin(async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            Ok((status, body))
        })
    }
}

// ----------------------------------------------------------------- builder

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
        self.config.reconnect = Some(Backoff { min_delay_ms: min_delay.as_millis() as u64, max_delay_ms: max_delay.as_millis() as u64, ..b });
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
        let driver = Driver {
            core,
            connector: self.connector,
            history: self.history,
            token: self.token,
            start: Instant::now(),
            sockets: HashMap::new(),
            subs: HashMap::new(),
            publishes: HashMap::new(),
            presence_requests: HashMap::new(),
            state: state_tx,
            events: events_tx.clone(),
            close_waiters: Vec::new(),
        };
        tokio::spawn(driver.run(cmd_rx));
        Ok(Client { commands: cmd_tx, state: state_rx, events: events_tx })
    }
}

// ------------------------------------------------------------------ client

/// What the client reports besides room updates.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    State(StateChange),
    /// An error surfaced on the client (room errors included).
    Error(ClientError),
    Welcome { session: String, heartbeat_ms: u64 },
    Authenticated { sub: Option<String>, exp: Option<u64> },
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

enum Command {
    Subscribe {
        room: String,
        options: SubscribeOptions,
        reply: oneshot::Sender<Result<Subscription, ClientError>>,
        commands: mpsc::UnboundedSender<Command>,
    },
    Unsubscribe { sub: u64 },
    Publish { room: String, data: Value, options: PublishOptions, reply: oneshot::Sender<Result<Ack, ClientError>> },
    Presence { room: String, reply: oneshot::Sender<Result<Vec<PresenceMember>, ClientError>> },
    Connect,
    RefreshToken,
    Close { done: oneshot::Sender<()> },
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
    ClientError::new("closed", "the client task is gone")
}

impl Client {
    /// A builder for the server at `url` (`http(s)://host:port` or `ws(s)://…`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            config: Config::new(url),
            connector: Arc::new(WsConnector),
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
    pub async fn subscribe(&self, room: &str, options: SubscribeOptions) -> Result<Subscription, ClientError> {
        let (reply, answer) = oneshot::channel();
        let commands = self.commands.clone();
        self.commands.send(Command::Subscribe { room: room.to_owned(), options, reply, commands }).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Publishes `data` to `room` over the socket; resolves with the ack (the
    /// event is durable). Queued while offline and resent with the same id
    /// after every reconnect until it settles.
    pub async fn publish(&self, room: &str, data: Value, options: PublishOptions) -> Result<Ack, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Publish { room: room.to_owned(), data, options, reply }).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The members of `room`'s presence (sorted by `id`). Needs the token's
    /// `presence` grant, no subscription. Queued while offline and asked again
    /// after a reconnect; fails with the server's error (`forbidden`) or `closed`.
    pub async fn presence(&self, room: &str) -> Result<Vec<PresenceMember>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Presence { room: room.to_owned(), reply }).map_err(|_| gone())?;
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

// ------------------------------------------------------------------ driver

enum Input {
    Opened { gen: u64, commands: mpsc::UnboundedSender<SocketCommand> },
    Socket { gen: u64, event: SocketEvent },
    History { req: u64, result: HistoryResult },
    Token { req: u64, result: Result<Option<String>, String> },
}

struct SocketSlot {
    commands: Option<mpsc::UnboundedSender<SocketCommand>>,
    task: tokio::task::JoinHandle<()>,
}

struct SubSlot {
    updates: mpsc::UnboundedSender<RoomUpdate>,
    cursor: Arc<Mutex<Option<Cursor>>>,
    members: Arc<Mutex<Vec<PresenceMember>>>,
}

struct Driver {
    core: Core,
    connector: Arc<dyn Connector>,
    history: Arc<dyn HistoryFetcher>,
    token: Option<TokenProvider>,
    start: Instant,
    sockets: HashMap<u64, SocketSlot>,
    subs: HashMap<u64, SubSlot>,
    publishes: HashMap<u64, Vec<oneshot::Sender<Result<Ack, ClientError>>>>,
    presence_requests: HashMap<u64, oneshot::Sender<Result<Vec<PresenceMember>, ClientError>>>,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ClientEvent>,
    close_waiters: Vec<oneshot::Sender<()>>,
}

impl Driver {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (inputs_tx, mut inputs) = mpsc::unbounded_channel::<Input>();
        let mut commands_open = true;
        loop {
            let deadline = self.core.next_deadline().map(|at| self.start + Duration::from_millis(at));
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(input) = inputs.recv() => {
                    self.core.advance_to(self.now());
                    self.input(input);
                }
                command = commands.recv(), if commands_open => {
                    self.core.advance_to(self.now());
                    match command {
                        Some(command) => self.command(command),
                        None => {
                            commands_open = false;
                            self.core.close();
                        }
                    }
                }
                _ = sleep => self.core.advance_to(self.now()),
            }
            self.outputs(&inputs_tx);
            if !commands_open {
                break;
            }
        }
        for (_, slot) in self.sockets.drain() {
            slot.task.abort();
        }
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Opened { gen, commands } => {
                if let Some(slot) = self.sockets.get_mut(&gen) {
                    slot.commands = Some(commands);
                    self.core.on_open(gen);
                }
            }
            Input::Socket { gen, event } => match event {
                SocketEvent::Text(text) => self.core.on_frame(gen, &text),
                SocketEvent::Binary => self.core.on_binary(gen),
                SocketEvent::Closed { code, reason } => {
                    self.sockets.remove(&gen);
                    self.core.on_close(gen, code, &reason);
                }
            },
            Input::History { req, result } => self.core.on_history(req, result),
            Input::Token { req, result } => self.core.on_token(req, result),
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe { room, options, reply, commands } => {
                if self.core.subscription(&room).is_some() {
                    let _ = reply.send(Err(ClientError::new("already_subscribed", format!("{room} is already subscribed")).with_room(&room)));
                    return;
                }
                match self.core.subscribe_with_presence(&room, options.cursor, options.rewind, options.presence) {
                    Ok(sub) => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        let cursor = Arc::new(Mutex::new(self.core.cursor(sub)));
                        let members = Arc::new(Mutex::new(Vec::new()));
                        self.subs.insert(sub, SubSlot { updates: tx, cursor: cursor.clone(), members: members.clone() });
                        let subscription = Subscription { room, sub, updates: rx, cursor, members, commands };
                        if reply.send(Ok(subscription)).is_err() {
                            // The caller is gone; the subscription's drop unsubscribed it.
                        }
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::Unsubscribe { sub } => {
                self.core.unsubscribe(sub);
                self.subs.remove(&sub);
            }
            Command::Publish { room, data, options, reply } => {
                let timeout = options.timeout.map(|t| t.as_millis() as u64);
                match self.core.publish(&room, &data, options.expected_seq, options.id, timeout) {
                    Ok(key) => self.publishes.entry(key).or_default().push(reply),
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::Presence { room, reply } => match self.core.request_presence(&room) {
                Ok(key) => {
                    self.presence_requests.insert(key, reply);
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            Command::Connect => self.core.connect(),
            Command::RefreshToken => self.core.refresh_token(),
            Command::Close { done } => {
                self.core.close();
                self.close_waiters.push(done);
            }
        }
    }

    /// Carries out what the core asked for, until it asks nothing more.
    fn outputs(&mut self, inputs: &mpsc::UnboundedSender<Input>) {
        loop {
            let outputs = self.core.take_outputs();
            if outputs.is_empty() {
                break;
            }
            // Cursors before outputs: a consumer that has read an event or an
            // ack must never find the cursor behind it (ahead is allowed).
            self.share_cursors();
            for output in outputs {
                self.output(output, inputs);
            }
        }
        self.share_cursors();
        for done in self.close_waiters.drain(..) {
            let _ = done.send(());
        }
    }

    /// Copies each subscription's cursor from the core to its handle.
    fn share_cursors(&self) {
        for (sub, slot) in &self.subs {
            if let Ok(mut cursor) = slot.cursor.lock() {
                *cursor = self.core.cursor(*sub);
            }
        }
    }

    fn output(&mut self, output: Output, inputs: &mpsc::UnboundedSender<Input>) {
        match output {
            Output::Connect { gen, url } => {
                let connect = self.connector.connect(url);
                let inputs = inputs.clone();
                let task = tokio::spawn(async move {
                    match connect.await {
                        Err(reason) => {
                            tracing::debug!(%reason, "connection attempt failed");
                            let _ = inputs.send(Input::Socket { gen, event: SocketEvent::Closed { code: 1006, reason } });
                        }
                        Ok(Connection { commands, mut events }) => {
                            let _ = inputs.send(Input::Opened { gen, commands });
                            let mut closed = false;
                            while let Some(event) = events.recv().await {
                                closed = matches!(event, SocketEvent::Closed { .. });
                                if inputs.send(Input::Socket { gen, event }).is_err() || closed {
                                    break;
                                }
                            }
                            if !closed {
                                let event = SocketEvent::Closed { code: 1006, reason: String::new() };
                                let _ = inputs.send(Input::Socket { gen, event });
                            }
                        }
                    }
                });
                self.sockets.insert(gen, SocketSlot { commands: None, task });
            }
            Output::Send { gen, text } => {
                if let Some(commands) = self.sockets.get(&gen).and_then(|s| s.commands.as_ref()) {
                    let _ = commands.send(SocketCommand::Send(text));
                }
            }
            Output::CloseSocket { gen, code, reason } => {
                if let Some(slot) = self.sockets.remove(&gen) {
                    match (slot.commands, code) {
                        (Some(commands), Some(code)) => {
                            let _ = commands.send(SocketCommand::Close { code, reason });
                        }
                        (Some(_), None) => {} // dropping the sender closes it
                        (None, _) => slot.task.abort(), // not open yet: abandon the attempt
                    }
                }
            }
            Output::HistoryGet { req, url, authorization, .. } => {
                let get = self.history.get(url, authorization);
                let inputs = inputs.clone();
                tokio::spawn(async move {
                    let result = match get.await {
                        Ok((status, body)) => HistoryResult::Response { status, body },
                        Err(err) => HistoryResult::NetworkError(err),
                    };
                    let _ = inputs.send(Input::History { req, result });
                });
            }
            Output::GetToken { req } => {
                let inputs = inputs.clone();
                match &self.token {
                    Some(provider) => {
                        let get = provider();
                        tokio::spawn(async move {
                            let result = get.await;
                            let _ = inputs.send(Input::Token { req, result });
                        });
                    }
                    None => {
                        let _ = inputs.send(Input::Token { req, result: Ok(None) });
                    }
                }
            }
            Output::Room { sub, update } => {
                if let Some(slot) = self.subs.get(&sub) {
                    let _ = slot.updates.send(update);
                }
            }
            Output::RoomEnd { sub, error } => {
                if let Some(slot) = self.subs.remove(&sub) {
                    if let Some(error) = error {
                        let _ = slot.updates.send(RoomUpdate::Error(error));
                    }
                    if let Ok(mut cursor) = slot.cursor.lock() {
                        *cursor = self.core.cursor(sub);
                    }
                }
            }
            Output::Presence { sub, update } => {
                if let Some(slot) = self.subs.get(&sub) {
                    if let Ok(mut members) = slot.members.lock() {
                        *members = self.core.members(sub).unwrap_or_default();
                    }
                    let _ = slot.updates.send(RoomUpdate::Presence(update));
                }
            }
            Output::PresenceResult { key, result } => {
                if let Some(reply) = self.presence_requests.remove(&key) {
                    let _ = reply.send(result);
                }
            }
            Output::Error(error) => {
                tracing::debug!(%error, "hubcast client error");
                let _ = self.events.send(ClientEvent::Error(error));
            }
            Output::Published { key, result } => {
                for reply in self.publishes.remove(&key).unwrap_or_default() {
                    let _ = reply.send(result.clone());
                }
            }
            Output::State(change) => {
                self.state.send_replace(change.state);
                let _ = self.events.send(ClientEvent::State(change));
            }
            Output::Welcome { session, heartbeat_ms } => {
                let _ = self.events.send(ClientEvent::Welcome { session, heartbeat_ms });
            }
            Output::Authenticated { sub, exp } => {
                let _ = self.events.send(ClientEvent::Authenticated { sub, exp });
            }
        }
    }
}
