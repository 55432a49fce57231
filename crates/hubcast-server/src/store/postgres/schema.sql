-- hubcast's schema on PostgreSQL, migration 1: the log. Applied inside the
-- configured schema (search_path); see schema.rs.
CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    head BIGINT NOT NULL,
    -- Highest seq deleted by retention; the log starts at pruned_through + 1.
    pruned_through BIGINT NOT NULL DEFAULT 0,
    -- ts of the newest event, so ts never decreases within a room.
    last_ts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE events (
    room TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    data JSON NOT NULL,
    idem_key TEXT,
    PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX events_idem_key ON events (room, idem_key) WHERE idem_key IS NOT NULL;
