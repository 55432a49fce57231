//! A room hook's answers, reused per (user, room) for `cache_ms`.
//!
//! Bounded: at [`MAX_ENTRIES`] the expired entries are dropped, and if that is
//! not enough, all of them (the hook is simply asked again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::room::RoomName;

/// The most answers one hook keeps.
const MAX_ENTRIES: usize = 100_000;

pub struct DecisionCache {
    ttl: Duration,
    /// (user, room) → (when the answer expires, allowed).
    entries: Mutex<HashMap<(String, RoomName), (Instant, bool)>>,
}

impl DecisionCache {
    /// A cache that keeps answers for `ttl` (zero: keeps nothing).
    pub fn new(ttl: Duration) -> DecisionCache {
        DecisionCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for (user, room) if one is fresh. Anonymous askers
    /// (`user` = `None`) are never answered from the cache.
    pub fn get(&self, user: Option<&str>, room: &RoomName) -> Option<bool> {
        let user = user.filter(|_| !self.ttl.is_zero())?;
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (expires, allowed) = entries.get(&(user.to_owned(), room.clone()))?;
        (*expires > Instant::now()).then_some(*allowed)
    }

    pub fn put(&self, user: Option<&str>, room: &RoomName, allowed: bool) {
        let Some(user) = user.filter(|_| !self.ttl.is_zero()) else {
            return;
        };
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert((user.to_owned(), room.clone()), (now + self.ttl, allowed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_per_user_and_room_and_never_for_anonymous() {
        let cache = DecisionCache::new(Duration::from_secs(60));
        let room = RoomName::parse("chat:a").unwrap();
        let other = RoomName::parse("chat:b").unwrap();
        cache.put(Some("alice"), &room, true);
        cache.put(Some("bob"), &room, false);
        cache.put(None, &room, true);
        assert_eq!(cache.get(Some("alice"), &room), Some(true));
        assert_eq!(cache.get(Some("bob"), &room), Some(false));
        assert_eq!(cache.get(Some("alice"), &other), None);
        assert_eq!(cache.get(None, &room), None);
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let cache = DecisionCache::new(Duration::ZERO);
        let room = RoomName::parse("chat:a").unwrap();
        cache.put(Some("alice"), &room, true);
        assert_eq!(cache.get(Some("alice"), &room), None);
    }
}
