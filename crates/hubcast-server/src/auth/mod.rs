//! Authentication and grants: who a client is, and what it may do in a room.
//!
//! Credentials are API keys (for servers: `Authorization: Bearer KEY`) and
//! JWTs (for browsers and users: HS256, RS256 or EdDSA, the algorithm pinned
//! per key, keys chosen by `kid`). A token's claims grant `subscribe`,
//! `publish` and `presence` on room patterns (`market:*`). Namespaces (room
//! prefixes) can be public (anonymous subscribe) or read-only for clients.
//!
//! Protected mode: with no credentials configured, anonymous clients get full
//! access, but only from loopback addresses (unless `--insecure`).
//! The application's backend can take part (`hooks`): a connect hook says who
//! a session is and what it may do, subscribe and publish hooks allow or deny
//! each action in their rooms after the grants did.
//!
//! **Invariant:** only this module decides whether an action is allowed.

pub mod hooks;

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

use crate::namespace::{NamespaceConfig, Namespaces};
use crate::protocol::codes::ErrorCode;
use crate::room::RoomName;
pub use hubcast_protocol::pattern::pattern_matches;

/// The `[auth]` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys for servers (publishing over HTTP, admin access).
    pub api_keys: Vec<ApiKeyConfig>,
    /// Keys that verify JWTs.
    pub jwt: Vec<JwtKeyConfig>,
    /// Browser origins allowed to open WebSockets (empty: any).
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose forwarded-address header is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// The header those proxies report client addresses in.
    pub forwarded_header: ForwardedHeader,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// After a session's token expires, how long it has to send a fresh one
    /// (`auth` message) before it is closed with 4001.
    pub expiry_grace_ms: u64,
    /// `[auth.connect_hook]`: the application says who a WebSocket session is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_hook: Option<hooks::ConnectHookConfig>,
    /// `[auth.subscribe_hook]`: the application allows or denies subscribes in its rooms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe_hook: Option<hooks::RoomHookConfig>,
    /// `[auth.publish_hook]`: the application allows, denies or rewrites socket publishes in its rooms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_hook: Option<hooks::RoomHookConfig>,
    /// A cookie whose value is a credential, for a same-origin `EventSource`
    /// (which cannot set headers): read on the streams (SSE, WebSocket
    /// upgrades) only, never for publishing, so a forged cross-site request
    /// can change nothing. Needs `allowed_origins`; CORS then allows
    /// credentials for those origins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_cookie: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            api_keys: Vec::new(),
            jwt: Vec::new(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
            leeway_secs: 5,
            expiry_grace_ms: 10_000,
            connect_hook: None,
            subscribe_hook: None,
            publish_hook: None,
            token_cookie: None,
        }
    }
}

/// The header trusted proxies report each hop's client address in. Only one
/// is read: a proxy that appends to `X-Forwarded-For` passes a client's own
/// `Forwarded` header on untouched, so believing both would let any client
/// name its address.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, cloud load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (only its `for=` parameters are read).
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// The address a client is counted under when a trusted proxy reported it
/// as something that is not an address (`unknown`, an obfuscated `_name`,
/// garbage): all such clients share it. Never the proxy's own address,
/// which may be loopback and trusted.
pub const UNKNOWN_CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// One API key. Exactly one of `key`, `key_file`, `key_env` gives its value,
/// so keys can stay out of the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key itself (at least 16 characters).
    pub key: Option<String>,
    /// A file holding the key.
    pub key_file: Option<PathBuf>,
    /// An environment variable holding the key.
    pub key_env: Option<String>,
    /// Room patterns this key may publish to and subscribe to (empty: all).
    pub rooms: Vec<String>,
    /// May use admin routes (the dashboard's data when auth is on).
    pub admin: bool,
    /// A name for logs and metrics (never the key itself).
    pub name: Option<String>,
}

/// One JWT verification key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Matched against the token header's `kid`; a key without one matches
    /// tokens without one.
    pub kid: Option<String>,
    /// `HS256`, `RS256` or `EdDSA`: the only algorithm this key accepts.
    pub alg: String,
    /// HS256 shared secret (or `secret_file` / `secret_env`).
    pub secret: Option<String>,
    /// A file holding the HS256 secret.
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the HS256 secret.
    pub secret_env: Option<String>,
    /// RS256 / EdDSA public key: a PEM file.
    pub public_key_file: Option<PathBuf>,
    /// RS256 / EdDSA public key: the PEM itself.
    pub public_key_pem: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
}

pub use hubcast_protocol::token::Claims;
use hubcast_protocol::token::{TokenError, TokenKey};

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No credentials. `trusted` when protected mode lets it do everything
    /// (no credentials configured and a loopback client, or `--insecure`).
    Anonymous {
        trusted: bool,
    },
    ApiKey {
        name: String,
        rooms: Vec<String>,
        admin: bool,
    },
    Token(Claims),
}

impl Principal {
    /// Who this is, for the admin log: `key:NAME`, `token:SUB` or `anonymous`.
    pub fn describe(&self) -> String {
        match self {
            Principal::Anonymous { .. } => "anonymous".to_owned(),
            Principal::ApiKey { name, .. } => format!("key:{name}"),
            Principal::Token(claims) => {
                format!("token:{}", claims.sub.as_deref().unwrap_or("-"))
            }
        }
    }
}

/// An action on a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
    Presence,
}

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("credentials required")]
    Missing,
    #[error("unknown API key or malformed token")]
    BadCredentials,
    #[error("token rejected: {0}")]
    BadToken(String),
    #[error("token has expired")]
    Expired,
    #[error("not allowed to {action} in room `{room}`")]
    Forbidden { action: &'static str, room: String },
    #[error("admin credential required")]
    NotAdmin,
    #[error("token has been revoked")]
    Revoked,
}

impl AuthError {
    /// The error code a client is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing | AuthError::BadCredentials | AuthError::BadToken(_) => {
                ErrorCode::Unauthenticated
            }
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Revoked => ErrorCode::TokenRevoked,
            AuthError::Forbidden { .. } | AuthError::NotAdmin => ErrorCode::Forbidden,
        }
    }
}

/// Verified keys and rules, built once from the configuration.
pub struct Auth {
    api_keys: Vec<ApiKey>,
    jwt: Vec<TokenKey>,
    namespaces: Namespaces,
    insecure: bool,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<IpAddr>,
    pub forwarded_header: ForwardedHeader,
    leeway: u64,
    pub expiry_grace_ms: u64,
    /// The application's hooks (connect, subscribe, publish), if configured.
    pub hooks: hooks::Hooks,
    /// Tokens revoked before they expire (kept current by `admin`).
    pub revocations: revocation::RevocationList,
}

struct ApiKey {
    name: String,
    secret: Vec<u8>,
    rooms: Vec<String>,
    admin: bool,
}

/// A credential or namespace in the `[auth]` configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct AuthConfigError(String);

impl AuthConfigError {
    fn new(message: String) -> AuthConfigError {
        AuthConfigError(message)
    }
}

impl Auth {
    /// Loads keys (from the config, files or the environment) and checks them.
    pub fn from_config(
        config: &AuthConfig,
        namespaces: &[NamespaceConfig],
        insecure: bool,
    ) -> Result<Auth, AuthConfigError> {
        let mut api_keys = Vec::new();
        for (i, key) in config.api_keys.iter().enumerate() {
            let secret = secret_value(
                &key.key,
                &key.key_file,
                &key.key_env,
                &format!("auth.api_keys[{i}]"),
            )?;
            if secret.len() < 16 {
                return Err(AuthConfigError::new(format!(
                    "auth.api_keys[{i}] is shorter than 16 characters"
                )));
            }
            for pattern in &key.rooms {
                check_pattern(pattern)?;
            }
            let name = key.name.clone().unwrap_or_else(|| format!("key{i}"));
            api_keys.push(ApiKey {
                name,
                secret: secret.into_bytes(),
                rooms: key.rooms.clone(),
                admin: key.admin,
            });
        }
        let mut jwt = Vec::new();
        for (i, key) in config.jwt.iter().enumerate() {
            let what = format!("auth.jwt[{i}]");
            let (alg, decoding) = match key.alg.as_str() {
                "HS256" => {
                    let secret =
                        secret_value(&key.secret, &key.secret_file, &key.secret_env, &what)?;
                    if secret.len() < 32 {
                        return Err(AuthConfigError::new(format!(
                            "{what}: an HS256 secret must be at least 32 bytes"
                        )));
                    }
                    (
                        Algorithm::HS256,
                        DecodingKey::from_secret(secret.as_bytes())
                            .map_err(|e| AuthConfigError::new(format!("{what}: {e}")))?,
                    )
                }
                "RS256" => (
                    Algorithm::RS256,
                    DecodingKey::from_rsa_pem(pem(key, &what)?.as_bytes())
                        .map_err(|e| AuthConfigError::new(format!("{what}: {e}")))?,
                ),
                "EdDSA" => (
                    Algorithm::EdDSA,
                    DecodingKey::from_ed_pem(pem(key, &what)?.as_bytes())
                        .map_err(|e| AuthConfigError::new(format!("{what}: {e}")))?,
                ),
                other => {
                    return Err(AuthConfigError::new(format!(
                        "{what}: alg must be HS256, RS256 or EdDSA, not `{other}`"
                    )))
                }
            };
            jwt.push(TokenKey {
                kid: key.kid.clone(),
                alg,
                key: decoding,
                audience: key.audience.clone(),
                issuer: key.issuer.clone(),
            });
        }
        for namespace in namespaces {
            if namespace.prefix.is_empty() {
                return Err(AuthConfigError::new(
                    "a namespace needs a non-empty prefix".into(),
                ));
            }
        }
        Ok(Auth {
            api_keys,
            jwt,
            namespaces: Namespaces::new(namespaces),
            insecure,
            allowed_origins: config.allowed_origins.clone(),
            trusted_proxies: config
                .trusted_proxies
                .iter()
                .map(|ip| ip.to_canonical())
                .collect(),
            forwarded_header: config.forwarded_header,
            leeway: config.leeway_secs,
            expiry_grace_ms: config.expiry_grace_ms,
            hooks: hooks::Hooks::from_config(config).map_err(AuthConfigError::new)?,
            revocations: revocation::RevocationList::default(),
        })
    }

    /// Whether any credential (or a connect hook, which authenticates
    /// sessions) is configured: protected mode is off then.
    pub fn has_credentials(&self) -> bool {
        !self.api_keys.is_empty() || !self.jwt.is_empty() || self.hooks.connect_mode().is_some()
    }

    /// Who a client with these (optional) credentials is, from `client_ip`.
    /// A bearer value may be an API key or a JWT.
    pub fn identify(
        &self,
        bearer: Option<&str>,
        client_ip: IpAddr,
    ) -> Result<Principal, AuthError> {
        match bearer {
            None => Ok(Principal::Anonymous {
                trusted: !self.has_credentials() && (self.insecure || client_ip.is_loopback()),
            }),
            Some(credential) => {
                if let Some(key) = self.api_key(credential) {
                    return Ok(Principal::ApiKey {
                        name: key.name.clone(),
                        rooms: key.rooms.clone(),
                        admin: key.admin,
                    });
                }
                if credential.matches('.').count() == 2 {
                    return self.verify_token(credential).map(Principal::Token);
                }
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// Compares against every key in constant time per key, so neither the
    /// matching key nor a matching prefix shows in the timing.
    fn api_key(&self, credential: &str) -> Option<&ApiKey> {
        let mut found = None;
        for key in &self.api_keys {
            if constant_time_eq(key.secret.as_slice(), credential.as_bytes()) {
                found = Some(key);
            }
        }
        found
    }

    /// Verifies a JWT: the key by `kid`, its pinned algorithm, signature,
    /// `exp` and `nbf` with leeway, and `aud`/`iss` when configured; then
    /// that it was not revoked.
    pub fn verify_token(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = hubcast_protocol::token::verify(&self.jwt, token, self.leeway).map_err(
            |err| match err {
                TokenError::Malformed => AuthError::BadCredentials,
                TokenError::Expired => AuthError::Expired,
                other => AuthError::BadToken(other.to_string()),
            },
        )?;
        if self.is_revoked(&claims) {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }

    /// Whether a token with these claims has been revoked.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let now = crate::event::now_ms() / 1000;
        self.revocations.is_revoked(claims, now)
    }

    /// Whether `principal` may do `action` in `room`.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        room: &RoomName,
    ) -> Result<(), AuthError> {
        let namespace = self.namespaces.for_room(room);
        let allowed = match principal {
            Principal::Anonymous { trusted: true } => true,
            Principal::Anonymous { trusted: false } => {
                action == Action::Subscribe && namespace.is_public()
            }
            Principal::ApiKey { rooms, .. } => {
                rooms.is_empty() || rooms.iter().any(|p| pattern_matches(p, room))
            }
            Principal::Token(claims) => {
                let patterns = match action {
                    Action::Subscribe => &claims.subscribe,
                    Action::Publish => &claims.publish,
                    Action::Presence => &claims.presence,
                };
                let read_only = action == Action::Publish && namespace.is_read_only();
                let public = action == Action::Subscribe && namespace.is_public();
                public || (!read_only && patterns.iter().any(|p| pattern_matches(p, room)))
            }
        };
        if allowed {
            Ok(())
        } else if matches!(principal, Principal::Anonymous { .. }) {
            Err(AuthError::Missing)
        } else {
            let action = match action {
                Action::Subscribe => "subscribe",
                Action::Publish => "publish",
                Action::Presence => "see presence",
            };
            Err(AuthError::Forbidden {
                action,
                room: room.to_string(),
            })
        }
    }

    /// Whether `principal` may read node-wide admin data and use the admin
    /// routes: an admin API key, a token with the `admin` grant, or a
    /// trusted anonymous client (protected mode).
    pub fn authorize_admin(&self, principal: &Principal) -> Result<(), AuthError> {
        match principal {
            Principal::Anonymous { trusted: true } | Principal::ApiKey { admin: true, .. } => {
                Ok(())
            }
            Principal::Token(claims) if claims.admin => Ok(()),
            Principal::Anonymous { trusted: false } => Err(AuthError::Missing),
            _ => Err(AuthError::NotAdmin),
        }
    }

    /// Whether a browser upgrade from `origin` is allowed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true, // Not a browser: origins guard browsers only.
            Some(origin) => {
                self.allowed_origins.is_empty() || self.allowed_origins.iter().any(|o| o == origin)
            }
        }
    }

    /// The client's address: the peer, or — only when the peer is a trusted
    /// proxy — the nearest hop its forwarded-address header names that is not
    /// a trusted proxy. `lines` are every line of that header, in order (a
    /// proxy may add its own line rather than append to the last). The chain
    /// is walked from the right, past trusted proxies; a hop that is not an
    /// address is where the walk stops, and that client is [`UNKNOWN_CLIENT`].
    pub fn client_ip<'a>(&self, peer: IpAddr, lines: impl IntoIterator<Item = &'a [u8]>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted_proxy(peer) {
            return peer;
        }
        let mut hops = Vec::new();
        for line in lines {
            match self.forwarded_header {
                ForwardedHeader::XForwardedFor => forwarded::x_forwarded_for(line, &mut hops),
                ForwardedHeader::Forwarded => forwarded::forwarded(line, &mut hops),
            }
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if self.is_trusted_proxy(*ip) => client = *ip,
                Some(ip) => return *ip,
                None => return UNKNOWN_CLIENT,
            }
        }
        // Every hop is a trusted proxy: the client is the first of them.
        client
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.contains(&ip)
    }
}

mod forwarded;
pub mod revocation;

fn secret_value(
    value: &Option<String>,
    file: &Option<PathBuf>,
    env: &Option<String>,
    what: &str,
) -> Result<String, AuthConfigError> {
    match (value, file, env) {
        (Some(value), None, None) => Ok(value.clone()),
        (None, Some(file), None) => Ok(std::fs::read_to_string(file)
            .map_err(|e| {
                AuthConfigError::new(format!("{what}: cannot read {}: {e}", file.display()))
            })?
            .trim()
            .to_owned()),
        (None, None, Some(var)) => std::env::var(var).map_err(|_| {
            AuthConfigError::new(format!("{what}: environment variable {var} is not set"))
        }),
        _ => Err(AuthConfigError::new(format!(
            "{what}: give exactly one of the value, a _file or an _env"
        ))),
    }
}

fn pem(key: &JwtKeyConfig, what: &str) -> Result<String, AuthConfigError> {
    match (&key.public_key_pem, &key.public_key_file) {
        (Some(pem), None) => Ok(pem.clone()),
        (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
            AuthConfigError::new(format!("{what}: cannot read {}: {e}", file.display()))
        }),
        _ => Err(AuthConfigError::new(format!(
            "{what}: give exactly one of public_key_pem or public_key_file"
        ))),
    }
}

fn check_pattern(pattern: &str) -> Result<(), AuthConfigError> {
    let literal = pattern.replace('*', "");
    if pattern.is_empty() || (!literal.is_empty() && RoomName::parse(&literal).is_err()) {
        return Err(AuthConfigError::new(format!(
            "room pattern `{pattern}` must be room-name characters and `*`"
        )));
    }
    Ok(())
}

/// Equal-length inputs are compared without an early exit.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    /// The client address `auth` sees from `peer` with these header lines.
    fn client(auth: &Auth, peer: &str, lines: &[&str]) -> String {
        auth.client_ip(peer.parse().unwrap(), lines.iter().map(|l| l.as_bytes()))
            .to_string()
    }

    fn behind(header: ForwardedHeader, proxies: &[&str]) -> Auth {
        let trusted_proxies = proxies.iter().map(|p| p.parse().unwrap()).collect();
        Auth::from_config(
            &AuthConfig {
                trusted_proxies,
                forwarded_header: header,
                ..Default::default()
            },
            &[],
            false,
        )
        .unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let auth = behind(ForwardedHeader::XForwardedFor, &["10.0.0.1", "10.0.0.2"]);
        let unknown = UNKNOWN_CLIENT.to_string();
        for (peer, lines, expected) in [
            ("10.0.0.1", &["1.2.3.4"][..], "1.2.3.4"),
            ("10.0.0.1", &["9.9.9.9, 1.2.3.4, 10.0.0.2"], "1.2.3.4"),
            ("10.0.0.9", &["1.2.3.4"], "10.0.0.9"),
            ("10.0.0.1", &[], "10.0.0.1"),
            // Every line is read, in order: the proxy's own line is the last.
            ("10.0.0.1", &["6.6.6.6", "1.2.3.4"], "1.2.3.4"),
            (
                "10.0.0.1",
                &["6.6.6.6, 7.7.7.7", "1.2.3.4, 10.0.0.2"],
                "1.2.3.4",
            ),
            // Ports and brackets, as proxies write them.
            ("10.0.0.1", &["1.2.3.4:5678"], "1.2.3.4"),
            ("10.0.0.1", &["[2001:db8::1]"], "2001:db8::1"),
            ("10.0.0.1", &["[2001:db8::1]:443"], "2001:db8::1"),
            ("10.0.0.1", &["2001:db8::1"], "2001:db8::1"),
            ("10.0.0.1", &["::ffff:1.2.3.4"], "1.2.3.4"),
            ("10.0.0.1", &["1.2.3.4, 10.0.0.2:80"], "1.2.3.4"),
            // A hop that is not an address: never the proxy's address.
            ("10.0.0.1", &["garbage"], &unknown),
            ("10.0.0.1", &["1.2.3.4, unknown"], &unknown),
            ("10.0.0.1", &["unknown, 1.2.3.4"], "1.2.3.4"),
            ("10.0.0.1", &["[::1"], &unknown),
            // Only trusted proxies: the first of them is the client.
            ("10.0.0.1", &["10.0.0.2"], "10.0.0.2"),
            ("::ffff:10.0.0.1", &["1.2.3.4"], "1.2.3.4"),
        ] {
            assert_eq!(client(&auth, peer, lines), expected, "{peer} {lines:?}");
        }
        let invalid_utf8 = auth.client_ip("10.0.0.1".parse().unwrap(), [&b"1.2.3.4"[..], b"\xff"]);
        assert_eq!(invalid_utf8, UNKNOWN_CLIENT);
    }

    #[test]
    fn rfc_7239_forwarded_is_read_when_configured() {
        let auth = behind(ForwardedHeader::Forwarded, &["10.0.0.1"]);
        let unknown = UNKNOWN_CLIENT.to_string();
        for (lines, expected) in [
            (
                &["for=192.0.2.60;proto=http;by=203.0.113.43"][..],
                "192.0.2.60",
            ),
            (&["For=\"[2001:db8:cafe::17]:4711\""], "2001:db8:cafe::17"),
            (&["for=\"[2001:db8:cafe::17]\""], "2001:db8:cafe::17"),
            (&["for=\"192.0.2.60:8080\""], "192.0.2.60"),
            (&["for=192.0.2.43, for=198.51.100.17"], "198.51.100.17"),
            (
                &["for=192.0.2.43", "for=198.51.100.17;proto=https"],
                "198.51.100.17",
            ),
            (
                &["for=6.6.6.6", "for=198.51.100.17, for=10.0.0.1"],
                "198.51.100.17",
            ),
            // A comma or semicolon inside a quoted value does not split.
            (&["proto=\"a,b;c\";for=198.51.100.17"], "198.51.100.17"),
            (&["for=unknown"], &unknown),
            (&["for=_hidden"], &unknown),
            (&["proto=https"], &unknown),
            (&["for=\"198.51.100.17"], &unknown),
        ] {
            assert_eq!(client(&auth, "10.0.0.1", lines), expected, "{lines:?}");
        }
        // The other header is not read at all.
        let xff = behind(ForwardedHeader::XForwardedFor, &["10.0.0.1"]);
        assert_eq!(client(&xff, "10.0.0.1", &["for=198.51.100.17"]), unknown);
    }

    #[test]
    fn protected_mode() {
        let open = Auth::from_config(&AuthConfig::default(), &[], false).unwrap();
        let room = RoomName::parse("r").unwrap();
        let local = open.identify(None, "127.0.0.1".parse().unwrap()).unwrap();
        assert!(open.authorize(&local, Action::Publish, &room).is_ok());
        let remote = open.identify(None, "192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(
            open.authorize(&remote, Action::Subscribe, &room),
            Err(AuthError::Missing)
        );
        let insecure = Auth::from_config(&AuthConfig::default(), &[], true).unwrap();
        let remote = insecure
            .identify(None, "192.0.2.1".parse().unwrap())
            .unwrap();
        assert!(insecure.authorize(&remote, Action::Publish, &room).is_ok());
    }

    #[test]
    fn keys_namespaces_and_grants() {
        let config = AuthConfig {
            api_keys: vec![ApiKeyConfig {
                key: Some("k".repeat(20)),
                rooms: vec!["market:*".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let namespaces = vec![
            NamespaceConfig {
                prefix: "public:".into(),
                public: true,
                read_only: true,
                ..Default::default()
            },
            NamespaceConfig {
                prefix: "ro:".into(),
                public: false,
                read_only: true,
                ..Default::default()
            },
        ];
        let auth = Auth::from_config(&config, &namespaces, false).unwrap();
        let room = |s| RoomName::parse(s).unwrap();
        let local = auth.identify(None, "127.0.0.1".parse().unwrap()).unwrap();
        assert!(
            matches!(local, Principal::Anonymous { trusted: false }),
            "credentials configured: loopback is not trusted"
        );
        assert!(auth
            .authorize(&local, Action::Subscribe, &room("public:news"))
            .is_ok());
        assert_eq!(
            auth.authorize(&local, Action::Publish, &room("public:news")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.authorize(&local, Action::Subscribe, &room("market:1")),
            Err(AuthError::Missing)
        );

        let key = auth
            .identify(Some(&"k".repeat(20)), "192.0.2.1".parse().unwrap())
            .unwrap();
        assert!(auth
            .authorize(&key, Action::Publish, &room("market:1"))
            .is_ok());
        assert!(auth
            .authorize(&key, Action::Publish, &room("chat:1"))
            .is_err());
        assert_eq!(
            auth.identify(Some("wrong-key-wrong-key"), "127.0.0.1".parse().unwrap())
                .unwrap_err(),
            AuthError::BadCredentials
        );

        let claims = Claims {
            subscribe: vec!["ro:*".into(), "chat:*".into()],
            publish: vec!["ro:*".into(), "chat:1".into()],
            ..Default::default()
        };
        let user = Principal::Token(claims);
        assert!(auth
            .authorize(&user, Action::Subscribe, &room("ro:x"))
            .is_ok());
        assert!(
            auth.authorize(&user, Action::Publish, &room("ro:x"))
                .is_err(),
            "read-only namespace"
        );
        assert!(auth
            .authorize(&user, Action::Publish, &room("chat:1"))
            .is_ok());
        assert!(auth
            .authorize(&user, Action::Publish, &room("chat:2"))
            .is_err());
        assert!(auth
            .authorize(&user, Action::Subscribe, &room("public:x"))
            .is_ok());
    }
}
