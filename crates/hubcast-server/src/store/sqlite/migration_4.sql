-- Migration 4: webhooks waiting for delivery (the outbox the delivery worker
-- drains), the ones given up on, and room occupancy.
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
CREATE TABLE webhook_occupied (room TEXT PRIMARY KEY, since INTEGER NOT NULL);
-- Which nodes have subscribers in which rooms, alive until expires_at (ms).
CREATE TABLE webhook_room_nodes (
    room TEXT NOT NULL,
    node TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (room, node)
);
