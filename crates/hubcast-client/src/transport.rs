//! The client's transports, replaceable: [`Connector`] opens WebSockets
//! (default [`WsConnector`], tokio-tungstenite), [`HistoryFetcher`] reads the
//! history route (default [`ReqwestHistory`]), and a [`TokenProvider`] gives
//! the token for each connection. Both speak TLS through rustls
//! ([`crate::tls`]; `ClientBuilder::tls` sets the config of both). Tests and
//! custom transports (proxies) put their own in the [`crate::ClientBuilder`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use hubcast_protocol::codes::close;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// What a socket reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketEvent {
    Text(String),
    Binary,
    /// The socket closed (1006, [`close::ABNORMAL`]: dropped without a close frame).
    Closed {
        code: u16,
        reason: String,
    },
}

/// What the client asks of a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketCommand {
    Send(String),
    Close { code: u16, reason: String },
}

/// An open socket: commands in, events out. Dropping `commands` closes it.
pub struct Connection {
    pub commands: mpsc::UnboundedSender<SocketCommand>,
    pub events: mpsc::UnboundedReceiver<SocketEvent>,
}

/// Opens WebSockets. Replace it in tests (or to add TLS settings, proxies…).
pub trait Connector: Send + Sync + 'static {
    /// Opens a socket to `url`; an error is a connection that failed before opening.
    fn connect(&self, url: String) -> BoxFuture<'static, Result<Connection, String>>;
}

/// Reads the history route. Replace it in tests.
pub trait HistoryFetcher: Send + Sync + 'static {
    /// `GET url` with an optional `Authorization` header: the status and the JSON body
    /// (`Value::Null` if it is not JSON), or a network error.
    fn get(
        &self,
        url: String,
        authorization: Option<String>,
    ) -> BoxFuture<'static, Result<(u16, Value), String>>;
}

/// Returns the token to connect with (`None`: none). Called before every
/// connection attempt and on `token_expired`.
pub type TokenProvider =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Option<String>, String>> + Send + Sync>;

/// The default connector: tokio-tungstenite, with rustls for `wss://`.
pub struct WsConnector {
    tls: Arc<rustls::ClientConfig>,
}

impl Default for WsConnector {
    /// Trusts the system roots ([`crate::tls::default_config`]).
    fn default() -> WsConnector {
        WsConnector::with_tls(crate::tls::default_config())
    }
}

impl WsConnector {
    /// A connector whose `wss://` connections use `tls`.
    pub fn with_tls(tls: Arc<rustls::ClientConfig>) -> WsConnector {
        WsConnector { tls }
    }
}

impl Connector for WsConnector {
    fn connect(&self, url: String) -> BoxFuture<'static, Result<Connection, String>> {
        let tls = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        Box::pin(async move {
            let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
                url.as_str(),
                None,
                false,
                Some(tls),
            )
            .await
            .map_err(|e| e.to_string())?;
            let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
            let (ev_tx, ev_rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let (mut sink, mut stream) = ws.split();
                loop {
                    tokio::select! {
                        command = cmd_rx.recv() => match command {
                            Some(SocketCommand::Send(text)) => {
                                if sink.send(Message::Text(text.into())).await.is_err() {
                                    let _ = ev_tx.send(SocketEvent::Closed { code: close::ABNORMAL, reason: "write failed".into() });
                                    break;
                                }
                            }
                            Some(SocketCommand::Close { code, reason }) => {
                                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(Some(frame)))).await;
                                break;
                            }
                            None => {
                                let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                                break;
                            }
                        },
                        message = stream.next() => match message {
                            Some(Ok(Message::Text(text))) => { let _ = ev_tx.send(SocketEvent::Text(text.to_string())); }
                            Some(Ok(Message::Binary(_))) => { let _ = ev_tx.send(SocketEvent::Binary); }
                            Some(Ok(Message::Close(frame))) => {
                                let (code, reason) = frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((close::NO_STATUS, String::new()));
                                let _ = ev_tx.send(SocketEvent::Closed { code, reason });
                                break;
                            }
                            Some(Ok(_)) => {} // pings are answered by tungstenite
                            Some(Err(err)) => {
                                let _ = ev_tx.send(SocketEvent::Closed { code: close::ABNORMAL, reason: err.to_string() });
                                break;
                            }
                            None => {
                                let _ = ev_tx.send(SocketEvent::Closed { code: close::ABNORMAL, reason: String::new() });
                                break;
                            }
                        },
                    }
                }
            });
            Ok(Connection {
                commands: cmd_tx,
                events: ev_rx,
            })
        })
    }
}

/// The default history fetcher: reqwest, with a timeout.
pub struct ReqwestHistory {
    pub http: reqwest::Client,
    pub timeout: Duration,
}

impl Default for ReqwestHistory {
    fn default() -> ReqwestHistory {
        ReqwestHistory::with_tls(&crate::tls::default_config())
    }
}

impl ReqwestHistory {
    /// A fetcher whose `https://` requests use `tls`.
    pub fn with_tls(tls: &rustls::ClientConfig) -> ReqwestHistory {
        ReqwestHistory {
            http: crate::tls::http_client(tls),
            timeout: Duration::from_secs(10),
        }
    }
}

impl HistoryFetcher for ReqwestHistory {
    fn get(
        &self,
        url: String,
        authorization: Option<String>,
    ) -> BoxFuture<'static, Result<(u16, Value), String>> {
        let mut request = self.http.get(url).timeout(self.timeout);
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        Box::pin(async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            Ok((status, body))
        })
    }
}
