//! The socket's life (docs/clients.md, "One connection, many rooms",
//! "Reconnect policy", "Credentials"): a token before every attempt, the
//! attempt and its timeout, what an open socket sends first (auth, the
//! subscriptions from their cursors, presence requests, queued publishes),
//! and after a close: every part reset for the next socket, then a reconnect
//! after the close code's delay, or the end with the close's error.

use hubcast_protocol::codes::{close, sdk};
use hubcast_protocol::ClientRequest;

use super::reconnect::{is_terminal, terminal_error};
use super::timers::Timer;
use super::{Core, Output};
use crate::types::{ClientError, ConnectionState, StateChange};
use crate::urls::encode_component;

/// What a token was asked for.
#[derive(Debug, Clone, Copy)]
pub(super) enum TokenPurpose {
    /// Connection attempt `gen` waits for it.
    Connect(u64),
    /// The open session gets it in an `auth` message.
    Refresh,
}

impl Core {
    /// Connects (or reconnects now, skipping a pending backoff); also restarts a closed client.
    pub fn connect(&mut self) {
        if matches!(
            self.state,
            ConnectionState::Connecting | ConnectionState::Open
        ) {
            return;
        }
        self.io.timers.cancel(&mut self.reconnect_timer);
        self.start_reconcile();
        self.open_socket();
    }

    /// Gets a fresh token and hands it to the open session in an `auth` message.
    pub fn refresh_token(&mut self) {
        if !self.cfg.has_token_provider || self.refreshing.is_some() {
            return;
        }
        let req = self.io.new_req();
        self.refreshing = Some(req);
        self.token_requests.insert(req, TokenPurpose::Refresh);
        self.io.emit(Output::GetToken { req });
    }

    /// Closes for good: pending publishes fail with `closed`, subscriptions end.
    pub fn close(&mut self) {
        if self.state == ConnectionState::Closed && self.socket.is_none() {
            return;
        }
        self.teardown(Some((close::NORMAL, "client closed")));
        self.welcomed = false;
        self.session = None;
        self.draining.clear();
        self.stop_reconcile();
        self.io.timers.cancel(&mut self.reconnect_timer);
        for room in &mut self.rooms {
            room.client_closed(&mut self.io, None);
        }
        self.reject_all(&ClientError::new(sdk::CLOSED, "the client was closed"));
        self.set_state(
            ConnectionState::Closed,
            Some(close::NORMAL),
            Some("client closed".into()),
            None,
            None,
            None,
        );
    }

    /// The token provider answered request `req`.
    pub fn on_token(&mut self, req: u64, result: Result<Option<String>, String>) {
        let Some(purpose) = self.token_requests.remove(&req) else {
            return;
        };
        match purpose {
            TokenPurpose::Connect(gen) => match result {
                Err(err) => {
                    if gen != self.generation || self.state != ConnectionState::Connecting {
                        return;
                    }
                    self.io.emit(Output::Error(ClientError::new(
                        sdk::TOKEN_ERROR,
                        format!("getToken failed: {err}"),
                    )));
                    self.after_disconnect(close::ABNORMAL, "getToken failed".into(), false);
                }
                Ok(token) => {
                    self.token = token.clone();
                    if gen != self.generation || self.state != ConnectionState::Connecting {
                        return;
                    }
                    self.create_socket(gen, token);
                }
            },
            TokenPurpose::Refresh => {
                self.refreshing = None;
                match result {
                    Ok(token) => {
                        self.token = token.clone();
                        if let Some(token) = token {
                            self.io.send(ClientRequest::Auth { token: &token });
                        }
                    }
                    Err(err) => {
                        let error =
                            ClientError::new(sdk::TOKEN_ERROR, format!("getToken failed: {err}"));
                        self.io.emit(Output::Error(error));
                    }
                }
                for i in 0..self.rooms.len() {
                    let (room, mut cx) = self.room(i);
                    room.token_refreshed(&mut cx);
                }
            }
        }
    }

    /// Socket `gen` opened.
    pub fn on_open(&mut self, gen: u64) {
        if self.socket != Some(gen) || self.io.is_open() {
            return;
        }
        self.io.set_open(Some(gen));
        self.io.timers.cancel(&mut self.connect_timer);
        self.draining.clear();
        self.set_state(ConnectionState::Open, None, None, None, None, None);
        self.liveness.start(self.cfg.heartbeat, &mut self.io);
        if self.cfg.send_token_as_message {
            if let Some(token) = self.token.clone() {
                self.io.send(ClientRequest::Auth { token: &token });
            }
        }
        for i in 0..self.rooms.len() {
            let (room, mut cx) = self.room(i);
            room.subscribe_now(&mut cx);
        }
        self.presence.send_unsent(&mut self.io);
        self.pump();
    }

    /// Socket `gen` closed (or failed before opening: 1006).
    pub fn on_close(&mut self, gen: u64, code: u16, reason: &str) {
        if self.socket != Some(gen) {
            return;
        }
        self.teardown(None);
        self.socket_gone(code, reason.to_owned());
    }

    /// A binary frame arrived on socket `gen`.
    pub fn on_binary(&mut self, gen: u64) {
        if self.io.open() != Some(gen) {
            return;
        }
        self.liveness.frame(self.io.timers.now());
        self.io.protocol_violation("a binary frame");
    }

    pub(super) fn open_socket(&mut self) {
        self.generation += 1;
        let gen = self.generation;
        self.set_state(ConnectionState::Connecting, None, None, None, None, None);
        if self.cfg.has_token_provider {
            let req = self.io.new_req();
            self.token_requests.insert(req, TokenPurpose::Connect(gen));
            self.io.emit(Output::GetToken { req });
            return;
        }
        self.create_socket(gen, None);
    }

    fn create_socket(&mut self, gen: u64, token: Option<String>) {
        let url = match token {
            Some(token) if !self.cfg.send_token_as_message => {
                format!("{}?token={}", self.urls.ws, encode_component(&token))
            }
            _ => self.urls.ws.clone(),
        };
        self.socket = Some(gen);
        self.io.set_open(None);
        self.welcomed = false;
        self.io.emit(Output::Connect { gen, url });
        if self.cfg.connect_timeout_ms > 0 {
            self.io.timers.cancel(&mut self.connect_timer);
            self.connect_timer = Some(
                self.io
                    .timers
                    .set(self.cfg.connect_timeout_ms, Timer::ConnectTimeout(gen)),
            );
        }
    }

    /// Gives up on the current socket: closes it with 4000 (`reason`) and
    /// handles it as closed with `code`.
    pub(super) fn abandon_socket(&mut self, reason: &str, code: u16, gone_reason: &str) {
        self.teardown(Some((close::ABANDONED, reason)));
        self.socket_gone(code, gone_reason.to_owned());
    }

    /// Detaches the current socket (closing it with `code` if given).
    fn teardown(&mut self, code: Option<(u16, &str)>) {
        self.io.timers.cancel(&mut self.connect_timer);
        self.liveness.stop(&mut self.io);
        self.io.timers.cancel(&mut self.publishes.pump_timer);
        self.io.set_open(None);
        if let Some(gen) = self.socket.take() {
            self.io.emit(Output::CloseSocket {
                gen,
                code: code.map(|c| c.0),
                reason: code.map(|c| c.1.to_owned()).unwrap_or_default(),
            });
        }
    }

    /// The socket is gone: reset per-socket state, then reconnect or stop.
    fn socket_gone(&mut self, code: u16, reason: String) {
        let welcomed = self.welcomed;
        self.welcomed = false;
        self.session = None;
        self.draining.clear();
        for room in &mut self.rooms {
            room.socket_closed(&mut self.io);
        }
        self.publishes.socket_gone();
        self.presence.socket_gone();
        self.after_disconnect(code, reason, welcomed);
    }

    fn after_disconnect(&mut self, code: u16, reason: String, welcomed: bool) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.failed_attempts = if welcomed {
            0
        } else {
            self.failed_attempts + 1
        };
        if is_terminal(code) {
            let error = terminal_error(code, &reason);
            self.stop_reconcile();
            for room in &mut self.rooms {
                room.client_closed(&mut self.io, Some(error.clone()));
            }
            self.reject_all(&error);
            self.io.emit(Output::Error(error.clone()));
            self.set_state(
                ConnectionState::Closed,
                Some(code),
                Some(reason),
                None,
                None,
                Some(error),
            );
            return;
        }
        let Some(backoff) = self.cfg.reconnect else {
            self.stop_reconcile();
            for room in &mut self.rooms {
                room.client_closed(&mut self.io, None);
            }
            let mut error =
                ClientError::new(sdk::CLOSED, "connection closed and reconnect is disabled");
            error.close_code = Some(code);
            self.reject_all(&error);
            self.set_state(
                ConnectionState::Closed,
                Some(code),
                Some(reason),
                None,
                None,
                None,
            );
            return;
        };
        let attempt = self.failed_attempts;
        let delay = backoff.after_close(code, welcomed, attempt, &mut self.random);
        self.set_state(
            ConnectionState::Reconnecting,
            Some(code),
            Some(reason),
            Some(delay),
            Some(attempt),
            None,
        );
        self.io.timers.cancel(&mut self.reconnect_timer);
        self.reconnect_timer = Some(self.io.timers.set(delay, Timer::Reconnect));
    }

    fn set_state(
        &mut self,
        state: ConnectionState,
        code: Option<u16>,
        reason: Option<String>,
        delay_ms: Option<u64>,
        attempt: Option<u32>,
        error: Option<ClientError>,
    ) {
        let previous = self.state;
        self.state = state;
        self.io.emit(Output::State(StateChange {
            state,
            previous,
            code,
            reason,
            delay_ms,
            attempt,
            error,
        }));
    }
}
