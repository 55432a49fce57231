//! Who is calling: credentials from the request, the client's address, and
//! the mapping of every refusal to its status and JSON body. Refusals are
//! counted and logged at a rate that cannot flood the log.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use super::error::ApiError;
use crate::auth::{AuthError, Principal};
use crate::limits::rate_key;
use crate::limits::Refusal;
pub use crate::metrics::note_refusal;
use crate::node::Node;
use crate::protocol::codes::ErrorCode;

/// An identified caller.
pub struct Caller {
    pub principal: Principal,
    pub ip: IpAddr,
}

impl Caller {
    /// The key publish rates are counted by: the credential's name, else the address.
    pub fn rate_key(&self) -> String {
        rate_key(&self.principal, self.ip)
    }
}

/// The bearer credential of `Authorization: Bearer …`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

/// The value of cookie `name` in the request's `Cookie` headers, if any.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// The credential of a stream (SSE, WebSocket upgrade): the bearer header,
/// else `?token=`, else the configured `auth.token_cookie`. Publishing never
/// reads the cookie.
pub fn stream_credential<'h>(
    node: &'h Node,
    headers: &'h HeaderMap,
    token: Option<&'h str>,
) -> Option<&'h str> {
    bearer(headers).or(token).or_else(|| {
        let name = node.config.auth.token_cookie.as_deref()?;
        cookie(headers, name)
    })
}

/// The client's address, honouring the forwarded-address header (every line
/// of it) only from trusted proxies.
pub fn client_ip(node: &Node, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    let lines = headers.get_all(node.auth.forwarded_header.name());
    node.auth
        .client_ip(peer.ip(), lines.iter().map(|line| line.as_bytes()))
}

/// Identifies the caller from its bearer credential (or `token`, from a query
/// string) and address.
pub fn identify(
    node: &Node,
    headers: &HeaderMap,
    peer: SocketAddr,
    token: Option<&str>,
) -> Result<Caller, ApiError> {
    let ip = client_ip(node, headers, peer);
    let credential = bearer(headers).or(token);
    match node.auth.identify(credential, ip) {
        Ok(principal) => Ok(Caller { principal, ip }),
        Err(err) => Err(refused(err, ip)),
    }
}

/// Maps an auth refusal to its API error, counting and logging it.
pub fn refused(err: AuthError, ip: IpAddr) -> ApiError {
    let code = err.code();
    note_refusal(code.as_str(), ip, &err.to_string());
    ApiError::new(code, err.to_string())
}

/// Maps a limit refusal to its API error, counting and logging it.
pub fn limited(refusal: Refusal, ip: IpAddr) -> ApiError {
    let code = match refusal {
        Refusal::ConnectRate | Refusal::PublishRate => ErrorCode::RateLimited,
        Refusal::NodeFull | Refusal::AddressFull => ErrorCode::OverCapacity,
    };
    note_refusal(code.as_str(), ip, &refusal.to_string());
    ApiError::new(code, refusal.to_string())
}

/// Refuses a publish the caller may not make: its credentials, its publish
/// grant on `room`, and the publish rate limit. Every publish route (and an
/// embedding application's, through `NodeHandle`) goes through this.
pub fn authorize_publish(
    node: &Node,
    headers: &HeaderMap,
    peer: SocketAddr,
    room: &crate::room::RoomName,
) -> Result<(), ApiError> {
    let caller = identify(node, headers, peer, None)?;
    node.auth
        .authorize(&caller.principal, crate::auth::Action::Publish, room)
        .map_err(|err| refused(err, caller.ip))?;
    node.limits
        .check_publish(|| caller.rate_key())
        .map_err(|refusal| limited(refusal, caller.ip))
}

/// Requires admin access (node-wide data) from the caller.
pub fn require_admin(node: &Node, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
    admin_caller(node, headers, peer).map(drop)
}

/// The caller of an admin route, who must hold admin access (an admin API
/// key, a token with the `admin` grant, or protected mode's loopback).
pub fn admin_caller(
    node: &Node,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, ApiError> {
    let caller = identify(node, headers, peer, None)?;
    node.auth
        .authorize_admin(&caller.principal)
        .map_err(|err| refused(err, caller.ip))?;
    Ok(caller)
}

/// Requires read access to `room` (history, stats).
pub fn require_read(
    node: &Node,
    headers: &HeaderMap,
    peer: SocketAddr,
    room: &crate::room::RoomName,
) -> Result<(), ApiError> {
    let caller = identify(node, headers, peer, None)?;
    node.auth
        .authorize(&caller.principal, crate::auth::Action::Subscribe, room)
        .map_err(|err| refused(err, caller.ip))
}
