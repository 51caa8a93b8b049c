-- Console sessions live on the server so that signing out ends them for every copy of the
-- cookie. The cookie carries a random session id; only its SHA-256 is stored, so a copy of
-- this table opens no session.

CREATE TABLE console_sessions (
    id_hash     bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id  uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CHECK (expires_at > created_at)
);
-- "Sign out everywhere" revokes a user's live sessions.
CREATE INDEX console_sessions_user_idx ON console_sessions (user_id) WHERE revoked_at IS NULL;
-- Purging rows past their expiry.
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at);
