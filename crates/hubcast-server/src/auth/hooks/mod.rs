//! The application's backend in the loop: HTTP hooks that decide who a
//! session is (`[auth.connect_hook]`) and whether it may subscribe to or
//! publish in a room (`[auth.subscribe_hook]`, `[auth.publish_hook]`), the way
//! Centrifugo's proxies do, so an application can authenticate WebSockets
//! with the cookie or session it already has instead of minting JWTs.
//!
//! Every hook fails closed: a timeout, a connection error, a 5xx or an answer
//! that is not one refuses the action with `auth_unavailable` (close 4013 at
//! connect), which clients retry after a backoff. Hooks narrow what grants
//! allow, never widen it: `auth` checks grants first, then asks the hook.
//!
//! Files: this one, the configuration and the three decisions; `call`, one
//! HTTP call with its metrics and bounded-rate failure log; `cache`, answers
//! remembered per (user, room).

mod cache;
mod call;

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::room::RoomName;
use cache::DecisionCache;
use call::{Answer, HookClient, HookKind};
pub use hubcast_protocol::token::Claims;

/// `[auth.connect_hook]`: who a WebSocket session is, decided by the application.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectHookConfig {
    /// Where hubcast POSTs the connection's details (`http://` or `https://`).
    pub url: String,
    /// How long the application has to answer; after that the connection is
    /// refused with 4013 (fail closed).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Request headers passed on to the application (names, any case).
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
    /// `fallback`: ask only when the connection has no valid credential;
    /// `always`: ask for every connection (the answer replaces any token's).
    #[serde(default)]
    pub mode: ConnectHookMode,
}

/// When the connect hook is asked.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ConnectHookMode {
    /// Only for connections without a valid API key or JWT.
    #[default]
    Fallback,
    /// For every connection.
    Always,
}

/// `[auth.subscribe_hook]` and `[auth.publish_hook]`: the application allows
/// or denies each subscribe (or socket publish) in rooms matching `rooms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomHookConfig {
    /// Where hubcast POSTs `{user, session, room}` (publish: and `data`).
    pub url: String,
    /// How long the application has to answer; after that the action is
    /// refused with `auth_unavailable` (fail closed).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The rooms the hook is asked about: a grant pattern (`market:*`).
    #[serde(default = "default_rooms")]
    pub rooms: String,
    /// How long an allow or deny is reused for the same (user, room); 0: never.
    /// A publish answer that replaced `data` is never reused.
    #[serde(default)]
    pub cache_ms: u64,
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_forward_headers() -> Vec<String> {
    vec!["cookie".into(), "authorization".into()]
}

fn default_rooms() -> String {
    "*".into()
}

/// The longest a hook may be given to answer.
const MAX_TIMEOUT_MS: u64 = 60_000;

impl ConnectHookConfig {
    /// Why this hook cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        check_endpoint("auth.connect_hook", &self.url, self.timeout_ms)?;
        for name in &self.forward_headers {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!(
                    "auth.connect_hook.forward_headers: `{name}` is not a header name"
                ));
            }
        }
        Ok(())
    }
}

impl RoomHookConfig {
    /// Why this hook cannot be used, if it cannot (`what` names it in the message).
    pub fn check(&self, what: &str) -> Result<(), String> {
        check_endpoint(what, &self.url, self.timeout_ms)?;
        super::check_pattern(&self.rooms).map_err(|err| format!("{what}.rooms: {err}"))
    }
}

fn check_endpoint(what: &str, url: &str, timeout_ms: u64) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("{what}.url `{url}`: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{what}.url must be http:// or https://, not `{url}`"
        ));
    }
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(format!(
            "{what}.timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"
        ));
    }
    Ok(())
}

/// Why a hook did not allow an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookRefusal {
    /// The application answered 401: it does not know who this is.
    #[error("the application refused the connection as unauthenticated")]
    Unauthenticated,
    /// The application answered 403 (or 401 for a room): not allowed.
    #[error("the application does not allow this")]
    Forbidden,
    /// No decision (timeout, connection error, 5xx, a malformed answer):
    /// refused, fail closed; the client tries again later.
    #[error("the application's {0} hook could not decide; try again later")]
    Unavailable(&'static str),
}

/// What a connection tells the connect hook.
pub struct ConnectRequest<'a> {
    pub headers: &'a axum::http::HeaderMap,
    pub remote_addr: IpAddr,
    pub origin: Option<&'a str>,
    /// The upgrade URL's query string, as sent.
    pub query: Option<&'a str>,
    /// The room of a room-scoped URL (`/v1/rooms/{room}/ws`).
    pub room: Option<&'a RoomName>,
}

/// Who is asking to subscribe or publish, as a room hook is told.
pub struct Asker<'a> {
    /// The principal's user (a token's `sub`, an API key's name); `None` for
    /// an anonymous session, whose answers are never cached.
    pub user: Option<&'a str>,
    /// The session id (`welcome.session`).
    pub session: &'a str,
}

/// The configured hooks, with their HTTP client and caches.
pub struct Hooks {
    connect: Option<(ConnectHookConfig, HookClient)>,
    subscribe: Option<RoomHook>,
    publish: Option<RoomHook>,
}

struct RoomHook {
    config: RoomHookConfig,
    client: HookClient,
    cache: DecisionCache,
}

impl Hooks {
    /// Builds the hooks from `[auth]` (already checked by `Config::check`).
    pub fn from_config(config: &super::AuthConfig) -> Result<Hooks, String> {
        let room_hook = |config: &Option<RoomHookConfig>, kind| -> Result<_, String> {
            config
                .as_ref()
                .map(|config| {
                    Ok(RoomHook {
                        client: HookClient::new(kind, &config.url, config.timeout_ms)?,
                        cache: DecisionCache::new(Duration::from_millis(config.cache_ms)),
                        config: config.clone(),
                    })
                })
                .transpose()
        };
        Ok(Hooks {
            connect: config
                .connect_hook
                .as_ref()
                .map(|hook| {
                    HookClient::new(HookKind::Connect, &hook.url, hook.timeout_ms)
                        .map(|client| (hook.clone(), client))
                })
                .transpose()?,
            subscribe: room_hook(&config.subscribe_hook, HookKind::Subscribe)?,
            publish: room_hook(&config.publish_hook, HookKind::Publish)?,
        })
    }

    /// The connect hook's mode, if one is configured.
    pub fn connect_mode(&self) -> Option<ConnectHookMode> {
        self.connect.as_ref().map(|(config, _)| config.mode)
    }

    /// Asks the connect hook who this connection is. A 200 answer becomes
    /// claims with exactly the grants it lists (`sub` = `user`, `exp` =
    /// `expires_at`); an `expires_at` already past is a refusal.
    pub async fn connect(&self, request: &ConnectRequest<'_>) -> Result<Claims, HookRefusal> {
        let Some((config, client)) = &self.connect else {
            return Err(HookRefusal::Unavailable("connect"));
        };
        let mut headers = serde_json::Map::new();
        for name in &config.forward_headers {
            let separator = if name.eq_ignore_ascii_case("cookie") {
                "; "
            } else {
                ", "
            };
            let values: Vec<&str> = request
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|value| value.to_str().ok())
                .collect();
            if !values.is_empty() {
                headers.insert(name.to_ascii_lowercase(), values.join(separator).into());
            }
        }
        let body = serde_json::json!({
            "headers": headers,
            "remote_addr": request.remote_addr.to_string(),
            "origin": request.origin,
            "query": request.query.unwrap_or(""),
            "room": request.room.map(|room| room.as_str()),
        });
        let now = (crate::event::now_ms() / 1000).max(0) as u64;
        match client.call(&body, read_connect_answer).await? {
            Answer::Allowed(answer) => {
                if answer.expires_at.is_some_and(|at| at <= now) {
                    return Err(HookRefusal::Unauthenticated);
                }
                Ok(Claims {
                    sub: Some(answer.user),
                    exp: answer.expires_at,
                    subscribe: answer.grants.subscribe,
                    publish: answer.grants.publish,
                    presence: answer.grants.presence,
                    info: answer.info,
                    // A hook session has no token to revoke by id, and
                    // admin rights come only from the admin key or a token.
                    jti: None,
                    iat: None,
                    admin: false,
                })
            }
            Answer::Unauthenticated => Err(HookRefusal::Unauthenticated),
            Answer::Forbidden => Err(HookRefusal::Forbidden),
        }
    }

    /// Asks the subscribe hook, when `room` is one of its rooms, whether
    /// `asker` may subscribe to it.
    pub async fn subscribe(&self, asker: &Asker<'_>, room: &RoomName) -> Result<(), HookRefusal> {
        let Some(hook) = self.subscribe.as_ref().filter(|hook| hook.covers(room)) else {
            return Ok(());
        };
        if let Some(allowed) = hook.cache.get(asker.user, room) {
            hook.client.note_cache_hit();
            return allowed.then_some(()).ok_or(HookRefusal::Forbidden);
        }
        let body = serde_json::json!({
            "user": asker.user,
            "session": asker.session,
            "room": room.as_str(),
        });
        // The body of an allow is not read: `{}` or anything else.
        let allowed = match hook.client.call(&body, |_| Ok(())).await? {
            Answer::Allowed(_) => true,
            Answer::Unauthenticated | Answer::Forbidden => false,
        };
        hook.cache.put(asker.user, room, allowed);
        allowed.then_some(()).ok_or(HookRefusal::Forbidden)
    }

    /// Asks the publish hook, when `room` is one of its rooms, whether
    /// `asker` may publish `data` there. `Ok(Some(data))`: publish this
    /// instead (the application rewrote it).
    pub async fn publish(
        &self,
        asker: &Asker<'_>,
        room: &RoomName,
        data: &RawValue,
    ) -> Result<Option<Box<RawValue>>, HookRefusal> {
        let Some(hook) = self.publish.as_ref().filter(|hook| hook.covers(room)) else {
            return Ok(None);
        };
        if let Some(allowed) = hook.cache.get(asker.user, room) {
            hook.client.note_cache_hit();
            return allowed.then_some(None).ok_or(HookRefusal::Forbidden);
        }
        let body = serde_json::json!({
            "user": asker.user,
            "session": asker.session,
            "room": room.as_str(),
            "data": data,
        });
        match hook.client.call(&body, call::json::<PublishAnswer>).await? {
            Answer::Allowed(answer) => {
                match answer.data {
                    // A rewrite depends on the data: never reused.
                    Some(data) => Ok(Some(data)),
                    None => {
                        hook.cache.put(asker.user, room, true);
                        Ok(None)
                    }
                }
            }
            Answer::Unauthenticated | Answer::Forbidden => {
                hook.cache.put(asker.user, room, false);
                Err(HookRefusal::Forbidden)
            }
        }
    }
}

impl RoomHook {
    fn covers(&self, room: &RoomName) -> bool {
        super::pattern_matches(&self.config.rooms, room)
    }
}

/// Reads the connect hook's 200 answer, refusing grants that are not room
/// patterns.
fn read_connect_answer(body: &[u8]) -> Result<ConnectAnswer, String> {
    let answer: ConnectAnswer = call::json(body)?;
    for pattern in answer
        .grants
        .subscribe
        .iter()
        .chain(&answer.grants.publish)
        .chain(&answer.grants.presence)
    {
        super::check_pattern(pattern).map_err(|err| format!("grants: {err}"))?;
    }
    Ok(answer)
}

/// The connect hook's 200 answer.
#[derive(Deserialize)]
struct ConnectAnswer {
    user: String,
    #[serde(default)]
    info: Option<serde_json::Value>,
    #[serde(default)]
    grants: Grants,
    /// Seconds since the epoch, like a JWT's `exp`.
    #[serde(default)]
    expires_at: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Grants {
    subscribe: Vec<String>,
    publish: Vec<String>,
    presence: Vec<String>,
}

/// The publish hook's 200 answer: `{}` allows, `{"data": …}` replaces the data.
#[derive(Deserialize)]
struct PublishAnswer {
    #[serde(default)]
    data: Option<Box<RawValue>>,
}
