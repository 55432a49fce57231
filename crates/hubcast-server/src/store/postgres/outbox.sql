-- Migration 1, continued: the application outbox, its rejects, and the
-- NOTIFY that wakes the drainers (`{channel}` is replaced per schema).
-- The outbox: an application inserts here in its own transaction, atomically
-- with its own state; hubcast appends each row to its room and deletes it.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    room TEXT NOT NULL,
    data JSONB NOT NULL,
    idem_key TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Rows hubcast could not append (invalid room name), kept for the operator.
CREATE TABLE outbox_rejected (
    id BIGINT PRIMARY KEY,
    room TEXT NOT NULL,
    data JSONB NOT NULL,
    idem_key TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    reason TEXT NOT NULL
);
CREATE FUNCTION outbox_notify() RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
END
$fn$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
