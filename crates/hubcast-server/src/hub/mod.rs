//! The hub: the in-memory actor for one room on one node.
//!
//! A hub holds the room's subscribers, the last seq it delivered, and a bounded
//! tail of recent event frames. It holds no authority: it learns of events from
//! the bus, checks them against its position, and heals any gap from the store
//! before delivering, so its subscribers see seq `last+1, last+2, …` with
//! nothing missing and nothing doubled.
//!
//! A hub is single-threaded by design and never awaits a socket: each frame is
//! encoded once and offered (`try_send`) to every subscriber's queue.
//!
//! **Invariant:** the write path never goes through a hub.
//!
//! Two optional duties cost nothing in rooms that do not use them:
//! - **batching** (a namespace with `batch_ms`): live events are coalesced
//!   into one `batch` frame, encoded once and shared, sent when the batch is
//!   `batch_max` events old or its window (counted from its first event) ends;
//! - **presence** ([`presence`]): created on first use in the room.
//!
//! Ephemeral messages come on the same feed: each is encoded once and
//! offered to the live subscribers at once (never batched, never in the
//! tail, `last` untouched), and dropped for a session whose queue is half
//! full instead of cutting it ([`Outbound::offer_droppable`]).
//!
//! Files: this one, the actor (start, its loop, delivery, gap filling);
//! `handle`, its handle and commands; `batching`; `presence_sync`, its
//! presence duties over [`presence`]'s state; `registry`, the node's hubs.

mod batching;
mod handle;
mod loader;
pub mod presence;
mod presence_sync;
pub mod registry;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use batching::Pending;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bus::{Bus, BusFeed, BusMessage, PresenceMessage};
use crate::event::{EphemeralMessage, Event, RoomState};
use crate::outbound::{Offer, Outbound};
use crate::protocol::codes::close;
use crate::protocol::{encode_ephemeral, encode_event, ServerMessage};
use crate::room::RoomName;
use crate::store::Store;

pub use handle::{HubCommand, HubHandle, HubStats, Joined};
pub use loader::StateLoader;
pub use presence::PresenceSettings;
pub use registry::Hubs;

/// Events fetched from the store per read while filling a gap.
const GAP_PAGE: usize = 1000;

struct Subscriber {
    out: Outbound,
    /// Events up to this seq were already sent to this subscriber by its own
    /// replay; skip them.
    skip_through: u64,
    /// The presence member this subscription counts for (presence subscribers only).
    member: Option<presence::MemberKey>,
    /// Gets `join`/`leave` frames.
    watching: bool,
    /// A Pusher connection: it gets Pusher frames (encoded once per event,
    /// like hubcast's), no `caught_up`, `reset` or `batch`. `None`: hubcast's
    /// own protocol.
    pusher: Option<Arc<PusherWire>>,
}

/// What a hub needs to know of a Pusher subscriber.
#[derive(Debug)]
pub struct PusherWire {
    /// The connection's `socket_id`: events that name it are not sent to it.
    pub socket_id: String,
    /// The Pusher channel name of the hub's room.
    pub channel: String,
    /// A cache channel: the room's last event (or `pusher:cache_miss`)
    /// follows `subscription_succeeded`.
    pub cache: bool,
    /// Set when the hub told this subscriber `pusher:cache_miss` (for the
    /// `cache_miss` webhook).
    pub cache_missed: std::sync::atomic::AtomicBool,
}

/// One room event's Pusher frame, encoded at most once per event (only when
/// the room has Pusher subscribers) and shared by all of them.
#[derive(Default)]
struct PusherFrame(Option<(Utf8Bytes, Option<String>)>);

impl PusherFrame {
    /// The frame for `sub`, or `None` when the event excludes its socket.
    fn for_sub(
        &mut self,
        wire: &PusherWire,
        data: &serde_json::value::RawValue,
    ) -> Option<Utf8Bytes> {
        let (frame, excluded) = self
            .0
            .get_or_insert_with(|| crate::pusher::frame::encode_event(&wire.channel, data));
        (excluded.as_deref() != Some(wire.socket_id.as_str())).then(|| frame.clone())
    }
}

/// Settings a hub runs with.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub tail: usize,
    pub idle: Duration,
    /// A broadcast slower than this is logged (rate-limited) and counted.
    pub slow_broadcast: Duration,
    /// Most subscribers of the room on this node (0: no limit).
    pub max_subscribers: usize,
    pub presence: PresenceSettings,
    /// The namespaces: a hub resolves its room's rules (subscriber cap,
    /// batching, echo) once, when it starts.
    pub namespaces: crate::namespace::Namespaces,
    /// Where occupancy and presence changes go when webhooks want them.
    pub signals: Option<crate::webhook::RoomSignals>,
}

pub(super) struct Hub {
    room: RoomName,
    store: Arc<dyn Store>,
    settings: HubSettings,
    /// Seq of the last event delivered (or the store's head when the hub started).
    last: u64,
    /// The epoch of the room's log as this hub follows it.
    epoch: String,
    /// The first seq the store still holds, as last heard (the hub's start,
    /// the reconcile, a gap fill that found pruning).
    earliest: u64,
    /// `(epoch, last, earliest)` for subscribers: what `subscribed` tells and
    /// a cursor is judged against, without a store read per subscriber.
    /// `None` until the hub has its room's state.
    view: tokio::sync::watch::Sender<Option<RoomState>>,
    /// How the hub learns its room's state when it starts.
    loader: StateLoader,
    /// Frames of the most recent events, oldest first, at most `settings.tail`.
    /// With each event's origin session, so a no-echo room's resume from the
    /// tail skips the sender's own events too, and the event itself, which a
    /// Pusher subscriber's start from the tail is encoded from.
    tail: VecDeque<(u64, Option<u64>, Utf8Bytes, Arc<Event>)>,
    subscribers: Vec<Subscriber>,
    bus: Arc<dyn Bus>,
    /// `(window, max)` when the room's namespace batches.
    batching: Option<(Duration, usize)>,
    /// `false`: a socket publish is not delivered to the session that sent it.
    echo: bool,
    pending: Pending,
    /// Whether the next broadcast writes the sockets itself (see [`Pace`]).
    pace: Pace,
    /// The epoch of the log this hub restarted with after a deletion, so a
    /// second notice of the same deletion is not a second `reset`.
    restarted: Option<String>,
    /// `None` until presence is first used in this room on this node.
    presence: Option<Box<presence::Presence>>,
    /// How many subscribers the hub has, as of its last step: what a new
    /// subscription is refused against before it is told `subscribed`.
    subscriber_count: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether this hub last told `settings.signals` the room has subscribers.
    occupied: bool,
    /// The subscriber count this hub last told `settings.signals` of.
    signalled_count: usize,
    /// The members this hub last told `settings.signals` are present on this node.
    signalled_members: std::collections::HashMap<String, crate::bus::PresenceMember>,
}

/// Starts a hub for `room`. The hub removes itself from `hubs` when idle.
pub(crate) fn spawn(
    id: u64,
    room: RoomName,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    settings: HubSettings,
    hubs: Hubs,
    loader: StateLoader,
) -> HubHandle {
    let (tx, rx) = mpsc::channel(1024);
    let (view, view_rx) = tokio::sync::watch::channel(None);
    let subscriber_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rules = settings.namespaces.for_room(&room);
    let batching = rules.batching();
    let echo = rules.echo();
    let mut settings = settings;
    settings.max_subscribers = rules.max_subscribers(settings.max_subscribers);
    let max_subscribers = settings.max_subscribers;
    let hub = Hub {
        room,
        store,
        settings,
        last: 0,
        epoch: String::new(),
        earliest: 1,
        view,
        loader,
        tail: VecDeque::new(),
        subscribers: Vec::new(),
        bus: bus.clone(),
        batching,
        echo,
        pending: Pending::default(),
        pace: Pace::default(),
        restarted: None,
        presence: None,
        subscriber_count: subscriber_count.clone(),
        occupied: false,
        signalled_count: 0,
        signalled_members: std::collections::HashMap::new(),
    };
    tokio::spawn(async move {
        use futures_util::FutureExt;
        let metrics = crate::metrics::get();
        metrics.hubs.increment(1.0);
        let room = hub.room.clone();
        let ran = std::panic::AssertUnwindSafe(hub.run(id, rx, bus, hubs.clone()))
            .catch_unwind()
            .await;
        if ran.is_err() {
            // The hub's subscribers were closed with 1012 as it unwound
            // (`Drop for Hub`); forget it, so the next subscriber starts a
            // fresh hub instead of joining a dead one.
            hubs.remove_if_current(&room, id);
            metrics.hub_panics.increment(1);
            tracing::error!(%room, "hub failed; its subscribers were told to resume");
        }
        metrics.hubs.decrement(1.0);
    });
    HubHandle {
        id,
        commands: tx,
        subscriber_count,
        max_subscribers,
        view: view_rx,
    }
}

impl Drop for Hub {
    /// A hub that unwinds from a panic closes its subscribers with 1012: they
    /// resume from their cursors on a fresh hub, where they would otherwise
    /// stay subscribed to a dead one and silently receive nothing.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for sub in &self.subscribers {
                sub.out.close(close::RESTART, "room restarting");
            }
        }
        // Its subscribers are gone with it (they resume on a fresh hub,
        // which tells of them again).
        self.signal_occupancy(false);
        if let Some(signals) = &self.settings.signals {
            for (_, member) in self.signalled_members.drain() {
                signals.send(crate::webhook::RoomSignal::Member(
                    self.room.clone(),
                    member,
                    false,
                ));
            }
        }
    }
}

impl Hub {
    /// Tells the occupancy task when the room gains its first subscriber on
    /// this node or loses its last.
    fn signal_occupancy(&mut self, occupied: bool) {
        if occupied == self.occupied {
            return;
        }
        self.occupied = occupied;
        if let Some(signals) = &self.settings.signals {
            signals.send(crate::webhook::RoomSignal::Occupied(
                self.room.clone(),
                occupied,
            ));
        }
    }

    /// Tells the Pusher `subscription_count` webhook's task when the room's
    /// subscriber count on this node changed (only when an endpoint wants it).
    fn signal_count(&mut self) {
        let Some(signals) = self.settings.signals.as_ref().filter(|s| s.wants_counts()) else {
            return;
        };
        if self.signalled_count != self.subscribers.len() {
            self.signalled_count = self.subscribers.len();
            signals.count_changed(&self.room);
        }
    }

    async fn run(
        mut self,
        id: u64,
        mut commands: mpsc::Receiver<HubCommand>,
        bus: Arc<dyn Bus>,
        hubs: Hubs,
    ) {
        // Watch before reading the head: an event committed in between is then
        // either counted in the head or seen on the feed (and dropped if both).
        let mut feed: Option<BusFeed> = match bus.watch(&self.room).await {
            Ok(feed) => Some(feed),
            Err(err) => {
                tracing::warn!(room = %self.room, error = %err, "bus watch failed; relying on reconcile");
                None
            }
        };
        // Every hub starting now shares one query (see `loader`); the
        // subscribers waiting for this hub's state wait with it.
        let state = match self.loader.load(&self.room).await {
            Some(state) => state,
            None => loop {
                match self.store.subscribe_state(&self.room).await {
                    Ok(state) => break state,
                    Err(err) => {
                        tracing::warn!(room = %self.room, error = %err, "hub cannot read the room state; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            },
        };
        self.last = state.head;
        self.epoch = state.epoch;
        self.earliest = state.earliest;
        self.publish_view();

        let mut idle_since = Some(Instant::now());
        loop {
            let idle_deadline = idle_since.map(|t| t + self.settings.idle);
            let batch_deadline = self.pending.deadline;
            let presence_deadline = self.presence.as_ref().and_then(|p| p.deadline());
            tokio::select! {
                biased;
                _ = sleep_until(batch_deadline) => self.flush(),
                command = commands.recv() => match command {
                    Some(HubCommand::Reconcile { state }) => {
                        // Events the bus brought already are not gaps:
                        // deliver them before comparing with the store.
                        while let Some(Ok(message)) = feed.as_mut().map(|feed| feed.try_recv()) {
                            match message {
                                BusMessage::Event(event) => self.on_event(event).await,
                                BusMessage::Ephemeral(message) => self.deliver_ephemeral(&message),
                            }
                        }
                        self.reconcile(state).await;
                    }
                    Some(command) => self.handle(command).await,
                    None => return,
                },
                message = recv_feed(&mut feed) => match message {
                    Some(BusMessage::Event(event)) => self.on_event(event).await,
                    Some(BusMessage::Ephemeral(message)) => self.deliver_ephemeral(&message),
                    None => {
                        tracing::warn!(room = %self.room, "bus feed closed; relying on reconcile");
                        feed = None;
                    }
                },
                message = recv_presence(&mut self.presence) => match message {
                    Some(message) => self.on_presence(message),
                    None => {
                        tracing::warn!(room = %self.room, "presence feed closed");
                        if let Some(presence) = self.presence.as_mut() {
                            presence.feed = None;
                        }
                    }
                },
                _ = sleep_until(presence_deadline) => self.on_presence_timer(),
                _ = sleep_until(idle_deadline) => {
                    if self.subscribers.is_empty() && hubs.remove_if_current(&self.room, id) {
                        // No new handle can be given out now. Drop whatever is
                        // still queued: a subscriber whose reply is dropped asks
                        // the registry again and gets a new hub.
                        commands.close();
                        while commands.recv().await.is_some() {}
                        return;
                    }
                    idle_since = None;
                }
            }
            self.subscriber_count
                .store(self.subscribers.len(), std::sync::atomic::Ordering::Relaxed);
            self.signal_occupancy(!self.subscribers.is_empty());
            self.signal_count();
            match (self.subscribers.is_empty(), idle_since) {
                (true, None) => idle_since = Some(Instant::now()),
                (false, Some(_)) => idle_since = None,
                _ => {}
            }
        }
    }

    async fn handle(&mut self, command: HubCommand) {
        match command {
            HubCommand::Subscribe {
                out,
                after,
                member,
                pusher,
                reply,
            } => {
                // A cache channel's last event, read from the store only
                // when the tail does not hold it.
                let last_event = match &pusher {
                    Some(wire) if wire.cache => self.last_event().await,
                    _ => None,
                };
                let Some(member) = member else {
                    let joined = match pusher {
                        None => self.subscribe(out, after, None),
                        Some(wire) => self.subscribe_pusher(out, None, wire, last_event.as_deref()),
                    };
                    let _ = reply.send(joined);
                    return;
                };
                self.ensure_presence().await;
                let presence = self.presence.as_ref().expect("presence was just ensured");
                if !presence.is_member(&member.id)
                    && presence.len() >= self.settings.presence.max_members
                {
                    let _ = reply.send(Joined::PresenceFull);
                    return;
                }
                let session_id = out.session_id;
                let key = presence::MemberKey {
                    id: member.id.clone(),
                    session: session_id,
                };
                let joined = match pusher {
                    None => self.subscribe(out, after, Some(key)),
                    Some(wire) => {
                        self.subscribe_pusher(out, Some(key), wire, last_event.as_deref())
                    }
                };
                if joined == Joined::Live
                    && self
                        .subscribers
                        .iter()
                        .any(|s| s.out.session_id == session_id)
                {
                    // Tell the others first, then give the newcomer the whole
                    // list (itself included) and start its deltas.
                    self.presence
                        .as_mut()
                        .expect("presence was just ensured")
                        .add_local(&member, session_id);
                    self.announce();
                    self.presence_changed();
                    if let Some(i) = self
                        .subscribers
                        .iter()
                        .position(|s| s.out.session_id == session_id)
                    {
                        // A cache channel's last event follows the member list.
                        let cached = self.subscribers[i]
                            .pusher
                            .as_ref()
                            .and_then(|wire| cache_frame(wire, last_event.as_deref()));
                        let presence = self.presence.as_mut().expect("presence is on");
                        if self.subscribers[i].pusher.is_some() && !presence.settled(Instant::now())
                        {
                            // Pusher's list must be whole (pusher-js builds
                            // its members from it): wait for the peers'
                            // answers to this hub's sync (`send_settled`).
                            presence.pusher_waiting.push((session_id, cached));
                            let _ = reply.send(joined);
                            return;
                        }
                        let snapshot = match &self.subscribers[i].pusher {
                            Some(wire) => crate::pusher::frame::presence_succeeded(
                                &wire.channel,
                                &presence.members(),
                            ),
                            None => presence.snapshot(&self.room),
                        };
                        let sub = &mut self.subscribers[i];
                        let queued = sub.out.offer(snapshot) == Offer::Queued
                            && cached.map_or(true, |frame| sub.out.offer(frame) == Offer::Queued);
                        if queued {
                            sub.watching = true;
                        } else {
                            let gone = self.subscribers.swap_remove(i);
                            self.members_left(gone.member.into_iter().collect());
                        }
                    }
                }
                let _ = reply.send(joined);
            }
            HubCommand::Presence { reply } => {
                self.ensure_presence().await;
                let presence = self.presence.as_mut().expect("presence was just ensured");
                if presence.settled(Instant::now()) {
                    let _ = reply.send(presence.members_since());
                } else {
                    presence.waiting.push(reply);
                }
            }
            HubCommand::Unsubscribe { session_id, done } => {
                if let Some(i) = self
                    .subscribers
                    .iter()
                    .position(|s| s.out.session_id == session_id)
                {
                    let gone = self.subscribers.swap_remove(i);
                    self.members_left(gone.member.into_iter().collect());
                }
                let _ = done.send(());
            }
            HubCommand::LogDeleted { epoch } => self.restart_log(epoch),
            HubCommand::Reconcile { state } => self.reconcile(state).await,
            HubCommand::Stats { reply } => {
                let _ = reply.send(HubStats {
                    subscribers: self.subscribers.len(),
                    last_seq: self.last,
                });
            }
        }
    }

    /// Compares the hub with the store's `state` (read by the periodic
    /// reconcile): fills what the bus lost, follows retention's `earliest`,
    /// and restarts after a deletion whose notice did not come.
    async fn reconcile(&mut self, state: RoomState) {
        if state.head < self.last || state.epoch != self.epoch {
            // The log was deleted and the notice did not reach this node
            // (or not yet). Confirm with a fresh read: `state` may predate a
            // deletion this hub has already followed.
            if let Ok(Some(now)) = self.store.room_state(&self.room).await {
                if now.head < self.last || now.epoch != self.epoch {
                    self.restart_log(now.epoch);
                }
            }
            return;
        }
        if state.earliest > self.earliest {
            self.earliest = state.earliest;
            self.publish_view();
        }
        if state.head > self.last {
            crate::metrics::get().reconciles.increment(1);
            tracing::debug!(room = %self.room, last = self.last, head = state.head, "reconcile found missed events");
            self.fill_gap(state.head).await;
        }
    }

    /// Tells waiting and future subscribers the hub's view of its room.
    fn publish_view(&self) {
        self.view.send_replace(Some(RoomState {
            epoch: self.epoch.clone(),
            head: self.last,
            earliest: self.earliest,
        }));
    }

    /// Hands a subscriber from its replay to the live stream: everything after
    /// `after` that the hub has delivered is queued from the tail, then
    /// `caught_up`, and from here on it gets every delivery. All of this
    /// happens inside one step of the actor, so no event can slip between.
    fn subscribe(
        &mut self,
        out: Outbound,
        after: u64,
        member: Option<presence::MemberKey>,
    ) -> Joined {
        if self.settings.max_subscribers > 0
            && self.subscribers.len() >= self.settings.max_subscribers
        {
            return Joined::Full;
        }
        let (skip_through, caught_up_seq) = if after >= self.last {
            // The subscriber's replay from the store reached at least as far as
            // the hub; skip what it already has.
            (after, after)
        } else {
            let reaches = self
                .tail
                .front()
                .is_some_and(|(first, _, _, _)| *first <= after + 1);
            if !reaches {
                return Joined::NeedStore { head: self.last };
            }
            let metrics = crate::metrics::get();
            let session = out.session_id;
            for (seq, origin, frame, _) in &self.tail {
                if *seq > after && (self.echo || *origin != Some(session)) {
                    metrics.deliveries.increment(1);
                    metrics
                        .totals
                        .delivered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if out.offer(frame.clone()) != Offer::Queued {
                        return Joined::Live;
                    }
                }
            }
            (self.last, self.last)
        };
        let caught_up = ServerMessage::CaughtUp {
            room: &self.room,
            seq: caught_up_seq,
        }
        .encode()
        .into();
        // Counted before its client can hear `caught_up`, so a subscribe that
        // follows it sees this one (the pre-check against the room's cap).
        self.subscribers.push(Subscriber {
            out,
            skip_through,
            member,
            watching: false,
            pusher: None,
        });
        self.subscriber_count
            .store(self.subscribers.len(), std::sync::atomic::Ordering::Relaxed);
        let queued = self
            .subscribers
            .last()
            .is_some_and(|sub| sub.out.offer(caught_up) == Offer::Queued);
        if !queued {
            self.subscribers.pop();
            self.subscriber_count
                .store(self.subscribers.len(), std::sync::atomic::Ordering::Relaxed);
        }
        Joined::Live
    }

    /// Registers a Pusher subscriber, live from the hub's position (Pusher
    /// has no resume), and queues its `pusher_internal:subscription_succeeded`
    /// (then a cache channel's last event or `pusher:cache_miss`) in the
    /// same step: whatever the hub delivers after its client hears
    /// `subscription_succeeded` reaches it. A presence subscriber (`member`)
    /// gets its greeting with the member list instead (`handle`).
    fn subscribe_pusher(
        &mut self,
        out: Outbound,
        member: Option<presence::MemberKey>,
        wire: Arc<PusherWire>,
        last_event: Option<&Event>,
    ) -> Joined {
        if self.settings.max_subscribers > 0
            && self.subscribers.len() >= self.settings.max_subscribers
        {
            return Joined::Full;
        }
        let greeting: Vec<Utf8Bytes> = if member.is_some() {
            Vec::new()
        } else {
            std::iter::once(crate::pusher::frame::subscription_succeeded(&wire.channel))
                .chain(cache_frame(&wire, last_event))
                .collect()
        };
        let queued = greeting
            .into_iter()
            .all(|frame| out.offer(frame) == Offer::Queued);
        if queued {
            self.subscribers.push(Subscriber {
                out,
                skip_through: self.last,
                member,
                watching: false,
                pusher: Some(wire),
            });
            self.subscriber_count
                .store(self.subscribers.len(), std::sync::atomic::Ordering::Relaxed);
        }
        Joined::Live
    }

    /// The room's last event (seq `last`), for a cache channel's new
    /// subscriber: the tail's newest, or read from the store once and kept
    /// in the tail for the next. `None` when the room has none (empty, or
    /// retention pruned it) or the store cannot be read now.
    async fn last_event(&mut self) -> Option<Arc<Event>> {
        if let Some((seq, _, _, event)) = self.tail.back() {
            if *seq == self.last {
                return Some(event.clone());
            }
        }
        if self.last == 0 || self.last < self.earliest {
            return None;
        }
        let page = match self.store.read(&self.room, self.last - 1, 1).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(room = %self.room, error = %err, "cannot read a cache channel's last event; answering cache_miss");
                return None;
            }
        };
        let event = Arc::new(page.events.into_iter().next()?);
        if event.seq != self.last {
            return None;
        }
        if self.tail.is_empty() && self.settings.tail > 0 {
            self.tail
                .push_back((event.seq, None, encode_event(&event), event.clone()));
        }
        Some(event)
    }

    async fn on_event(&mut self, event: Arc<Event>) {
        #[cfg(feature = "testing")]
        crate::testing::fault_point(event.data.get(), crate::testing::HUB_PANIC);
        if event.seq <= self.last {
            return; // Already delivered (duplicate or healed earlier).
        }
        if event.seq > self.last + 1 {
            crate::metrics::get().gap_fills.increment(1);
            self.fill_gap(event.seq - 1).await;
            if event.seq != self.last + 1 {
                // The store could not be read; the reconcile will bring it.
                return;
            }
        }
        self.deliver(event);
    }

    /// The room's log was deleted and goes on under `epoch` from seq 1:
    /// forget the old one, and tell every subscriber with a live `reset`
    /// (`head: 0`: the stream continues after 0, not after the head of its
    /// `subscribed`). The new log's events then arrive as usual.
    fn restart_log(&mut self, epoch: String) {
        if self.restarted.as_ref() == Some(&epoch) {
            return;
        }
        self.last = 0;
        self.earliest = 1;
        self.epoch.clone_from(&epoch);
        self.publish_view();
        self.tail.clear();
        self.pending = Pending::default();
        let reset: Utf8Bytes = ServerMessage::Reset {
            room: &self.room,
            epoch: &epoch,
            earliest: 1,
            head: Some(0),
        }
        .encode()
        .into();
        self.restarted = Some(epoch);
        for sub in &mut self.subscribers {
            sub.skip_through = 0;
        }
        // Pusher has no resets: its subscribers just go on with the new log.
        let (_, gone) = offer_all(&mut self.subscribers, true, |sub| {
            sub.pusher.is_none().then(|| reset.clone())
        });
        self.members_left(gone);
    }

    /// Reads events `last+1 ..= upto` from the store and delivers them.
    async fn fill_gap(&mut self, upto: u64) {
        while self.last < upto {
            let page = match self.store.read(&self.room, self.last, GAP_PAGE).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(room = %self.room, error = %err, "gap fill failed; will retry on reconcile");
                    return;
                }
            };
            let Some(first) = page.events.first() else {
                return;
            };
            if first.seq != self.last + 1 {
                // Retention pruned events this hub never delivered: its
                // subscribers cannot be served exactly any more. Cut them; they
                // resume from their cursors and get an explicit `reset`.
                tracing::warn!(room = %self.room, last = self.last, first = first.seq, "hub fell behind retention");
                let mut members = Vec::new();
                for sub in self.subscribers.drain(..) {
                    sub.out.close(close::SLOW_CONSUMER, "fell behind retention");
                    members.extend(sub.member);
                }
                self.tail.clear();
                self.pending = Pending::default();
                self.members_left(members);
                self.earliest = first.seq;
                self.publish_view();
            }
            for event in page.events {
                self.deliver(Arc::new(event));
            }
        }
    }

    /// Sends one event to every subscriber (now, or in the pending batch) and
    /// remembers its frame in the tail.
    fn deliver(&mut self, event: Arc<Event>) {
        let (seq, ts) = (event.seq, event.ts);
        let frame = encode_event(&event);
        self.last = seq;
        self.view.send_modify(|view| {
            if let Some(view) = view {
                view.head = seq;
            }
        });
        if self.tail.len() == self.settings.tail {
            self.tail.pop_front();
        }
        self.tail
            .push_back((seq, event.origin, frame.clone(), event.clone()));
        // The tail keeps single `event` frames (a resume is served from it);
        // live subscribers of a batching room get them in batches (Pusher
        // subscribers at once: Pusher has no batches).
        let mut pusher_frame = PusherFrame::default();
        if self.batching.is_some() && !self.subscribers.is_empty() {
            let (_, gone) = offer_all(&mut self.subscribers, true, |sub| {
                let wire = sub.pusher.as_ref()?;
                (seq > sub.skip_through).then_some(())?;
                pusher_frame.for_sub(wire, &event.data)
            });
            self.members_left(gone);
        }
        let Some(event) = self.hold_for_batch(event) else {
            return;
        };
        let started = std::time::Instant::now();
        // The shared frame goes to everyone but the sender of a no-echo room.
        let skip = if self.echo { None } else { event.origin };
        let write_now = self.pace.write_now(started);
        let (offered, gone) = offer_all(&mut self.subscribers, write_now, |sub| {
            if seq <= sub.skip_through || Some(sub.out.session_id) == skip {
                return None;
            }
            match &sub.pusher {
                None => Some(frame.clone()),
                Some(wire) => pusher_frame.for_sub(wire, &event.data),
            }
        });
        self.pace.broadcast_ended(started);
        self.note_broadcast(started, offered, frame.len(), std::slice::from_ref(&ts));
        self.members_left(gone);
    }

    /// Offers an ephemeral message to every live subscriber (but its sender
    /// in a no-echo room). It has no seq: the hub's position does not move,
    /// and it is not kept for resumes.
    fn deliver_ephemeral(&mut self, message: &EphemeralMessage) {
        let frame = encode_ephemeral(message);
        let skip = if self.echo { None } else { message.origin };
        let mut pusher_frame = PusherFrame::default();
        let (mut offered, mut dropped) = (0u64, 0u64);
        for sub in &self.subscribers {
            let frame = match &sub.pusher {
                None if Some(sub.out.session_id) == skip => continue,
                None => frame.clone(),
                // A client event never goes back to its sender (Pusher's rule).
                Some(_) if Some(sub.out.session_id) == message.origin => continue,
                Some(wire) => match pusher_frame.for_sub(wire, &message.data) {
                    Some(frame) => frame,
                    None => continue,
                },
            };
            if sub.out.offer_droppable(frame) {
                offered += 1;
            } else {
                dropped += 1;
            }
        }
        let metrics = crate::metrics::get();
        metrics.deliveries.increment(offered);
        metrics.bytes_out.increment(offered * frame.len() as u64);
        metrics.ephemeral_dropped.increment(dropped);
    }

    /// Metrics and the slow-broadcast warning for one delivery of events
    /// with timestamps `ts`; `offered` counts event deliveries.
    fn note_broadcast(
        &self,
        started: std::time::Instant,
        offered: u64,
        bytes_per_event: usize,
        ts: &[i64],
    ) {
        let metrics = crate::metrics::get();
        let took = started.elapsed();
        metrics.broadcast_duration.record(took);
        metrics.deliveries.increment(offered);
        metrics
            .bytes_out
            .increment(offered * bytes_per_event as u64);
        metrics
            .totals
            .delivered
            .fetch_add(offered, std::sync::atomic::Ordering::Relaxed);
        let now = crate::event::now_ms();
        for ts in ts {
            metrics
                .delivery_latency
                .record((now - ts).max(0) as f64 / 1000.0);
        }
        if took >= self.settings.slow_broadcast {
            metrics.slow_broadcasts.increment(1);
            warn_slow_broadcast(&self.room, took, self.subscribers.len());
        }
    }
}

/// What a cache channel's new subscriber gets after `subscription_succeeded`:
/// the room's last event as a Pusher event, or `pusher:cache_miss` when
/// there is none; `None` for a channel without cache.
fn cache_frame(wire: &PusherWire, last_event: Option<&Event>) -> Option<Utf8Bytes> {
    if !wire.cache {
        return None;
    }
    let hit = last_event.and_then(|event| PusherFrame::default().for_sub(wire, &event.data));
    Some(hit.unwrap_or_else(|| {
        wire.cache_missed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::pusher::frame::cache_miss(&wire.channel)
    }))
}

/// Offers `frame_for(sub)` to every subscriber it returns a frame for; drops
/// the subscribers whose queue refused. Returns the number of frames offered
/// and the presence members of the dropped subscribers. `write_now`: write
/// each socket with nothing waiting at once; otherwise leave every frame to
/// the sockets' writer tasks (see [`Pace`]).
fn offer_all(
    subscribers: &mut Vec<Subscriber>,
    write_now: bool,
    mut frame_for: impl FnMut(&Subscriber) -> Option<Utf8Bytes>,
) -> (u64, Vec<presence::MemberKey>) {
    let mut offered = 0u64;
    let mut gone = Vec::new();
    subscribers.retain_mut(|sub| {
        let Some(frame) = frame_for(sub) else {
            return true;
        };
        offered += 1;
        let offer = if write_now {
            sub.out.offer(frame)
        } else {
            sub.out.offer_to_writer(frame)
        };
        if offer == Offer::Queued {
            return true;
        }
        gone.extend(sub.member.take());
        false
    });
    (offered, gone)
}

/// Whether a broadcast writes the subscribers' sockets itself.
///
/// Writing at once costs one `writev` per frame and wakes nothing: the
/// cheapest delivery while the room is calm. When events come faster than
/// the hub writes them (a broadcast starts less than the previous one's
/// duration after it ended: the room kept the hub busy more than half the
/// time), the frames go to the sockets' writer tasks instead, which run
/// after the hub and write every frame waiting by then in one `writev`:
/// fewer writes, and fewer reads for clients, per delivery as load rises.
/// Writing every frame at once there cut a 10,000-subscriber room at full
/// rate from 335k to 133k deliveries/s (BENCHMARKS.md, issue 21).
#[derive(Default)]
struct Pace {
    /// When the last broadcast ended, and how long it took.
    last: Option<(std::time::Instant, Duration)>,
}

impl Pace {
    fn write_now(&self, now: std::time::Instant) -> bool {
        self.last
            .is_none_or(|(ended, took)| now.saturating_duration_since(ended) >= took)
    }

    fn broadcast_ended(&mut self, started: std::time::Instant) {
        let now = std::time::Instant::now();
        self.last = Some((now, now - started));
    }
}

/// Logs a slow broadcast, at most once a second across the node, so a
/// struggling node does not also flood its log.
fn warn_slow_broadcast(room: &RoomName, took: Duration, subscribers: usize) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_WARNING_MS: AtomicI64 = AtomicI64::new(0);
    let now = crate::event::now_ms();
    let last = LAST_WARNING_MS.load(Ordering::Relaxed);
    if now - last >= 1000
        && LAST_WARNING_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(room = %room, took_ms = took.as_secs_f64() * 1000.0, subscribers, "slow broadcast");
    }
}

async fn recv_feed(feed: &mut Option<BusFeed>) -> Option<BusMessage> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_presence(
    presence: &mut Option<Box<presence::Presence>>,
) -> Option<Arc<PresenceMessage>> {
    match presence.as_mut().and_then(|p| p.feed.as_mut()) {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
