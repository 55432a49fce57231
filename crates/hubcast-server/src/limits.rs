//! Rate limits and connection caps: the node's defence against one client
//! taking more than its share.
//!
//! Rates use governor's GCRA limiters; the per-IP and per-key state is pruned
//! on an interval so it stays bounded however many addresses come and go.
//! Caps are plain counters taken when a session opens and given back (by a
//! guard's drop) when it ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;

/// The `[rate_limits]` section. 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// WebSocket connects per client address per minute (over: HTTP 429).
    pub connects_per_ip_per_minute: u32,
    /// Messages one session may send per second (over: close 4008). A Pusher
    /// socket's client events count apart at the same rate; over it they are
    /// dropped with `pusher:error` 4301 (docs/pusher.md).
    pub messages_per_session_per_second: u32,
    /// HTTP publishes per credential (API key, token subject, or address) per second (over: 429).
    pub publishes_per_key_per_second: u32,
    /// Sessions on this node (over: close 1013).
    pub max_connections: usize,
    /// Sessions per client address (over: close 1013).
    pub max_connections_per_ip: usize,
    /// Subscribers of one room on this node (over: `over_capacity`, or 1013 on a room URL).
    pub max_subscribers_per_room: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            connects_per_ip_per_minute: 600,
            messages_per_session_per_second: 200,
            publishes_per_key_per_second: 0,
            max_connections: 200_000,
            max_connections_per_ip: 20_000,
            max_subscribers_per_room: 0,
        }
    }
}

/// Keyed limiter state is pruned when it holds more keys than this.
const MAX_KEYS: usize = 100_000;

/// The node's limiters and counters.
pub struct Limits {
    config: RateLimitConfig,
    connects: Option<DefaultKeyedRateLimiter<IpAddr>>,
    publishes: Option<DefaultKeyedRateLimiter<String>>,
    /// A std mutex: held only to adjust a count.
    connections: Mutex<Counts<IpAddr>>,
}

struct Counts<K: Hash + Eq> {
    total: usize,
    per_key: HashMap<K, usize>,
}

impl<K: Hash + Eq> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            total: 0,
            per_key: HashMap::new(),
        }
    }
}

/// Why a limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connection attempts from this address; retry later")]
    ConnectRate,
    #[error("too many publishes; retry later")]
    PublishRate,
    #[error("this node is at its connection limit; try again later")]
    NodeFull,
    #[error("too many connections from this address")]
    AddressFull,
}

/// A quota of `n` per second, or `None` for 0 (no limit).
fn per_second(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_second)
}

impl Limits {
    pub fn new(config: &RateLimitConfig) -> Arc<Limits> {
        Arc::new(Limits {
            config: config.clone(),
            connects: NonZeroU32::new(config.connects_per_ip_per_minute)
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))),
            publishes: per_second(config.publishes_per_key_per_second)
                .map(DefaultKeyedRateLimiter::keyed),
            connections: Mutex::new(Counts::default()),
        })
    }

    /// Counts a connection attempt from `ip` against its rate.
    pub fn check_connect(&self, ip: IpAddr) -> Result<(), Refusal> {
        match &self.connects {
            Some(limiter) if limiter.check_key(&ip).is_err() => Err(Refusal::ConnectRate),
            _ => Ok(()),
        }
    }

    /// Counts a publish by `key` against its rate.
    /// `key` is only built when a publish rate is configured: by default
    /// publishes are unlimited and a publish allocates no key.
    pub fn check_publish(&self, key: impl FnOnce() -> String) -> Result<(), Refusal> {
        match &self.publishes {
            Some(limiter) if limiter.check_key(&key()).is_err() => Err(Refusal::PublishRate),
            _ => Ok(()),
        }
    }

    /// Counts `n` publishes by `key` at once (an atomic batch of `n` events):
    /// all of them fit in the rate, or the batch is refused whole. A batch of
    /// more events than the rate's one-second burst can never fit.
    pub fn check_publishes(&self, key: impl FnOnce() -> String, n: usize) -> Result<(), Refusal> {
        let Some(limiter) = &self.publishes else {
            return Ok(());
        };
        let n = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&key(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Refusal::PublishRate),
        }
    }

    /// Takes a connection slot for `ip`; the slot is given back when the guard drops.
    pub fn open_connection(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let mut counts = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if self.config.max_connections > 0 && counts.total >= self.config.max_connections {
            return Err(Refusal::NodeFull);
        }
        let for_ip = counts.per_key.get(&ip).copied().unwrap_or(0);
        if self.config.max_connections_per_ip > 0 && for_ip >= self.config.max_connections_per_ip {
            return Err(Refusal::AddressFull);
        }
        counts.total += 1;
        counts.per_key.insert(ip, for_ip + 1);
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// A limiter for one session's messages, or `None` when unlimited.
    pub fn session_messages(&self) -> Option<DefaultDirectRateLimiter> {
        let rate = NonZeroU32::new(self.config.messages_per_session_per_second)?;
        // Allow short bursts of twice the rate (a client subscribing to many
        // rooms at once), not a sustained flood.
        let burst = NonZeroU32::new(rate.get().saturating_mul(2)).unwrap_or(rate);
        Some(DefaultDirectRateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    }

    /// Forgets limiter state of keys that are back to full allowance; keeps
    /// memory bounded under address churn. Run on an interval.
    pub fn prune(&self) {
        if let Some(limiter) = &self.connects {
            limiter.retain_recent();
            if limiter.len() > MAX_KEYS {
                limiter.shrink_to_fit();
            }
        }
        if let Some(limiter) = &self.publishes {
            limiter.retain_recent();
        }
    }
}

/// A held connection slot; dropping it gives the slot back.
pub struct ConnectionSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self
            .limits
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_key.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_key.remove(&self.ip);
            }
        }
    }
}

/// The key publish rates are counted by, for HTTP and socket publishes alike:
/// the credential's name, else the address.
pub fn rate_key(principal: &Principal, ip: IpAddr) -> String {
    match principal {
        Principal::ApiKey { name, .. } => format!("key:{name}"),
        Principal::Token(claims) => match &claims.sub {
            Some(sub) => format!("sub:{sub}"),
            None => format!("ip:{ip}"),
        },
        Principal::Anonymous { .. } => format!("ip:{ip}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_taken_and_given_back() {
        let limits = Limits::new(&RateLimitConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Default::default()
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = limits.open_connection(a).unwrap();
        let _second = limits.open_connection(a).unwrap();
        assert_eq!(limits.open_connection(a).err(), Some(Refusal::AddressFull));
        let _third = limits.open_connection(b).unwrap();
        assert_eq!(limits.open_connection(b).err(), Some(Refusal::NodeFull));
        drop(first);
        assert!(limits.open_connection(a).is_ok());
    }

    #[test]
    fn connect_rate_is_per_address() {
        let limits = Limits::new(&RateLimitConfig {
            connects_per_ip_per_minute: 2,
            ..Default::default()
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(limits.check_connect(a).is_ok());
        assert!(limits.check_connect(a).is_ok());
        assert_eq!(limits.check_connect(a), Err(Refusal::ConnectRate));
        assert!(limits.check_connect("127.0.0.2".parse().unwrap()).is_ok());
    }
}
