-- Migration 5: token revocations (POST /v1/revocations). One row per revoked
-- token (kind 'jti', subject = the jti) or per user (kind 'user', subject =
-- the user, with the iat cut-off); pruned once expires_at (seconds) passed.
CREATE TABLE revocations (
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    issued_before BIGINT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, subject)
);
CREATE INDEX revocations_expires_at ON revocations (expires_at);
