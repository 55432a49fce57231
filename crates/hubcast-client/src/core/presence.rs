//! Presence requests (`Core::request_presence`): `{"type":"presence","room","id"}`
//! asks for a room's members without a subscription. One request per room is
//! in flight (later askers share its answer), queued while offline and asked
//! again after a reconnect. Its `id` (`presence:N`) comes back in the answer
//! and in a refusal, so neither is taken for a subscription's frame (those
//! carry no `id`). A subscription's own member list is the room's (`room`).

use hubcast_protocol::ClientRequest;

use super::io::{Io, Output};
use crate::types::{ClientError, PresenceMember};

struct PresenceRequest {
    room: String,
    id: String,
    /// Asked on the current socket.
    sent: bool,
    /// The keys of every asker, all answered at once.
    keys: Vec<u64>,
}

#[derive(Default)]
pub(super) struct PresenceRequests {
    requests: Vec<PresenceRequest>,
    /// Numbers the `id`s.
    next_id: u64,
}

impl PresenceRequests {
    /// Asks for `room`'s members on behalf of `key`.
    pub fn request(&mut self, room: &str, key: u64) {
        match self.requests.iter_mut().find(|r| r.room == room) {
            Some(request) => request.keys.push(key),
            None => {
                self.next_id += 1;
                let id = format!("presence:{}", self.next_id);
                self.requests.push(PresenceRequest {
                    room: room.to_owned(),
                    id,
                    sent: false,
                    keys: vec![key],
                });
            }
        }
    }

    /// Sends the requests not yet asked on the open socket.
    pub fn send_unsent(&mut self, io: &mut Io) {
        if !io.is_open() {
            return;
        }
        for request in self.requests.iter_mut().filter(|r| !r.sent) {
            if io.send(ClientRequest::Presence {
                room: &request.room,
                id: Some(&request.id),
            }) {
                request.sent = true;
            }
        }
    }

    /// Whether `id` is a request asked on this socket.
    pub fn is_sent(&self, id: &str) -> bool {
        self.requests.iter().any(|r| r.id == id && r.sent)
    }

    /// Answers the sent request with this `id`, if there is one.
    pub fn settle(
        &mut self,
        id: &str,
        result: Result<Vec<PresenceMember>, ClientError>,
        io: &mut Io,
    ) {
        if let Some(idx) = self.requests.iter().position(|r| r.id == id && r.sent) {
            for key in self.requests.remove(idx).keys {
                io.emit(Output::PresenceResult {
                    key,
                    result: result.clone(),
                });
            }
        }
    }

    /// The socket is gone: every request is asked again on the next one.
    pub fn socket_gone(&mut self) {
        for request in &mut self.requests {
            request.sent = false;
        }
    }

    /// Fails every request with `error` (the client closed).
    pub fn reject_all(&mut self, error: &ClientError, io: &mut Io) {
        for request in std::mem::take(&mut self.requests) {
            for key in request.keys {
                let mut err = ClientError::new(error.code.clone(), error.message.clone())
                    .with_room(request.room.clone());
                err.close_code = error.close_code;
                io.emit(Output::PresenceResult {
                    key,
                    result: Err(err),
                });
            }
        }
    }
}
