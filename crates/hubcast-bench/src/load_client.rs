//! What the Rust client processes of `bench/storm` (`storm-client`) and
//! `bench/cluster` (`cluster-client`) share: a room socket opened from a
//! chosen source address with small buffers, the frames they read (their own
//! minimal JSON view, not hubcast's protocol crate: these are independent
//! clients), the publishers' clock, and errors named as the Node client
//! (`ws`, `http`) names them, so both clients' reports count alike.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The Node client's handshake deadline (`ws`'s `handshakeTimeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);

pub type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Milliseconds since the Unix epoch: the clock the publishers put in
/// `data.t` and the store's `ts`, on one machine.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The source address of a process's socket number `i`:
/// `127.{block + w}.0.{1..sources}`, as wsload.mjs's `sourceAddress`.
pub fn source_address(block: usize, w: usize, i: usize, sources: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, (block + w) as u8, 0, (1 + i % sources.max(1)) as u8)
}

/// The fields of a server frame these clients read.
#[derive(Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    #[serde(default)]
    pub seq: u64,
    /// The store's commit time (ms since the Unix epoch).
    #[serde(default)]
    pub ts: Option<f64>,
    #[serde(default)]
    pub data: Option<Sent>,
    #[serde(default)]
    pub epoch: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub events: Vec<BatchItem>,
}

#[derive(Deserialize)]
pub struct BatchItem {
    pub seq: u64,
    #[serde(default)]
    pub ts: Option<f64>,
    #[serde(default)]
    pub data: Option<Sent>,
}

/// The event payload the bench publishers send: their clock at the send.
#[derive(Deserialize)]
pub struct Sent {
    #[serde(default)]
    pub t: Option<f64>,
}

/// TCP from `source` to `node`, then the WebSocket handshake, within the Node
/// client's handshake deadline.
pub async fn connect(url: &str, node: &str, source: Ipv4Addr) -> anyhow::Result<Socket> {
    let authority = node.trim_start_matches("http://").trim_end_matches('/');
    let address: SocketAddr = authority.parse()?;
    let handshake = async {
        let tcp = tokio::net::TcpSocket::new_v4()?;
        tcp.bind((source, 0).into())?;
        let stream = tcp.connect(address).await?;
        stream.set_nodelay(true)?;
        // tungstenite's default buffers (a 128 KiB read buffer per socket)
        // made the storm client spend half its time zeroing fresh pages; the
        // frames here are a few hundred bytes.
        let config = WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0);
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        anyhow::Ok(socket)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await?
}

/// A failed connect by the key the Node client counts it under (`err.code`,
/// else `err.message` of `ws`): `ECONNREFUSED`, `Unexpected server response: 503`, ….
pub fn connect_error(err: &anyhow::Error) -> String {
    if err.is::<tokio::time::error::Elapsed>() {
        return "Opening handshake has timed out".to_owned();
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        return errno_name(io);
    }
    if let Some(ws) = err.downcast_ref::<tungstenite::Error>() {
        return socket_error(ws).unwrap_or_else(|| "ECONNRESET".to_owned());
    }
    err.to_string()
}

/// A socket error as Node's `ws` would report it, or `None` where it would
/// only close (the peer ended the connection without a close frame).
pub fn socket_error(err: &tungstenite::Error) -> Option<String> {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Io(io) => Some(errno_name(io)),
        tungstenite::Error::Http(response) => Some(format!(
            "Unexpected server response: {}",
            response.status().as_u16()
        )),
        other => Some(other.to_string()),
    }
}

/// A failed publish's reason as wsload.mjs's `post` gives it: `timeout`, or
/// the socket error's code.
pub fn request_failure(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timeout".to_owned();
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return errno_name(io);
        }
        // Node's "socket hang up": the connection closed before the response.
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return "ECONNRESET".to_owned();
        }
        source = cause.source();
    }
    err.to_string()
}

/// An I/O error by its errno name, as Node's `err.code` (`ECONNREFUSED`, …).
pub fn errno_name(err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let name = match err.kind() {
        ErrorKind::ConnectionRefused => "ECONNREFUSED",
        ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof => "ECONNRESET",
        ErrorKind::ConnectionAborted => "ECONNABORTED",
        ErrorKind::AddrInUse => "EADDRINUSE",
        ErrorKind::AddrNotAvailable => "EADDRNOTAVAIL",
        ErrorKind::TimedOut => "ETIMEDOUT",
        ErrorKind::BrokenPipe => "EPIPE",
        // Linux's numbers for the two a load generator meets.
        _ => match err.raw_os_error() {
            Some(24) => "EMFILE",
            Some(23) => "ENFILE",
            _ => return err.to_string(),
        },
    };
    name.to_owned()
}
