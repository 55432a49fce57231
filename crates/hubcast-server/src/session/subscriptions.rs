//! A session's subscriptions: subscribing (the join runs on its own task and
//! reports back), presence, unsubscribing and leaving.

use super::join::start_subscription;
use super::messages::hook_refusal_code;
use super::{Session, Subscription};
use crate::auth::hooks::Asker;
use crate::auth::Action;
use crate::auth::Principal;
use crate::hub::HubHandle;
use crate::metrics::note_refusal;
use crate::protocol::codes::ErrorCode;
use crate::protocol::{PresenceMember, ProtocolError, ServerMessage, SubscribeRequest};
use crate::room::RoomName;

impl Session {
    pub(super) async fn subscribe(&mut self, request: SubscribeRequest) {
        let room = request.room.clone();
        let mut allowed = self
            .node
            .auth
            .authorize(&self.principal, Action::Subscribe, &room);
        if allowed.is_ok() && request.presence {
            allowed = self
                .node
                .auth
                .authorize(&self.principal, Action::Presence, &room);
        }
        if let Err(err) = allowed {
            let code = err.code();
            note_refusal(code.as_str(), self.ip, &err.to_string());
            return self
                .refuse(&room, ProtocolError::new(code, err.to_string(), None))
                .await;
        }
        if self.subscriptions.contains_key(&room) {
            let err = ProtocolError::new(
                ErrorCode::AlreadySubscribed,
                "already subscribed to this room",
                None,
            );
            return self.reply_error(&err, Some(&room)).await;
        }
        if self.subscriptions.len() >= self.node.config.limits.max_subscriptions {
            let message = format!(
                "at most {} subscriptions per session",
                self.node.config.limits.max_subscriptions
            );
            let err = ProtocolError::new(ErrorCode::TooManySubscriptions, message, None);
            return self.reply_error(&err, Some(&room)).await;
        }
        let (node, out, joined) = (self.node.clone(), self.out.clone(), self.joined.clone());
        let zero_is_earliest = self.transport == super::Transport::Sse;
        let member = request.presence.then(|| self.member());
        let (user, session, ip) = (self.hook_user(), self.name.clone(), self.ip);
        if request.presence {
            self.presence_rooms.insert(room.clone());
        } else {
            self.presence_rooms.remove(&room);
        }
        self.next_join += 1;
        let id = self.next_join;
        let (answered_tx, answered) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            // The application's subscribe hook, after the grants; on the join's
            // task, so the session keeps reading while the application answers.
            let asker = Asker {
                user: user.as_deref(),
                session: &session,
            };
            let result = match node.auth.hooks.subscribe(&asker, &request.room).await {
                Ok(()) => {
                    start_subscription(
                        &node,
                        &out,
                        &request,
                        member,
                        &answered_tx,
                        zero_is_earliest,
                    )
                    .await
                }
                Err(refusal) => {
                    let code = hook_refusal_code(&refusal);
                    note_refusal(code.as_str(), ip, &refusal.to_string());
                    Err(ProtocolError::new(code, refusal.to_string(), None))
                }
            };
            joined.send((request.room, id, result));
        });
        self.subscriptions
            .insert(room, Subscription::Joining { id, task, answered });
    }

    pub(super) async fn on_joined(
        &mut self,
        room: RoomName,
        id: u64,
        result: Result<Option<HubHandle>, ProtocolError>,
    ) {
        // A report from a join that was abandoned (unsubscribed) is stale: its
        // hub registration was already undone by `leave`.
        let current = matches!(self.subscriptions.get(&room), Some(Subscription::Joining { id: current, .. }) if *current == id);
        if !current {
            return;
        }
        match result {
            Ok(Some(hub)) => {
                crate::metrics::get().subscriptions.increment(1.0);
                self.subscriptions.insert(room, Subscription::Live(hub));
            }
            Ok(None) => {} // The session is closing.
            Err(mut err) => {
                self.subscriptions.remove(&room);
                if let Some(ms) = err.code.subscribe_retry_after_ms() {
                    // Refused for now (the room's cap, the store): counted and
                    // logged like every refusal, and the client told when to
                    // ask again. (Hook refusals were noted where they happened.)
                    if err.code != ErrorCode::AuthUnavailable {
                        note_refusal(err.code.as_str(), self.ip, &err.message);
                    }
                    err.retry_after_ms.get_or_insert(ms);
                }
                self.refuse(&room, err).await;
            }
        }
    }

    /// Who this session is as the subscribe and publish hooks are told: the
    /// token's `sub` (the connect hook's `user`), an API key's name, or
    /// nobody (anonymous: never cached).
    pub(super) fn hook_user(&self) -> Option<String> {
        match &self.principal {
            Principal::Token(claims) => claims.sub.clone(),
            Principal::ApiKey { name, .. } => Some(format!("key:{name}")),
            Principal::Anonymous { .. } => None,
        }
    }

    /// Who this session is in a room's presence: the token's `sub` with its
    /// `info` claim, or the session id.
    pub(super) fn member(&self) -> PresenceMember {
        match &self.principal {
            Principal::Token(claims) => PresenceMember {
                id: claims.sub.clone().unwrap_or_else(|| self.name.clone()),
                info: claims.info.clone(),
            },
            _ => PresenceMember {
                id: self.name.clone(),
                info: None,
            },
        }
    }

    /// Answers `presence {room, id?}` with the room's member list; `id` is
    /// echoed in the answer and in a refusal.
    pub(super) async fn presence(&mut self, room: RoomName, id: Option<String>) {
        if let Err(err) = self
            .node
            .auth
            .authorize(&self.principal, Action::Presence, &room)
        {
            let code = err.code();
            note_refusal(code.as_str(), self.ip, &err.to_string());
            return self
                .reply_error(
                    &ProtocolError::new(code, err.to_string(), id.as_deref()),
                    Some(&room),
                )
                .await;
        }
        loop {
            let hub = self.node.hubs.get_or_spawn(&room);
            match hub.presence().await {
                Ok(members) => {
                    let frame = ServerMessage::Presence {
                        id: id.as_deref(),
                        room: &room,
                        members: &members,
                    };
                    return self.reply(frame.encode().into()).await;
                }
                Err(_gone) => self.node.hubs.forget(&room, hub.id),
            }
        }
    }

    pub(super) async fn unsubscribe(&mut self, room: RoomName) {
        match self.subscriptions.remove(&room) {
            Some(subscription) => {
                if let Subscription::Joining { answered, .. } = &subscription {
                    // Every subscribe is answered before its `unsubscribed`: let
                    // the join send `subscribed` first (one store read; bounded).
                    let mut answered = answered.clone();
                    let _ = tokio::time::timeout(self.stale, answered.wait_for(|sent| *sent)).await;
                }
                self.leave(&room, subscription).await;
                self.reply(ServerMessage::Unsubscribed { room: &room }.encode().into())
                    .await;
            }
            None => {
                let err = ProtocolError::new(
                    ErrorCode::NotSubscribed,
                    "not subscribed to this room",
                    None,
                );
                self.reply_error(&err, Some(&room)).await;
            }
        }
    }

    /// Takes the session out of the room's hub. When this returns the hub will
    /// not queue another frame of this room for this session.
    pub(super) async fn leave(&self, room: &RoomName, subscription: Subscription) {
        let hub = match subscription {
            Subscription::Live(hub) => {
                crate::metrics::get().subscriptions.decrement(1.0);
                Some(hub)
            }
            Subscription::Joining { task, .. } => {
                // Wait until the join has really stopped: only then can it no
                // longer hand the session to a hub behind our back.
                task.abort();
                let _ = task.await;
                self.node.hubs.get(room)
            }
        };
        if let Some(hub) = hub {
            hub.unsubscribe(self.out.session_id).await;
        }
    }

    pub(super) async fn leave_all(&mut self) {
        for (room, subscription) in std::mem::take(&mut self.subscriptions) {
            self.leave(&room, subscription).await;
        }
    }
}
