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

pub mod registry;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::bus::{Bus, BusFeed};
use crate::event::Event;
use crate::protocol::codes::close;
use crate::protocol::{encode_event, ServerMessage};
use crate::room::RoomName;
use crate::session::outbound::{Offer, Outbound};
use crate::store::Store;

pub use registry::Hubs;

/// Events fetched from the store per read while filling a gap.
const GAP_PAGE: usize = 1000;

/// A cloneable handle to a running hub.
#[derive(Debug, Clone)]
pub struct HubHandle {
    pub(crate) id: u64,
    commands: mpsc::Sender<HubCommand>,
}

/// Messages a hub acts on.
#[derive(Debug)]
pub enum HubCommand {
    /// Add a subscriber that has processed the room up to `after`.
    Subscribe { out: Outbound, after: u64, reply: oneshot::Sender<Joined> },
    /// Remove a subscriber; the reply is sent once it will get no more frames.
    Unsubscribe { session_id: u64, done: oneshot::Sender<()> },
    /// The store's head is at least `head` (periodic reconcile).
    Reconcile { head: u64 },
    Stats { reply: oneshot::Sender<HubStats> },
}

/// The answer to a subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The subscriber is live: everything after `after` up to the hub's head
    /// was queued, followed by `caught_up`.
    Live,
    /// The hub's tail does not reach back to `after`: replay from the store up
    /// to at least `head`, then subscribe again.
    NeedStore { head: u64 },
    /// The room has `max_subscribers` subscribers on this node already.
    Full,
}

/// A hub's numbers, for room stats.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubStats {
    pub subscribers: usize,
    pub last_seq: u64,
}

/// Why a hub could not be reached.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("hub has stopped")]
pub struct HubGone;

impl HubHandle {
    /// Subscribes `out` from `after`; see [`Joined`].
    pub async fn subscribe(&self, out: Outbound, after: u64) -> Result<Joined, HubGone> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(HubCommand::Subscribe { out, after, reply }).await.map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }

    /// Removes the session; when this returns the hub will not offer it
    /// another frame (a stopped hub offers nothing anyway).
    pub async fn unsubscribe(&self, session_id: u64) {
        let (done, rx) = oneshot::channel();
        if self.commands.send(HubCommand::Unsubscribe { session_id, done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Tells the hub the store's head; never waits (a full mailbox means the
    /// hub is busy and will be told again next interval).
    pub fn reconcile(&self, head: u64) {
        let _ = self.commands.try_send(HubCommand::Reconcile { head });
    }

    pub async fn stats(&self) -> Result<HubStats, HubGone> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(HubCommand::Stats { reply }).await.map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }
}

struct Subscriber {
    out: Outbound,
    /// Events up to this seq were already sent to this subscriber by its own
    /// replay; skip them.
    skip_through: u64,
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
}

struct Hub {
    room: RoomName,
    store: Arc<dyn Store>,
    settings: HubSettings,
    /// Seq of the last event delivered (or the store's head when the hub started).
    last: u64,
    /// Frames of the most recent events, oldest first, at most `settings.tail`.
    tail: VecDeque<(u64, Utf8Bytes)>,
    subscribers: Vec<Subscriber>,
}

/// Starts a hub for `room`. The hub removes itself from `hubs` when idle.
pub(crate) fn spawn(
    id: u64,
    room: RoomName,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    settings: HubSettings,
    hubs: Hubs,
) -> HubHandle {
    let (tx, rx) = mpsc::channel(1024);
    let hub = Hub { room, store, settings, last: 0, tail: VecDeque::new(), subscribers: Vec::new() };
    tokio::spawn(async move {
        let metrics = crate::metrics::get();
        metrics.hubs.increment(1.0);
        hub.run(id, rx, bus, hubs).await;
        metrics.hubs.decrement(1.0);
    });
    HubHandle { id, commands: tx }
}

impl Hub {
    async fn run(mut self, id: u64, mut commands: mpsc::Receiver<HubCommand>, bus: Arc<dyn Bus>, hubs: Hubs) {
        // Watch before reading the head: an event committed in between is then
        // either counted in the head or seen on the feed (and dropped if both).
        let mut feed: Option<BusFeed> = match bus.watch(&self.room).await {
            Ok(feed) => Some(feed),
            Err(err) => {
                tracing::warn!(room = %self.room, error = %err, "bus watch failed; relying on reconcile");
                None
            }
        };
        self.last = loop {
            match self.store.room_state(&self.room).await {
                Ok(state) => break state.map_or(0, |s| s.head),
                Err(err) => {
                    tracing::warn!(room = %self.room, error = %err, "hub cannot read the room head; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };

        let mut idle_since = Some(Instant::now());
        loop {
            let idle_deadline = idle_since.map(|t| t + self.settings.idle);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => return,
                },
                event = recv_feed(&mut feed) => match event {
                    Some(event) => self.on_event(event).await,
                    None => {
                        tracing::warn!(room = %self.room, "bus feed closed; relying on reconcile");
                        feed = None;
                    }
                },
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
            match (self.subscribers.is_empty(), idle_since) {
                (true, None) => idle_since = Some(Instant::now()),
                (false, Some(_)) => idle_since = None,
                _ => {}
            }
        }
    }

    async fn handle(&mut self, command: HubCommand) {
        match command {
            HubCommand::Subscribe { out, after, reply } => {
                let joined = self.subscribe(out, after);
                let _ = reply.send(joined);
            }
            HubCommand::Unsubscribe { session_id, done } => {
                if let Some(i) = self.subscribers.iter().position(|s| s.out.session_id == session_id) {
                    self.subscribers.swap_remove(i);
                }
                let _ = done.send(());
            }
            HubCommand::Reconcile { head } => {
                if head > self.last {
                    crate::metrics::get().reconciles.increment(1);
                    tracing::debug!(room = %self.room, last = self.last, head, "reconcile found missed events");
                    self.fill_gap(head).await;
                }
            }
            HubCommand::Stats { reply } => {
                let _ = reply.send(HubStats { subscribers: self.subscribers.len(), last_seq: self.last });
            }
        }
    }

    /// Hands a subscriber from its replay to the live stream: everything after
    /// `after` that the hub has delivered is queued from the tail, then
    /// `caught_up`, and from here on it gets every delivery. All of this
    /// happens inside one step of the actor, so no event can slip between.
    fn subscribe(&mut self, out: Outbound, after: u64) -> Joined {
        if self.settings.max_subscribers > 0 && self.subscribers.len() >= self.settings.max_subscribers {
            return Joined::Full;
        }
        let (skip_through, caught_up_seq) = if after >= self.last {
            // The subscriber's replay from the store reached at least as far as
            // the hub; skip what it already has.
            (after, after)
        } else {
            let reaches = self.tail.front().is_some_and(|(first, _)| *first <= after + 1);
            if !reaches {
                return Joined::NeedStore { head: self.last };
            }
            let metrics = crate::metrics::get();
            for (seq, frame) in &self.tail {
                if *seq > after {
                    metrics.deliveries.increment(1);
                    metrics.totals.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if out.offer(frame.clone()) != Offer::Queued {
                        return Joined::Live;
                    }
                }
            }
            (self.last, self.last)
        };
        let caught_up = ServerMessage::CaughtUp { room: &self.room, seq: caught_up_seq }.encode().into();
        if out.offer(caught_up) == Offer::Queued {
            self.subscribers.push(Subscriber { out, skip_through });
        }
        Joined::Live
    }

    async fn on_event(&mut self, event: Arc<Event>) {
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
        let frame = encode_event(&event);
        self.deliver(event.seq, event.ts, frame);
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
            let Some(first) = page.events.first() else { return };
            if first.seq != self.last + 1 {
                // Retention pruned events this hub never delivered: its
                // subscribers cannot be served exactly any more. Cut them; they
                // resume from their cursors and get an explicit `reset`.
                tracing::warn!(room = %self.room, last = self.last, first = first.seq, "hub fell behind retention");
                for sub in self.subscribers.drain(..) {
                    sub.out.close(close::SLOW_CONSUMER, "fell behind retention");
                }
                self.tail.clear();
            }
            for event in &page.events {
                self.deliver(event.seq, event.ts, encode_event(event));
            }
        }
    }

    /// Sends one event frame to every subscriber and remembers it in the tail.
    fn deliver(&mut self, seq: u64, ts: i64, frame: Utf8Bytes) {
        let started = std::time::Instant::now();
        self.last = seq;
        let mut offered = 0u64;
        self.subscribers.retain(|sub| {
            if seq <= sub.skip_through {
                return true;
            }
            offered += 1;
            sub.out.offer(frame.clone()) == Offer::Queued
        });
        let metrics = crate::metrics::get();
        let took = started.elapsed();
        metrics.broadcast_duration.record(took);
        metrics.deliveries.increment(offered);
        metrics.bytes_out.increment(offered * frame.len() as u64);
        metrics.totals.delivered.fetch_add(offered, std::sync::atomic::Ordering::Relaxed);
        metrics.delivery_latency.record((crate::event::now_ms() - ts).max(0) as f64 / 1000.0);
        if took >= self.settings.slow_broadcast {
            metrics.slow_broadcasts.increment(1);
            warn_slow_broadcast(&self.room, took, self.subscribers.len());
        }
        if self.tail.len() == self.settings.tail {
            self.tail.pop_front();
        }
        self.tail.push_back((seq, frame));
    }
}

/// Logs a slow broadcast, at most once a second across the node, so a
/// struggling node does not also flood its log.
fn warn_slow_broadcast(room: &RoomName, took: Duration, subscribers: usize) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_WARNING_MS: AtomicI64 = AtomicI64::new(0);
    let now = crate::event::now_ms();
    let last = LAST_WARNING_MS.load(Ordering::Relaxed);
    if now - last >= 1000 && LAST_WARNING_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(room = %room, took_ms = took.as_secs_f64() * 1000.0, subscribers, "slow broadcast");
    }
}

async fn recv_feed(feed: &mut Option<BusFeed>) -> Option<Arc<Event>> {
    match feed {
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
