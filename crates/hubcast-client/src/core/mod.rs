//! The client's state machine, without I/O ("sans-IO").
//!
//! [`Core`] holds every rule of docs/clients.md: cursors, at-most-once in-order
//! delivery, gap healing, resets, the reconnect policy, heartbeat, publishes.
//! It never touches a socket, an HTTP client or a clock: the caller feeds it
//! inputs (application calls, socket frames, history answers, tokens) with the
//! current time in milliseconds, and takes its [`Output`]s (frames to send,
//! connections to open, history requests, deliveries). Its timers fire when
//! the caller moves the time ([`Core::advance_to`]).
//!
//! [`crate::Client`] drives it over tokio; the tests drive it with a fake
//! socket, a fake history route and a fake clock (the shared test vectors).
//!
//! # Layout
//! - `mod.rs` (here): the core's state, the application's calls, the timers firing.
//! - `connection`: the socket's life: connect, token, open, close, reconnect.
//! - `frames`: what each server frame does (decoded by the protocol crate's `ServerFrame`).
//! - `room`: one subscription on the socket: its frames, refusals, presence list.
//! - `delivery`: a room's cursor: dedup, order, gaps, our own seqs in no-echo rooms.
//! - `heal`: gaps filled from the history route, and the reconciliation poll.
//! - `publish`: publishes waiting for their ack: pacing, resends, timeouts.
//! - `presence`: presence requests, settled by their id.
//! - `reconnect`, `heartbeat`: the backoff and the liveness check.
//! - `io`, `timers`, `config`: the outbox, the clock, the settings.

mod config;
mod connection;
mod delivery;
mod frames;
mod heal;
mod heartbeat;
mod io;
mod presence;
mod publish;
mod reconnect;
mod room;
mod timers;

use std::collections::{HashMap, HashSet};

use hubcast_protocol::codes::{close, sdk, ErrorCode};
use hubcast_protocol::room::RoomName;
use hubcast_protocol::ClientRequest;
use serde_json::Value;

pub use self::config::Config;
pub use self::delivery::MAX_BUFFERED;
pub use self::heartbeat::Heartbeat;
pub use self::io::{HistoryResult, Output};
pub use self::publish::MAX_ID_BYTES;
pub use self::reconnect::Backoff;

use self::connection::TokenPurpose;
use self::heal::AfterHistory;
use self::heartbeat::Liveness;
use self::io::Io;
use self::presence::PresenceRequests;
use self::publish::Publishes;
use self::room::{Cx, Room};
use self::timers::{Timer, TimerId};
use crate::types::{Ack, ClientError, ConnectionState, Cursor, PresenceMember};
use crate::urls::Urls;

/// Milliseconds on the caller's clock.
pub type Millis = u64;

/// The client's state machine. See the module docs.
pub struct Core {
    cfg: Config,
    urls: Urls,
    random: Box<dyn FnMut() -> f64 + Send>,
    io: Io,

    // The connection (`connection`).
    state: ConnectionState,
    /// Numbers connection attempts: what an older socket reports is ignored.
    generation: u64,
    /// The current attempt's socket, open or not (open: `io.open()`).
    socket: Option<u64>,
    /// The current socket's session received `welcome`.
    welcomed: bool,
    /// Connection attempts since the last `welcome` that ended without one.
    failed_attempts: u32,
    session: Option<String>,
    token: Option<String>,
    /// The token request of a refresh under way.
    refreshing: Option<u64>,
    token_requests: HashMap<u64, TokenPurpose>,
    reconnect_timer: Option<TimerId>,
    connect_timer: Option<TimerId>,
    reconcile_timer: Option<TimerId>,
    liveness: Liveness,

    // What the application asked for.
    rooms: Vec<Room>,
    next_sub: u64,
    /// Names the application unsubscribed whose `unsubscribed` has not come yet.
    draining: HashSet<String>,
    publishes: Publishes,
    presence: PresenceRequests,
    /// Numbers publishes and presence requests (their keys in the outputs).
    next_key: u64,
}

impl Core {
    /// A core with `random` as its jitter source (uniform in `[0, 1)`).
    pub fn new(cfg: Config, random: Box<dyn FnMut() -> f64 + Send>) -> Result<Core, ClientError> {
        let urls = Urls::derive(&cfg.url)?;
        Ok(Core {
            cfg,
            urls,
            random,
            io: Io::default(),
            state: ConnectionState::Idle,
            generation: 0,
            socket: None,
            welcomed: false,
            failed_attempts: 0,
            session: None,
            token: None,
            refreshing: None,
            token_requests: HashMap::new(),
            reconnect_timer: None,
            connect_timer: None,
            reconcile_timer: None,
            liveness: Liveness::default(),
            rooms: Vec::new(),
            next_sub: 0,
            draining: HashSet::new(),
            publishes: Publishes::default(),
            presence: PresenceRequests::default(),
            next_key: 0,
        })
    }

    // ------------------------------------------------------------ inspection

    pub fn state(&self) -> ConnectionState {
        self.state
    }

    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    pub fn now(&self) -> Millis {
        self.io.timers.now()
    }

    /// Publishes waiting for an ack.
    pub fn pending_publishes(&self) -> usize {
        self.publishes.len()
    }

    /// The cursor of subscription `sub` (`None` until its start is known).
    pub fn cursor(&self, sub: u64) -> Option<Cursor> {
        self.rooms.iter().find(|r| r.sub == sub)?.cursor()
    }

    /// The subscription id of `room`, if subscribed.
    pub fn subscription(&self, room: &str) -> Option<u64> {
        self.rooms.iter().find(|r| r.name == room).map(|r| r.sub)
    }

    /// The member list of presence subscription `sub` as last received (sorted by `id`).
    pub fn members(&self, sub: u64) -> Option<Vec<PresenceMember>> {
        self.room_index(sub).map(|i| self.rooms[i].members.clone())
    }

    /// Takes what the core produced since the last call.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        self.io.take()
    }

    /// The time of the next timer, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.io.timers.next_deadline()
    }

    // ------------------------------------------------------------------ time

    /// Moves the clock to `now`, firing every timer that comes due, in order.
    pub fn advance_to(&mut self, now: Millis) {
        while self.fire_next(now) {}
        self.io.timers.advance(now);
    }

    /// Fires the earliest timer due by `until` (moving the clock to it); `false` if none is due.
    pub fn fire_next(&mut self, until: Millis) -> bool {
        let Some(timer) = self.io.timers.pop_due(until) else {
            return false;
        };
        self.fire(timer);
        true
    }

    fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::Reconnect => {
                self.reconnect_timer = None;
                if self.state == ConnectionState::Reconnecting {
                    self.open_socket();
                }
            }
            Timer::ConnectTimeout(gen) => {
                self.connect_timer = None;
                if self.socket == Some(gen) && self.state == ConnectionState::Connecting {
                    self.abandon_socket("connect timeout", close::ABNORMAL, "connect timeout");
                }
            }
            Timer::Reconcile => {
                self.reconcile_timer = None;
                self.start_reconcile();
                for i in 0..self.rooms.len() {
                    let (room, mut cx) = self.room(i);
                    room.reconcile(&mut cx);
                }
            }
            Timer::Heartbeat => {
                self.liveness.timer = None;
                let Some(hb) = self.cfg.heartbeat else { return };
                if self.liveness.tick(hb, &mut self.io) {
                    let gone = "heartbeat timeout (no frame from the server)";
                    self.abandon_socket("heartbeat timeout", close::HEARTBEAT_TIMEOUT, gone);
                }
            }
            Timer::Pump => {
                self.publishes.pump_timer = None;
                self.pump();
            }
            Timer::SubscribeRetry(sub) => {
                if let Some(i) = self.room_index(sub) {
                    let (room, mut cx) = self.room(i);
                    room.subscribe_retry = None;
                    room.subscribe_now(&mut cx);
                }
            }
            Timer::PublishRetry(key) => {
                if self.publishes.retry_due(key) {
                    self.pump();
                }
            }
            Timer::PublishTimeout(key) => {
                if let Some(idx) = self.publishes.timed_out(key) {
                    let entry = self.publishes.get(idx);
                    let err = ClientError::new(
                        sdk::TIMEOUT,
                        format!("publish {} was not acknowledged in time; it may still be appended: retry with the same id to find out", entry.id),
                    )
                    .with_room(entry.room.clone())
                    .with_id(entry.id.clone());
                    self.settle(idx, Err(err));
                }
            }
        }
    }

    // ------------------------------------------------------ application calls

    /// Subscribes to `room` (from `cursor`, or the last `rewind` events, or
    /// live). Returns the subscription id; an existing subscription of the
    /// name is returned as is.
    pub fn subscribe(
        &mut self,
        room: &str,
        cursor: Option<Cursor>,
        rewind: Option<u64>,
    ) -> Result<u64, ClientError> {
        self.subscribe_with_presence(room, cursor, rewind, false)
    }

    /// Like [`Core::subscribe`]; with `presence` the subscription also enters
    /// the room's presence (`"presence": true`) and yields [`Output::Presence`].
    pub fn subscribe_with_presence(
        &mut self,
        room: &str,
        cursor: Option<Cursor>,
        rewind: Option<u64>,
        presence: bool,
    ) -> Result<u64, ClientError> {
        check_room(room)?;
        if let Some(existing) = self.subscription(room) {
            return Ok(existing);
        }
        self.next_sub += 1;
        let sub = self.next_sub;
        self.rooms
            .push(Room::new(sub, room, cursor, rewind, presence));
        if self.state == ConnectionState::Idle && self.cfg.auto_connect {
            self.connect();
        } else if self.state == ConnectionState::Open {
            let (room, mut cx) = self.room(self.rooms.len() - 1);
            room.subscribe_now(&mut cx);
        }
        Ok(sub)
    }

    /// Stops subscription `sub`: nothing more is delivered for it.
    pub fn unsubscribe(&mut self, sub: u64) {
        let Some(i) = self.room_index(sub) else {
            return;
        };
        let mut room = self.rooms.remove(i);
        let on_server = room.on_server();
        room.cancel_heal();
        self.io.timers.cancel(&mut room.subscribe_retry);
        self.io.emit(Output::RoomEnd { sub, error: None });
        if on_server && self.state == ConnectionState::Open && !self.draining.contains(&room.name) {
            self.draining.insert(room.name.clone());
            self.io
                .send(ClientRequest::Unsubscribe { room: &room.name });
        }
    }

    /// Asks for `room`'s presence members (needs the `presence` grant, no
    /// subscription). Returns a key; the answer is [`Output::PresenceResult`]
    /// with it. Queued while offline, asked again after a reconnect.
    pub fn request_presence(&mut self, room: &str) -> Result<u64, ClientError> {
        check_room(room)?;
        self.next_key += 1;
        let key = self.next_key;
        self.presence.request(room, key);
        if self.state == ConnectionState::Idle && self.cfg.auto_connect {
            self.connect();
        } else {
            self.presence.send_unsent(&mut self.io);
        }
        Ok(key)
    }

    /// Queues a publish; returns its key (the key of the pending publish with
    /// the same id, if there is one). It settles with [`Output::Published`].
    pub fn publish(
        &mut self,
        room: &str,
        data: &Value,
        expected_seq: Option<u64>,
        id: Option<String>,
        timeout_ms: Option<u64>,
    ) -> Result<u64, ClientError> {
        if let Err(mut err) = check_room(room) {
            err.id = id;
            return Err(err);
        }
        let id = id.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            let message = format!("publish id must be 1 to {MAX_ID_BYTES} bytes");
            return Err(ClientError::new(ErrorCode::BadRequest.as_str(), message).with_room(room));
        }
        if let Some(existing) = self.publishes.position(&id) {
            return Ok(self.publishes.get(existing).key);
        }
        if self.state == ConnectionState::Closed {
            return Err(ClientError::new(sdk::CLOSED, "the client is closed")
                .with_room(room)
                .with_id(id));
        }
        let frame = self
            .publishes
            .frame(room, &id, data, expected_seq, &self.cfg)?;
        self.next_key += 1;
        let key = self.next_key;
        let timeout = timeout_ms.unwrap_or(self.cfg.publish_timeout_ms);
        self.publishes.push(
            key,
            id,
            vec![room.to_owned()],
            false,
            frame,
            timeout,
            &mut self.io,
        );
        if self.state == ConnectionState::Idle && self.cfg.auto_connect {
            self.connect();
        } else {
            self.pump();
        }
        Ok(key)
    }

    /// Queues an atomic batch publish of `events` (`(room, data,
    /// expected_seq)`), one `publish_batch` message; returns its key (that of
    /// the pending publish with the same id, if any). It settles with
    /// [`Output::BatchPublished`].
    pub fn publish_batch(
        &mut self,
        events: &[(String, Value, Option<u64>)],
        id: Option<String>,
        timeout_ms: Option<u64>,
    ) -> Result<u64, ClientError> {
        for (room, _, _) in events {
            if let Err(mut err) = check_room(room) {
                err.id = id;
                return Err(err);
            }
        }
        let id = id.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            let message = format!("publish id must be 1 to {MAX_ID_BYTES} bytes");
            return Err(ClientError::new(ErrorCode::BadRequest.as_str(), message));
        }
        if let Some(existing) = self.publishes.position(&id) {
            return Ok(self.publishes.get(existing).key);
        }
        if self.state == ConnectionState::Closed {
            return Err(ClientError::new(sdk::CLOSED, "the client is closed").with_id(id));
        }
        let frame = self.publishes.batch_frame(&id, events, &self.cfg)?;
        self.next_key += 1;
        let key = self.next_key;
        let timeout = timeout_ms.unwrap_or(self.cfg.publish_timeout_ms);
        let mut rooms: Vec<String> = Vec::new();
        for (room, _, _) in events {
            if !rooms.contains(room) {
                rooms.push(room.clone());
            }
        }
        self.publishes
            .push(key, id, rooms, true, frame, timeout, &mut self.io);
        if self.state == ConnectionState::Idle && self.cfg.auto_connect {
            self.connect();
        } else {
            self.pump();
        }
        Ok(key)
    }

    /// The history request `req` was answered.
    pub fn on_history(&mut self, req: u64, result: HistoryResult) {
        let Some(i) = self.rooms.iter().position(|r| r.is_fetching(req)) else {
            return; // cancelled: reset, reconnect, resync or unsubscribed
        };
        let (room, mut cx) = self.room(i);
        if room.on_history(result, &mut cx) == AfterHistory::RefreshToken {
            self.refresh_token();
        }
    }

    // ------------------------------------------------------------ the parts

    fn room_index(&self, sub: u64) -> Option<usize> {
        self.rooms.iter().position(|r| r.sub == sub)
    }

    fn room_named(&self, name: &str) -> Option<usize> {
        self.rooms.iter().position(|r| r.name == name)
    }

    /// Room `i`, with what its methods reach besides it.
    fn room(&mut self, i: usize) -> (&mut Room, Cx<'_>) {
        let room = &mut self.rooms[i];
        let cx = Cx {
            io: &mut self.io,
            cfg: &self.cfg,
            urls: &self.urls,
            token: self.token.as_deref(),
            random: &mut *self.random,
            publishes: &self.publishes,
            draining: &self.draining,
        };
        (room, cx)
    }

    /// Sends the publishes due on the open socket.
    fn pump(&mut self) {
        self.publishes.pump(
            &mut self.io,
            self.generation,
            self.cfg.max_publishes_per_second,
        );
    }

    /// Settles pending publish `idx` (a batch with every receipt); in a
    /// no-echo room its acks' seqs count as delivered.
    fn settle(&mut self, idx: usize, result: Result<Vec<Ack>, ClientError>) {
        let entry = self.publishes.remove(idx, &mut self.io);
        let acks: Vec<(String, u64)> = match &result {
            Ok(acks) => acks.iter().map(|a| (a.room.clone(), a.seq)).collect(),
            Err(_) => Vec::new(),
        };
        if entry.batch {
            self.io.emit(Output::BatchPublished {
                key: entry.key,
                result,
            });
        } else {
            let result = result.and_then(|mut acks| {
                acks.pop().ok_or_else(|| {
                    ClientError::new(sdk::PROTOCOL_VIOLATION, "an ack without a receipt")
                })
            });
            self.io.emit(Output::Published {
                key: entry.key,
                result,
            });
        }
        for name in &entry.rooms {
            let Some(i) = self.room_named(name) else {
                continue;
            };
            let own: Vec<u64> = acks.iter().filter(|a| &a.0 == name).map(|a| a.1).collect();
            let (room, mut cx) = self.room(i);
            if own.is_empty() {
                room.publish_settled(None, &mut cx);
            }
            for seq in own {
                room.publish_settled(Some(seq), &mut cx);
            }
        }
    }

    /// Fails every publish and presence request with `error`.
    fn reject_all(&mut self, error: &ClientError) {
        while !self.publishes.is_empty() {
            let entry = self.publishes.get(0);
            let mut err = ClientError::new(error.code.clone(), error.message.clone())
                .with_room(entry.room.clone())
                .with_id(entry.id.clone());
            err.close_code = error.close_code;
            self.settle(0, Err(err));
        }
        self.presence.reject_all(error, &mut self.io);
    }

    fn start_reconcile(&mut self) {
        if self.cfg.reconcile_ms == 0 || self.reconcile_timer.is_some() {
            return;
        }
        self.reconcile_timer = Some(self.io.timers.set(self.cfg.reconcile_ms, Timer::Reconcile));
    }

    fn stop_reconcile(&mut self) {
        self.io.timers.cancel(&mut self.reconcile_timer);
    }
}

/// Refuses an invalid room name before anything is sent.
fn check_room(room: &str) -> Result<(), ClientError> {
    match RoomName::parse(room) {
        Ok(_) => Ok(()),
        Err(_) => Err(ClientError::new(
            ErrorCode::InvalidRoom.as_str(),
            format!("invalid room name {room:?}"),
        )
        .with_room(room)),
    }
}
