-- hubcast's schema on SQLite, migration 1. `PRAGMA user_version` records
-- how many migrations ran (see schema.rs).
CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    head INTEGER NOT NULL,
    -- Highest seq deleted by retention; the log starts at pruned_through + 1.
    pruned_through INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE events (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    data TEXT NOT NULL,
    idem_key TEXT,
    PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX events_idem_key ON events (room, idem_key) WHERE idem_key IS NOT NULL;
