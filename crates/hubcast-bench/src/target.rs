//! Protocol adapters: the delivery scenarios (`fanout`, `rooms`) run the same
//! load against hubcast and against the servers people would pick instead.
//! Each adapter knows three things: the URL a subscriber opens for a room, the
//! frames that make it subscribed (and keep it alive), and how to publish one
//! event over HTTP. The payload is the same everywhere: `{"bench_t":µs,"n":n}`,
//! found in any frame by [`timestamps`], escaped or not, so every server's
//! frames cost the load generator the same to read.

use hmac::{Hmac, KeyInit, Mac};
use md5::Digest;

/// Which server the load generator talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// hubcast's own protocol (`/v1/rooms/{room}/ws`, `POST /v1/rooms/{room}/events`).
    Hubcast,
    /// Pusher protocol 7 (Sockudo): public channels, HTTP API with HMAC signatures.
    /// `--target pusher` is the same adapter: it measures hubcast's own Pusher
    /// surface (`/app/{key}`, `/apps/{id}/events`) just as it measures Sockudo.
    #[value(alias = "pusher")]
    Sockudo,
    /// Engine.IO v4 / socket.io over a raw WebSocket, publishing through the
    /// peer server's `POST /publish/{room}` (bench/peers/socketio-server.js).
    Socketio,
    /// nchan: WebSocket subscriber at `/sub/{room}`, HTTP publisher at `/pub/{room}`.
    Nchan,
}

/// How hubcast subscribers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET /v1/rooms/{room}/ws`.
    Ws,
    /// Server-Sent Events: `GET /v1/rooms/{room}/sse`, one HTTP/1.1 stream each.
    Sse,
}

/// Connection details of a target.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetOptions {
    /// Protocol of the server under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Hubcast, global = true)]
    pub target: TargetKind,
    /// How subscribers connect to hubcast (`sse`: only with `--target hubcast`).
    #[arg(long, value_enum, default_value_t = Transport::Ws, global = true)]
    pub transport: Transport,
    /// Pusher app id (Sockudo).
    #[arg(long, default_value = "bench", global = true)]
    pub app_id: String,
    /// Pusher app key (Sockudo).
    #[arg(long, default_value = "bench-key", global = true)]
    pub app_key: String,
    /// Pusher app secret (Sockudo).
    #[arg(long, default_value = "bench-secret", global = true)]
    pub app_secret: String,
}

/// What a subscriber does with one text frame.
pub enum Inbound {
    /// Send this frame back (a subscribe request or a pong).
    Reply(String),
    /// The subscription is live: events published from now on arrive.
    Subscribed,
    /// Events (or anything else): count the payload timestamps in it.
    Data,
}

/// A target resolved against a base URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: TargetKind,
    base: String,
    options: TargetOptions,
    /// hubcast's `--api-key` / `--token`: the publishes' bearer and the sockets' `?token=`.
    credential: Option<String>,
    /// For https:// and wss://.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

impl Target {
    pub fn new(
        base: &str,
        options: &TargetOptions,
        client: &crate::ClientArgs,
    ) -> anyhow::Result<Target> {
        Ok(Target {
            kind: options.target,
            base: base.trim_end_matches('/').to_owned(),
            options: options.clone(),
            credential: client.credential().map(str::to_owned),
            tls: client.tls()?,
        })
    }

    /// Opens a subscriber's socket (`wss://` with the target's TLS config).
    pub async fn connect(
        &self,
        url: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::Error,
    > {
        let tls = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        // tungstenite's default 128 KiB read buffer is zeroed afresh for
        // reads: 30% of the load generator's CPU at 250k deliveries/s
        // (session 11), more per delivery the more reads a server's frames
        // take. The frames here are a few hundred bytes.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4 * 1024);
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, Some(config), false, Some(tls))
                .await?;
        Ok(socket)
    }

    /// The server's base URL.
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// The WebSocket URL a subscriber of `room` opens.
    pub fn subscribe_url(&self, room: &str) -> String {
        let ws = self.base.replacen("http", "ws", 1);
        match self.kind {
            TargetKind::Hubcast => match &self.credential {
                Some(token) => format!(
                    "{ws}/v1/rooms/{room}/ws?token={}",
                    hubcast_client::urls::encode_component(token)
                ),
                None => format!("{ws}/v1/rooms/{room}/ws"),
            },
            TargetKind::Sockudo => format!(
                "{ws}/app/{}?protocol=7&client=hubcast-bench&version=1.0",
                self.options.app_key
            ),
            TargetKind::Socketio => format!("{ws}/socket.io/?EIO=4&transport=websocket"),
            TargetKind::Nchan => format!("{ws}/sub/{room}"),
        }
    }

    /// How subscribers connect.
    pub fn transport(&self) -> Transport {
        self.options.transport
    }

    /// The event-stream URL of `room` (hubcast over SSE).
    pub fn sse_url(&self, room: &str) -> String {
        format!("{}/v1/rooms/{room}/sse", self.base)
    }

    /// Whether a subscriber counts as subscribed as soon as the upgrade
    /// succeeds (nchan subscribes on the upgrade request and sends nothing).
    pub fn subscribed_on_open(&self) -> bool {
        self.kind == TargetKind::Nchan
    }

    /// A subscriber's answer to one text frame from the server.
    pub fn inbound(&self, room: &str, text: &str) -> Inbound {
        match self.kind {
            TargetKind::Hubcast if text.contains(r#""type":"caught_up""#) => Inbound::Subscribed,
            TargetKind::Hubcast | TargetKind::Nchan => Inbound::Data,
            TargetKind::Sockudo => {
                if text.contains("pusher:connection_established") {
                    Inbound::Reply(
                        serde_json::json!({"event": "pusher:subscribe", "data": {"channel": room}})
                            .to_string(),
                    )
                } else if text.contains("pusher_internal:subscription_succeeded") {
                    Inbound::Subscribed
                } else if text.contains(r#""pusher:ping""#) {
                    Inbound::Reply(r#"{"event":"pusher:pong","data":{}}"#.to_owned())
                } else {
                    Inbound::Data
                }
            }
            TargetKind::Socketio => match text.as_bytes().first() {
                // Engine.IO open packet: connect to the default namespace.
                Some(b'0') => Inbound::Reply("40".to_owned()),
                Some(b'2') => Inbound::Reply("3".to_owned()),
                _ if text.starts_with("40") => {
                    Inbound::Reply(format!(r#"42["join",{}]"#, serde_json::Value::from(room)))
                }
                _ if text.starts_with(r#"42["joined""#) => Inbound::Subscribed,
                _ => Inbound::Data,
            },
        }
    }

    /// Publishes `data` (a JSON object) to `room`; true if the server accepted it.
    pub async fn publish(&self, http: &reqwest::Client, room: &str, data: &str) -> bool {
        let request = match self.kind {
            TargetKind::Hubcast => {
                let request = http
                    .post(format!("{}/v1/rooms/{room}/events", self.base))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"data":{data}}}"#));
                match &self.credential {
                    Some(credential) => request.bearer_auth(credential),
                    None => request,
                }
            }
            TargetKind::Socketio => http
                .post(format!("{}/publish/{room}", self.base))
                .header("content-type", "application/json")
                .body(data.to_owned()),
            TargetKind::Nchan => http
                .post(format!("{}/pub/{room}", self.base))
                .body(data.to_owned()),
            TargetKind::Sockudo => {
                let body = serde_json::json!({"name": "bench", "channels": [room], "data": data})
                    .to_string();
                let path = format!("/apps/{}/events", self.options.app_id);
                let query = pusher_query(
                    &self.options.app_key,
                    &self.options.app_secret,
                    &path,
                    &body,
                    crate::now_us() / 1_000_000,
                );
                http.post(format!("{}{path}?{query}", self.base))
                    .header("content-type", "application/json")
                    .body(body)
            }
        };
        matches!(request.send().await, Ok(r) if r.status().is_success())
    }
}

/// The signed query string of a Pusher HTTP API request: `auth_signature` is
/// HMAC-SHA256 of "METHOD\nPATH\nsorted query" under the app secret.
fn pusher_query(key: &str, secret: &str, path: &str, body: &str, timestamp: u64) -> String {
    let body_md5 = hex(&md5::Md5::digest(body.as_bytes()));
    let query =
        format!("auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("hmac takes keys of any length");
    mac.update(format!("POST\n{path}\n{query}").as_bytes());
    format!(
        "{query}&auth_signature={}",
        hex(&mac.finalize().into_bytes())
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The payload timestamps (`bench_t`) in a frame: one per event it carries,
/// whether the payload is inline JSON or an escaped string inside it.
pub fn timestamps(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.match_indices("bench_t").filter_map(|(at, key)| {
        let rest = &text[at + key.len()..];
        let start = rest.find(|c: char| c.is_ascii_digit())?;
        if start > 4 {
            return None;
        }
        let digits = &rest[start..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        digits[..end].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_timestamps_inline_escaped_and_batched() {
        let inline = r#"{"type":"event","data":{"bench_t":123,"n":1}}"#;
        let escaped = r#"{"event":"bench","data":"{\"bench_t\":456,\"n\":2}"}"#;
        let batch = r#"{"events":[{"data":{"bench_t":1}},{"data":{"bench_t":2}}]}"#;
        assert_eq!(timestamps(inline).collect::<Vec<_>>(), [123]);
        assert_eq!(timestamps(escaped).collect::<Vec<_>>(), [456]);
        assert_eq!(timestamps(batch).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(timestamps(r#"{"type":"caught_up"}"#).count(), 0);
    }

    #[test]
    fn pusher_signature_matches_the_documented_example() {
        // The worked example of Pusher's HTTP API reference.
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = pusher_query(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "/apps/3/events",
            body,
            1353088179,
        );
        assert!(
            query.contains("body_md5=ec365a775a4cd0599faeb73354201b6f"),
            "{query}"
        );
        assert!(
            query.ends_with(
                "auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
            ),
            "{query}"
        );
    }
}
