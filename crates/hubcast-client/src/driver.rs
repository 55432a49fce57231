//! The tokio driver: one task owns the [`Core`] and carries out what it asks
//! (sockets through the [`Connector`], history reads through the
//! [`HistoryFetcher`], tokens from the [`TokenProvider`]), feeding back what
//! comes in with the time. Application calls arrive as [`Command`]s; room
//! updates leave through each [`Subscription`]'s channel, the rest through the
//! client's events and state watch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubcast_protocol::codes::{close, ErrorCode};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::client::{ClientEvent, Command, Subscription};
use crate::core::{Core, HistoryResult, Output};
use crate::transport::{
    Connection, Connector, HistoryFetcher, SocketCommand, SocketEvent, TokenProvider,
};
use crate::types::{Ack, ClientError, ConnectionState, Cursor, PresenceMember, RoomUpdate};

/// Where a batch publish's answer goes: one ack per event.
type BatchReply = oneshot::Sender<Result<Vec<Ack>, ClientError>>;

enum Input {
    Opened {
        gen: u64,
        commands: mpsc::UnboundedSender<SocketCommand>,
    },
    Socket {
        gen: u64,
        event: SocketEvent,
    },
    History {
        req: u64,
        result: HistoryResult,
    },
    Token {
        req: u64,
        result: Result<Option<String>, String>,
    },
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

pub(crate) struct Driver {
    core: Core,
    connector: Arc<dyn Connector>,
    history: Arc<dyn HistoryFetcher>,
    token: Option<TokenProvider>,
    start: Instant,
    sockets: HashMap<u64, SocketSlot>,
    subs: HashMap<u64, SubSlot>,
    publishes: HashMap<u64, Vec<oneshot::Sender<Result<Ack, ClientError>>>>,
    batches: HashMap<u64, Vec<BatchReply>>,
    presence_requests: HashMap<u64, oneshot::Sender<Result<Vec<PresenceMember>, ClientError>>>,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ClientEvent>,
    close_waiters: Vec<oneshot::Sender<()>>,
}

impl Driver {
    pub(crate) fn new(
        core: Core,
        connector: Arc<dyn Connector>,
        history: Arc<dyn HistoryFetcher>,
        token: Option<TokenProvider>,
        state: watch::Sender<ConnectionState>,
        events: broadcast::Sender<ClientEvent>,
    ) -> Driver {
        Driver {
            core,
            connector,
            history,
            token,
            start: Instant::now(),
            sockets: HashMap::new(),
            subs: HashMap::new(),
            publishes: HashMap::new(),
            batches: HashMap::new(),
            presence_requests: HashMap::new(),
            state,
            events,
            close_waiters: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (inputs_tx, mut inputs) = mpsc::unbounded_channel::<Input>();
        let mut commands_open = true;
        loop {
            let deadline = self
                .core
                .next_deadline()
                .map(|at| self.start + Duration::from_millis(at));
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
            Command::Subscribe {
                room,
                options,
                reply,
                commands,
            } => {
                if self.core.subscription(&room).is_some() {
                    let _ = reply.send(Err(ClientError::new(
                        ErrorCode::AlreadySubscribed.as_str(),
                        format!("{room} is already subscribed"),
                    )
                    .with_room(&room)));
                    return;
                }
                match self.core.subscribe_with_presence(
                    &room,
                    options.cursor,
                    options.rewind,
                    options.presence,
                ) {
                    Ok(sub) => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        let cursor = Arc::new(Mutex::new(self.core.cursor(sub)));
                        let members = Arc::new(Mutex::new(Vec::new()));
                        self.subs.insert(
                            sub,
                            SubSlot {
                                updates: tx,
                                cursor: cursor.clone(),
                                members: members.clone(),
                            },
                        );
                        let subscription =
                            Subscription::new(room, sub, rx, cursor, members, commands);
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
            Command::Publish {
                room,
                data,
                options,
                reply,
            } => {
                let timeout = options.timeout.map(|t| t.as_millis() as u64);
                match self
                    .core
                    .publish(&room, &data, options.expected_seq, options.id, timeout)
                {
                    Ok(key) => self.publishes.entry(key).or_default().push(reply),
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::PublishBatch {
                events,
                options,
                reply,
            } => {
                let timeout = options.timeout.map(|t| t.as_millis() as u64);
                match self.core.publish_batch(&events, options.id, timeout) {
                    Ok(key) => self.batches.entry(key).or_default().push(reply),
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
                            let _ = inputs.send(Input::Socket {
                                gen,
                                event: SocketEvent::Closed {
                                    code: close::ABNORMAL,
                                    reason,
                                },
                            });
                        }
                        Ok(Connection {
                            commands,
                            mut events,
                        }) => {
                            let _ = inputs.send(Input::Opened { gen, commands });
                            let mut closed = false;
                            while let Some(event) = events.recv().await {
                                closed = matches!(event, SocketEvent::Closed { .. });
                                if inputs.send(Input::Socket { gen, event }).is_err() || closed {
                                    break;
                                }
                            }
                            if !closed {
                                let event = SocketEvent::Closed {
                                    code: close::ABNORMAL,
                                    reason: String::new(),
                                };
                                let _ = inputs.send(Input::Socket { gen, event });
                            }
                        }
                    }
                });
                self.sockets.insert(
                    gen,
                    SocketSlot {
                        commands: None,
                        task,
                    },
                );
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
            Output::HistoryGet {
                req,
                url,
                authorization,
                ..
            } => {
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
                        let _ = inputs.send(Input::Token {
                            req,
                            result: Ok(None),
                        });
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
            Output::BatchPublished { key, result } => {
                for reply in self.batches.remove(&key).unwrap_or_default() {
                    let _ = reply.send(result.clone());
                }
            }
            Output::State(change) => {
                self.state.send_replace(change.state);
                let _ = self.events.send(ClientEvent::State(change));
            }
            Output::Welcome {
                session,
                heartbeat_ms,
            } => {
                let _ = self.events.send(ClientEvent::Welcome {
                    session,
                    heartbeat_ms,
                });
            }
            Output::Authenticated { sub, exp } => {
                let _ = self.events.send(ClientEvent::Authenticated { sub, exp });
            }
        }
    }
}
