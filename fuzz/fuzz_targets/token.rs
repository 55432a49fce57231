//! Bearer tokens from headers, `?token=` and `auth` messages. Nothing a
//! client makes up may verify without the secret.
#![no_main]

use hubcast_protocol::token::{verify, TokenKey};
use jsonwebtoken::{Algorithm, DecodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let keys = [
        TokenKey { kid: None, alg: Algorithm::HS256, key: DecodingKey::from_secret(SECRET).expect("a non-empty secret"), audience: None, issuer: None },
        TokenKey {
            kid: Some("k2".into()),
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(SECRET).expect("a non-empty secret"),
            audience: Some("app".into()),
            issuer: None,
        },
    ];
    assert!(verify(&keys, token, 5).is_err(), "a forged token verified: {token:?}");
});
