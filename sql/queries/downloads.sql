-- Download-link tokens: issued, looked up by hash, purged after expiry.

-- name: insert_download_token
INSERT INTO log_export_download_tokens (export_id, user_id, token_hash, purpose, expires_at)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- A one-step token is computed, not drawn: reading downloadUrl again finds it stored.
-- name: insert_download_token_once
INSERT INTO log_export_download_tokens (export_id, user_id, token_hash, purpose, expires_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (token_hash) DO NOTHING;

-- The export id is part of the match, so a token copied onto another export's URL finds nothing.
-- name: find_download_token
SELECT t.id, t.export_id, t.user_id, t.purpose, t.expires_at,
       u.email AS user_email, u.full_name AS user_name
FROM log_export_download_tokens t
JOIN users u ON u.id = t.user_id
WHERE t.token_hash = $1 AND t.export_id = $2;

-- Expired tokens are kept a while so their links can say "expired": DIRECT ones until $1,
-- EMAIL ones until $2.
-- name: delete_expired_download_tokens
DELETE FROM log_export_download_tokens
WHERE expires_at < CASE purpose WHEN 'DIRECT' THEN $1::timestamptz ELSE $2::timestamptz END;
