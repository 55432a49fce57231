//! Verifying JWTs: the key is chosen by `kid`, its algorithm is pinned (a
//! token naming another algorithm is refused before any signature check, so
//! neither `none` nor HS256-with-a-public-key can pass), the signature, `exp`
//! (required) and `nbf` are checked with a leeway, and `aud`/`iss` when the
//! key requires them. `exp`, `nbf` and `iat` must be numbers when present.
//! The signatures are ring's ([`crypto`]).

pub mod crypto;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

/// What a verified token grants.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<u64>,
    /// Room patterns the bearer may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Room patterns the bearer may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Room patterns whose presence the bearer may see.
    #[serde(default)]
    pub presence: Vec<String>,
    /// Free-form data about the user.
    #[serde(default)]
    pub info: Option<serde_json::Value>,
    /// The token's id: what `POST /v1/revocations {"jti"}` names.
    #[serde(default)]
    pub jti: Option<String>,
    /// When the token was issued (seconds since the epoch): a user's
    /// revocation `issued_before` covers tokens issued earlier, or without it.
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: Option<u64>,
    /// The admin grant: the bearer may use the admin routes, as an API key
    /// with `admin = true` may.
    #[serde(default)]
    pub admin: bool,
}

/// The whole payload as verified: the claims, and the time claim hubcast
/// does not use but must refuse when malformed. jsonwebtoken checks `nbf`
/// only when it is a number and skips it otherwise (`\"nbf\": \"2099…\"`
/// would make a token valid before its time), and never looks at `iat`.
#[derive(Deserialize)]
struct Payload {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default, deserialize_with = "numeric_date", rename = "nbf")]
    _nbf: Option<u64>,
}

/// A JWT NumericDate (RFC 7519): seconds since the epoch, a non-negative
/// number (a fraction is rounded, as jsonwebtoken's own checks do). `null`
/// is absent; a string, boolean or anything else is refused.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(value) = Option::<serde_json::Value>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let seconds = match &value {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f.round() as u64)
        }),
        _ => None,
    };
    seconds.map(Some).ok_or_else(|| {
        D::Error::custom(format_args!(
            "a time claim must be a non-negative number of seconds, not {value}"
        ))
    })
}

/// One key that verifies tokens.
pub struct TokenKey {
    /// Matched against the token header's `kid`; a key without one matches
    /// tokens without one.
    pub kid: Option<String>,
    /// The only algorithm this key accepts.
    pub alg: Algorithm,
    pub key: DecodingKey,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("no key for this kid")]
    UnknownKey,
    #[error("algorithm {0} is not the key's")]
    WrongAlgorithm(String),
    #[error("token has expired")]
    Expired,
    #[error("{0}")]
    Invalid(String),
}

/// Signs `claims` into a token: `jsonwebtoken::encode` on ring (installs
/// [`crypto::PROVIDER`] first). For tests, tools and applications that mint
/// tokens in Rust.
pub fn encode<T: Serialize>(
    header: &Header,
    claims: &T,
    key: &EncodingKey,
) -> Result<String, jsonwebtoken::errors::Error> {
    crypto::install();
    jsonwebtoken::encode(header, claims, key)
}

/// Verifies `token` against `keys` with `leeway` seconds of clock skew.
pub fn verify(keys: &[TokenKey], token: &str, leeway: u64) -> Result<Claims, TokenError> {
    crypto::install();
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.kid == header.kid)
        .ok_or(TokenError::UnknownKey)?;
    if header.alg != key.alg {
        return Err(TokenError::WrongAlgorithm(format!("{:?}", header.alg)));
    }
    let mut validation = Validation::new(key.alg);
    validation.leeway = leeway;
    validation.validate_nbf = true;
    // A key that names an audience or issuer requires the claim: without
    // this, jsonwebtoken checks `aud`/`iss` only when the token has them, and
    // a token minted for another audience passes by leaving `aud` out.
    let mut required = vec!["exp"];
    if key.audience.is_some() {
        required.push("aud");
    }
    if key.issuer.is_some() {
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    match &key.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &key.issuer {
        validation.set_issuer(&[iss]);
    }
    match jsonwebtoken::decode::<Payload>(token, &key.key, &validation) {
        Ok(data) => Ok(data.claims.claims),
        Err(err) => match err.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(TokenError::Expired),
            _ => Err(TokenError::Invalid(err.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> Vec<TokenKey> {
        vec![TokenKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(SECRET).unwrap(),
            audience: None,
            issuer: None,
        }]
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(header: Header, claims: serde_json::Value) -> String {
        encode(&header, &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
    }

    #[test]
    fn verifies_and_refuses() {
        let good = token(
            Header::default(),
            serde_json::json!({"sub": "u", "exp": now() + 60, "subscribe": ["a:*"]}),
        );
        assert_eq!(
            verify(&keys(), &good, 0).unwrap().subscribe,
            vec!["a:*".to_string()]
        );
        let expired = token(Header::default(), serde_json::json!({"exp": now() - 120}));
        assert_eq!(verify(&keys(), &expired, 5), Err(TokenError::Expired));
        let no_exp = token(Header::default(), serde_json::json!({"sub": "u"}));
        assert!(matches!(
            verify(&keys(), &no_exp, 0),
            Err(TokenError::Invalid(_))
        ));
        let future = token(
            Header::default(),
            serde_json::json!({"exp": now() + 600, "nbf": now() + 300}),
        );
        assert!(matches!(
            verify(&keys(), &future, 5),
            Err(TokenError::Invalid(_))
        ));
        let other_alg = token(
            Header::new(Algorithm::HS384),
            serde_json::json!({"exp": now() + 60}),
        );
        assert!(matches!(
            verify(&keys(), &other_alg, 0),
            Err(TokenError::WrongAlgorithm(_))
        ));
        let with_kid = token(
            Header {
                kid: Some("x".into()),
                ..Header::default()
            },
            serde_json::json!({"exp": now() + 60}),
        );
        assert_eq!(verify(&keys(), &with_kid, 0), Err(TokenError::UnknownKey));
        // alg "none": header {"alg":"none"}, claims, empty signature.
        let none = "eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDB9.";
        assert!(verify(&keys(), none, 0).is_err());
        assert_eq!(
            verify(&keys(), "not-a-token", 0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn time_claims_must_be_numbers() {
        let later = now() + 600;
        for claims in [
            serde_json::json!({"exp": later, "nbf": (now() + 300).to_string()}),
            serde_json::json!({"exp": later, "nbf": "0"}),
            serde_json::json!({"exp": later, "nbf": true}),
            serde_json::json!({"exp": later, "nbf": -1}),
            serde_json::json!({"exp": later, "iat": "yesterday"}),
            serde_json::json!({"exp": later, "iat": [1]}),
            serde_json::json!({"exp": later.to_string()}),
            serde_json::json!({"exp": {"s": later}}),
        ] {
            assert!(
                matches!(
                    verify(&keys(), &token(Header::default(), claims.clone()), 5),
                    Err(TokenError::Invalid(_))
                ),
                "{claims}"
            );
        }
        for claims in [
            serde_json::json!({"exp": later, "nbf": now() - 10, "iat": now() - 10}),
            serde_json::json!({"exp": later as f64 + 0.5, "nbf": (now() - 10) as f64 + 0.25, "iat": null}),
        ] {
            assert_eq!(
                verify(&keys(), &token(Header::default(), claims.clone()), 5)
                    .map(|c| c.exp.is_some()),
                Ok(true),
                "{claims}"
            );
        }
    }

    #[test]
    fn a_required_audience_or_issuer_must_be_present() {
        let strict = vec![TokenKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(SECRET).unwrap(),
            audience: Some("hubcast".into()),
            issuer: Some("app".into()),
        }];
        let both = token(
            Header::default(),
            serde_json::json!({"exp": now() + 60, "aud": "hubcast", "iss": "app"}),
        );
        assert!(verify(&strict, &both, 0).is_ok());
        for claims in [
            serde_json::json!({"exp": now() + 60, "iss": "app"}),
            serde_json::json!({"exp": now() + 60, "aud": "hubcast"}),
            serde_json::json!({"exp": now() + 60, "aud": "other", "iss": "app"}),
            serde_json::json!({"exp": now() + 60, "aud": "hubcast", "iss": "other"}),
        ] {
            assert!(
                matches!(
                    verify(&strict, &token(Header::default(), claims.clone()), 0),
                    Err(TokenError::Invalid(_))
                ),
                "{claims}"
            );
        }
    }

    /// The ring provider signs and verifies every family hubcast pins (and
    /// ES256), and a key of one family never verifies another's token.
    #[test]
    fn ring_signs_and_verifies_each_family() {
        use ring::signature::{
            EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        };
        let rng = ring::rand::SystemRandom::new();
        let claims = serde_json::json!({"sub": "u", "exp": now() + 60});

        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed_public = Ed25519KeyPair::from_pkcs8(ed.as_ref())
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec_public =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref(), &rng)
                .unwrap()
                .public_key()
                .as_ref()
                .to_vec();
        let cases = [
            (
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(ed.as_ref()),
                DecodingKey::from_ed_der(&ed_public),
            ),
            (
                Algorithm::ES256,
                EncodingKey::from_ec_der(ec.as_ref()),
                DecodingKey::from_ec_der(&ec_public),
            ),
            (
                Algorithm::HS256,
                EncodingKey::from_secret(SECRET).unwrap(),
                DecodingKey::from_secret(SECRET).unwrap(),
            ),
        ];
        for (alg, signing, verifying) in &cases {
            let token = encode(&Header::new(*alg), &claims, signing).unwrap();
            let key = |alg: Algorithm, key: &DecodingKey| TokenKey {
                kid: None,
                alg,
                key: key.clone(),
                audience: None,
                issuer: None,
            };
            assert_eq!(
                verify(&[key(*alg, verifying)], &token, 0)
                    .unwrap()
                    .sub
                    .as_deref(),
                Some("u"),
                "{alg:?}"
            );
            // A flipped signature bit is refused.
            let mut forged = token.clone().into_bytes();
            let last = forged.len() - 2;
            forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(forged).unwrap();
            assert!(
                matches!(
                    verify(&[key(*alg, verifying)], &forged, 0),
                    Err(TokenError::Invalid(_))
                ),
                "{alg:?}"
            );
            // Another family's key, even with this token's algorithm pinned, is refused.
            for (other_alg, _, other) in &cases {
                if other_alg != alg {
                    assert!(
                        verify(&[key(*alg, other)], &token, 0).is_err(),
                        "{alg:?} with a {other_alg:?} key"
                    );
                }
            }
        }
    }
}
