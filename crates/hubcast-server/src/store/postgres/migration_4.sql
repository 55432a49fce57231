-- Migration 4: webhooks waiting for delivery (the outbox the nodes' delivery
-- workers drain; `lease_until` on a room's oldest row says a node is
-- delivering that room), the ones given up on, and occupancy and presence.
-- Times are ms since the Unix epoch.
CREATE TABLE webhook_outbox (
    id BIGSERIAL PRIMARY KEY,
    endpoint TEXT NOT NULL,
    room TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX webhook_outbox_by_room ON webhook_outbox (endpoint, room, id);
CREATE TABLE webhook_dead_letters (
    id BIGINT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    room TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts INT NOT NULL,
    last_error TEXT,
    dead_at BIGINT NOT NULL
);
-- Occupancy and presence as the cluster sees them: what is held (a room's
-- occupancy: subject ''; a member's presence: subject = the member's id), and
-- which nodes hold it, each row alive until expires_at (ms; nodes refresh
-- theirs, a dead node's expire).
CREATE TABLE webhook_active (
    room TEXT NOT NULL,
    subject TEXT NOT NULL,
    info TEXT,
    since BIGINT NOT NULL,
    PRIMARY KEY (room, subject)
);
CREATE TABLE webhook_holders (
    room TEXT NOT NULL,
    subject TEXT NOT NULL,
    node TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (room, subject, node)
);
CREATE INDEX webhook_holders_by_node ON webhook_holders (node);
