//! The core's clock and timers. The core never sleeps: it sets timers here,
//! the driver asks for the next deadline, and the timers fire in order when
//! the driver moves the time ([`super::Core::advance_to`]). The tests move a
//! fake clock the same way.

use std::collections::BTreeMap;

use super::Millis;

/// A set timer: when it is due, and a sequence number so two timers due at
/// the same moment fire in the order they were set.
pub(super) type TimerId = (Millis, u64);

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    Reconnect,
    /// Connection attempt `gen` has not opened in time.
    ConnectTimeout(u64),
    Reconcile,
    Heartbeat,
    /// Publishes are paced: send the next ones.
    Pump,
    /// Subscribe subscription `sub` again after a refusal.
    SubscribeRetry(u64),
    /// Resend publish `key` after a refusal.
    PublishRetry(u64),
    /// Publish `key` was not acknowledged in time.
    PublishTimeout(u64),
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    now: Millis,
    queue: BTreeMap<TimerId, Timer>,
    seq: u64,
}

impl Timers {
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Sets `timer` to fire `delay` ms from now.
    pub fn set(&mut self, delay: u64, timer: Timer) -> TimerId {
        self.seq += 1;
        let id = (self.now + delay, self.seq);
        self.queue.insert(id, timer);
        id
    }

    /// Cancels the timer in `slot`, if any, and empties the slot.
    pub fn cancel(&mut self, slot: &mut Option<TimerId>) {
        if let Some(id) = slot.take() {
            self.queue.remove(&id);
        }
    }

    /// The time of the next timer, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// Takes the earliest timer due by `until`, moving the clock to its time.
    pub fn pop_due(&mut self, until: Millis) -> Option<Timer> {
        let (&id, &timer) = self.queue.iter().next()?;
        if id.0 > until {
            return None;
        }
        self.queue.remove(&id);
        self.now = self.now.max(id.0);
        Some(timer)
    }

    /// Moves the clock to `now` (never backwards).
    pub fn advance(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }
}
