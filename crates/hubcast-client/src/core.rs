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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use hubcast_protocol::codes::close;
use hubcast_protocol::room::RoomName;
use serde_json::Value;

use crate::types::{
    Ack, ClientError, ConnectionState, Cursor, Event, PresenceMember, PresenceUpdate, Reset, RoomUpdate, StateChange,
};
use crate::urls::{encode_component, Urls};

/// Milliseconds on the caller's clock.
pub type Millis = u64;

/// Close codes after which reconnecting as-is cannot help.
fn is_terminal(code: u16) -> bool {
    !close::should_reconnect(code)
}

/// The SDK error code of a terminal close code.
fn terminal_error_code(code: u16) -> &'static str {
    match code {
        close::UNAUTHENTICATED => "unauthenticated",
        close::FORBIDDEN => "forbidden",
        close::POLICY => "policy_violation",
        close::TOO_BIG => "frame_too_big",
        _ => "closed",
    }
}

/// Local close codes for sockets the client abandons itself.
const LOCAL_ABNORMAL: u16 = 1006;
const LOCAL_HEARTBEAT_TIMEOUT: u16 = close::HEARTBEAT_TIMEOUT;
/// The code the client closes an abandoned socket with.
const CLIENT_ABANDON: u16 = 4000;
/// Ahead-of-cursor events kept per room while a gap is healed.
pub const MAX_BUFFERED: usize = 10_000;
/// The longest publish id (it is also the server's idempotency key).
pub const MAX_ID_BYTES: usize = 128;
const RETRYABLE_PUBLISH_ERRORS: [&str; 5] = ["store_unavailable", "shutting_down", "over_capacity", "rate_limited", "token_expired"];

/// Reconnect backoff: exponential with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// The least wait after 1013 (over capacity) or 4008 (rate limited).
    pub try_again_later_ms: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { min_delay_ms: 250, max_delay_ms: 30_000, try_again_later_ms: 5_000 }
    }
}

impl Backoff {
    /// `floor(random × min(max, min × 2^attempt))`.
    pub fn delay(&self, attempt: u32, random: f64) -> u64 {
        let window = (self.max_delay_ms as f64).min(self.min_delay_ms as f64 * 2f64.powi(attempt.min(30) as i32));
        (random * window).floor() as u64
    }
}

/// The application heartbeat: a `ping` after `interval_ms` without a frame,
/// the socket abandoned if nothing arrives within `timeout_ms` after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat { interval_ms: 10_000, timeout_ms: 5_000 }
    }
}

/// The client's settings (defaults as in docs/clients.md).
#[derive(Debug, Clone)]
pub struct Config {
    /// The server: `http(s)://host:port[/prefix]` or `ws(s)://…`.
    pub url: String,
    /// `None`: never reconnect.
    pub reconnect: Option<Backoff>,
    /// `None`: no application heartbeat.
    pub heartbeat: Option<Heartbeat>,
    /// 0: no connect timeout.
    pub connect_timeout_ms: u64,
    /// 0: no reconciliation poll.
    pub reconcile_ms: u64,
    pub history_page_size: u64,
    /// Send the token in an `auth` message instead of `?token=`.
    pub send_token_as_message: bool,
    /// Whether a token provider is installed (the caller answers [`Output::GetToken`]).
    pub has_token_provider: bool,
    /// 0: unpaced.
    pub max_publishes_per_second: u32,
    pub max_queued_publishes: usize,
    pub max_event_bytes: usize,
    /// 0: publishes never time out.
    pub publish_timeout_ms: u64,
    /// Connect on the first subscription or publish.
    pub auto_connect: bool,
}

impl Config {
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            reconnect: Some(Backoff::default()),
            heartbeat: Some(Heartbeat::default()),
            connect_timeout_ms: 10_000,
            reconcile_ms: 0,
            history_page_size: 1000,
            send_token_as_message: false,
            has_token_provider: false,
            max_publishes_per_second: 100,
            max_queued_publishes: 1000,
            max_event_bytes: 1024 * 1024,
            publish_timeout_ms: 0,
            auto_connect: true,
        }
    }
}

/// What the core asks its driver to do, or tells the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a WebSocket to `url`; report [`Core::on_open`], frames and the close with `gen`.
    Connect { gen: u64, url: String },
    /// Send this text frame on socket `gen`.
    Send { gen: u64, text: String },
    /// Drop socket `gen` (closing it with `code` when given; `None`: it is already closed).
    CloseSocket { gen: u64, code: Option<u16>, reason: String },
    /// `GET url` (the history route); answer with [`Core::on_history`].
    HistoryGet { req: u64, room: String, after: u64, limit: u64, url: String, authorization: Option<String> },
    /// Call the token provider; answer with [`Core::on_token`].
    GetToken { req: u64 },
    /// Something for a room subscription.
    Room { sub: u64, update: RoomUpdate },
    /// Presence of a `presence: true` subscription (member list, join, leave).
    Presence { sub: u64, update: PresenceUpdate },
    /// A presence request ([`Core::request_presence`]) was answered.
    PresenceResult { key: u64, result: Result<Vec<PresenceMember>, ClientError> },
    /// The subscription ended (unsubscribed, client closed, or a terminal close: `error`).
    RoomEnd { sub: u64, error: Option<ClientError> },
    /// An error surfaced on the client (room errors too, once).
    Error(ClientError),
    /// A publish settled.
    Published { key: u64, result: Result<Ack, ClientError> },
    State(StateChange),
    Welcome { session: String, heartbeat_ms: u64 },
    Authenticated { sub: Option<String>, exp: Option<u64> },
}

/// A history answer.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryResult {
    Response { status: u16, body: Value },
    NetworkError(String),
}

#[derive(Debug, Clone, PartialEq)]
struct WireEvent {
    seq: u64,
    ts: i64,
    data: Value,
}

struct HistoryPage {
    epoch: Option<String>,
    head: u64,
    earliest: u64,
    events: Vec<WireEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Idle,
    Waiting,
    Subscribing,
    Active,
    Resyncing,
    Failed,
}

#[derive(Debug, Clone, Copy)]
enum HealPhase {
    Fetching { req: u64, retried: bool, after: u64, limit: u64 },
    AwaitingRefresh { after: u64, limit: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Heal {
    probe: bool,
    start_seq: Option<u64>,
    phase: HealPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HealOutcome {
    Done,
    Resync,
}

type TimerId = (Millis, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Reconnect,
    ConnectTimeout(u64),
    Reconcile,
    Heartbeat,
    Pump,
    SubscribeRetry(u64),
    PublishRetry(u64),
    PublishTimeout(u64),
}

struct Room {
    sub: u64,
    name: String,
    epoch: Option<String>,
    seq: Option<u64>,
    rewind: Option<u64>,
    wire: Wire,
    subscribed_head: u64,
    subscribed_epoch: String,
    awaiting_reset: bool,
    subscribe_attempts: u32,
    subscribe_retry: Option<TimerId>,
    buffer: BTreeMap<u64, WireEvent>,
    healing: bool,
    heal_target: u64,
    heal: Option<Heal>,
    presence: bool,
    members: Vec<PresenceMember>,
    /// `false` when the server said `"echo": false`: our own socket publishes
    /// are not delivered to us, their acked seqs count as delivered.
    echo: bool,
    /// Acked seqs of our own publishes past the cursor (no-echo rooms): the
    /// cursor steps across them when it gets there.
    own: BTreeSet<u64>,
}

struct PresenceRequest {
    room: String,
    /// Sent as the request's `id` (`presence:N`); the server echoes it in the
    /// answer and in a refusal, so neither is taken for a subscription's.
    id: String,
    /// Asked on the current socket.
    sent: bool,
    keys: Vec<u64>,
}

struct PendingPublish {
    key: u64,
    id: String,
    room: String,
    frame: String,
    /// The socket generation it was last sent on (0: not sent on the current socket).
    sent_on: u64,
    attempts: u32,
    retry_timer: Option<TimerId>,
    timeout_timer: Option<TimerId>,
}

#[derive(Debug, Clone, Copy)]
enum TokenPurpose {
    Connect(u64),
    Refresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Socket,
    History,
}

/// The client's state machine. See the module docs.
pub struct Core {
    cfg: Config,
    urls: Urls,
    random: Box<dyn FnMut() -> f64 + Send>,
    now: Millis,
    outputs: VecDeque<Output>,

    state: ConnectionState,
    generation: u64,
    socket: Option<u64>,
    socket_open: bool,
    welcomed: bool,
    failed_attempts: u32,
    session: Option<String>,
    token: Option<String>,
    refreshing: Option<u64>,
    token_requests: HashMap<u64, TokenPurpose>,
    next_req: u64,

    timers: BTreeMap<TimerId, Timer>,
    timer_seq: u64,
    reconnect_timer: Option<TimerId>,
    connect_timer: Option<TimerId>,
    reconcile_timer: Option<TimerId>,
    heartbeat_timer: Option<TimerId>,
    pump_timer: Option<TimerId>,

    last_frame_at: Millis,
    frames_received: u64,
    ping: Option<(Millis, u64)>,

    publish_budget: f64,
    publish_budget_at: Option<Millis>,

    rooms: Vec<Room>,
    next_sub: u64,
    draining: HashSet<String>,
    pending: Vec<PendingPublish>,
    next_key: u64,
    presence_requests: Vec<PresenceRequest>,
    /// Numbers the `id`s of presence requests.
    next_presence_id: u64,
}

fn as_int(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    if let Some(n) = v.as_u64() {
        return (n < (1u64 << 53)).then_some(n);
    }
    let f = v.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_991.0).then_some(f as u64)
}

fn as_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

fn parse_member(v: &Value) -> Option<PresenceMember> {
    let id = as_str(v.get("id"))?.to_owned();
    let info = v.get("info").filter(|i| !i.is_null()).cloned();
    Some(PresenceMember { id, info })
}

fn parse_members(v: Option<&Value>) -> Option<Vec<PresenceMember>> {
    v?.as_array()?.iter().map(parse_member).collect()
}

fn parse_history(body: &Value) -> Option<HistoryPage> {
    let obj = body.as_object()?;
    let events = obj.get("events")?.as_array()?;
    let head = as_int(obj.get("head"))?;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let seq = as_int(e.get("seq"))?;
        let ts = e.get("ts").and_then(Value::as_f64).map(|t| t as i64).unwrap_or(0);
        out.push(WireEvent { seq, ts, data: e.get("data").cloned().unwrap_or(Value::Null) });
    }
    Some(HistoryPage {
        epoch: as_str(obj.get("epoch")).map(str::to_owned),
        head,
        earliest: as_int(obj.get("earliest")).unwrap_or(1),
        events: out,
    })
}

impl Core {
    /// A core with `random` as its jitter source (uniform in `[0, 1)`).
    pub fn new(cfg: Config, random: Box<dyn FnMut() -> f64 + Send>) -> Result<Core, ClientError> {
        let urls = Urls::derive(&cfg.url)?;
        Ok(Core {
            cfg,
            urls,
            random,
            now: 0,
            outputs: VecDeque::new(),
            state: ConnectionState::Idle,
            generation: 0,
            socket: None,
            socket_open: false,
            welcomed: false,
            failed_attempts: 0,
            session: None,
            token: None,
            refreshing: None,
            token_requests: HashMap::new(),
            next_req: 0,
            timers: BTreeMap::new(),
            timer_seq: 0,
            reconnect_timer: None,
            connect_timer: None,
            reconcile_timer: None,
            heartbeat_timer: None,
            pump_timer: None,
            last_frame_at: 0,
            frames_received: 0,
            ping: None,
            publish_budget: 0.0,
            publish_budget_at: None,
            rooms: Vec::new(),
            next_sub: 0,
            draining: HashSet::new(),
            pending: Vec::new(),
            next_key: 0,
            presence_requests: Vec::new(),
            next_presence_id: 0,
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
        self.now
    }

    /// Publishes waiting for an ack.
    pub fn pending_publishes(&self) -> usize {
        self.pending.len()
    }

    /// The cursor of subscription `sub` (`None` until its start is known).
    pub fn cursor(&self, sub: u64) -> Option<Cursor> {
        let room = self.rooms.iter().find(|r| r.sub == sub)?;
        room.seq.map(|seq| Cursor { epoch: room.epoch.clone(), seq })
    }

    /// The subscription id of `room`, if subscribed.
    pub fn subscription(&self, room: &str) -> Option<u64> {
        self.rooms.iter().find(|r| r.name == room).map(|r| r.sub)
    }

    /// Takes what the core produced since the last call.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        self.outputs.drain(..).collect()
    }

    /// The time of the next timer, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    // ------------------------------------------------------------------ time

    /// Moves the clock to `now`, firing every timer that comes due, in order.
    pub fn advance_to(&mut self, now: Millis) {
        while self.fire_next(now) {}
        self.now = self.now.max(now);
    }

    /// Fires the earliest timer due by `until` (moving the clock to it); `false` if none is due.
    pub fn fire_next(&mut self, until: Millis) -> bool {
        let Some((&id, &timer)) = self.timers.iter().next() else { return false };
        if id.0 > until {
            return false;
        }
        self.timers.remove(&id);
        self.now = self.now.max(id.0);
        self.fire(timer);
        true
    }

    fn set_timer(&mut self, delay: u64, timer: Timer) -> TimerId {
        self.timer_seq += 1;
        let id = (self.now + delay, self.timer_seq);
        self.timers.insert(id, timer);
        id
    }

    fn clear(&mut self, id: Option<TimerId>) {
        if let Some(id) = id {
            self.timers.remove(&id);
        }
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
                    self.teardown(Some((CLIENT_ABANDON, "connect timeout")));
                    self.socket_gone(LOCAL_ABNORMAL, "connect timeout".into());
                }
            }
            Timer::Reconcile => {
                self.reconcile_timer = None;
                if self.cfg.reconcile_ms > 0 {
                    self.reconcile_timer = Some(self.set_timer(self.cfg.reconcile_ms, Timer::Reconcile));
                }
                for i in 0..self.rooms.len() {
                    self.reconcile_room(i);
                }
            }
            Timer::Heartbeat => {
                self.heartbeat_timer = None;
                self.heartbeat_tick();
            }
            Timer::Pump => {
                self.pump_timer = None;
                self.pump();
            }
            Timer::SubscribeRetry(sub) => {
                if let Some(i) = self.room_index(sub) {
                    self.rooms[i].subscribe_retry = None;
                    self.subscribe_now(i);
                }
            }
            Timer::PublishRetry(key) => {
                if let Some(entry) = self.pending.iter_mut().find(|p| p.key == key) {
                    entry.retry_timer = None;
                    self.pump();
                }
            }
            Timer::PublishTimeout(key) => {
                if let Some(idx) = self.pending.iter().position(|p| p.key == key) {
                    self.pending[idx].timeout_timer = None;
                    let (id, room) = (self.pending[idx].id.clone(), self.pending[idx].room.clone());
                    let err = ClientError::new(
                        "timeout",
                        format!("publish {id} was not acknowledged in time; it may still be appended: retry with the same id to find out"),
                    )
                    .with_room(room)
                    .with_id(id);
                    self.settle(idx, Err(err));
                }
            }
        }
    }

    // ------------------------------------------------------------ public API

    /// Subscribes to `room` (from `cursor`, or the last `rewind` events, or
    /// live). Returns the subscription id; an existing subscription of the
    /// name is returned as is.
    pub fn subscribe(&mut self, room: &str, cursor: Option<Cursor>, rewind: Option<u64>) -> Result<u64, ClientError> {
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
        if RoomName::parse(room).is_err() {
            return Err(ClientError::new("invalid_room", format!("invalid room name {room:?}")).with_room(room));
        }
        if let Some(existing) = self.subscription(room) {
            return Ok(existing);
        }
        self.next_sub += 1;
        let sub = self.next_sub;
        let (epoch, seq) = match cursor {
            Some(c) => (c.epoch, Some(c.seq)),
            None => (None, None),
        };
        self.rooms.push(Room {
            sub,
            name: room.to_owned(),
            epoch,
            seq,
            rewind,
            wire: Wire::Idle,
            subscribed_head: 0,
            subscribed_epoch: String::new(),
            awaiting_reset: false,
            subscribe_attempts: 0,
            subscribe_retry: None,
            buffer: BTreeMap::new(),
            healing: false,
            heal_target: 0,
            heal: None,
            presence,
            members: Vec::new(),
            echo: true,
            own: BTreeSet::new(),
        });
        if self.state == ConnectionState::Idle && self.cfg.auto_connect {
            self.connect();
        } else if self.state == ConnectionState::Open {
            let i = self.rooms.len() - 1;
            self.subscribe_now(i);
        }
        Ok(sub)
    }

    /// The member list of presence subscription `sub` as last received (sorted by `id`).
    pub fn members(&self, sub: u64) -> Option<Vec<PresenceMember>> {
        self.room_index(sub).map(|i| self.rooms[i].members.clone())
    }

    /// Asks for `room`'s presence members (needs the `presence` grant, no
    /// subscription). Returns a key; the answer is [`Output::PresenceResult`]
    /// with it. Queued while offline, asked again after a reconnect.
    pub fn request_presence(&mut self, room: &str) -> Result<u64, ClientError> {
        if RoomName::parse(room).is_err() {
            return Err(ClientError::new("invalid_room", format!("invalid room name {room:?}")).with_room(room));
        }
        self.next_key += 1;
        let key = self.next_key;
        match self.presence_requests.iter_mut().find(|r| r.room == room) {
            Some(r) => r.keys.push(key),
            None => {
                self.next_presence_id += 1;
                let id = format!("presence:{}", self.next_presence_id);
                self.presence_requests.push(PresenceRequest { room: room.to_owned(), id, sent: false, keys: vec![key] })
            }
        }
        if self.state == ConnectionState::Idle && self.cfg.auto_connect {
            self.connect();
        } else {
            self.send_presence_requests();
        }
        Ok(key)
    }

    fn send_presence_requests(&mut self) {
        if self.state != ConnectionState::Open {
            return;
        }
        for i in 0..self.presence_requests.len() {
            if !self.presence_requests[i].sent {
                let request = &self.presence_requests[i];
                let frame = serde_json::json!({"type": "presence", "room": request.room, "id": request.id});
                if self.send_json(&frame) {
                    self.presence_requests[i].sent = true;
                }
            }
        }
    }

    /// Answers the sent presence request with this `id`, if there is one.
    fn settle_presence(&mut self, id: &str, result: Result<Vec<PresenceMember>, ClientError>) {
        if let Some(idx) = self.presence_requests.iter().position(|r| r.id == id && r.sent) {
            let request = self.presence_requests.remove(idx);
            for key in request.keys {
                self.outputs.push_back(Output::PresenceResult { key, result: result.clone() });
            }
        }
    }

    /// Stops subscription `sub`: nothing more is delivered for it.
    pub fn unsubscribe(&mut self, sub: u64) {
        let Some(i) = self.room_index(sub) else { return };
        let on_server = matches!(self.rooms[i].wire, Wire::Subscribing | Wire::Active | Wire::Resyncing);
        self.cancel_heal(i);
        let retry = self.rooms[i].subscribe_retry.take();
        self.clear(retry);
        let room = self.rooms.remove(i);
        self.outputs.push_back(Output::RoomEnd { sub, error: None });
        if on_server && self.state == ConnectionState::Open && !self.draining.contains(&room.name) {
            self.draining.insert(room.name.clone());
            self.send_json(&serde_json::json!({"type": "unsubscribe", "room": room.name}));
        }
    }

    /// Connects (or reconnects now, skipping a pending backoff); also restarts a closed client.
    pub fn connect(&mut self) {
        if matches!(self.state, ConnectionState::Connecting | ConnectionState::Open) {
            return;
        }
        let timer = self.reconnect_timer.take();
        self.clear(timer);
        self.start_reconcile();
        self.open_socket();
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
        if RoomName::parse(room).is_err() {
            let mut err = ClientError::new("invalid_room", format!("invalid room name {room:?}")).with_room(room);
            err.id = id;
            return Err(err);
        }
        let id = id.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return Err(ClientError::new("bad_request", format!("publish id must be 1 to {MAX_ID_BYTES} bytes")).with_room(room));
        }
        if let Some(existing) = self.pending.iter().find(|p| p.id == id) {
            return Ok(existing.key);
        }
        if self.state == ConnectionState::Closed {
            return Err(ClientError::new("closed", "the client is closed").with_room(room).with_id(id));
        }
        let json = serde_json::to_string(data)
            .map_err(|e| ClientError::new("bad_request", format!("data is not JSON: {e}")).with_room(room).with_id(&id))?;
        if json.len() > self.cfg.max_event_bytes {
            return Err(ClientError::new("too_large", format!("data is larger than {} bytes", self.cfg.max_event_bytes))
                .with_room(room)
                .with_id(id));
        }
        if self.pending.len() >= self.cfg.max_queued_publishes {
            return Err(ClientError::new("queue_full", "too many publishes waiting for an ack").with_room(room).with_id(id));
        }
        let mut frame = format!(
            "{{\"type\":\"publish\",\"id\":{},\"room\":{},\"data\":{json}",
            Value::String(id.clone()),
            Value::String(room.to_owned())
        );
        if let Some(expected) = expected_seq {
            frame.push_str(&format!(",\"expected_seq\":{expected}"));
        }
        frame.push('}');
        self.next_key += 1;
        let key = self.next_key;
        let timeout = timeout_ms.unwrap_or(self.cfg.publish_timeout_ms);
        let timeout_timer = (timeout > 0).then(|| self.set_timer(timeout, Timer::PublishTimeout(key)));
        self.pending.push(PendingPublish {
            key,
            id,
            room: room.to_owned(),
            frame,
            sent_on: 0,
            attempts: 0,
            retry_timer: None,
            timeout_timer,
        });
        if self.state == ConnectionState::Idle && self.cfg.auto_connect {
            self.connect();
        } else {
            self.pump();
        }
        Ok(key)
    }

    /// Gets a fresh token and hands it to the open session in an `auth` message.
    pub fn refresh_token(&mut self) {
        if !self.cfg.has_token_provider || self.refreshing.is_some() {
            return;
        }
        let req = self.new_req();
        self.refreshing = Some(req);
        self.token_requests.insert(req, TokenPurpose::Refresh);
        self.outputs.push_back(Output::GetToken { req });
    }

    /// Closes for good: pending publishes fail with `closed`, subscriptions end.
    pub fn close(&mut self) {
        if self.state == ConnectionState::Closed && self.socket.is_none() {
            return;
        }
        self.teardown(Some((1000, "client closed")));
        self.welcomed = false;
        self.session = None;
        self.draining.clear();
        self.stop_reconcile();
        let timer = self.reconnect_timer.take();
        self.clear(timer);
        for i in 0..self.rooms.len() {
            self.client_closed(i, None);
        }
        self.reject_all(&ClientError::new("closed", "the client was closed"));
        self.set_state(ConnectionState::Closed, Some(1000), Some("client closed".into()), None, None, None);
    }

    // ---------------------------------------------------------------- inputs

    /// The token provider answered request `req`.
    pub fn on_token(&mut self, req: u64, result: Result<Option<String>, String>) {
        let Some(purpose) = self.token_requests.remove(&req) else { return };
        match purpose {
            TokenPurpose::Connect(gen) => match result {
                Err(err) => {
                    if gen != self.generation || self.state != ConnectionState::Connecting {
                        return;
                    }
                    self.outputs.push_back(Output::Error(ClientError::new("token_error", format!("getToken failed: {err}"))));
                    self.after_disconnect(LOCAL_ABNORMAL, "getToken failed".into(), false);
                }
                Ok(token) => {
                    self.token = token.clone();
                    if gen != self.generation || self.state != ConnectionState::Connecting {
                        return;
                    }
                    self.create_socket(gen, token);
                }
            },
            TokenPurpose::Refresh => {
                self.refreshing = None;
                match result {
                    Ok(token) => {
                        self.token = token.clone();
                        if let Some(token) = token {
                            self.send_json(&serde_json::json!({"type": "auth", "token": token}));
                        }
                    }
                    Err(err) => {
                        self.outputs.push_back(Output::Error(ClientError::new("token_error", format!("getToken failed: {err}"))));
                    }
                }
                for i in 0..self.rooms.len() {
                    if let Some(Heal { phase: HealPhase::AwaitingRefresh { after, limit }, .. }) = self.rooms[i].heal {
                        self.fetch_history(i, after, limit, true);
                    }
                }
            }
        }
    }

    /// Socket `gen` opened.
    pub fn on_open(&mut self, gen: u64) {
        if self.socket != Some(gen) || self.socket_open {
            return;
        }
        self.socket_open = true;
        let timer = self.connect_timer.take();
        self.clear(timer);
        self.draining.clear();
        self.set_state(ConnectionState::Open, None, None, None, None, None);
        self.start_heartbeat();
        if self.cfg.send_token_as_message {
            if let Some(token) = self.token.clone() {
                self.send_json(&serde_json::json!({"type": "auth", "token": token}));
            }
        }
        for i in 0..self.rooms.len() {
            self.subscribe_now(i);
        }
        self.send_presence_requests();
        self.pump();
    }

    /// Socket `gen` closed (or failed before opening: 1006).
    pub fn on_close(&mut self, gen: u64, code: u16, reason: &str) {
        if self.socket != Some(gen) {
            return;
        }
        self.teardown(None);
        self.socket_gone(code, reason.to_owned());
    }

    /// A binary frame arrived on socket `gen`.
    pub fn on_binary(&mut self, gen: u64) {
        if self.socket != Some(gen) || !self.socket_open {
            return;
        }
        self.last_frame_at = self.now;
        self.frames_received += 1;
        self.protocol_violation("a binary frame");
    }

    /// A text frame arrived on socket `gen`.
    pub fn on_frame(&mut self, gen: u64, text: &str) {
        if self.socket != Some(gen) || !self.socket_open {
            return;
        }
        self.last_frame_at = self.now;
        self.frames_received += 1;
        let frame = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                let short: String = text.chars().take(100).collect();
                return self.protocol_violation(&format!("a frame that is not a JSON object: {short}"));
            }
        };
        let room = as_str(frame.get("room")).and_then(|name| self.rooms.iter().position(|r| r.name == name));
        match as_str(frame.get("type")).unwrap_or("") {
            "welcome" => {
                self.welcomed = true;
                self.failed_attempts = 0;
                self.session = as_str(frame.get("session")).map(str::to_owned);
                self.outputs.push_back(Output::Welcome {
                    session: self.session.clone().unwrap_or_default(),
                    heartbeat_ms: as_int(frame.get("heartbeat_ms")).unwrap_or(0),
                });
            }
            "subscribed" => {
                let (Some(epoch), Some(head)) = (as_str(frame.get("epoch")), as_int(frame.get("head"))) else {
                    return self.protocol_violation("a malformed subscribed");
                };
                let echo = frame.get("echo").and_then(Value::as_bool) != Some(false);
                if let Some(i) = room {
                    self.on_subscribed(i, epoch.to_owned(), head, echo);
                }
            }
            "reset" => {
                let Some(epoch) = as_str(frame.get("epoch")) else { return self.protocol_violation("a malformed reset") };
                if let Some(i) = room {
                    self.on_reset(i, epoch.to_owned(), as_int(frame.get("earliest")));
                }
            }
            "event" => {
                let (Some(seq), true) = (as_int(frame.get("seq")), frame.contains_key("data")) else {
                    return self.protocol_violation("a malformed event");
                };
                if let Some(i) = room {
                    let ts = frame.get("ts").and_then(Value::as_f64).map(|t| t as i64).unwrap_or(0);
                    let data = frame.get("data").cloned().unwrap_or(Value::Null);
                    self.on_event(i, WireEvent { seq, ts, data });
                }
            }
            "batch" => {
                // Consecutive live events of a batching room: processed one by one, exactly like `event` frames.
                let Some(events) = frame.get("events").and_then(Value::as_array) else {
                    return self.protocol_violation("a malformed batch");
                };
                for item in events {
                    let Some(seq) = as_int(item.get("seq")).filter(|_| item.get("data").is_some()) else {
                        self.protocol_violation("a malformed event in a batch");
                        continue; // the missing seq is a gap, healed like any other
                    };
                    if let Some(i) = as_str(frame.get("room")).and_then(|name| self.rooms.iter().position(|r| r.name == name)) {
                        let ts = item.get("ts").and_then(Value::as_f64).map(|t| t as i64).unwrap_or(0);
                        let data = item.get("data").cloned().unwrap_or(Value::Null);
                        self.on_event(i, WireEvent { seq, ts, data });
                    }
                }
            }
            "presence" => {
                let (Some(_room), Some(members)) = (as_str(frame.get("room")), parse_members(frame.get("members"))) else {
                    return self.protocol_violation("a malformed presence");
                };
                match as_str(frame.get("id")) {
                    // The answer to a presence request.
                    Some(id) => {
                        let id = id.to_owned();
                        self.settle_presence(&id, Ok(members));
                    }
                    // The member list of a presence subscription.
                    None => {
                        if let Some(i) = room {
                            self.on_presence(i, members);
                        }
                    }
                }
            }
            "join" | "leave" => {
                let join = as_str(frame.get("type")) == Some("join");
                let Some(member) = frame.get("member").and_then(parse_member) else {
                    return self.protocol_violation(if join { "a malformed join" } else { "a malformed leave" });
                };
                if let Some(i) = room {
                    self.on_membership(i, join, member);
                }
            }
            "caught_up" => {
                let Some(seq) = as_int(frame.get("seq")) else { return self.protocol_violation("a malformed caught_up") };
                if let Some(i) = room {
                    self.on_caught_up(i, seq);
                }
            }
            "unsubscribed" => {
                if let Some(name) = as_str(frame.get("room")) {
                    let name = name.to_owned();
                    self.on_unsubscribed(&name);
                }
            }
            "ack" => self.on_ack(&frame),
            "error" => self.on_error_frame(&frame),
            "authenticated" => {
                self.outputs.push_back(Output::Authenticated {
                    sub: as_str(frame.get("sub")).map(str::to_owned),
                    exp: as_int(frame.get("exp")),
                });
            }
            _ => {} // pong (liveness is recorded above) and unknown types
        }
    }

    /// The history request `req` was answered.
    pub fn on_history(&mut self, req: u64, result: HistoryResult) {
        let Some(i) = self
            .rooms
            .iter()
            .position(|r| matches!(r.heal, Some(Heal { phase: HealPhase::Fetching { req: q, .. }, .. }) if q == req))
        else {
            return; // cancelled: reset, reconnect, resync or unsubscribed
        };
        let Some(Heal { phase: HealPhase::Fetching { retried, after, limit, .. }, .. }) = self.rooms[i].heal else { return };
        let name = self.rooms[i].name.clone();
        let url = self.urls.history(&name, after, limit);
        let page = match result {
            HistoryResult::NetworkError(err) => {
                Err(ClientError::new("history_unavailable", format!("history of {name} could not be read: {err}")).with_room(&name))
            }
            HistoryResult::Response { status, body } if !(200..300).contains(&status) => {
                if status == 401 && !retried && self.cfg.has_token_provider {
                    // Credentials that ran out: one more try with a fresh token.
                    if let Some(heal) = self.rooms[i].heal.as_mut() {
                        heal.phase = HealPhase::AwaitingRefresh { after, limit };
                    }
                    self.refresh_token();
                    return;
                }
                let code = as_str(body.get("error")).unwrap_or("history_unavailable");
                let mut message = format!("GET {url}: {status} {code}");
                if let Some(m) = as_str(body.get("message")) {
                    message.push_str(&format!(": {m}"));
                }
                let mut err = ClientError::new("history_unavailable", message).with_room(&name);
                err.status = Some(status);
                Err(err)
            }
            HistoryResult::Response { body, .. } => parse_history(&body)
                .ok_or_else(|| ClientError::new("history_unavailable", format!("GET {url}: unexpected answer")).with_room(&name)),
        };
        match page {
            Ok(page) => self.heal_page(i, page),
            Err(err) => self.heal_failed(i, err),
        }
    }

    // ------------------------------------------------------------ connection

    fn new_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    fn open_socket(&mut self) {
        self.generation += 1;
        let gen = self.generation;
        self.set_state(ConnectionState::Connecting, None, None, None, None, None);
        if self.cfg.has_token_provider {
            let req = self.new_req();
            self.token_requests.insert(req, TokenPurpose::Connect(gen));
            self.outputs.push_back(Output::GetToken { req });
            return;
        }
        self.create_socket(gen, None);
    }

    fn create_socket(&mut self, gen: u64, token: Option<String>) {
        let url = match token {
            Some(token) if !self.cfg.send_token_as_message => format!("{}?token={}", self.urls.ws, encode_component(&token)),
            _ => self.urls.ws.clone(),
        };
        self.socket = Some(gen);
        self.socket_open = false;
        self.welcomed = false;
        self.outputs.push_back(Output::Connect { gen, url });
        if self.cfg.connect_timeout_ms > 0 {
            let timer = self.connect_timer.take();
            self.clear(timer);
            self.connect_timer = Some(self.set_timer(self.cfg.connect_timeout_ms, Timer::ConnectTimeout(gen)));
        }
    }

    /// Detaches the current socket (closing it with `code` if given).
    fn teardown(&mut self, code: Option<(u16, &str)>) {
        let timer = self.connect_timer.take();
        self.clear(timer);
        self.stop_heartbeat();
        let timer = self.pump_timer.take();
        self.clear(timer);
        self.socket_open = false;
        if let Some(gen) = self.socket.take() {
            self.outputs.push_back(Output::CloseSocket {
                gen,
                code: code.map(|c| c.0),
                reason: code.map(|c| c.1.to_owned()).unwrap_or_default(),
            });
        }
    }

    /// The socket is gone: reset per-socket state, then reconnect or stop.
    fn socket_gone(&mut self, code: u16, reason: String) {
        let welcomed = self.welcomed;
        self.welcomed = false;
        self.session = None;
        self.draining.clear();
        for i in 0..self.rooms.len() {
            self.socket_closed(i);
        }
        for entry in &mut self.pending {
            entry.sent_on = 0;
        }
        for request in &mut self.presence_requests {
            request.sent = false;
        }
        self.after_disconnect(code, reason, welcomed);
    }

    fn after_disconnect(&mut self, code: u16, reason: String, welcomed: bool) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.failed_attempts = if welcomed { 0 } else { self.failed_attempts + 1 };
        if is_terminal(code) {
            let mut error = ClientError::new(
                terminal_error_code(code),
                format!("connection closed with {code}{}; not retrying", if reason.is_empty() { String::new() } else { format!(": {reason}") }),
            );
            error.close_code = Some(code);
            self.stop_reconcile();
            for i in 0..self.rooms.len() {
                self.client_closed(i, Some(error.clone()));
            }
            self.reject_all(&error);
            self.outputs.push_back(Output::Error(error.clone()));
            self.set_state(ConnectionState::Closed, Some(code), Some(reason), None, None, Some(error));
            return;
        }
        let Some(backoff) = self.cfg.reconnect else {
            self.stop_reconcile();
            for i in 0..self.rooms.len() {
                self.client_closed(i, None);
            }
            let mut error = ClientError::new("closed", "connection closed and reconnect is disabled");
            error.close_code = Some(code);
            self.reject_all(&error);
            self.set_state(ConnectionState::Closed, Some(code), Some(reason), None, None, None);
            return;
        };
        let delay = if welcomed && (code == close::RESTART || code == close::GOING_AWAY) {
            0
        } else {
            let random = (self.random)();
            let delay = backoff.delay(self.failed_attempts, random);
            if code == close::TRY_AGAIN_LATER || code == close::RATE_LIMITED {
                delay.max(backoff.try_again_later_ms)
            } else {
                delay
            }
        };
        let attempt = self.failed_attempts;
        self.set_state(ConnectionState::Reconnecting, Some(code), Some(reason), Some(delay), Some(attempt), None);
        let timer = self.reconnect_timer.take();
        self.clear(timer);
        self.reconnect_timer = Some(self.set_timer(delay, Timer::Reconnect));
    }

    fn set_state(
        &mut self,
        state: ConnectionState,
        code: Option<u16>,
        reason: Option<String>,
        delay_ms: Option<u64>,
        attempt: Option<u32>,
        error: Option<ClientError>,
    ) {
        let previous = self.state;
        self.state = state;
        self.outputs.push_back(Output::State(StateChange { state, previous, code, reason, delay_ms, attempt, error }));
    }

    fn send_text(&mut self, text: String) -> bool {
        match self.socket {
            Some(gen) if self.socket_open && self.state == ConnectionState::Open => {
                self.outputs.push_back(Output::Send { gen, text });
                true
            }
            _ => false,
        }
    }

    fn send_json(&mut self, frame: &Value) -> bool {
        self.send_text(frame.to_string())
    }

    fn protocol_violation(&mut self, what: &str) {
        self.outputs
            .push_back(Output::Error(ClientError::new("protocol_violation", format!("the server sent {what}; ignored"))));
    }

    fn on_unsubscribed(&mut self, name: &str) {
        if self.draining.remove(name) {
            // An unsubscribe the app asked for finished; a new subscription of the name may be waiting.
            if let Some(i) = self.rooms.iter().position(|r| r.name == name) {
                self.subscribe_now(i);
            }
            return;
        }
        if let Some(i) = self.rooms.iter().position(|r| r.name == name) {
            self.room_unsubscribed(i);
        }
    }

    fn on_ack(&mut self, frame: &serde_json::Map<String, Value>) {
        let Some(id) = as_str(frame.get("id")) else { return };
        let Some(idx) = self.pending.iter().position(|p| p.id == id) else { return }; // settled, or a duplicate ack
        let Some(seq) = as_int(frame.get("seq")) else { return self.protocol_violation("a malformed ack") };
        let room = as_str(frame.get("room")).map(str::to_owned).unwrap_or_else(|| self.pending[idx].room.clone());
        let ack = Ack { id: id.to_owned(), room, seq };
        self.settle(idx, Ok(ack));
    }

    fn on_error_frame(&mut self, frame: &serde_json::Map<String, Value>) {
        let code = as_str(frame.get("code")).unwrap_or("unknown").to_owned();
        let message = as_str(frame.get("message")).unwrap_or(&code).to_owned();
        let room_name = as_str(frame.get("room")).map(str::to_owned);
        if let Some(id) = as_str(frame.get("id")) {
            if self.presence_requests.iter().any(|r| r.id == id && r.sent) {
                let mut err = ClientError::new(code, message);
                if let Some(name) = room_name {
                    err = err.with_room(name);
                }
                let id = id.to_owned();
                self.settle_presence(&id, Err(err));
                return;
            }
            if let Some(idx) = self.pending.iter().position(|p| p.id == id) {
                if let (true, Some(backoff)) = (RETRYABLE_PUBLISH_ERRORS.contains(&code.as_str()), self.cfg.reconnect) {
                    // Nothing was appended: send again (same id) after a backoff.
                    let random = (self.random)();
                    let delay = backoff.delay(self.pending[idx].attempts, random);
                    let key = self.pending[idx].key;
                    let timer = self.set_timer(delay, Timer::PublishRetry(key));
                    let entry = &mut self.pending[idx];
                    entry.sent_on = 0;
                    entry.attempts += 1;
                    entry.retry_timer = Some(timer);
                    return;
                }
                let mut err = ClientError::new(code, message).with_room(self.pending[idx].room.clone()).with_id(id);
                err.head = as_int(frame.get("head"));
                self.settle(idx, Err(err));
                return;
            }
        }
        if code == "token_expired" && room_name.is_none() && !frame.contains_key("id") && self.cfg.has_token_provider {
            // The session's token ran out: send a fresh one within the server's grace period.
            self.refresh_token();
            return;
        }
        if let Some(name) = &room_name {
            if self.draining.contains(name) && code == "not_subscribed" {
                self.on_unsubscribed(name);
                return;
            }
            if let Some(i) = self.rooms.iter().position(|r| &r.name == name) {
                self.on_subscription_error(i, &code, &message);
                return;
            }
        }
        let mut err = ClientError::new(code, message);
        err.room = room_name;
        self.outputs.push_back(Output::Error(err));
    }

    // --------------------------------------------------------------- publish

    /// Sends pending publishes not yet sent on this socket, in call order, paced.
    fn pump(&mut self) {
        if self.state != ConnectionState::Open || self.pump_timer.is_some() {
            return;
        }
        let rate = self.cfg.max_publishes_per_second;
        for idx in 0..self.pending.len() {
            if self.pending[idx].retry_timer.is_some() || self.pending[idx].sent_on == self.generation {
                continue;
            }
            if rate > 0 && !self.take_publish_token(rate) {
                let wait = 1000_u64.div_ceil(rate as u64);
                self.pump_timer = Some(self.set_timer(wait, Timer::Pump));
                return;
            }
            let frame = self.pending[idx].frame.clone();
            if !self.send_text(frame) {
                return;
            }
            self.pending[idx].sent_on = self.generation;
        }
    }

    fn take_publish_token(&mut self, rate: u32) -> bool {
        let rate = rate as f64;
        self.publish_budget = match self.publish_budget_at {
            None => rate,
            Some(at) => rate.min(self.publish_budget + (self.now.saturating_sub(at)) as f64 * rate / 1000.0),
        };
        self.publish_budget_at = Some(self.now);
        if self.publish_budget < 1.0 {
            return false;
        }
        self.publish_budget -= 1.0;
        true
    }

    fn settle(&mut self, idx: usize, result: Result<Ack, ClientError>) {
        let entry = self.pending.remove(idx);
        self.clear(entry.retry_timer);
        self.clear(entry.timeout_timer);
        let own = result.as_ref().ok().map(|ack| ack.seq);
        self.outputs.push_back(Output::Published { key: entry.key, result });
        self.publish_settled(&entry.room, own);
    }

    /// A publish to `room` was answered (`own`: the seq of its ack). In a
    /// no-echo room the acked seq counts as delivered, and events held past a
    /// hole are delivered, or the hole healed once no answer can explain it.
    fn publish_settled(&mut self, room: &str, own: Option<u64>) {
        let Some(i) = self.rooms.iter().position(|r| r.name == room) else { return };
        let room = &mut self.rooms[i];
        if room.echo || room.wire != Wire::Active {
            return;
        }
        if let (Some(seq), Some(cursor)) = (own, room.seq) {
            if seq > cursor {
                room.own.insert(seq);
            }
        }
        self.drain(i);
    }

    /// Steps the cursor across our own acked seqs (no-echo rooms).
    fn skip_own(&mut self, i: usize) {
        let room = &mut self.rooms[i];
        while let Some(cursor) = room.seq {
            if !room.own.remove(&(cursor + 1)) {
                break;
            }
            room.seq = Some(cursor + 1);
        }
        if let Some(cursor) = room.seq {
            room.own.retain(|&seq| seq > cursor);
        }
    }

    /// A no-echo room with publishes sent and not yet answered: a hole may be
    /// one of ours whose ack is still on its way, so it is not healed yet.
    fn holding(&self, i: usize) -> bool {
        let room = &self.rooms[i];
        !room.echo && self.pending.iter().any(|p| p.room == room.name && p.sent_on != 0)
    }

    fn reject_all(&mut self, error: &ClientError) {
        while !self.pending.is_empty() {
            let mut err = ClientError::new(error.code.clone(), error.message.clone())
                .with_room(self.pending[0].room.clone())
                .with_id(self.pending[0].id.clone());
            err.close_code = error.close_code;
            self.settle(0, Err(err));
        }
        for request in std::mem::take(&mut self.presence_requests) {
            for key in request.keys {
                let mut err = ClientError::new(error.code.clone(), error.message.clone()).with_room(request.room.clone());
                err.close_code = error.close_code;
                self.outputs.push_back(Output::PresenceResult { key, result: Err(err) });
            }
        }
    }

    // ------------------------------------------------------ reconcile, heartbeat

    fn start_reconcile(&mut self) {
        if self.cfg.reconcile_ms == 0 || self.reconcile_timer.is_some() {
            return;
        }
        self.reconcile_timer = Some(self.set_timer(self.cfg.reconcile_ms, Timer::Reconcile));
    }

    fn stop_reconcile(&mut self) {
        let timer = self.reconcile_timer.take();
        self.clear(timer);
    }

    fn start_heartbeat(&mut self) {
        self.last_frame_at = self.now;
        self.ping = None;
        if let Some(hb) = self.cfg.heartbeat {
            self.schedule_heartbeat(hb.interval_ms);
        }
    }

    fn stop_heartbeat(&mut self) {
        let timer = self.heartbeat_timer.take();
        self.clear(timer);
        self.ping = None;
    }

    fn schedule_heartbeat(&mut self, ms: u64) {
        let timer = self.heartbeat_timer.take();
        self.clear(timer);
        self.heartbeat_timer = Some(self.set_timer(ms, Timer::Heartbeat));
    }

    /// Any frame counts as liveness. After `interval_ms` of silence a ping goes
    /// out; if nothing at all arrives within `timeout_ms` after it, the socket
    /// is abandoned (as a close 4010) and the client reconnects.
    fn heartbeat_tick(&mut self) {
        let Some(hb) = self.cfg.heartbeat else { return };
        if self.socket.is_none() || self.state != ConnectionState::Open {
            return;
        }
        let now = self.now;
        if let Some((sent_at, frames)) = self.ping {
            if self.frames_received > frames {
                self.ping = None;
            } else {
                let waited = now - sent_at;
                if waited >= hb.timeout_ms {
                    self.teardown(Some((CLIENT_ABANDON, "heartbeat timeout")));
                    self.socket_gone(LOCAL_HEARTBEAT_TIMEOUT, "heartbeat timeout (no frame from the server)".into());
                    return;
                }
                self.schedule_heartbeat(hb.timeout_ms - waited);
                return;
            }
        }
        let idle = now.saturating_sub(self.last_frame_at);
        if idle >= hb.interval_ms {
            self.send_json(&serde_json::json!({"type": "ping"}));
            self.ping = Some((now, self.frames_received));
            self.schedule_heartbeat(hb.timeout_ms);
        } else {
            self.schedule_heartbeat(hb.interval_ms - idle);
        }
    }

    // ----------------------------------------------------------------- rooms

    fn room_index(&self, sub: u64) -> Option<usize> {
        self.rooms.iter().position(|r| r.sub == sub)
    }

    fn subscribe_now(&mut self, i: usize) {
        if self.state != ConnectionState::Open {
            return;
        }
        let room = &mut self.rooms[i];
        if matches!(room.wire, Wire::Subscribing | Wire::Active | Wire::Resyncing) {
            return;
        }
        if self.draining.contains(&room.name) {
            room.wire = Wire::Waiting;
            return;
        }
        let mut frame = serde_json::json!({"type": "subscribe", "room": room.name});
        if let Some(seq) = room.seq {
            frame["cursor"] = seq.into();
            if let Some(epoch) = &room.epoch {
                frame["epoch"] = epoch.clone().into();
            }
        } else if let Some(rewind) = room.rewind {
            frame["rewind"] = rewind.into();
        }
        if room.presence {
            frame["presence"] = true.into();
        }
        if self.send_json(&frame) {
            self.rooms[i].wire = Wire::Subscribing;
        }
    }

    fn socket_closed(&mut self, i: usize) {
        self.rooms[i].wire = Wire::Idle;
        self.rooms[i].awaiting_reset = false;
        let timer = self.rooms[i].subscribe_retry.take();
        self.clear(timer);
        self.cancel_heal(i);
    }

    fn client_closed(&mut self, i: usize, error: Option<ClientError>) {
        self.socket_closed(i);
        self.outputs.push_back(Output::RoomEnd { sub: self.rooms[i].sub, error });
    }

    fn on_subscribed(&mut self, i: usize, epoch: String, head: u64, echo: bool) {
        let room = &mut self.rooms[i];
        if room.wire != Wire::Subscribing {
            return;
        }
        room.wire = Wire::Active;
        room.echo = echo;
        room.subscribe_attempts = 0;
        room.subscribed_head = head;
        room.awaiting_reset = room.seq.is_some() && room.epoch.as_ref().is_some_and(|e| *e != epoch);
        if room.epoch.is_none() {
            room.epoch = Some(epoch.clone());
        }
        if room.seq.is_none() && room.rewind.is_none() {
            room.seq = Some(head); // a live start
        }
        room.subscribed_epoch = epoch;
    }

    fn on_reset(&mut self, i: usize, epoch: String, earliest: Option<u64>) {
        if self.rooms[i].wire != Wire::Active {
            return;
        }
        let previous = self.rooms[i].seq.map(|seq| Cursor { epoch: self.rooms[i].epoch.clone(), seq });
        self.cancel_heal(i);
        let room = &mut self.rooms[i];
        room.awaiting_reset = false;
        room.epoch = Some(epoch.clone());
        room.seq = Some(room.subscribed_head);
        room.own.clear(); // seqs of another log
        let reset = Reset { room: room.name.clone(), epoch, earliest, head: room.subscribed_head, previous };
        self.outputs.push_back(Output::Room { sub: room.sub, update: RoomUpdate::Reset(reset) });
    }

    fn on_event(&mut self, i: usize, event: WireEvent) {
        if self.rooms[i].wire != Wire::Active {
            return;
        }
        if self.rooms[i].awaiting_reset {
            let epoch = self.rooms[i].subscribed_epoch.clone();
            self.on_reset(i, epoch, None);
        }
        self.offer(i, event, Source::Socket);
    }

    fn on_presence(&mut self, i: usize, mut members: Vec<PresenceMember>) {
        let room = &mut self.rooms[i];
        if !room.presence || room.wire != Wire::Active {
            return;
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        room.members = members.clone();
        let update = PresenceUpdate::Members { room: room.name.clone(), members };
        self.outputs.push_back(Output::Presence { sub: room.sub, update });
    }

    fn on_membership(&mut self, i: usize, join: bool, member: PresenceMember) {
        let room = &mut self.rooms[i];
        if !room.presence || room.wire != Wire::Active {
            return;
        }
        room.members.retain(|m| m.id != member.id);
        if join {
            room.members.push(member.clone());
            room.members.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let (name, members) = (room.name.clone(), room.members.clone());
        let update = if join {
            PresenceUpdate::Join { room: name, member, members }
        } else {
            PresenceUpdate::Leave { room: name, member, members }
        };
        self.outputs.push_back(Output::Presence { sub: room.sub, update });
    }

    fn on_caught_up(&mut self, i: usize, seq: u64) {
        if self.rooms[i].wire != Wire::Active {
            return;
        }
        if self.rooms[i].awaiting_reset {
            let epoch = self.rooms[i].subscribed_epoch.clone();
            self.on_reset(i, epoch, None);
        }
        match self.rooms[i].seq {
            None => self.rooms[i].seq = Some(seq), // a rewind that found no events
            Some(cursor) if seq > cursor => self.request_heal(i, Some(seq)),
            Some(_) => {}
        }
    }

    /// `unsubscribed` (or `not_subscribed`) for this room.
    fn room_unsubscribed(&mut self, i: usize) {
        if self.rooms[i].wire == Wire::Resyncing {
            self.rooms[i].wire = Wire::Idle;
            self.subscribe_now(i);
        }
    }

    fn on_subscription_error(&mut self, i: usize, code: &str, message: &str) {
        let error = ClientError::new(code, message).with_room(self.rooms[i].name.clone());
        let wire = self.rooms[i].wire;
        match code {
            "already_subscribed" => {
                // The server still holds an older subscription of ours: restart it from the cursor.
                if wire == Wire::Subscribing {
                    self.rooms[i].wire = Wire::Active;
                    self.resync(i);
                }
            }
            "not_subscribed" => {
                self.room_unsubscribed(i);
                return; // expected while resyncing; not worth an error
            }
            "store_unavailable" | "over_capacity" | "rate_limited" => {
                // Refused for now (nothing subscribed): ask again after a backoff.
                if matches!(wire, Wire::Subscribing | Wire::Active) {
                    self.rooms[i].wire = Wire::Idle;
                    self.cancel_heal(i);
                    let backoff = self.cfg.reconnect.unwrap_or_default();
                    let random = (self.random)();
                    let delay = backoff.delay(self.rooms[i].subscribe_attempts, random);
                    self.rooms[i].subscribe_attempts += 1;
                    let timer = self.rooms[i].subscribe_retry.take();
                    self.clear(timer);
                    let sub = self.rooms[i].sub;
                    self.rooms[i].subscribe_retry = Some(self.set_timer(delay, Timer::SubscribeRetry(sub)));
                }
            }
            _ => {
                // Refused or ended by the server: nothing more comes for this room on
                // this socket. The next connection tries again.
                if matches!(wire, Wire::Subscribing | Wire::Active | Wire::Resyncing) {
                    self.rooms[i].wire = Wire::Failed;
                    self.cancel_heal(i);
                }
            }
        }
        self.emit_room_error(i, error);
    }

    fn emit_room_error(&mut self, i: usize, error: ClientError) {
        self.outputs.push_back(Output::Room { sub: self.rooms[i].sub, update: RoomUpdate::Error(error.clone()) });
        self.outputs.push_back(Output::Error(error));
    }

    fn reconcile_room(&mut self, i: usize) {
        let room = &self.rooms[i];
        if room.seq.is_none() || matches!(room.wire, Wire::Subscribing | Wire::Resyncing | Wire::Waiting) {
            return;
        }
        self.request_heal(i, None);
    }

    // -------------------------------------------------------------- delivery

    /// Delivers `event` if it is next, drops it if delivered, keeps it if ahead.
    fn offer(&mut self, i: usize, event: WireEvent, source: Source) {
        let Some(cursor) = self.rooms[i].seq else {
            // A rewind start: the first event of the subscription sets the base.
            if source == Source::Socket {
                self.deliver(i, event);
                self.drain(i);
            }
            return;
        };
        self.skip_own(i);
        let cursor = self.rooms[i].seq.unwrap_or(cursor);
        if event.seq <= cursor {
            return; // a duplicate, a replay overlapping what was delivered, or our own
        }
        if event.seq == cursor + 1 {
            self.deliver(i, event);
            self.drain(i);
            return;
        }
        // A gap: keep the event and fetch what is missing before delivering it
        // (in a no-echo room, once no ack of ours can fill it).
        let target = event.seq - 1;
        if self.rooms[i].buffer.len() < MAX_BUFFERED {
            self.rooms[i].buffer.insert(event.seq, event);
        }
        if source == Source::Socket && self.holding(i) {
            return;
        }
        self.request_heal(i, Some(target));
    }

    fn deliver(&mut self, i: usize, wire: WireEvent) {
        let room = &mut self.rooms[i];
        room.seq = Some(wire.seq);
        let event = Event { room: room.name.clone(), seq: wire.seq, ts: wire.ts, data: wire.data, epoch: room.epoch.clone() };
        self.outputs.push_back(Output::Room { sub: room.sub, update: RoomUpdate::Event(event) });
    }

    /// Delivers kept events that became contiguous; heals again if some are still ahead.
    fn drain(&mut self, i: usize) {
        loop {
            self.skip_own(i);
            let Some(cursor) = self.rooms[i].seq else { break };
            let Some(next) = self.rooms[i].buffer.remove(&(cursor + 1)) else { break };
            self.deliver(i, next);
        }
        let Some(cursor) = self.rooms[i].seq else { return };
        let room = &mut self.rooms[i];
        if room.buffer.is_empty() {
            return;
        }
        room.buffer.retain(|&seq, _| seq > cursor);
        if let Some((&lowest, _)) = room.buffer.iter().next() {
            if self.holding(i) && !self.rooms[i].healing {
                return; // an ack still on its way may explain the hole
            }
            self.request_heal(i, Some(lowest - 1));
        }
    }

    /// Makes sure everything through `target` gets delivered (`None`: a probe
    /// through the head the history route reports).
    fn request_heal(&mut self, i: usize, target: Option<u64>) {
        let room = &mut self.rooms[i];
        if let Some(target) = target {
            room.heal_target = room.heal_target.max(target);
        }
        if room.healing || matches!(room.wire, Wire::Subscribing | Wire::Resyncing | Wire::Waiting) {
            return;
        }
        room.healing = true;
        room.heal = Some(Heal {
            probe: target.is_none(),
            start_seq: room.seq,
            phase: HealPhase::AwaitingRefresh { after: 0, limit: 0 }, // replaced by heal_step
        });
        self.heal_step(i);
    }

    fn cancel_heal(&mut self, i: usize) {
        let room = &mut self.rooms[i];
        room.healing = false;
        room.heal_target = 0;
        room.buffer.clear();
        room.heal = None;
    }

    /// The top of the heal loop: fetch the next page, or finish.
    fn heal_step(&mut self, i: usize) {
        let room = &self.rooms[i];
        let Some(heal) = room.heal else { return };
        let Some(after) = room.seq else { return self.heal_finish(i, HealOutcome::Done) };
        if !heal.probe && after >= room.heal_target {
            return self.heal_finish(i, HealOutcome::Done);
        }
        let page = self.cfg.history_page_size.max(1);
        let limit = if heal.probe { page } else { page.min(room.heal_target - after).max(1) };
        self.fetch_history(i, after, limit, false);
    }

    fn fetch_history(&mut self, i: usize, after: u64, limit: u64, retried: bool) {
        let req = self.new_req();
        let name = self.rooms[i].name.clone();
        if let Some(heal) = self.rooms[i].heal.as_mut() {
            heal.phase = HealPhase::Fetching { req, retried, after, limit };
        }
        self.outputs.push_back(Output::HistoryGet {
            req,
            url: self.urls.history(&name, after, limit),
            room: name,
            after,
            limit,
            authorization: self.token.as_ref().map(|t| format!("Bearer {t}")),
        });
    }

    fn heal_page(&mut self, i: usize, page: HistoryPage) {
        let Some(current) = self.rooms[i].seq else { return self.heal_finish(i, HealOutcome::Done) };
        if self.rooms[i].epoch.is_none() && page.epoch.is_some() {
            self.rooms[i].epoch = page.epoch.clone(); // a cursor given without its epoch
        }
        if page.epoch != self.rooms[i].epoch && !(page.epoch.is_none() && current == 0) {
            return self.heal_finish(i, HealOutcome::Resync); // another epoch: the server decides with a reset
        }
        if current + 1 < page.earliest {
            return self.heal_finish(i, HealOutcome::Resync); // pruned: the resubscribe gets a reset
        }
        for event in page.events {
            self.offer(i, event, Source::History);
            if self.rooms[i].heal.is_none() {
                return;
            }
        }
        if let Some(heal) = self.rooms[i].heal.as_mut() {
            if heal.probe {
                heal.probe = false;
                self.rooms[i].heal_target = self.rooms[i].heal_target.max(page.head);
            }
        }
        let now = self.rooms[i].seq.unwrap_or(current);
        if now >= self.rooms[i].heal_target {
            return self.heal_finish(i, HealOutcome::Done);
        }
        if now == current {
            // No progress (the store has nothing usable past the cursor): ask the server again.
            return self.heal_finish(i, HealOutcome::Resync);
        }
        self.heal_step(i);
    }

    fn heal_finish(&mut self, i: usize, outcome: HealOutcome) {
        let room = &mut self.rooms[i];
        room.healing = false;
        let heal = room.heal.take();
        if outcome == HealOutcome::Resync {
            return self.resync(i);
        }
        if let Some(heal) = heal {
            if room.seq != heal.start_seq {
                tracing::debug!(room = %room.name, "gap healed from history");
            }
        }
        room.heal_target = 0;
        self.drain(i);
    }

    fn heal_failed(&mut self, i: usize, error: ClientError) {
        let room = &mut self.rooms[i];
        room.healing = false;
        room.heal = None;
        let needed = !room.buffer.is_empty() || room.seq.is_some_and(|s| room.heal_target > s);
        if !needed {
            // A reconciliation poll that failed: best effort, the next one tries again.
            room.heal_target = 0;
            return;
        }
        self.emit_room_error(i, error);
        // Fall back to the socket: resubscribing from the cursor replays the missing range.
        self.resync(i);
    }

    /// Restarts the subscription from the cursor: `unsubscribe`, then `subscribe` on `unsubscribed`.
    fn resync(&mut self, i: usize) {
        self.cancel_heal(i);
        if self.rooms[i].wire != Wire::Active || self.state != ConnectionState::Open {
            return; // the next (re)subscribe starts from the cursor anyway
        }
        let name = self.rooms[i].name.clone();
        if self.send_json(&serde_json::json!({"type": "unsubscribe", "room": name})) {
            self.rooms[i].wire = Wire::Resyncing;
        }
    }
}
