//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
//! keyed with the bytes of a `whsec_<base64>` secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Decodes a `whsec_<base64>` secret into its key bytes (24 to 64 of them,
/// as the specification asks of a secret).
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("a webhook secret is written whsec_<base64>")?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|err| format!("the webhook secret after whsec_ is not base64: {err}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "a webhook secret must decode to 24 to 64 bytes, this one has {}",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-signature` header for one delivery attempt.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference tests.
    #[test]
    fn signs_like_the_specification() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn refuses_bad_secrets() {
        assert!(parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(parse_secret("whsec_not base64!").is_err());
        assert!(parse_secret("whsec_c2hvcnQ=").is_err());
    }
}
