-- Console sessions: one row per sign-in, found by the SHA-256 of the cookie's session id.

-- name: create_console_session
INSERT INTO console_sessions (id_hash, user_id, api_key_id, expires_at)
VALUES ($1, $2, $3, now() + $4::interval)
RETURNING created_at, expires_at;

-- A session is live while neither it nor its key is revoked or expired, and the key still
-- belongs to the session's user.
-- name: console_session_principal
SELECT s.user_id, s.api_key_id, u.email, u.full_name
FROM console_sessions s
JOIN api_keys k ON k.id = s.api_key_id AND k.user_id = s.user_id
JOIN users u ON u.id = s.user_id
WHERE s.id_hash = $1
  AND s.revoked_at IS NULL
  AND s.expires_at > now()
  AND k.revoked_at IS NULL
  AND (k.expires_at IS NULL OR k.expires_at > now());

-- name: revoke_console_session
UPDATE console_sessions SET revoked_at = coalesce(revoked_at, now())
WHERE id_hash = $1;

-- name: revoke_user_console_sessions
WITH revoked AS (
    UPDATE console_sessions SET revoked_at = now()
    WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
    RETURNING 1
)
SELECT count(*) FROM revoked;

-- Rows that can no longer open anything; kept a while after expiry or revocation.
-- name: purge_console_sessions
WITH purged AS (
    DELETE FROM console_sessions
    WHERE expires_at < now() - $1::interval
       OR revoked_at < now() - $1::interval
    RETURNING 1
)
SELECT count(*) FROM purged;
