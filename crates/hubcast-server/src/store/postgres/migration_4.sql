-- Migration 4: webhooks waiting for delivery (the outbox the nodes' delivery
-- workers drain; `lease_until` on a room's oldest row says a node is
-- delivering that room), the ones given up on, and the rooms recorded as
-- occupied. Times are ms since the Unix epoch.
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
CREATE TABLE webhook_occupied (room TEXT PRIMARY KEY, since BIGINT NOT NULL);
-- Which nodes have subscribers in which rooms, alive until expires_at (each
-- node refreshes its rows; a dead node's expire).
CREATE TABLE webhook_room_nodes (
    room TEXT NOT NULL,
    node TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (room, node)
);
CREATE INDEX webhook_room_nodes_by_node ON webhook_room_nodes (node);
