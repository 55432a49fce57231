-- Migration 3: the database's instance id, from which a new room's epoch is
-- derived (SHA-256 of "instance:room"), so a subscriber learns the epoch of a
-- room nobody has written yet without the subscribe writing anything.
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('instance', lower(hex(randomblob(16))));
