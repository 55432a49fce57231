//! Namespaces: room-name prefixes with their own rules (public, read-only,
//! batching, echo, retention, size and subscriber caps). The longest matching
//! prefix wins. [`Namespaces::for_room`] is the one place that resolves it;
//! a hub resolves its room's rules once when it starts, a request once per
//! request, and a new namespace option is a field here and its reader.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A room prefix with its own rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Rooms whose name starts with this belong to the namespace.
    pub prefix: String,
    /// Anyone may subscribe, without credentials.
    pub public: bool,
    /// Clients (tokens) may not publish; API keys still may.
    pub read_only: bool,
    /// Coalesce a room's live events into `batch` frames for up to this many
    /// milliseconds (0: one `event` frame per event). Read by the hub.
    pub batch_ms: u64,
    /// A batch is sent once it holds this many events, even inside its window.
    pub batch_max: usize,
    /// Events kept per room of the namespace (overrides `retention.max_events`; 0 keeps all).
    pub max_events: Option<u64>,
    /// Age past which the namespace's events are pruned (overrides `retention.max_age_secs`).
    pub max_age_secs: Option<u64>,
    /// Largest event in the namespace (overrides `limits.max_event_bytes`, up to it).
    pub max_event_bytes: Option<usize>,
    /// Subscribers per room of the namespace on a node (overrides `rate_limits.max_subscribers_per_room`; 0: no cap).
    pub max_subscribers_per_room: Option<usize>,
    /// Whether a socket publish is also delivered to the session that sent
    /// it (`false`: the sender has its `ack`; see docs/protocol.md). Read by the hub.
    pub echo: bool,
    /// Whether publishes may be ephemeral (delivered live, never stored):
    /// `"off"` (the default), `"allowed"` (per publish, `"ephemeral": true`)
    /// or `"only"` (every publish is).
    pub ephemeral: Ephemeral,
}

/// A namespace's `ephemeral` option.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Ephemeral {
    /// Every publish is stored; `"ephemeral": true` is refused.
    #[default]
    Off,
    /// A publish is ephemeral when it says so.
    Allowed,
    /// Every publish is ephemeral, whether it says so or not.
    Only,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            prefix: String::new(),
            public: false,
            read_only: false,
            batch_ms: 0,
            batch_max: 64,
            max_events: None,
            max_age_secs: None,
            max_event_bytes: None,
            max_subscribers_per_room: None,
            echo: true,
            ephemeral: Ephemeral::Off,
        }
    }
}

/// Every configured namespace, ready to be resolved per room.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    list: Arc<[Arc<NamespaceConfig>]>,
}

impl Namespaces {
    pub fn new(config: &[NamespaceConfig]) -> Namespaces {
        Namespaces {
            list: config.iter().cloned().map(Arc::new).collect(),
        }
    }

    /// Whether any namespace sets a retention limit of its own.
    pub fn any_prunes(&self) -> bool {
        self.list
            .iter()
            .any(|n| n.max_events.unwrap_or(0) > 0 || n.max_age_secs.unwrap_or(0) > 0)
    }

    /// The rules of `room`: those of its longest matching namespace prefix,
    /// or the defaults when none matches.
    pub fn for_room(&self, room: &str) -> NamespaceRules {
        let namespace = self
            .list
            .iter()
            .filter(|n| room.starts_with(&n.prefix))
            .max_by_key(|n| n.prefix.len());
        NamespaceRules(namespace.cloned())
    }
}

/// One room's namespace rules, resolved; each reader applies the node-wide
/// value where the namespace sets none.
#[derive(Debug, Clone, Default)]
pub struct NamespaceRules(Option<Arc<NamespaceConfig>>);

impl NamespaceRules {
    /// Anyone may subscribe, without credentials.
    pub fn is_public(&self) -> bool {
        self.0.as_ref().is_some_and(|n| n.public)
    }

    /// Tokens may not publish (API keys still may).
    pub fn is_read_only(&self) -> bool {
        self.0.as_ref().is_some_and(|n| n.read_only)
    }

    /// Whether a socket publish is delivered to its sender too.
    pub fn echo(&self) -> bool {
        self.0.as_ref().map_or(true, |n| n.echo)
    }

    /// Whether a publish that asked for `ephemeral` (or not) is one:
    /// `Err(())` when it asked and the namespace does not allow it.
    #[allow(clippy::result_unit_err)]
    pub fn ephemeral(&self, asked: bool) -> Result<bool, ()> {
        match self.0.as_ref().map_or(Ephemeral::Off, |n| n.ephemeral) {
            Ephemeral::Off if asked => Err(()),
            Ephemeral::Off => Ok(false),
            Ephemeral::Allowed => Ok(asked),
            Ephemeral::Only => Ok(true),
        }
    }

    /// The batching window and size, if live events are batched.
    pub fn batching(&self) -> Option<(Duration, usize)> {
        let n = self.0.as_ref()?;
        (n.batch_ms > 0 && n.batch_max > 1)
            .then(|| (Duration::from_millis(n.batch_ms), n.batch_max))
    }

    /// Most subscribers of the room on one node (0: no cap).
    pub fn max_subscribers(&self, node_wide: usize) -> usize {
        self.0
            .as_ref()
            .and_then(|n| n.max_subscribers_per_room)
            .unwrap_or(node_wide)
    }

    /// The largest event: the namespace's limit, never above the node-wide one.
    pub fn max_event_bytes(&self, node_wide: usize) -> usize {
        self.0
            .as_ref()
            .and_then(|n| n.max_event_bytes)
            .map_or(node_wide, |max| max.min(node_wide))
    }

    /// `(max_events, max_age_ms)` to keep (0: no limit).
    pub fn retention(&self, max_events: u64, max_age_ms: u64) -> (u64, u64) {
        match &self.0 {
            Some(n) => (
                n.max_events.unwrap_or(max_events),
                n.max_age_secs
                    .map_or(max_age_ms, |s| s.saturating_mul(1000)),
            ),
            None => (max_events, max_age_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_and_defaults_fill_in() {
        let namespaces = Namespaces::new(&[
            NamespaceConfig {
                prefix: "a".into(),
                public: true,
                max_event_bytes: Some(10),
                ..Default::default()
            },
            NamespaceConfig {
                prefix: "ab".into(),
                echo: false,
                max_subscribers_per_room: Some(3),
                ephemeral: Ephemeral::Only,
                ..Default::default()
            },
        ]);
        let ab = namespaces.for_room("abc");
        assert!(!ab.is_public() && !ab.echo());
        assert_eq!(ab.max_subscribers(100), 3);
        assert_eq!(ab.max_event_bytes(50), 50);
        let a = namespaces.for_room("axe");
        assert!(a.is_public() && a.echo());
        assert_eq!(a.max_event_bytes(50), 10);
        assert_eq!(a.max_event_bytes(5), 5, "never above the node-wide limit");
        let none = namespaces.for_room("zzz");
        assert!(!none.is_public() && none.echo() && none.batching().is_none());
        assert_eq!(none.retention(7, 8), (7, 8));
        assert_eq!(
            (none.ephemeral(false), none.ephemeral(true)),
            (Ok(false), Err(()))
        );
        assert_eq!(
            (ab.ephemeral(false), ab.ephemeral(true)),
            (Ok(true), Ok(true))
        );
        let allowed = Namespaces::new(&[NamespaceConfig {
            prefix: "t".into(),
            ephemeral: Ephemeral::Allowed,
            ..Default::default()
        }])
        .for_room("typing");
        assert_eq!(
            (allowed.ephemeral(false), allowed.ephemeral(true)),
            (Ok(false), Ok(true))
        );
    }
}
