//! Pusher's signatures, all HMAC-SHA256 with the app's secret in lowercase
//! hex: channel authorizations (`key:HMAC("socket_id:channel[:channel_data]")`),
//! user sign-ins (`key:HMAC("socket_id::user::user_data")`), HTTP API
//! requests (`HMAC("METHOD\npath\nsorted query")` with `body_md5`) and
//! webhooks (`HMAC(body)`). Every comparison is in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::auth::constant_time_eq;

/// `HMAC-SHA256(secret, message)` in lowercase hex.
pub fn sign(secret: &str, message: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `auth` (`key:signature`, from the app's auth endpoint) authorizes
/// `socket_id` on `channel`, with the presence `channel_data` as sent.
pub fn channel_auth_valid(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let message = match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    signed_by(key, secret, &message, auth)
}

/// Whether `auth` signs `user_data` in for `socket_id` (`pusher:signin`).
pub fn user_auth_valid(
    key: &str,
    secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> bool {
    signed_by(
        key,
        secret,
        &format!("{socket_id}::user::{user_data}"),
        auth,
    )
}

fn signed_by(key: &str, secret: &str, message: &str, auth: &str) -> bool {
    let Some((given_key, signature)) = auth.split_once(':') else {
        return false;
    };
    // Both compared, whatever the first says: no early exit on the key.
    let key_ok = constant_time_eq(given_key.as_bytes(), key.as_bytes());
    let signature_ok = constant_time_eq(signature.as_bytes(), sign(secret, message).as_bytes());
    key_ok & signature_ok
}

/// Why an HTTP API request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    #[error("auth_key does not belong to this app")]
    WrongKey,
    #[error("auth_version must be 1.0")]
    Version,
    #[error("auth_timestamp is not within {0} seconds of the server's clock")]
    Timestamp(u64),
    #[error("body_md5 does not match the body")]
    BodyMd5,
    #[error("invalid signature: expected HMAC SHA256 hex digest of {0:?}")]
    Signature(String),
    #[error("the query string cannot be parsed: {0}")]
    Query(String),
}

/// An HTTP API request as its signature covers it.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: &'a str,
    pub body: &'a [u8],
}

/// Checks an HTTP API request's signature, key, version, timestamp (within
/// `max_skew_secs` of `now_secs`) and body MD5. Values are compared decoded:
/// libraries sign them as they are but some send them URL-encoded.
pub fn verify_request(
    key: &str,
    secret: &str,
    request: &SignedRequest<'_>,
    now_secs: i64,
    max_skew_secs: u64,
) -> Result<(), RequestAuthError> {
    let mut params: Vec<(String, String)> = serde_urlencoded::from_str(request.query)
        .map_err(|err| RequestAuthError::Query(err.to_string()))?;
    for (k, _) in &mut params {
        k.make_ascii_lowercase();
    }
    let get = |name: &'static str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(RequestAuthError::Missing(name))
    };
    let signature = get("auth_signature")?.to_owned();
    if !constant_time_eq(get("auth_key")?.as_bytes(), key.as_bytes()) {
        return Err(RequestAuthError::WrongKey);
    }
    if get("auth_version")? != "1.0" {
        return Err(RequestAuthError::Version);
    }
    let timestamp: i64 = get("auth_timestamp")?
        .parse()
        .map_err(|_| RequestAuthError::Timestamp(max_skew_secs))?;
    if timestamp.abs_diff(now_secs) > max_skew_secs {
        return Err(RequestAuthError::Timestamp(max_skew_secs));
    }
    if !request.body.is_empty() {
        use md5::Digest;
        let md5 = hex(&md5::Md5::digest(request.body));
        if !constant_time_eq(get("body_md5")?.as_bytes(), md5.as_bytes()) {
            return Err(RequestAuthError::BodyMd5);
        }
    }
    params.retain(|(k, _)| k != "auth_signature");
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let signed = format!("{}\n{}\n{}", request.method, request.path, query);
    if !constant_time_eq(signature.as_bytes(), sign(secret, &signed).as_bytes()) {
        return Err(RequestAuthError::Signature(signed));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Pusher's authentication documentation
    /// (pusher.com/docs/channels/library_auth_reference/auth-signatures).
    #[test]
    fn signs_channels_like_pushers_documentation() {
        let (key, secret) = ("278d425bdf160c739803", "7ad3773142a6692b25b8");
        let auth =
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        assert!(channel_auth_valid(
            key,
            secret,
            "1234.1234",
            "private-foobar",
            None,
            auth
        ));
        assert!(!channel_auth_valid(
            key,
            secret,
            "1234.1235",
            "private-foobar",
            None,
            auth
        ));
        assert!(!channel_auth_valid(
            "other",
            secret,
            "1234.1234",
            "private-foobar",
            None,
            auth
        ));
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let presence =
            "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80";
        assert!(channel_auth_valid(
            key,
            secret,
            "1234.1234",
            "presence-foobar",
            Some(data),
            presence
        ));
        assert!(!channel_auth_valid(
            key,
            secret,
            "1234.1234",
            "presence-foobar",
            None,
            presence
        ));
    }

    /// The example of Pusher's HTTP API reference (its "worked example").
    #[test]
    fn verifies_requests_like_pushers_reference() {
        let (key, secret) = ("278d425bdf160c739803", "7ad3773142a6692b25b8");
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
        let request = SignedRequest {
            method: "POST",
            path: "/apps/3/events",
            query,
            body,
        };
        assert_eq!(
            verify_request(key, secret, &request, 1353088179, 600),
            Ok(())
        );
        assert_eq!(
            verify_request(key, secret, &request, 1353088179 + 601, 600),
            Err(RequestAuthError::Timestamp(600))
        );
        let tampered = SignedRequest {
            body: b"{}",
            ..request
        };
        assert_eq!(
            verify_request(key, secret, &tampered, 1353088179, 600),
            Err(RequestAuthError::BodyMd5)
        );
        let other_path = SignedRequest {
            path: "/apps/4/events",
            ..request
        };
        assert!(matches!(
            verify_request(key, secret, &other_path, 1353088179, 600),
            Err(RequestAuthError::Signature(_))
        ));
    }
}
