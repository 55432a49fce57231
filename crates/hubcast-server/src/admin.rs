//! Admin actions that take effect on every node: disconnecting a user,
//! revoking tokens, deleting a room's log.
//!
//! The node that takes an action applies it itself ([`apply`]) and then tells
//! the other nodes over the bus (`Bus::publish_control`); each of them applies
//! the same message from its control feed ([`start`]). Revocations also have a
//! safety net that does not depend on the bus: every node reloads them from
//! the store every `revocations.reload_ms`, closes the sessions they cover,
//! and prunes the expired ones. The HTTP routes are in `http::admin`.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::ControlMessage;
use crate::node::Node;
use crate::protocol::codes::close;
use crate::room::RoomName;

/// Every this many reloads, expired revocations are pruned from the store
/// (each node does it; the delete is idempotent).
const PRUNE_EVERY: u64 = 60;

/// Starts following other nodes' control messages and the revocation reload.
/// Loads the stored revocations before it returns, so a node refuses revoked
/// tokens from its first connection on.
pub async fn start(node: &Arc<Node>) {
    reload(node).await;
    match node.bus.watch_control().await {
        Ok(feed) => {
            tokio::spawn(follow(node.clone(), feed));
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot follow admin actions on the bus; revocations still reload from the store")
        }
    }
    tokio::spawn(reload_loop(node.clone()));
}

/// Applies an admin action on this node, then tells the other nodes.
pub async fn act(node: &Node, message: ControlMessage) {
    apply(node, &message).await;
    node.bus.publish_control(message);
}

/// Applies an admin action on this node (taken here or on a peer).
pub async fn apply(node: &Node, message: &ControlMessage) {
    match message {
        ControlMessage::Disconnect { user, code, reason } => {
            let closed = node.roster.close_user(user, *code, reason);
            tracing::debug!(%user, closed, "disconnected a user's sessions on this node");
        }
        ControlMessage::Revoke { revocation } => {
            node.auth.revocations.add(revocation);
            let closed = node
                .roster
                .close_revoked(|claims| revocation.covers(claims), close::TOKEN_REVOKED);
            tracing::debug!(closed, "closed sessions holding a revoked token");
        }
        ControlMessage::RoomDeleted { room, epoch } => {
            let Ok(room) = RoomName::parse(room) else {
                return;
            };
            if let Some(hub) = node.hubs.get(&room) {
                hub.log_deleted(epoch.clone()).await;
            }
        }
        ControlMessage::Heads { heads } => crate::node::heads_heard(node, heads),
    }
}

async fn follow(node: Arc<Node>, mut feed: crate::bus::ControlFeed) {
    loop {
        tokio::select! {
            message = feed.recv() => match message {
                Some(message) => apply(&node, &message).await,
                None => {
                    tracing::warn!("admin control feed closed; revocations still reload from the store");
                    return;
                }
            },
            _ = node.shutdown.cancelled() => return,
        }
    }
}

async fn reload_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.revocations.reload_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = node.shutdown.cancelled() => return,
        }
        reload(&node).await;
        n += 1;
        if n % PRUNE_EVERY == 0 {
            match node.store.prune_revocations(now_secs()).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned expired revocations"),
                Err(err) => tracing::warn!(error = %err, "cannot prune revocations"),
            }
        }
    }
}

/// Replaces this node's revocations with the store's; when they changed,
/// closes the sessions they cover.
async fn reload(node: &Node) {
    match node.store.revocations(now_secs()).await {
        Ok(revocations) => {
            if node.auth.revocations.replace(&revocations) {
                let closed = node
                    .roster
                    .close_revoked(|claims| node.auth.is_revoked(claims), close::TOKEN_REVOKED);
                if closed > 0 {
                    tracing::info!(closed, "closed sessions holding revoked tokens (reload)");
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot reload revocations"),
    }
}

/// Seconds since the Unix epoch: JWT time.
pub fn now_secs() -> i64 {
    crate::event::now_ms() / 1000
}
