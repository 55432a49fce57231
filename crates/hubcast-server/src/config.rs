//! Configuration: defaults, then `hubcast.toml`, then its `[env.NAME]` block,
//! then `HUBCAST_*` environment variables, then command-line flags — each layer
//! overriding the one before (figment does the merging).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub(crate) mod redact;
mod reference;

pub use crate::auth::hooks::{ConnectHookConfig, ConnectHookMode, RoomHookConfig};
pub use crate::auth::{ApiKeyConfig, AuthConfig, JwtKeyConfig};
pub use crate::limits::RateLimitConfig;
pub use crate::namespace::{Ephemeral, NamespaceConfig, NamespaceRules, Namespaces};
pub use crate::pusher::{PusherAppConfig, PusherConfig, PusherWebhookConfig};
pub use crate::webhook::WebhookConfig;
pub use reference::{json_schema, reference_markdown};

/// Everything `hubcast serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on: IP and port (`0.0.0.0:8787` for every interface).
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// `sqlite://PATH` (embedded, default) or `postgres://…` (cluster).
    pub store: StoreUrl,
    /// `memory` (one node) or `nats://HOST:PORT` (cluster).
    pub bus: BusUrl,
    /// Allow binding a non-loopback address without credentials.
    pub insecure: bool,
    /// WebSocket heartbeats.
    pub heartbeat: HeartbeatConfig,
    /// Server-Sent Event streams.
    pub sse: SseConfig,
    /// Sizes, queues and HTTP timeouts.
    pub limits: LimitsConfig,
    /// How long rooms keep their events.
    pub retention: RetentionConfig,
    /// The per-room actors.
    pub hub: HubConfig,
    pub presence: PresenceConfig,
    /// Tokens revoked before they expire.
    pub revocations: RevocationsConfig,
    /// The embedded store (`store = "sqlite://…"`).
    pub sqlite: SqliteConfig,
    /// The cluster store (`store = "postgres://…"`).
    pub postgres: PostgresConfig,
    /// The cluster bus (`bus = "nats://…"`).
    pub nats: NatsConfig,
    /// Credentials, origins and proxies.
    pub auth: crate::auth::AuthConfig,
    /// Room prefixes with their own rules (public, read-only).
    pub namespaces: Vec<NamespaceConfig>,
    /// Rate limits and connection caps.
    pub rate_limits: crate::limits::RateLimitConfig,
    /// `[[webhooks]]`: endpoints told of occupancy, presence and published
    /// events (see docs/webhooks.md).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
    /// `[pusher]` and `[[pusher.apps]]`: the Pusher Channels protocol and
    /// HTTP API (see docs/pusher.md).
    pub pusher: crate::pusher::PusherConfig,
    /// Named override blocks, selected with `--env NAME` (like wrangler environments).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, serde_json::Map<String, serde_json::Value>>")]
    pub env: BTreeMap<String, figment::value::Value>,
}

/// Parses a listen address, with an example of what is expected when it is
/// not one (`8788` → "use 127.0.0.1:8788 …").
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = value.parse::<SocketAddr>() {
        return Ok(address);
    }
    if let Ok(port) = value.trim_start_matches(':').parse::<u16>() {
        return Err(format!(
            "a port alone is not an address: use 127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface)"
        ));
    }
    if let Ok(ip) = value.parse::<std::net::IpAddr>() {
        return Err(format!(
            "an address needs a port, e.g. {}",
            SocketAddr::new(ip, 8787)
        ));
    }
    Err("expected IP:PORT, e.g. 127.0.0.1:8787 or [::1]:8787 (port 0 takes a free one)".into())
}

/// `listen` from any layer: a string, or a bare number (`HUBCAST_LISTEN=8788`
/// reads as one), which gets the same example as the flag.
fn listen_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    struct Listen;
    impl serde::de::Visitor<'_> for Listen {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an address and a port, e.g. 127.0.0.1:8787")
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<SocketAddr, E> {
            parse_listen(value).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<SocketAddr, E> {
            parse_listen(&value.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<SocketAddr, E> {
            parse_listen(&value.to_string()).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(Listen)
}

/// Where the authoritative log lives, parsed once from its URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreUrl {
    /// `sqlite://PATH`: the embedded store, a file on this machine.
    Sqlite(std::path::PathBuf),
    /// `postgres://…` or `postgresql://…`: the cluster's shared store.
    Postgres(String),
}

impl schemars::JsonSchema for StoreUrl {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StoreUrl".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(sqlite://.+|postgres(ql)?://.*)$",
        })
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = String;

    fn try_from(url: String) -> Result<StoreUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a path, e.g. sqlite://./hubcast-data/hubcast.db".into(),
                );
            }
            Ok(StoreUrl::Sqlite(path.into()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(url))
        } else {
            Err(format!(
                "unsupported store `{url}`: expected sqlite://PATH or postgres://…"
            ))
        }
    }
}

impl From<StoreUrl> for String {
    fn from(url: StoreUrl) -> String {
        url.to_string()
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => f.write_str(url),
        }
    }
}

/// How nodes tell each other of new events, parsed once from its URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BusUrl {
    /// `memory`: one node, no network.
    Memory,
    /// `nats://HOST:PORT` (several servers separated by commas).
    Nats(String),
}

impl schemars::JsonSchema for BusUrl {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BusUrl".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(memory(://)?|nats://.+)$",
        })
    }
}

impl TryFrom<String> for BusUrl {
    type Error = String;

    fn try_from(url: String) -> Result<BusUrl, String> {
        if url == "memory" || url == "memory://" {
            Ok(BusUrl::Memory)
        } else if url.starts_with("nats://") {
            Ok(BusUrl::Nats(url))
        } else {
            Err(format!(
                "unsupported bus `{url}`: expected `memory` or nats://HOST:PORT"
            ))
        }
    }
}

impl From<BusUrl> for String {
    fn from(url: BusUrl) -> String {
        url.to_string()
    }
}

impl std::fmt::Display for BusUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusUrl::Memory => f.write_str("memory"),
            BusUrl::Nats(url) => f.write_str(url),
        }
    }
}

/// SQLite's `synchronous` pragma, as hubcast offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync every commit: an acknowledged publish survives power loss.
    Full,
    /// Survives a process crash but not power loss.
    Normal,
}

impl Synchronous {
    /// The pragma's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    }
}

/// The `[heartbeat]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// How often the server sends a WebSocket ping.
    pub interval_ms: u64,
    /// A session with no frame from its client for this long is closed with 4010.
    pub stale_ms: u64,
}

/// Server-Sent Event streams (`/v1/sse`, `/v1/rooms/{room}/sse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// How often an idle stream sends a comment, so proxies with 60–100 s
    /// idle timeouts keep it open and a vanished client is noticed.
    pub heartbeat_ms: u64,
    /// The `retry:` sent to clients: how long `EventSource` waits before it
    /// reconnects.
    pub retry_ms: u64,
    /// Most rooms on one stream; bounds the length of its `id` (~20 bytes a room).
    pub max_rooms: usize,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig {
            heartbeat_ms: 25_000,
            retry_ms: 2_000,
            max_rooms: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest event `data` and largest client frame, in bytes. A publish
    /// body may be this plus 64 KiB; one that declares more in
    /// `Content-Length` is answered `413 too_large` before any of it is read.
    pub max_event_bytes: usize,
    /// Rooms one session may be subscribed to at once.
    pub max_subscriptions: usize,
    /// Frames a session may have queued before it is cut as a slow consumer.
    pub outbound_queue: usize,
    /// Largest `rewind` honoured.
    pub max_rewind: u64,
    /// Largest `limit` of one history page (`limit=0` answers the room's
    /// state and no events).
    pub max_page: usize,
    /// Most events in one atomic batch (`POST /v1/events`, socket
    /// `publish_batch`); more is refused with 413 `too_large`.
    pub max_batch_events: usize,
    /// Largest body of `POST /v1/events` in bytes (a socket `publish_batch`
    /// is bounded by the frame limit instead); more is refused with 413.
    pub max_batch_bytes: usize,
    /// A connection that has not sent a complete request head within this is
    /// closed; also how long an idle keep-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// A request body that sends nothing for this long is answered
    /// `408 request_timeout` and its connection closed.
    pub body_read_timeout_ms: u64,
    /// A request body must arrive whole within this, however it trickles,
    /// or it is answered `408 request_timeout` and its connection closed.
    pub body_deadline_ms: u64,
    /// Before closing a connection whose request was not read to the end
    /// (a refused oversized body, a timeout), the node reads and discards
    /// what the client still sends for at most this long, so the client is
    /// not reset before it reads the answer (nginx's lingering close). 0: close at once.
    pub lingering_close_ms: u64,
    /// The most bytes discarded in such a lingering close.
    pub lingering_close_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events kept per room; older ones are pruned. 0 keeps all.
    pub max_events: u64,
    /// Age in seconds past which events are pruned. 0 keeps all.
    pub max_age_secs: u64,
    /// How often the pruning task runs.
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Recent events a hub keeps in memory to serve resumes without the store.
    pub tail: usize,
    /// How long a hub with no subscribers lives before it hibernates.
    pub idle_ms: u64,
    /// How often lost notifications are healed: on a cluster, each node tells
    /// the others the heads of the rooms it appended to in this interval, and
    /// hubs behind one fill the gap from the store; on one node (or while NATS
    /// is away) every hub's head is compared with the store's.
    pub reconcile_ms: u64,
    /// On a cluster with NATS connected, every hub's state (head, earliest,
    /// epoch) is compared with the store's only every this many
    /// `reconcile_ms` (commits whose notice was lost and followed by nothing,
    /// retention, a deletion whose notice was lost). 1: every interval.
    pub full_reconcile_every: u32,
    /// A broadcast to a room's subscribers slower than this is logged and counted.
    pub slow_broadcast_ms: u64,
    /// How long a room must stay without subscribers before its
    /// `room.vacated` webhook is sent (a reconnect within it sends nothing).
    pub occupancy_grace_ms: u64,
}

/// The `[presence]` section: who is in a room (see docs/protocol.md, *Presence*).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Most members of one room's presence (across the cluster); a
    /// `presence: true` subscription that would exceed it is refused.
    pub max_members: usize,
    /// Cluster: how often a node re-announces its members of each room it has
    /// members in (and announces changes at once).
    pub heartbeat_ms: u64,
    /// Cluster: a node not heard from for this long is presumed dead and its
    /// members leave. More than `heartbeat_ms`; three heartbeats by default.
    pub ttl_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            max_members: 1000,
            heartbeat_ms: 5000,
            ttl_ms: 15_000,
        }
    }
}

/// The `[revocations]` section: tokens revoked before they expire (see
/// docs/security.md, *Revocation*).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationsConfig {
    /// How often every node reloads the revocations from the store and closes
    /// the sessions they cover: the safety net under the bus, which tells
    /// peers at once. A revocation whose bus message was lost still takes
    /// effect within this.
    pub reload_ms: u64,
    /// How long a revocation without `expires_at` is kept (seconds): at least
    /// the longest lifetime of the tokens you issue, since it expires with the
    /// tokens it covers.
    pub default_ttl_secs: u64,
}

impl Default for RevocationsConfig {
    fn default() -> Self {
        RevocationsConfig {
            reload_ms: 1000,
            default_ttl_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// `full` fsyncs every commit (an acknowledged publish survives power loss);
    /// `normal` survives a process crash but not power loss.
    pub synchronous: Synchronous,
    /// Most appends committed in one transaction.
    pub max_batch: usize,
    /// Read-only connections kept open for replay and history.
    pub readers: usize,
    /// Writes waiting for the writer thread before more are refused with 503
    /// (`Retry-After`), so a stalled disk cannot grow memory without bound.
    pub max_queue: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Schema holding hubcast's tables (`rooms`, `events`, `outbox`,
    /// `outbox_rejected`, `migrations`; created at start): lowercase letters,
    /// digits, `_`.
    pub schema: String,
    /// Pooled connections. Every node opens up to this many plus one (the
    /// outbox's listener), so nodes × (pool_size + 1) should stay under
    /// PostgreSQL's `max_connections` (11 nodes on a stock server's 100); if
    /// it is reached, a node uses the connections it has and logs it. 8 is
    /// as fast as 16 for one node's durable publishes (`postgres.writers`
    /// take 4) and keeps six nodes from crowding a stock server.
    pub pool_size: usize,
    /// Concurrent append batches (different rooms commit in parallel).
    pub writers: usize,
    /// Most appends in one batch.
    pub max_batch: usize,
    /// How long an operation waits for a connection before failing with 503.
    pub timeout_ms: u64,
    /// Most any one store operation may take (an append batch, a read, a
    /// readiness probe): past it the caller gets 503, so a frozen or
    /// partitioned server cannot hold publishes for minutes. An append that
    /// timed out may still commit: retry it with the same idempotency key.
    pub statement_timeout_ms: u64,
    /// Appends waiting for a writer before more are refused with 503 and
    /// `Retry-After` (`hubcast_store_writes_refused_total`).
    pub max_queue: usize,
    /// Drain the application outbox table.
    pub outbox: bool,
    /// Outbox polling interval (LISTEN/NOTIFY wakes the drainer sooner).
    pub outbox_poll_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            schema: "hubcast".into(),
            pool_size: 8,
            writers: 4,
            max_batch: 1024,
            timeout_ms: 2000,
            statement_timeout_ms: 5000,
            max_queue: 65_536,
            outbox: true,
            outbox_poll_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Subjects are `<prefix>.room.<room>`; separate clusters (or tests)
    /// sharing one NATS use different prefixes.
    pub subject_prefix: String,
    /// Committed events waiting to be published to NATS. While NATS is
    /// unreachable the queue fills; past this many, new events are dropped
    /// and counted (`hubcast_bus_dropped_total`): peers heal them from the
    /// store by reconcile, and memory stays bounded however long the outage.
    pub max_queue: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            subject_prefix: "hubcast".into(),
            max_queue: 16_384,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            store: StoreUrl::Sqlite("./hubcast-data/hubcast.db".into()),
            bus: BusUrl::Memory,
            insecure: false,
            heartbeat: HeartbeatConfig::default(),
            sse: SseConfig::default(),
            limits: LimitsConfig::default(),
            retention: RetentionConfig::default(),
            hub: HubConfig::default(),
            presence: PresenceConfig::default(),
            revocations: RevocationsConfig::default(),
            sqlite: SqliteConfig::default(),
            postgres: PostgresConfig::default(),
            nats: NatsConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            namespaces: Vec::new(),
            rate_limits: crate::limits::RateLimitConfig::default(),
            webhooks: Vec::new(),
            pusher: crate::pusher::PusherConfig::default(),
            env: BTreeMap::new(),
        }
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval_ms: 15_000,
            stale_ms: 30_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_event_bytes: 1024 * 1024,
            max_subscriptions: 256,
            outbound_queue: 1024,
            max_rewind: 1000,
            max_page: 1000,
            max_batch_events: 1000,
            max_batch_bytes: 4 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            body_deadline_ms: 60_000,
            lingering_close_ms: 5_000,
            lingering_close_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_events: 100_000,
            max_age_secs: 7 * 24 * 3600,
            interval_ms: 60_000,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            tail: 256,
            idle_ms: 30_000,
            reconcile_ms: 1000,
            full_reconcile_every: 10,
            slow_broadcast_ms: 50,
            occupancy_grace_ms: 3000,
        }
    }
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            synchronous: Synchronous::Full,
            max_batch: 4096,
            readers: 4,
            max_queue: 65_536,
        }
    }
}

/// Overrides given as command-line flags: the last and strongest layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Each of figment's errors once, named by the user's key and where it
    /// came from (figment's own text repeats itself and names its profile).
    #[error("invalid configuration: {}", describe(.0))]
    Invalid(Box<figment::Error>),
    #[error("environment `{0}` is not defined in the config file (expected an [env.{0}] block)")]
    UnknownEnv(String),
    #[error("invalid configuration: {0}")]
    Check(String),
}

impl Config {
    /// Loads the layered configuration. `file` is read if it exists; `env_name`
    /// selects an `[env.NAME]` block of it; `HUBCAST_*` variables are read from the
    /// process environment.
    pub fn load(
        file: &Path,
        env_name: Option<&str>,
        flags: &FlagOverrides,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if file.exists() {
            figment = figment.merge(Toml::file_exact(file));
        }
        if let Some(name) = env_name {
            let key = format!("env.{name}");
            let file_only = Figment::from(Toml::file_exact(file));
            if file_only.find_value(&key).is_err() {
                return Err(ConfigError::UnknownEnv(name.to_owned()));
            }
            figment = figment.merge(file_only.focus(&key));
        }
        figment = figment
            .merge(
                Env::prefixed("HUBCAST_")
                    .filter(is_config_variable)
                    .split("__"),
            )
            .merge(Serialized::defaults(flags));
        let mut config: Config = figment
            .extract()
            .map_err(|err| ConfigError::Invalid(Box::new(err)))?;
        config.env.clear();
        config.check()?;
        Ok(config)
    }

    /// Rejects settings that cannot work together.
    pub fn check(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError::Check(m.to_owned()));
        // A Pusher app's secret guards its own routes; the native routes
        // stay in protected mode (loopback only) without credentials of theirs.
        let has_credentials = !self.auth.api_keys.is_empty()
            || !self.auth.jwt.is_empty()
            || self.auth.connect_hook.is_some()
            || !self.pusher.apps.is_empty();
        if !self.listen.ip().is_loopback() && !self.insecure && !has_credentials {
            return Err(ConfigError::Check(format!(
                "refusing to listen on {} without credentials (protected mode): configure [auth] api keys \
                 or jwt keys, listen on a loopback address, or pass --insecure to accept anonymous \
                 clients from the network",
                self.listen
            )));
        }
        if self.heartbeat.interval_ms == 0 || self.heartbeat.stale_ms <= self.heartbeat.interval_ms
        {
            return fail("heartbeat.stale_ms must be greater than heartbeat.interval_ms > 0");
        }
        if let Some(cookie) = &self.auth.token_cookie {
            let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if cookie.is_empty() || !cookie.chars().all(token_char) {
                return fail(
                    "auth.token_cookie must be a cookie name (letters, digits, !#$%&'*+-.^_`|~)",
                );
            }
            if self.auth.allowed_origins.is_empty() {
                return fail("auth.token_cookie needs auth.allowed_origins: credentials in cookies are only for the pages of known origins");
            }
        }
        if self.sse.heartbeat_ms == 0 || self.sse.retry_ms == 0 {
            return fail("sse.heartbeat_ms and sse.retry_ms must be at least 1");
        }
        if self.sse.max_rooms == 0 || self.sse.max_rooms > 256 {
            return fail(
                "sse.max_rooms must be between 1 and 256 (the id carries every room's cursor)",
            );
        }
        if self.limits.outbound_queue < 16 {
            return fail("limits.outbound_queue must be at least 16");
        }
        if self.hub.tail == 0 || self.hub.tail + 8 > self.limits.outbound_queue {
            return fail("hub.tail must be at least 1 and at most limits.outbound_queue - 8");
        }
        if self.limits.max_event_bytes < 16 {
            return fail("limits.max_event_bytes must be at least 16");
        }
        if self.limits.max_page == 0 {
            return fail("limits.max_page must be at least 1");
        }
        if self.limits.max_batch_events == 0 || self.limits.max_batch_bytes < 16 {
            return fail(
                "limits.max_batch_events must be at least 1 and limits.max_batch_bytes at least 16",
            );
        }
        if self.limits.body_read_timeout_ms == 0 || self.limits.body_deadline_ms == 0 {
            return fail(
                "limits.body_read_timeout_ms and limits.body_deadline_ms must be at least 1",
            );
        }
        if self.presence.max_members == 0
            || self.presence.heartbeat_ms == 0
            || self.presence.ttl_ms <= self.presence.heartbeat_ms
        {
            return fail("presence.max_members must be at least 1 and presence.ttl_ms greater than presence.heartbeat_ms > 0");
        }
        for namespace in &self.namespaces {
            if namespace.batch_ms > 0 && namespace.batch_max < 2 {
                return fail("a namespace with batch_ms needs batch_max of at least 2");
            }
        }
        if self.sqlite.max_batch == 0 || self.sqlite.readers == 0 || self.sqlite.max_queue == 0 {
            return fail(
                "sqlite.max_batch, sqlite.readers and sqlite.max_queue must be at least 1",
            );
        }
        if self.nats.max_queue == 0 {
            return fail("nats.max_queue must be at least 1");
        }
        crate::webhook::Webhooks::from_config(&self.webhooks, &self.pusher)
            .map_err(ConfigError::Check)?;
        crate::pusher::Apps::from_config(&self.pusher).map_err(ConfigError::Check)?;
        if let Some(hook) = &self.auth.connect_hook {
            hook.check().map_err(ConfigError::Check)?;
            let forwards_cookies = hook
                .forward_headers
                .iter()
                .any(|name| name.eq_ignore_ascii_case("cookie"));
            if forwards_cookies && self.auth.allowed_origins.is_empty() {
                return fail(
                    "auth.connect_hook forwards cookies, so auth.allowed_origins must list your site's \
                     origins: a browser sends its cookies with a WebSocket upgrade from any page, and \
                     any web site could otherwise open sessions as its visitors (cross-site WebSocket \
                     hijacking)",
                );
            }
        }
        if let Some(hook) = &self.auth.subscribe_hook {
            hook.check("auth.subscribe_hook")
                .map_err(ConfigError::Check)?;
        }
        if let Some(hook) = &self.auth.publish_hook {
            hook.check("auth.publish_hook")
                .map_err(ConfigError::Check)?;
        }
        if self.revocations.reload_ms == 0 || self.revocations.default_ttl_secs == 0 {
            return fail(
                "revocations.reload_ms and revocations.default_ttl_secs must be at least 1",
            );
        }
        Ok(())
    }
}

/// One line per error: `KEY (in SOURCE): WHAT`, with the key as the user
/// wrote it (`heartbeat.stale_msec`, or the variable `HUBCAST_LIMITS__MAX_PAGE`).
fn describe(errors: &figment::Error) -> String {
    let lines: Vec<String> = errors
        .clone()
        .into_iter()
        .map(|err| {
            let key = err.path.join(".").to_ascii_lowercase();
            let from_env = err
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            let source = match err.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                Some(figment::Source::File(path)) => format!(" in {}", path.display()),
                _ if from_env => format!(
                    " in the environment variable HUBCAST_{}",
                    err.path.join("__").to_ascii_uppercase()
                ),
                _ => String::new(),
            };
            let what = if key.is_empty() {
                String::new()
            } else {
                format!("`{key}`")
            };
            format!("{what}{source}: {}", err.kind)
        })
        .collect();
    lines.join("; ")
}

/// Whether a `HUBCAST_*` variable (prefix stripped, lowercased) names a
/// config key. Other `HUBCAST_*` variables (the CLI's `HUBCAST_URL`, a secret
/// referenced by `key_env`) are not configuration and are left alone.
fn is_config_variable(key: &figment::value::UncasedStr) -> bool {
    const SECTIONS: &[&str] = &[
        "listen",
        "store",
        "bus",
        "insecure",
        "heartbeat",
        "sse",
        "limits",
        "retention",
        "hub",
        "presence",
        "revocations",
        "sqlite",
        "postgres",
        "nats",
        "auth",
        "namespaces",
        "rate_limits",
        "webhooks",
        "pusher",
    ];
    let key = key.as_str().to_ascii_lowercase();
    let section = key.split("__").next().unwrap_or("");
    SECTIONS.contains(&section)
}

#[cfg(test)]
// figment's `Jail::expect_with` takes closures returning its own (large)
// error type: not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn auth_hooks_are_checked() {
        let check = |toml: &str| {
            let config: Config = Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(toml))
                .extract()
                .map_err(|err| err.to_string())?;
            config.check().map_err(|err| err.to_string())
        };
        let ok = "[auth]\nallowed_origins = [\"https://app.example\"]\n\
                  [auth.connect_hook]\nurl = \"http://127.0.0.1:9000/connect\"\n\
                  [auth.subscribe_hook]\nurl = \"https://app.example/sub\"\nrooms = \"chat:*\"\ncache_ms = 5000\n";
        check(ok).expect("a valid hook configuration");
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(ok))
            .extract()
            .unwrap();
        let connect = config.auth.connect_hook.expect("connect hook");
        assert_eq!(
            (connect.timeout_ms, connect.mode, connect.forward_headers),
            (
                1000,
                ConnectHookMode::Fallback,
                vec!["cookie".to_owned(), "authorization".to_owned()]
            )
        );
        for (toml, complaint) in [
            (
                "[auth.connect_hook]\nurl = \"http://127.0.0.1:9000/connect\"\n",
                "allowed_origins",
            ),
            (
                "[auth.connect_hook]\nurl = \"ftp://x/connect\"\nforward_headers = []\n",
                "http:// or https://",
            ),
            (
                "[auth.connect_hook]\nurl = \"not a url\"\nforward_headers = []\n",
                "auth.connect_hook.url",
            ),
            (
                "[auth.connect_hook]\nurl = \"http://h/c\"\ntimeout_ms = 0\nforward_headers = []\n",
                "timeout_ms",
            ),
            (
                "[auth.connect_hook]\nurl = \"http://h/c\"\nforward_headers = [\"bad header\"]\n",
                "not a header name",
            ),
            (
                "[auth.connect_hook]\nurl = \"http://h/c\"\nmode = \"sometimes\"\n",
                "sometimes",
            ),
            (
                "[auth.publish_hook]\nurl = \"http://h/p\"\nrooms = \"chat/*\"\n",
                "auth.publish_hook.rooms",
            ),
            ("[auth.subscribe_hook]\nrooms = \"chat:*\"\n", "url"),
        ] {
            let err = check(toml).expect_err(toml);
            assert!(err.contains(complaint), "{toml}: {err}");
        }
    }

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hubcast.toml",
                r#"
                listen = "127.0.0.1:9000"
                store = "sqlite://file.db"
                [heartbeat]
                interval_ms = 1000
                stale_ms = 5000
                [env.staging]
                store = "sqlite://staging.db"
                [env.staging.limits]
                max_subscriptions = 7
                "#,
            )?;
            let path = Path::new("hubcast.toml");
            let base = Config::load(path, None, &FlagOverrides::default()).unwrap();
            assert_eq!(base.listen.port(), 9000);
            assert_eq!(base.store.to_string(), "sqlite://file.db");
            assert_eq!(base.heartbeat.interval_ms, 1000);
            assert_eq!(base.limits.max_subscriptions, 256);

            let staging = Config::load(path, Some("staging"), &FlagOverrides::default()).unwrap();
            assert_eq!(staging.store.to_string(), "sqlite://staging.db");
            assert_eq!(staging.limits.max_subscriptions, 7);
            assert_eq!(staging.listen.port(), 9000);

            jail.set_env("HUBCAST_STORE", "sqlite://env.db");
            jail.set_env("HUBCAST_HEARTBEAT__STALE_MS", "9000");
            let env = Config::load(path, Some("staging"), &FlagOverrides::default()).unwrap();
            assert_eq!(env.store.to_string(), "sqlite://env.db");
            assert_eq!(env.heartbeat.stale_ms, 9000);

            let flags = FlagOverrides {
                store: Some("sqlite://flag.db".into()),
                ..Default::default()
            };
            let flagged = Config::load(path, Some("staging"), &flags).unwrap();
            assert_eq!(flagged.store.to_string(), "sqlite://flag.db");

            assert!(matches!(
                Config::load(path, Some("nope"), &FlagOverrides::default()),
                Err(ConfigError::UnknownEnv(_))
            ));
            Ok(())
        });
    }

    #[test]
    fn defaults_without_a_file() {
        figment::Jail::expect_with(|_| {
            let config =
                Config::load(Path::new("missing.toml"), None, &FlagOverrides::default()).unwrap();
            assert_eq!(config, Config::default());
            Ok(())
        });
    }

    #[test]
    fn urls_and_enums_are_parsed_once() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hubcast.toml",
                "store = \"postgres://localhost/db\"\nbus = \"nats://127.0.0.1:4222\"\n[sqlite]\nsynchronous = \"normal\"",
            )?;
            let config =
                Config::load(Path::new("hubcast.toml"), None, &FlagOverrides::default()).unwrap();
            assert_eq!(
                config.store,
                StoreUrl::Postgres("postgres://localhost/db".into())
            );
            assert_eq!(config.bus, BusUrl::Nats("nats://127.0.0.1:4222".into()));
            assert_eq!(config.sqlite.synchronous, Synchronous::Normal);
            for bad in [
                "store = \"mysql://x\"",
                "bus = \"redis://x\"",
                "[sqlite]\nsynchronous = \"off\"",
            ] {
                jail.create_file("hubcast.toml", bad)?;
                let err = Config::load(Path::new("hubcast.toml"), None, &FlagOverrides::default())
                    .unwrap_err();
                assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
            }
            Ok(())
        });
    }

    #[test]
    fn typos_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hubcast.toml", "lisen = \"127.0.0.1:1\"")?;
            assert!(
                Config::load(Path::new("hubcast.toml"), None, &FlagOverrides::default()).is_err()
            );
            Ok(())
        });
    }

    #[test]
    fn a_token_cookie_needs_a_cookie_name_and_allowed_origins() {
        let mut config = Config::default();
        config.auth.token_cookie = Some("hc_token".into());
        assert!(config.check().is_err(), "no allowed_origins");
        config.auth.allowed_origins = vec!["https://app.example".into()];
        assert!(config.check().is_ok());
        config.auth.token_cookie = Some("bad name".into());
        assert!(config.check().is_err(), "not a cookie name");
        config.auth.token_cookie = None;
        config.sse.max_rooms = 0;
        assert!(config.check().is_err(), "sse.max_rooms 0");
    }
}
