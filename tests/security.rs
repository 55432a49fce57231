//! Security, black-box against the real binary: every grant and every refusal
//! of API keys, JWTs (HS256, RS256, EdDSA), namespaces, origins, trusted
//! proxies, rate limits and caps, and protected mode.
//!
//! Keys are generated here: HS256 secrets are strings, the RSA key comes from
//! `openssl genpkey`, the Ed25519 key from ring; tokens are signed with the
//! jsonwebtoken crate. No test asserts a duration: waits are bounded polls.

mod support;

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{eventually, within, Server, Ws, STEP};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------

const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
const MARKET_KEY: &str = "market-key-0123456789abcdef";
const HS_SECRET: &str = "hs256-test-secret-that-is-at-least-32-bytes-long";
const AUDIENCE: &str = "hubcast-test";
const ISSUER: &str = "app-backend";

struct Keys {
    /// RSA private key (PKCS#8 PEM) and its public key (SPKI PEM).
    rsa_private_pem: String,
    rsa_public_pem: String,
    /// Ed25519 private key (PKCS#8 DER) and its public key (SPKI PEM).
    ed_pkcs8: Vec<u8>,
    ed_public_pem: String,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (rsa_private_pem, rsa_public_pem) = rsa_keypair();
        let (ed_pkcs8, ed_public_pem) = ed25519_keypair();
        Keys {
            rsa_private_pem,
            rsa_public_pem,
            ed_pkcs8,
            ed_public_pem,
        }
    })
}

/// A 2048-bit RSA key pair from the `openssl` command line tool.
fn rsa_keypair() -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let private = dir.path().join("rsa.pem");
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl (is it installed?)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let private_path = private.to_str().expect("utf-8 path");
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private_path,
    ]);
    let public = run(&["pkey", "-in", private_path, "-pubout"]);
    let private = std::fs::read_to_string(&private).expect("read RSA key");
    (private, String::from_utf8(public).expect("PEM is text"))
}

/// An Ed25519 key pair from ring; the public key is wrapped in an SPKI PEM by hand.
fn ed25519_keypair() -> (Vec<u8>, String) {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate Ed25519 key");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse Ed25519 key");
    // SubjectPublicKeyInfo { AlgorithmIdentifier { 1.3.101.112 }, BIT STRING (32 bytes) }.
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    (pkcs8.as_ref().to_vec(), pem("PUBLIC KEY", &spki))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64(der, false);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Base64 (standard, padded) or base64url (unpadded), enough for PEM and JWT parts.
fn base64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Which configured key signs a token.
#[derive(Clone, Copy)]
enum Signer {
    Hs,
    Rsa,
    Ed,
}

/// Signs `claims` with `signer`'s key, `kid` set to the key's own.
fn token(signer: Signer, claims: Value) -> String {
    let keys = keys();
    let (alg, kid, key) = match signer {
        Signer::Hs => (
            Algorithm::HS256,
            "hs",
            EncodingKey::from_secret(HS_SECRET.as_bytes()).expect("a non-empty secret"),
        ),
        Signer::Rsa => (
            Algorithm::RS256,
            "rsa",
            EncodingKey::from_rsa_pem(keys.rsa_private_pem.as_bytes()).expect("RSA key"),
        ),
        Signer::Ed => (
            Algorithm::EdDSA,
            "ed",
            EncodingKey::from_ed_der(&keys.ed_pkcs8),
        ),
    };
    sign(alg, Some(kid), &key, &claims)
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    hubcast_protocol::token::encode(&header, claims, key).expect("sign token")
}

/// Claims of a user valid for a minute with these grants. The RS256 key also
/// requires `aud` and `iss`; they are always included (other keys ignore them).
fn claims(sub: &str, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({
        "sub": sub,
        "exp": now() + 60,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "subscribe": subscribe,
        "publish": publish,
    })
}

/// A token from the HS256 key, valid for a minute.
fn user(subscribe: &[&str], publish: &[&str]) -> String {
    token(Signer::Hs, claims("user-1", subscribe, publish))
}

// ---------------------------------------------------------------------------
// Server config
// ---------------------------------------------------------------------------

/// Credentials, three JWT keys, a public and a read-only namespace, an origin
/// allowlist, and `extra` TOML appended (more sections).
fn config(extra: &str) -> String {
    let keys = keys();
    format!(
        r#"
[sqlite]
synchronous = "normal"

[auth]
leeway_secs = 0
expiry_grace_ms = 500
allowed_origins = ["https://app.example"]

[[auth.api_keys]]
key = "{ADMIN_KEY}"
name = "admin"
admin = true

[[auth.api_keys]]
key = "{MARKET_KEY}"
name = "market"
rooms = ["market:*"]

[[auth.jwt]]
kid = "hs"
alg = "HS256"
secret = "{HS_SECRET}"

[[auth.jwt]]
kid = "rsa"
alg = "RS256"
audience = "{AUDIENCE}"
issuer = "{ISSUER}"
public_key_pem = '''
{rsa}'''

[[auth.jwt]]
kid = "ed"
alg = "EdDSA"
public_key_pem = '''
{ed}'''

[[namespaces]]
prefix = "public:"
public = true

[[namespaces]]
prefix = "ro:"
read_only = true
{extra}
"#,
        rsa = keys.rsa_public_pem,
        ed = keys.ed_public_pem,
    )
}

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

/// `POST /v1/rooms/{room}/events` with `Authorization: Bearer {bearer}` (if any).
async fn publish_as(server: &Server, room: &str, bearer: Option<&str>) -> (u16, Value) {
    request(
        server,
        reqwest::Method::POST,
        &format!("/v1/rooms/{room}/events"),
        bearer,
        &[],
        Some(json!({"data": {"by": bearer.is_some()}})),
    )
    .await
}

/// `GET path` with an optional bearer credential; the status and the JSON
/// answer (`Value::Null` for a non-JSON body such as `/metrics`).
async fn get_as(server: &Server, path: &str, bearer: Option<&str>) -> (u16, Value) {
    request(server, reqwest::Method::GET, path, bearer, &[], None).await
}

async fn request(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let api = server.api();
    let mut request = api.http.request(method, format!("{}{path}", api.base));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = within(STEP, &format!("a request to {path}"), request.send())
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = within(STEP, "a response body", response.text())
        .await
        .expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts an HTTP refusal: the status and the JSON `{error, message}`.
#[track_caller]
fn refused(answer: &(u16, Value), status: u16, code: &str, what: &str) {
    assert_eq!(
        (answer.0, answer.1["error"].as_str()),
        (status, Some(code)),
        "{what}: {}",
        answer.1
    );
    assert!(
        answer.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        answer.1
    );
}

/// Connects a WebSocket with these headers and reads `welcome`.
async fn ws_with(url: &str, headers: &[(&str, &str)]) -> Ws {
    let mut ws = Ws::upgrade(url, headers)
        .await
        .unwrap_or_else(|(status, body)| panic!("upgrade of {url} refused: {status} {body}"));
    ws.expect_type("welcome").await;
    ws
}

/// The upgrade must be refused with this status and code.
async fn upgrade_refused(url: &str, headers: &[(&str, &str)], status: u16, code: &str) {
    match Ws::upgrade(url, headers).await {
        Ok(_) => panic!("upgrade of {url} with {headers:?} was accepted; expected {status} {code}"),
        Err(answer) => refused(&answer, status, code, url),
    }
}

fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}

/// Reads frames until an `error` frame and returns it; `subscribed` and
/// `caught_up` frames (of earlier subscriptions) are skipped, anything else
/// fails the test.
async fn next_error(ws: &mut Ws) -> Value {
    loop {
        let frame = ws.next_json().await;
        match frame["type"].as_str() {
            Some("error") => return frame,
            Some("subscribed") | Some("caught_up") => continue,
            _ => panic!("expected an error frame, got {frame}"),
        }
    }
}

/// Publishes over the socket (the session is subscribed to `room`) and reads
/// both the `ack` and the event `seq`, in whichever order they come.
async fn publish_over_socket(ws: &mut Ws, id: &str, room: &str, seq: u64) {
    ws.send_json(json!({"type": "publish", "id": id, "room": room, "data": {"id": id}}))
        .await;
    let (mut acked, mut delivered) = (false, false);
    while !(acked && delivered) {
        let frame = ws.next_json().await;
        match frame["type"].as_str() {
            Some("ack") if !acked => {
                assert_eq!(
                    (
                        frame["id"].as_str(),
                        frame["room"].as_str(),
                        frame["seq"].as_u64()
                    ),
                    (Some(id), Some(room), Some(seq)),
                    "{frame}"
                );
                acked = true;
            }
            Some("event") if !delivered => {
                assert_eq!(
                    (frame["room"].as_str(), frame["seq"].as_u64()),
                    (Some(room), Some(seq)),
                    "{frame}"
                );
                delivered = true;
            }
            _ => panic!("expected the ack and the event of {id}, got {frame}"),
        }
    }
}

/// Reads to the close; the close code and the frames before it.
async fn close_with_frames(ws: &mut Ws) -> (u16, Vec<Value>) {
    let (code, frames) = ws.close_after_frames().await;
    (
        code.unwrap_or_else(|| panic!("no close frame (after {frames:?})")),
        frames,
    )
}

fn has_error(frames: &[Value], code: &str) -> bool {
    frames
        .iter()
        .any(|f| f["type"] == "error" && f["code"] == code)
}

// ---------------------------------------------------------------------------
// API keys, admin routes, read access, namespaces over HTTP
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_admin_routes_and_namespaces_over_http() {
    let server = Server::start(&config("")).await;

    // Publishing needs a credential, and a known one.
    refused(
        &publish_as(&server, "market:1", None).await,
        401,
        "unauthenticated",
        "anonymous publish",
    );
    refused(
        &publish_as(&server, "market:1", Some("wrong-key-0123456789abcdef")).await,
        401,
        "unauthenticated",
        "unknown key",
    );
    refused(
        &publish_as(
            &server,
            "market:1",
            Some(&MARKET_KEY[..MARKET_KEY.len() - 1]),
        )
        .await,
        401,
        "unauthenticated",
        "key prefix",
    );
    refused(
        &publish_as(&server, "market:1", Some(&format!("{MARKET_KEY}x"))).await,
        401,
        "unauthenticated",
        "key plus a byte",
    );
    let basic = request(
        &server,
        reqwest::Method::POST,
        "/v1/rooms/market:1/events",
        None,
        &[("authorization", &format!("Basic {MARKET_KEY}"))],
        Some(json!({"data": 1})),
    )
    .await;
    refused(&basic, 401, "unauthenticated", "a key under another scheme");

    // A key limited to patterns publishes inside them only.
    assert_eq!(
        publish_as(&server, "market:1", Some(MARKET_KEY)).await.0,
        201
    );
    refused(
        &publish_as(&server, "chat:1", Some(MARKET_KEY)).await,
        403,
        "forbidden",
        "key outside its rooms",
    );
    refused(
        &publish_as(&server, "markets:1", Some(MARKET_KEY)).await,
        403,
        "forbidden",
        "key outside its rooms (prefix lookalike)",
    );
    assert_eq!(
        publish_as(&server, "chat:1", Some(ADMIN_KEY)).await.0,
        201,
        "a key without rooms may publish anywhere"
    );

    // Admin routes need an admin key.
    for path in ["/metrics", "/v1/stats", "/v1/rooms"] {
        refused(
            &get_as(&server, path, None).await,
            401,
            "unauthenticated",
            path,
        );
        refused(
            &get_as(&server, path, Some(MARKET_KEY)).await,
            403,
            "forbidden",
            path,
        );
        refused(
            &get_as(&server, path, Some(&user(&["*"], &["*"]))).await,
            403,
            "forbidden",
            path,
        );
        refused(
            &get_as(&server, path, Some("wrong-key-0123456789abcdef")).await,
            401,
            "unauthenticated",
            path,
        );
        assert_eq!(
            get_as(&server, path, Some(ADMIN_KEY)).await.0,
            200,
            "{path} with the admin key"
        );
    }

    // History and room stats need subscribe permission on the room.
    for path in ["/v1/rooms/market:1/events", "/v1/rooms/market:1"] {
        refused(
            &get_as(&server, path, None).await,
            401,
            "unauthenticated",
            path,
        );
        assert_eq!(
            get_as(&server, path, Some(MARKET_KEY)).await.0,
            200,
            "{path} with the market key"
        );
        assert_eq!(
            get_as(&server, path, Some(&user(&["market:*"], &[])))
                .await
                .0,
            200,
            "{path} with a subscribe grant"
        );
        refused(
            &get_as(&server, path, Some(&user(&["chat:*"], &["market:*"]))).await,
            403,
            "forbidden",
            path,
        );
    }
    refused(
        &get_as(&server, "/v1/rooms/chat:1/events", Some(MARKET_KEY)).await,
        403,
        "forbidden",
        "history outside the key's rooms",
    );
    let history = get_as(&server, "/v1/rooms/market:1/events", Some(MARKET_KEY))
        .await
        .1;
    assert_eq!(history["head"], 1, "{history}");

    // Read-only namespace: tokens may not publish there, API keys may.
    let writer = user(&["ro:*"], &["ro:*", "chat:*"]);
    refused(
        &publish_as(&server, "ro:news", Some(&writer)).await,
        403,
        "forbidden",
        "token publish to a read-only namespace",
    );
    assert_eq!(
        publish_as(&server, "chat:2", Some(&writer)).await.0,
        201,
        "the same token elsewhere"
    );
    assert_eq!(
        publish_as(&server, "ro:news", Some(ADMIN_KEY)).await.0,
        201,
        "API key publish to a read-only namespace"
    );

    // Public namespace: anyone reads, nobody anonymous writes.
    assert_eq!(
        publish_as(&server, "public:news", Some(ADMIN_KEY)).await.0,
        201
    );
    let public = get_as(&server, "/v1/rooms/public:news/events", None).await;
    assert_eq!(
        (public.0, &public.1["head"]),
        (200, &json!(1)),
        "{}",
        public.1
    );
    refused(
        &publish_as(&server, "public:news", None).await,
        401,
        "unauthenticated",
        "anonymous publish to a public namespace",
    );
    refused(
        &publish_as(&server, "public:news", Some(&user(&["*"], &["chat:*"]))).await,
        403,
        "forbidden",
        "token without a publish grant there",
    );
}

// ---------------------------------------------------------------------------
// JWT verification
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_verification() {
    let server = Server::start(&config("")).await;
    let keys = keys();
    let grant = |exp: u64| json!({"sub": "u", "exp": exp, "aud": AUDIENCE, "iss": ISSUER, "publish": ["market:*"]});
    let accepted = |token: String, what: &'static str| {
        let server = &server;
        async move {
            let answer = publish_as(server, "market:1", Some(&token)).await;
            assert_eq!(answer.0, 201, "{what}: {}", answer.1);
        }
    };
    let rejected = |token: String, status: u16, code: &'static str, what: &'static str| {
        let server = &server;
        async move {
            refused(
                &publish_as(server, "market:1", Some(&token)).await,
                status,
                code,
                what,
            )
        }
    };

    // Every configured algorithm works with its own key.
    accepted(token(Signer::Hs, grant(now() + 60)), "HS256").await;
    accepted(token(Signer::Rsa, grant(now() + 60)), "RS256").await;
    accepted(token(Signer::Ed, grant(now() + 60)), "EdDSA").await;

    // Time claims.
    rejected(
        token(Signer::Hs, grant(now() - 10)),
        401,
        "token_expired",
        "expired HS256",
    )
    .await;
    rejected(
        token(Signer::Rsa, grant(now() - 10)),
        401,
        "token_expired",
        "expired RS256",
    )
    .await;
    let mut early = grant(now() + 120);
    early["nbf"] = json!(now() + 60);
    rejected(
        token(Signer::Hs, early),
        401,
        "unauthenticated",
        "nbf in the future",
    )
    .await;
    let mut no_exp = grant(0);
    no_exp.as_object_mut().unwrap().remove("exp");
    rejected(token(Signer::Hs, no_exp), 401, "unauthenticated", "no exp").await;

    // Signatures.
    let other_secret = EncodingKey::from_secret(b"another-secret-that-is-also-32-bytes-or-more")
        .expect("a non-empty secret");
    rejected(
        sign(
            Algorithm::HS256,
            Some("hs"),
            &other_secret,
            &grant(now() + 60),
        ),
        401,
        "unauthenticated",
        "wrong HS256 secret",
    )
    .await;
    let good = token(Signer::Hs, grant(now() + 60));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut elevated = grant(now() + 60);
    elevated["publish"] = json!(["*"]);
    parts[1] = base64(elevated.to_string().as_bytes(), true);
    rejected(
        parts.join("."),
        401,
        "unauthenticated",
        "payload changed after signing",
    )
    .await;

    // Algorithm confusion: an HS256 token whose HMAC secret is the RS256 public
    // key (which is public) must not pass for the RS256 key.
    let confused =
        EncodingKey::from_secret(keys.rsa_public_pem.as_bytes()).expect("a non-empty secret");
    rejected(
        sign(Algorithm::HS256, Some("rsa"), &confused, &grant(now() + 60)),
        401,
        "unauthenticated",
        "alg confusion HS256/RS256",
    )
    .await;
    let confused_trimmed = EncodingKey::from_secret(keys.rsa_public_pem.trim().as_bytes())
        .expect("a non-empty secret");
    rejected(
        sign(
            Algorithm::HS256,
            Some("rsa"),
            &confused_trimmed,
            &grant(now() + 60),
        ),
        401,
        "unauthenticated",
        "alg confusion (trimmed PEM)",
    )
    .await;
    let confused_ed =
        EncodingKey::from_secret(keys.ed_public_pem.as_bytes()).expect("a non-empty secret");
    rejected(
        sign(
            Algorithm::HS256,
            Some("ed"),
            &confused_ed,
            &grant(now() + 60),
        ),
        401,
        "unauthenticated",
        "alg confusion HS256/EdDSA",
    )
    .await;
    // A real signature by another of our keys, under the wrong kid.
    let ed_key = EncodingKey::from_ed_der(&keys.ed_pkcs8);
    rejected(
        sign(Algorithm::EdDSA, Some("rsa"), &ed_key, &grant(now() + 60)),
        401,
        "unauthenticated",
        "EdDSA signature under the RS256 kid",
    )
    .await;
    let rsa_key = EncodingKey::from_rsa_pem(keys.rsa_private_pem.as_bytes()).unwrap();
    rejected(
        sign(Algorithm::RS384, Some("rsa"), &rsa_key, &grant(now() + 60)),
        401,
        "unauthenticated",
        "RS384 under an RS256 key",
    )
    .await;

    // `alg: none`, with and without a signature part, in several spellings.
    for alg in ["none", "None", "NONE"] {
        for kid in [Some("hs"), Some("rsa"), None] {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let unsigned = format!(
                "{}.{}.",
                base64(header.to_string().as_bytes(), true),
                base64(grant(now() + 60).to_string().as_bytes(), true)
            );
            rejected(unsigned.clone(), 401, "unauthenticated", "alg none").await;
            rejected(
                format!("{unsigned}{}", base64(b"signature", true)),
                401,
                "unauthenticated",
                "alg none with a signature",
            )
            .await;
        }
    }

    // Key selection: an unknown kid, or none, finds no key.
    let hs = EncodingKey::from_secret(HS_SECRET.as_bytes()).expect("a non-empty secret");
    rejected(
        sign(Algorithm::HS256, Some("nope"), &hs, &grant(now() + 60)),
        401,
        "unauthenticated",
        "unknown kid",
    )
    .await;
    rejected(
        sign(Algorithm::HS256, None, &hs, &grant(now() + 60)),
        401,
        "unauthenticated",
        "no kid",
    )
    .await;

    // Audience and issuer, where the key requires them.
    let mut wrong_aud = grant(now() + 60);
    wrong_aud["aud"] = json!("someone-else");
    rejected(
        token(Signer::Rsa, wrong_aud),
        401,
        "unauthenticated",
        "wrong aud",
    )
    .await;
    let mut wrong_iss = grant(now() + 60);
    wrong_iss["iss"] = json!("someone-else");
    rejected(
        token(Signer::Rsa, wrong_iss),
        401,
        "unauthenticated",
        "wrong iss",
    )
    .await;
    let mut no_aud = grant(now() + 60);
    no_aud.as_object_mut().unwrap().remove("aud");
    rejected(
        token(Signer::Rsa, no_aud),
        401,
        "unauthenticated",
        "missing aud",
    )
    .await;
    let mut no_iss = grant(now() + 60);
    no_iss.as_object_mut().unwrap().remove("iss");
    rejected(
        token(Signer::Rsa, no_iss),
        401,
        "unauthenticated",
        "missing iss",
    )
    .await;

    // Garbage that looks like a token.
    rejected("a.b.c".into(), 401, "unauthenticated", "a.b.c").await;
    rejected("..".into(), 401, "unauthenticated", "..").await;

    // A valid token grants what its claims say, no more.
    let reader = token(
        Signer::Ed,
        json!({"sub": "r", "exp": now() + 60, "subscribe": ["market:*"]}),
    );
    rejected(reader, 403, "forbidden", "token without a publish grant").await;
    let narrow = token(
        Signer::Hs,
        json!({"sub": "n", "exp": now() + 60, "publish": ["market:42"]}),
    );
    refused(
        &publish_as(&server, "market:1", Some(&narrow)).await,
        403,
        "forbidden",
        "room outside the publish grant",
    );
    assert_eq!(publish_as(&server, "market:42", Some(&narrow)).await.0, 201);
}

// ---------------------------------------------------------------------------
// Grants over WebSockets
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_over_websockets() {
    let server = Server::start(&config("")).await;
    let trader = user(&["market:*", "ro:*"], &["market:*", "ro:*"]);

    // A token in `?token=` on a room URL: subscribed, and events arrive.
    let (mut follower, _) = Ws::room(&server, "market:1", &format!("?token={trader}")).await;
    follower.until_caught_up("market:1", 0).await;
    assert_eq!(
        publish_as(&server, "market:1", Some(MARKET_KEY)).await.0,
        201
    );
    follower.events_until("market:1", 0, 1).await;

    // Room URL outside the grant: `error forbidden`, then close 4003.
    let mut outside = Ws::connect(&server.room_ws_url("chat:1", &format!("?token={trader}"))).await;
    let (code, frames) = close_with_frames(&mut outside).await;
    assert_eq!(code, 4003, "{frames:?}");
    assert!(has_error(&frames, "forbidden"), "{frames:?}");

    // Room URL without credentials: close 4001.
    let mut anonymous = Ws::connect(&server.room_ws_url("market:1", "")).await;
    let (code, frames) = close_with_frames(&mut anonymous).await;
    assert_eq!(code, 4001, "{frames:?}");
    assert!(has_error(&frames, "unauthenticated"), "{frames:?}");

    // A token in the Authorization header on /v1/ws: a refused subscribe is an
    // error frame and the session goes on.
    let auth = bearer(&trader);
    let mut session = ws_with(&server.ws_url("/v1/ws"), &[("authorization", &auth)]).await;
    session
        .send_json(json!({"type": "subscribe", "room": "chat:1"}))
        .await;
    let error = next_error(&mut session).await;
    assert_eq!(
        (error["code"].as_str(), error["room"].as_str()),
        (Some("forbidden"), Some("chat:1")),
        "{error}"
    );
    session.subscribe("market:2", json!({})).await;
    session.until_caught_up("market:2", 0).await;

    // Publish grant over the socket: ack inside, forbidden outside, and the
    // read-only namespace refuses tokens.
    publish_over_socket(&mut session, "p1", "market:2", 1).await;
    for (id, room) in [("p2", "chat:1"), ("p3", "ro:news")] {
        session
            .send_json(json!({"type": "publish", "id": id, "room": room, "data": 1}))
            .await;
        let error = session.expect_type("error").await;
        assert_eq!(
            (error["code"].as_str(), error["id"].as_str()),
            (Some("forbidden"), Some(id)),
            "{error}"
        );
    }
    // A token that may subscribe but not publish.
    let reader = user(&["market:*"], &[]);
    let mut reading = ws_with(&server.ws_url(&format!("/v1/ws?token={reader}")), &[]).await;
    reading
        .send_json(json!({"type": "publish", "id": "r1", "room": "market:2", "data": 1}))
        .await;
    let error = reading.expect_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("forbidden"), Some("r1")),
        "{error}"
    );

    // API keys on sockets are limited to their rooms too.
    let key = bearer(MARKET_KEY);
    let mut keyed = ws_with(&server.ws_url("/v1/ws"), &[("authorization", &key)]).await;
    keyed.subscribe("market:3", json!({})).await;
    keyed
        .send_json(json!({"type": "subscribe", "room": "chat:3"}))
        .await;
    assert_eq!(next_error(&mut keyed).await["code"], "forbidden");
    keyed
        .send_json(json!({"type": "publish", "id": "k1", "room": "ro:news", "data": 1}))
        .await;
    assert_eq!(
        next_error(&mut keyed).await["code"],
        "forbidden",
        "market key outside market:*"
    );

    // Public namespace: anonymous subscribe works, anonymous publish is refused,
    // and nothing else is open to it.
    let mut public = Ws::connect(&server.ws_url("/v1/ws")).await;
    public.subscribe("public:news", json!({})).await;
    public.until_caught_up("public:news", 0).await;
    public
        .send_json(json!({"type": "publish", "id": "a1", "room": "public:news", "data": 1}))
        .await;
    let error = public.expect_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("unauthenticated"), Some("a1")),
        "{error}"
    );
    public
        .send_json(json!({"type": "subscribe", "room": "market:1"}))
        .await;
    assert_eq!(next_error(&mut public).await["code"], "unauthenticated");
    assert_eq!(
        publish_as(&server, "public:news", Some(ADMIN_KEY)).await.0,
        201
    );
    public.events_until("public:news", 0, 1).await;
    let (mut public_room, _) = Ws::room(&server, "public:news", "?rewind=10").await;
    public_room.until_caught_up("public:news", 0).await;

    // Bad or expired credentials at the upgrade: the upgrade succeeds (so a
    // browser can read why), then an `error` frame and close 4001.
    let expired = token(
        Signer::Hs,
        json!({"sub": "old", "exp": now() - 10, "subscribe": ["*"]}),
    );
    closed_with_4001(
        &server.ws_url(&format!("/v1/ws?token={expired}")),
        &[],
        "token_expired",
    )
    .await;
    closed_with_4001(
        &server.room_ws_url("market:1", &format!("?token={expired}")),
        &[],
        "token_expired",
    )
    .await;
    closed_with_4001(
        &server.ws_url("/v1/ws"),
        &[("authorization", &bearer(&expired))],
        "token_expired",
    )
    .await;
    closed_with_4001(
        &server.ws_url("/v1/ws?token=not-a-key-0123456789"),
        &[],
        "unauthenticated",
    )
    .await;
    let forged = sign(
        Algorithm::HS256,
        Some("rsa"),
        &EncodingKey::from_secret(keys().rsa_public_pem.as_bytes()).expect("a non-empty secret"),
        &claims("x", &["*"], &["*"]),
    );
    closed_with_4001(
        &server.room_ws_url("market:1", &format!("?token={forged}")),
        &[],
        "unauthenticated",
    )
    .await;
    let early = token(
        Signer::Hs,
        json!({"sub": "soon", "exp": now() + 120, "nbf": now() + 60, "subscribe": ["*"]}),
    );
    closed_with_4001(
        &server.ws_url(&format!("/v1/ws?token={early}")),
        &[],
        "unauthenticated",
    )
    .await;

    // The follower saw nothing of all this.
    assert_eq!(
        publish_as(&server, "market:1", Some(MARKET_KEY)).await.0,
        201
    );
    follower.events_until("market:1", 1, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_an_auth_message() {
    let server = Server::start(&config("")).await;
    let mut session = Ws::connect(&server.ws_url("/v1/ws")).await;

    // Anonymous first: refused, but the session stays open.
    session
        .send_json(json!({"type": "subscribe", "room": "market:1"}))
        .await;
    assert_eq!(next_error(&mut session).await["code"], "unauthenticated");

    let exp = now() + 60;
    let alice = token(
        Signer::Rsa,
        json!({"sub": "alice", "exp": exp, "aud": AUDIENCE, "iss": ISSUER, "subscribe": ["market:*"], "publish": ["market:1"]}),
    );
    session
        .send_json(json!({"type": "auth", "token": alice}))
        .await;
    let authenticated = session.expect_type("authenticated").await;
    assert_eq!(
        (authenticated["sub"].as_str(), authenticated["exp"].as_u64()),
        (Some("alice"), Some(exp)),
        "{authenticated}"
    );
    session.subscribe("market:1", json!({})).await;
    session.until_caught_up("market:1", 0).await;
    publish_over_socket(&mut session, "m1", "market:1", 1).await;

    // A refresh with a narrower grant ends the subscriptions it no longer allows.
    let narrower = user(&["market:2"], &[]);
    session
        .send_json(json!({"type": "auth", "token": narrower}))
        .await;
    session.expect_type("authenticated").await;
    let error = session.expect_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["room"].as_str()),
        (Some("forbidden"), Some("market:1")),
        "{error}"
    );
    assert_eq!(
        publish_as(&server, "market:1", Some(MARKET_KEY)).await.0,
        201
    );
    session.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        session.next_json().await["type"],
        "pong",
        "no event of a room the new token does not allow"
    );

    // An invalid token in an auth message: error, then close 4001.
    for bad in [
        "a.b.c".to_owned(),
        token(
            Signer::Hs,
            json!({"sub": "late", "exp": now() - 5, "subscribe": ["*"]}),
        ),
    ] {
        let mut session = Ws::connect(&server.ws_url("/v1/ws")).await;
        session
            .send_json(json!({"type": "auth", "token": bad}))
            .await;
        let (code, frames) = close_with_frames(&mut session).await;
        assert_eq!(code, 4001, "{frames:?}");
        assert!(
            has_error(&frames, "unauthenticated") || has_error(&frames, "token_expired"),
            "{frames:?}"
        );
    }
    let mut expired = Ws::connect(&server.ws_url("/v1/ws")).await;
    expired
        .send_json(json!({"type": "auth", "token": token(Signer::Ed, json!({"exp": now() - 5}))}))
        .await;
    let (code, frames) = close_with_frames(&mut expired).await;
    assert_eq!(code, 4001, "{frames:?}");
    assert!(
        has_error(&frames, "token_expired"),
        "an expired token is told as such: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_closes_the_session_unless_refreshed() {
    let server = Server::start(&config("")).await;
    let short = |secs: u64| {
        token(
            Signer::Hs,
            json!({"sub": "s", "exp": now() + secs, "subscribe": ["market:*"]}),
        )
    };

    // Not refreshed: `error token_expired`, then close 4001 after the grace period.
    let (mut lapsing, _) = Ws::room(&server, "market:1", &format!("?token={}", short(2))).await;
    lapsing.until_caught_up("market:1", 0).await;
    let expired = within(
        Duration::from_secs(30),
        "the token_expired frame",
        lapsing.next_json(),
    )
    .await;
    assert_eq!(
        (expired["type"].as_str(), expired["code"].as_str()),
        (Some("error"), Some("token_expired")),
        "{expired}"
    );
    let (code, frames) = close_with_frames(&mut lapsing).await;
    assert_eq!(code, 4001, "{frames:?}");

    // Refreshed with an `auth` message when told: the session lives on,
    // subscribed, well past the grace period.
    let (mut refreshed, _) = Ws::room(&server, "market:2", &format!("?token={}", short(2))).await;
    refreshed.until_caught_up("market:2", 0).await;
    let expired = within(
        Duration::from_secs(30),
        "the token_expired frame",
        refreshed.next_json(),
    )
    .await;
    assert_eq!(expired["code"], "token_expired", "{expired}");
    refreshed
        .send_json(json!({"type": "auth", "token": short(120)}))
        .await;
    assert_eq!(refreshed.expect_type("authenticated").await["sub"], "s");
    tokio::time::sleep(Duration::from_millis(1500)).await; // three grace periods
    refreshed.send_json(json!({"type": "ping"})).await;
    assert_eq!(refreshed.next_json().await["type"], "pong");
    assert_eq!(
        publish_as(&server, "market:2", Some(MARKET_KEY)).await.0,
        201
    );
    refreshed.events_until("market:2", 0, 1).await;

    // Refreshed ahead of time: never told it expired.
    let mut early = ws_with(&server.ws_url(&format!("/v1/ws?token={}", short(2))), &[]).await;
    early
        .send_json(json!({"type": "auth", "token": short(120)}))
        .await;
    early.expect_type("authenticated").await;
    tokio::time::sleep(Duration::from_millis(3000)).await; // past the first token's exp and grace
    early.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        early.next_json().await["type"],
        "pong",
        "a refreshed session is not told its old token expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_expiry_is_just_a_long_session() {
    // A signed token may carry any `exp` its issuer chose; the session timer
    // must cope with the largest ones (no overflow, no instant expiry).
    let server = Server::start(&config("")).await;
    for exp in [now() + 10 * 365 * 24 * 3600, i64::MAX as u64, u64::MAX] {
        let far = token(
            Signer::Hs,
            json!({"sub": "far", "exp": exp, "subscribe": ["market:*"]}),
        );
        let (mut session, _) = Ws::room(&server, "market:9", &format!("?token={far}")).await;
        session.until_caught_up("market:9", 0).await;
        let mut other = Ws::connect(&server.ws_url("/v1/ws")).await;
        other.send_json(json!({"type": "auth", "token": far})).await;
        assert_eq!(
            other.expect_type("authenticated").await["exp"],
            exp,
            "exp {exp}"
        );
        tokio::time::sleep(Duration::from_millis(700)).await; // past the grace period
        for ws in [&mut session, &mut other] {
            ws.send_json(json!({"type": "ping"})).await;
            let pong = ws.next_json().await;
            assert_eq!(pong["type"], "pong", "exp {exp}: {pong}");
        }
    }
}

// ---------------------------------------------------------------------------
// Origins and proxies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allowlist() {
    let server = Server::start(&config("")).await;
    let url = server.room_ws_url("public:news", "");
    upgrade_refused(
        &url,
        &[("origin", "https://evil.example")],
        403,
        "forbidden",
    )
    .await;
    upgrade_refused(
        &url,
        &[("origin", "https://app.example.evil.example")],
        403,
        "forbidden",
    )
    .await;
    upgrade_refused(&url, &[("origin", "null")], 403, "forbidden").await;
    let token = user(&["market:*"], &[]);
    upgrade_refused(
        &server.ws_url(&format!("/v1/ws?token={token}")),
        &[("origin", "https://evil.example")],
        403,
        "forbidden",
    )
    .await;

    let mut allowed = ws_with(&url, &[("origin", "https://app.example")]).await;
    assert_eq!(
        allowed.expect_type("subscribed").await["room"],
        "public:news"
    );
    // Not a browser (no Origin): allowed; origins guard browsers only.
    ws_with(&url, &[]).await.expect_type("subscribed").await;
}

/// Upgrades (bad credentials are not refused at the HTTP level), then expects
/// the `error` frame with `code` and close 4001.
async fn closed_with_4001(url: &str, headers: &[(&str, &str)], code: &str) {
    let mut ws = Ws::upgrade(url, headers)
        .await
        .unwrap_or_else(|(status, body)| panic!("upgrade of {url} refused: {status} {body}"));
    let error = ws.expect_type("error").await;
    assert_eq!(error["code"], code, "{url}: {error}");
    assert_eq!(ws.expect_close().await, 4001, "{url}");
}

/// Opens (and drops) one upgrade with these headers; the HTTP status.
async fn connect_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    match Ws::upgrade(url, headers).await {
        Ok(_) => 101,
        Err((status, body)) => {
            if status == 429 {
                refused(&(status, body), 429, "rate_limited", "connect rate");
            }
            status
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    // No credentials: protected mode. Behind a trusted proxy on loopback, the
    // client is the forwarded address.
    let behind = Server::start("[sqlite]\nsynchronous = \"normal\"\n[auth]\ntrusted_proxies = [\"127.0.0.1\"]\n[rate_limits]\nconnects_per_ip_per_minute = 3\n").await;
    let url = behind.ws_url("/v1/ws");
    for _ in 0..3 {
        assert_eq!(
            connect_status(&url, &[("x-forwarded-for", "203.0.113.7")]).await,
            101
        );
    }
    assert_eq!(
        connect_status(&url, &[("x-forwarded-for", "203.0.113.7")]).await,
        429,
        "the forwarded address is rate limited"
    );
    assert_eq!(
        connect_status(&url, &[("x-forwarded-for", "203.0.113.7, 127.0.0.1")]).await,
        429,
        "trusted hops are skipped"
    );
    assert_eq!(
        connect_status(&url, &[("x-forwarded-for", "203.0.113.8")]).await,
        101,
        "another client has its own quota"
    );
    assert_eq!(
        connect_status(&url, &[("x-forwarded-for", "203.0.113.7, 203.0.113.9")]).await,
        101,
        "the last untrusted hop is the client"
    );
    assert_eq!(
        connect_status(&url, &[]).await,
        101,
        "the proxy's own address has its own quota"
    );

    // Protected mode applies to the forwarded client: it is not on loopback.
    let remote = [("x-forwarded-for", "198.51.100.1")];
    let anonymous_remote = request(
        &behind,
        reqwest::Method::POST,
        "/v1/rooms/r/events",
        None,
        &remote,
        Some(json!({"data": 1})),
    )
    .await;
    refused(
        &anonymous_remote,
        401,
        "unauthenticated",
        "anonymous remote client in protected mode",
    );
    let mut session = ws_with(&url, &[("x-forwarded-for", "198.51.100.2")]).await;
    session
        .send_json(json!({"type": "subscribe", "room": "r"}))
        .await;
    assert_eq!(next_error(&mut session).await["code"], "unauthenticated");
    assert_eq!(
        behind.api().post("r", &json!({"data": 1}), None).await.0,
        201,
        "loopback itself is trusted"
    );

    // The same headers from a peer that is not a trusted proxy are ignored:
    // every attempt counts against the peer's own address.
    let direct = Server::start("[sqlite]\nsynchronous = \"normal\"\n[auth]\ntrusted_proxies = [\"10.9.9.9\"]\n[rate_limits]\nconnects_per_ip_per_minute = 3\n").await;
    let url = direct.ws_url("/v1/ws");
    for i in 0..3 {
        let forwarded = format!("203.0.113.{}", 10 + i);
        assert_eq!(
            connect_status(&url, &[("x-forwarded-for", &forwarded)]).await,
            101
        );
    }
    assert_eq!(
        connect_status(&url, &[("x-forwarded-for", "203.0.113.99")]).await,
        429,
        "a spoofed header does not buy a new quota"
    );
    let spoofed = request(
        &direct,
        reqwest::Method::POST,
        "/v1/rooms/r/events",
        None,
        &remote,
        Some(json!({"data": 1})),
    )
    .await;
    assert_eq!(
        spoofed.0, 201,
        "the peer is loopback whatever the header says: {}",
        spoofed.1
    );
}

// ---------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rate_trips_and_recovers() {
    let server = Server::start(
        "[sqlite]\nsynchronous = \"normal\"\n[rate_limits]\nconnects_per_ip_per_minute = 60\n",
    )
    .await;
    let url = server.ws_url("/v1/ws");
    let mut accepted = 0;
    loop {
        match connect_status(&url, &[]).await {
            101 => accepted += 1,
            429 => break,
            other => panic!("unexpected status {other}"),
        }
        assert!(accepted <= 200, "the connect rate never tripped");
    }
    assert!(
        accepted >= 50,
        "the quota of 60 per minute allows a burst ({accepted} accepted)"
    );
    // Other routes are not connect-limited.
    assert_eq!(server.api().get("/healthz").await.0, 200);
    // The quota refills: eventually a connect is allowed again.
    eventually("a connect after the rate limit", || {
        let url = url.clone();
        async move { (connect_status(&url, &[]).await == 101).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rate_closes_with_4008() {
    let server = Server::start(
        "[sqlite]\nsynchronous = \"normal\"\n[rate_limits]\nmessages_per_session_per_second = 5\n",
    )
    .await;
    let (mut bystander, _) = Ws::room(&server, "r", "").await;
    bystander.until_caught_up("r", 0).await;

    // 100 pings in one write; send errors are ignored (the server may close
    // while they are still arriving).
    let (mut flood, _) = within(
        STEP,
        "a connect",
        tokio_tungstenite::connect_async(server.ws_url("/v1/ws")),
    )
    .await
    .expect("connect");
    for _ in 0..100 {
        let _ = flood.feed(Message::text(r#"{"type":"ping"}"#)).await;
    }
    let _ = flood.flush().await;
    let (mut answers, mut code) = (0, None);
    within(STEP, "the close of the flooding session", async {
        while let Some(Ok(message)) = flood.next().await {
            match message {
                Message::Text(_) => answers += 1,
                Message::Close(frame) => {
                    code = frame.map(|f| u16::from(f.code));
                    return;
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(code, Some(4008), "{answers} answers before the end");
    assert!(
        answers < 100,
        "some messages were refused: {answers} answers"
    );

    // A session within its rate is untouched.
    bystander.send_json(json!({"type": "ping"})).await;
    assert_eq!(bystander.next_json().await["type"], "pong");
    server.publish("r", json!(1)).await;
    bystander.events_until("r", 0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate_is_per_credential() {
    let server = Server::start(&config("[rate_limits]\npublishes_per_key_per_second = 5\n")).await;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let answer = publish_as(&server, "market:1", Some(MARKET_KEY)).await;
        if answer.0 == 429 {
            refused(&answer, 429, "rate_limited", "publish rate");
        }
        statuses.push(answer.0);
    }
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "40 publishes at once must trip 5 per second: {statuses:?}"
    );
    assert_eq!(statuses[0], 201, "{statuses:?}");
    // Another credential has its own quota.
    assert_eq!(
        publish_as(&server, "market:1", Some(ADMIN_KEY)).await.0,
        201
    );
    // The refused publishes were not appended.
    let accepted = statuses.iter().filter(|s| **s == 201).count() as u64;
    let history = get_as(
        &server,
        "/v1/rooms/market:1/events?limit=1000",
        Some(ADMIN_KEY),
    )
    .await
    .1;
    assert_eq!(history["head"], accepted + 1, "{history}");
    // The quota refills.
    let server = &server;
    eventually("a publish after the rate limit", || async move {
        (publish_as(server, "market:1", Some(MARKET_KEY)).await.0 == 201).then_some(())
    })
    .await;

    // Publishing over a socket with the same credential draws on the same
    // quota: the refused ones get `error rate_limited` with their id, the
    // session goes on, and nothing refused is appended.
    let head_before = get_as(server, "/v1/rooms/market:1", Some(ADMIN_KEY))
        .await
        .1["head"]
        .as_u64()
        .expect("head");
    let auth = bearer(MARKET_KEY);
    let mut socket = ws_with(&server.ws_url("/v1/ws"), &[("authorization", &auth)]).await;
    for i in 0..40 {
        socket
            .send_json(
                json!({"type": "publish", "id": format!("s{i}"), "room": "market:1", "data": i}),
            )
            .await;
    }
    let (mut acks, mut limited) = (0u64, 0);
    for _ in 0..40 {
        let frame = socket.next_json().await;
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("ack"), _) => acks += 1,
            (Some("error"), Some("rate_limited")) => {
                assert!(
                    frame["id"].as_str().is_some_and(|id| id.starts_with('s')),
                    "{frame}"
                );
                limited += 1;
            }
            _ => panic!("unexpected answer to a socket publish: {frame}"),
        }
    }
    assert!(
        limited > 0,
        "40 socket publishes at once must trip 5 per second ({acks} acked)"
    );
    socket.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        socket.next_json().await["type"],
        "pong",
        "the session goes on"
    );
    let head = get_as(server, "/v1/rooms/market:1", Some(ADMIN_KEY))
        .await
        .1["head"]
        .as_u64()
        .expect("head");
    assert_eq!(head, head_before + acks);
}

// ---------------------------------------------------------------------------
// Caps
// ---------------------------------------------------------------------------

/// Upgrades; returns the close code if the server closes at once instead of
/// sending `welcome`.
async fn open_or_close_code(url: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut ws = Ws::upgrade(url, headers)
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"));
    match ws.next_or_close().await {
        Ok(frame) => {
            assert_eq!(frame["type"], "welcome", "{frame}");
            Ok(ws)
        }
        Err(code) => Err(code.expect("a close frame, not just a dropped connection")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_close_with_1013() {
    let server = Server::start(
        "[sqlite]\nsynchronous = \"normal\"\n[auth]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [rate_limits]\nmax_connections = 4\nmax_connections_per_ip = 2\n",
    )
    .await;
    let url = server.ws_url("/v1/ws");
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    let c = [("x-forwarded-for", "203.0.113.3")];
    let mut a1 = open_or_close_code(&url, &a).await.expect("first of A");
    let _a2 = open_or_close_code(&url, &a).await.expect("second of A");
    assert_eq!(
        open_or_close_code(&url, &a).await.err(),
        Some(1013),
        "third of A: over the per-address cap"
    );
    let _b1 = open_or_close_code(&url, &b).await.expect("first of B");
    let _b2 = open_or_close_code(&url, &b).await.expect("second of B");
    assert_eq!(
        open_or_close_code(&url, &c).await.err(),
        Some(1013),
        "C: the node is full"
    );

    // Sessions within the caps work; a freed slot is given back.
    a1.send_json(json!({"type": "ping"})).await;
    assert_eq!(a1.next_json().await["type"], "pong");
    a1.close().await;
    eventually("a slot to be given back", || {
        let url = url.clone();
        async move { open_or_close_code(&url, &c).await.ok().map(drop) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_subscriber_cap() {
    let server = Server::start(
        "[sqlite]\nsynchronous = \"normal\"\n[rate_limits]\nmax_subscribers_per_room = 1\n",
    )
    .await;
    let (mut first, _) = Ws::room(&server, "full", "").await;
    first.until_caught_up("full", 0).await;

    // Over a message: `error over_capacity`, the session goes on.
    let mut second = Ws::connect(&server.ws_url("/v1/ws")).await;
    second
        .send_json(json!({"type": "subscribe", "room": "full"}))
        .await;
    // Refused before any `subscribed`: the answer is the error itself.
    let error = second.next_json().await;
    assert_eq!(
        error["type"], "error",
        "a full room answers with the refusal, not `subscribed` first: {error}"
    );
    assert_eq!(
        (error["code"].as_str(), error["room"].as_str()),
        (Some("over_capacity"), Some("full")),
        "{error}"
    );
    // A refusal for now says when to ask again (the SDKs wait that long).
    assert_eq!(error["retry_after_ms"], 1000, "{error}");
    second.subscribe("other", json!({})).await;
    second.until_caught_up("other", 0).await;

    // On a room URL: close 1013.
    let mut third = Ws::connect(&server.room_ws_url("full", "")).await;
    let (code, frames) = close_with_frames(&mut third).await;
    assert_eq!(code, 1013, "{frames:?}");
    assert!(has_error(&frames, "over_capacity"), "{frames:?}");
    assert!(
        !frames.iter().any(|f| f["type"] == "subscribed"),
        "refused before `subscribed`: {frames:?}"
    );
    // Both refusals are counted (protected mode: loopback may read /metrics).
    let metrics = server
        .api()
        .http
        .get(format!("{}/metrics", server.base()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let refusals = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hubcast_refusals_total{reason=\"over_capacity\"}"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        refusals >= 2.0,
        "room-capacity refusals must be counted: {refusals}"
    );

    // The subscriber in the room is unaffected, and its leaving frees the place.
    server.publish("full", json!(1)).await;
    first.events_until("full", 0, 1).await;
    first.close().await;
    eventually("the room to have room again", || {
        let server = &server;
        async move {
            let mut ws = Ws::connect(&server.ws_url("/v1/ws")).await;
            ws.send_json(json!({"type": "subscribe", "room": "full", "cursor": 0}))
                .await;
            loop {
                let frame = ws.next_json().await;
                match frame["type"].as_str() {
                    Some("subscribed") | Some("event") => continue,
                    Some("caught_up") => return Some(()),
                    Some("error") if frame["code"] == "over_capacity" => return None,
                    _ => panic!("unexpected {frame}"),
                }
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Protected mode at startup
// ---------------------------------------------------------------------------

/// Runs `hubcast serve` with these arguments in a temp dir; `config` (if any)
/// is its hubcast.toml.
fn serve_command(dir: &std::path::Path, args: &[&str]) -> Command {
    // The named config file must exist: an empty one is the defaults.
    let config = dir.join("hubcast.toml");
    if !config.exists() {
        std::fs::write(&config, "").expect("write hubcast.toml");
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_hubcast"));
    command
        .arg("serve")
        .arg("--config")
        .arg(dir.join("hubcast.toml"))
        .arg("--store")
        .arg(format!(
            "sqlite://{}",
            dir.join("data").join("hubcast.db").display()
        ))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "hubcast=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("HUBCAST_") {
            command.env_remove(key);
        }
    }
    command
}

/// Starts `command`, reads the address it bound from its `listening on`
/// line, checks `/healthz` on that port over loopback, and kills it.
async fn starts_and_serves(mut command: Command, what: &str) {
    let mut child = command.spawn().expect("spawn hubcast");
    // Drain stderr (the log) so the server never blocks on it; shown on failure.
    let stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut log);
        log
    });
    let listening = support::server::listening_address(&mut child, Duration::from_secs(30)).await;
    let addr = listening.unwrap_or_else(|status| {
        panic!(
            "{what}: hubcast exited ({status}): {}",
            log.join().unwrap_or_default()
        )
    });
    assert!(
        addr.ip().is_unspecified() && addr.port() != 0,
        "{what}: the line names the bound address, not {addr}"
    );
    let health = reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/healthz", addr.port()))
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health.expect("healthz").status().as_u16(), 200, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_bind_needs_credentials_or_insecure() {
    let dir = tempfile::tempdir().expect("temp dir");

    // No credentials, a non-loopback address: refused, with the reason and the way out.
    let refused = serve_command(dir.path(), &["--listen", "0.0.0.0:0"])
        .spawn()
        .expect("spawn hubcast");
    let output = within(
        STEP,
        "hubcast to refuse",
        tokio::task::spawn_blocking(move || refused.wait_with_output()),
    )
    .await
    .expect("wait task")
    .expect("wait for hubcast");
    let status = output.status;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !status.success(),
        "hubcast must exit non-zero: {status}; stderr: {stderr}"
    );
    for needle in [
        "refusing to listen on 0.0.0.0:0 without credentials",
        "protected mode",
        "--insecure",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr must say {needle:?}: {stderr}"
        );
    }
    assert!(!stderr.contains("hubcast serving"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "it never listened"
    );

    // `--insecure`: it starts.
    starts_and_serves(
        serve_command(dir.path(), &["--listen", "0.0.0.0:0", "--insecure"]),
        "--insecure",
    )
    .await;

    // With credentials configured it needs no flag.
    std::fs::write(
        dir.path().join("hubcast.toml"),
        format!("[[auth.api_keys]]\nkey = \"{ADMIN_KEY}\"\n"),
    )
    .unwrap();
    starts_and_serves(
        serve_command(dir.path(), &["--listen", "0.0.0.0:0"]),
        "with an API key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_for_allowed_origins() {
    let server = Server::start(
        "[sqlite]\nsynchronous = \"normal\"\n[auth]\nallowed_origins = [\"https://app.example\"]\n",
    )
    .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/rooms/r/events", server.base()),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,idempotency-key,content-type",
        )
        .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allow_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allow_headers.contains("authorization") && allow_headers.contains("idempotency-key"),
        "{allow_headers}"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A simple GET from the allowed origin can read the answer and the request id.
    let get = http
        .get(format!("{}/v1/rooms/r/events", server.base()))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(get.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
    // Without an Origin (a server, not a browser) no CORS headers, but the
    // answer says it would differ for one, so no cache hands it to a browser.
    let plain = http
        .get(format!("{}/v1/rooms/r/events", server.base()))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("access-control-allow-origin").is_none());
    assert_eq!(plain.headers()["vary"], "origin");
    let vary = get
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(",");
    assert!(vary.contains("origin"), "{vary}");
    // Every answer carries its own request id, refusals too.
    let id = |r: &reqwest::Response| {
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let refused = http
        .get(format!("{}/v1/rooms/r/events?limit=x", server.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        id(&refused) > id(&get),
        "request ids increase: {} then {}",
        id(&get),
        id(&refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_have_their_own_limits_and_retention() {
    let server = Server::start(
        "[sqlite]\nsynchronous = \"normal\"\n[retention]\nmax_events = 100\ninterval_ms = 50\n\
         [[namespaces]]\nprefix = \"small:\"\nmax_event_bytes = 16\nmax_events = 2\n\
         [[namespaces]]\nprefix = \"capped:\"\nmax_subscribers_per_room = 1\n",
    )
    .await;
    // Event size: the namespace's own limit, the rest keep the node's.
    let big = json!({"text": "more than sixteen bytes"});
    let (status, body) = server
        .api()
        .post("small:a", &json!({ "data": big }), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    assert_eq!(
        server
            .api()
            .post("other", &json!({ "data": big }), None)
            .await
            .0,
        201
    );

    // Retention: the namespace keeps 2 events, the rest 100.
    for n in 0..5 {
        server.publish("small:a", json!(n)).await;
        server.publish("other", json!(n)).await;
    }
    eventually("the namespace's retention", || {
        let api = server.api();
        async move { (api.room("small:a").await["earliest"] == 4).then_some(()) }
    })
    .await;
    assert_eq!(server.api().room("other").await["earliest"], 1);

    // Subscriber cap of the namespace only.
    let (mut first, _) = Ws::room(&server, "capped:x", "").await;
    first.until_caught_up("capped:x", 0).await;
    let mut second = Ws::connect(&server.ws_url("/v1/ws")).await;
    second
        .send_json(json!({"type": "subscribe", "room": "capped:x"}))
        .await;
    assert_eq!(next_error(&mut second).await["code"], "over_capacity");
    second.subscribe("uncapped", json!({})).await;
    let (mut third, _) = Ws::room(&server, "uncapped", "").await;
    third.until_caught_up("uncapped", 0).await;
}
