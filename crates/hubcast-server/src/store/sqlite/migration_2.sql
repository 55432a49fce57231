-- Migration 2: what a retry must repeat for its idempotency key to count as the
-- same publish (a SHA-256 of expected_seq and the data; NULL for rows written
-- before it, which any retry matches).
ALTER TABLE events ADD COLUMN idem_hash TEXT;
