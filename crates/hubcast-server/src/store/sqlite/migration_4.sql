-- Migration 4: webhooks waiting for delivery (the outbox the delivery worker
-- drains), the ones given up on, and occupancy and presence.
CREATE TABLE webhook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    room TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX webhook_outbox_by_room ON webhook_outbox (endpoint, room, id);
CREATE TABLE webhook_dead_letters (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    room TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    dead_at INTEGER NOT NULL
);
-- Occupancy and presence as the cluster sees them: what is held (a room's
-- occupancy: subject ''; a member's presence: subject = the member's id), and
-- which nodes hold it, each row alive until expires_at (ms; nodes refresh
-- theirs, a dead node's expire).
CREATE TABLE webhook_active (
    room TEXT NOT NULL,
    subject TEXT NOT NULL,
    info TEXT,
    since INTEGER NOT NULL,
    PRIMARY KEY (room, subject)
);
CREATE TABLE webhook_holders (
    room TEXT NOT NULL,
    subject TEXT NOT NULL,
    node TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (room, subject, node)
);
CREATE INDEX webhook_holders_by_node ON webhook_holders (node);
