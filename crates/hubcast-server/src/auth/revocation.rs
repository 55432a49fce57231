//! Token revocation: which tokens an operator revoked before they expire.
//!
//! A revocation names one token (its `jti`) or every token of a user (`sub`)
//! issued before a time (its `iat`; a token without `iat` counts as issued
//! before any time). The store keeps them durably; every node keeps the
//! unexpired ones in a [`RevocationList`], which `Auth::verify_token`
//! consults, so connects, `auth` messages and token refreshes all see it.
//! An entry expires with the tokens it covers (`expires_at`), and is then
//! pruned from the store.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::Claims;

/// One revocation, as stored and as sent between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Revocation {
    /// One token, by its `jti`.
    Token {
        jti: String,
        /// Seconds since the epoch after which the entry is pruned (the
        /// token's own `exp` has passed by then).
        expires_at: i64,
    },
    /// Every token of `user` (the `sub` claim) with `iat < issued_before`,
    /// or without `iat`.
    User {
        user: String,
        issued_before: i64,
        expires_at: i64,
    },
}

impl Revocation {
    /// When the entry may be forgotten (seconds since the epoch).
    pub fn expires_at(&self) -> i64 {
        match self {
            Revocation::Token { expires_at, .. } | Revocation::User { expires_at, .. } => {
                *expires_at
            }
        }
    }

    /// Whether this revocation covers a token with these claims.
    pub fn covers(&self, claims: &Claims) -> bool {
        match self {
            Revocation::Token { jti, .. } => claims.jti.as_deref() == Some(jti.as_str()),
            Revocation::User {
                user,
                issued_before,
                ..
            } => {
                claims.sub.as_deref() == Some(user.as_str())
                    && claims
                        .iat
                        .map_or(true, |iat| (iat as i128) < *issued_before as i128)
            }
        }
    }
}

/// The unexpired revocations this node knows, looked up per token.
#[derive(Debug, Default)]
pub struct RevocationList {
    inner: RwLock<Entries>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Entries {
    /// jti → expires_at.
    tokens: HashMap<String, i64>,
    /// user → (issued_before, expires_at); the latest `issued_before` wins.
    users: HashMap<String, (i64, i64)>,
}

impl Entries {
    /// Adds a revocation (a later `issued_before` or `expires_at` extends an
    /// entry, an earlier one never shrinks it); returns whether it changed.
    fn add(&mut self, revocation: &Revocation) -> bool {
        match revocation {
            Revocation::Token { jti, expires_at } => {
                let old = self.tokens.get(jti).copied();
                let new = old.map_or(*expires_at, |old| old.max(*expires_at));
                self.tokens.insert(jti.clone(), new);
                old != Some(new)
            }
            Revocation::User {
                user,
                issued_before,
                expires_at,
            } => {
                let old = self.users.get(user).copied();
                let new = old.map_or((*issued_before, *expires_at), |(before, at)| {
                    (before.max(*issued_before), at.max(*expires_at))
                });
                self.users.insert(user.clone(), new);
                old != Some(new)
            }
        }
    }
}

impl RevocationList {
    /// Adds a revocation; returns whether the list changed.
    pub fn add(&self, revocation: &Revocation) -> bool {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add(revocation)
    }

    /// Replaces the list with what the store holds (the periodic reload);
    /// returns whether anything changed.
    pub fn replace(&self, revocations: &[Revocation]) -> bool {
        let mut fresh = Entries::default();
        for revocation in revocations {
            fresh.add(revocation);
        }
        let mut entries = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if *entries == fresh {
            return false;
        }
        *entries = fresh;
        true
    }

    /// Whether a token with these claims is revoked at `now` (seconds).
    pub fn is_revoked(&self, claims: &Claims, now: i64) -> bool {
        let entries = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if entries.tokens.is_empty() && entries.users.is_empty() {
            return false;
        }
        let token = claims
            .jti
            .as_ref()
            .and_then(|jti| entries.tokens.get(jti))
            .is_some_and(|expires_at| *expires_at > now);
        let user = claims
            .sub
            .as_ref()
            .and_then(|sub| entries.users.get(sub))
            .is_some_and(|(issued_before, expires_at)| {
                *expires_at > now
                    && claims
                        .iat
                        .map_or(true, |iat| (iat as i128) < *issued_before as i128)
            });
        token || user
    }

    #[cfg(test)]
    /// How many entries the list holds.
    pub fn len(&self) -> usize {
        let entries = self.inner.read().unwrap_or_else(|e| e.into_inner());
        entries.tokens.len() + entries.users.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: Option<&str>, iat: Option<u64>) -> Claims {
        Claims {
            sub: Some(sub.into()),
            jti: jti.map(Into::into),
            iat,
            ..Claims::default()
        }
    }

    #[test]
    fn a_jti_revokes_that_token_only() {
        let list = RevocationList::default();
        assert!(list.add(&Revocation::Token {
            jti: "t1".into(),
            expires_at: 2000,
        }));
        assert!(list.is_revoked(&claims("alice", Some("t1"), Some(10)), 1000));
        assert!(!list.is_revoked(&claims("alice", Some("t2"), Some(10)), 1000));
        assert!(!list.is_revoked(&claims("alice", None, None), 1000));
        // Expired entries cover nothing (the token itself has expired).
        assert!(!list.is_revoked(&claims("alice", Some("t1"), Some(10)), 2000));
    }

    #[test]
    fn a_user_revocation_covers_tokens_issued_before_or_without_iat() {
        let list = RevocationList::default();
        let revocation = Revocation::User {
            user: "bob".into(),
            issued_before: 500,
            expires_at: 9000,
        };
        assert!(list.add(&revocation));
        assert!(!list.add(&revocation), "adding it again changes nothing");
        assert!(list.is_revoked(&claims("bob", None, Some(499)), 1000));
        assert!(list.is_revoked(&claims("bob", None, None), 1000));
        assert!(!list.is_revoked(&claims("bob", None, Some(500)), 1000));
        assert!(!list.is_revoked(&claims("carol", None, None), 1000));
        assert!(revocation.covers(&claims("bob", None, None)));
        assert!(!revocation.covers(&claims("bob", None, Some(600))));
        // A later cut-off extends it; an earlier one does not shrink it.
        list.add(&Revocation::User {
            user: "bob".into(),
            issued_before: 100,
            expires_at: 9000,
        });
        assert!(list.is_revoked(&claims("bob", None, Some(499)), 1000));
    }

    #[test]
    fn replace_reports_changes() {
        let list = RevocationList::default();
        let all = [Revocation::Token {
            jti: "t".into(),
            expires_at: 10,
        }];
        assert!(list.replace(&all));
        assert!(!list.replace(&all));
        assert!(list.replace(&[]));
        assert!(list.is_empty());
    }

    #[test]
    fn revocations_read_back_from_json() {
        for json in [
            r#"{"jti":"a","expires_at":5}"#,
            r#"{"user":"u","issued_before":3,"expires_at":5}"#,
        ] {
            let revocation: Revocation = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&revocation).unwrap(), json);
        }
    }
}
