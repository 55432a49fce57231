//! The node's roster: its live sessions that hold a token, by session, so an
//! operator's disconnect (by user) and a revocation (by token) can find and
//! close them. Sessions without a token (anonymous, API keys) have no user
//! and are not listed, so they cost nothing here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Claims;
use crate::outbound::SessionControl;

/// One listed session: its token's claims and the switch that closes it.
struct Entry {
    claims: Arc<Claims>,
    control: Arc<SessionControl>,
}

/// Live token sessions of this node.
#[derive(Default)]
pub struct Roster {
    /// A std mutex: held only to edit or scan the map, never across an await.
    sessions: Mutex<HashMap<u64, Entry>>,
}

impl Roster {
    /// Lists (or updates, after an `auth` message) a session holding a token.
    pub fn enter(&self, session: u64, claims: Arc<Claims>, control: Arc<SessionControl>) {
        self.lock().insert(session, Entry { claims, control });
    }

    /// Unlists a session (it ended, or no longer holds a token).
    pub fn leave(&self, session: u64) {
        self.lock().remove(&session);
    }

    /// Closes every session whose token names `user` as its `sub`; returns
    /// how many.
    pub fn close_user(&self, user: &str, code: u16, reason: &str) -> usize {
        self.close_where(
            |claims| claims.sub.as_deref() == Some(user),
            code,
            Cow::Owned(reason.to_owned()),
        )
    }

    /// Closes every session whose token `revoked` says is revoked; returns how many.
    pub fn close_revoked(&self, revoked: impl Fn(&Claims) -> bool, code: u16) -> usize {
        self.close_where(revoked, code, Cow::Borrowed("token revoked"))
    }

    fn close_where(
        &self,
        matches: impl Fn(&Claims) -> bool,
        code: u16,
        reason: Cow<'static, str>,
    ) -> usize {
        let sessions = self.lock();
        let mut closed = 0;
        for entry in sessions.values().filter(|e| matches(&e.claims)) {
            entry.control.close(code, reason.clone());
            closed += 1;
        }
        closed
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_a_users_sessions_and_only_those() {
        let roster = Roster::default();
        let control = |_: u64| Arc::new(SessionControl::default());
        let claims = |sub: &str| {
            Arc::new(Claims {
                sub: Some(sub.into()),
                ..Claims::default()
            })
        };
        let (a1, a2, b) = (control(1), control(2), control(3));
        roster.enter(1, claims("alice"), a1.clone());
        roster.enter(2, claims("alice"), a2.clone());
        roster.enter(3, claims("bob"), b.clone());
        assert_eq!(roster.close_user("alice", 4011, "bye"), 2);
        assert_eq!(a1.close_reason(), Some((4011, Cow::Borrowed("bye"))));
        assert_eq!(a2.close_reason().map(|(code, _)| code), Some(4011));
        assert_eq!(b.close_reason(), None);
        roster.leave(3);
        assert_eq!(roster.close_user("bob", 4011, "bye"), 0);
        assert_eq!(roster.len(), 2);
    }
}
