-- Organizations, users, memberships and API keys.

-- name: create_organization
INSERT INTO organizations (name) VALUES ($1)
RETURNING id, name, created_at;

-- name: get_organization
SELECT id, name, created_at FROM organizations WHERE id = $1;

-- name: create_user
INSERT INTO users (email, full_name) VALUES ($1, $2)
ON CONFLICT (lower(email)) DO NOTHING
RETURNING id, email, full_name, created_at;

-- name: get_user
SELECT id, email, full_name, created_at FROM users WHERE id = $1;

-- name: get_user_by_email
SELECT id, email, full_name, created_at FROM users WHERE lower(email) = lower($1);

-- name: membership_role
SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2;

-- name: add_member
INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3)
ON CONFLICT (organization_id, user_id) DO NOTHING
RETURNING organization_id, user_id, role, created_at;

-- Every change that can take the OWNER role away first locks the organization's row, so two
-- such changes run one after the other and the second sees what the first committed.
-- NO KEY UPDATE leaves the row free for the foreign-key checks of rows that reference it.
-- name: lock_organization
SELECT id FROM organizations WHERE id = $1 FOR NO KEY UPDATE;

-- name: count_other_owners
SELECT count(*) FROM memberships
WHERE organization_id = $1 AND role = 'OWNER' AND user_id <> $2;

-- name: set_member_role
UPDATE memberships SET role = $3
WHERE organization_id = $1 AND user_id = $2
RETURNING organization_id, user_id, role, created_at;

-- name: remove_member
DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2
RETURNING organization_id, user_id, role, created_at;

-- name: list_organizations_for_user
SELECT o.id, o.name, o.created_at
FROM memberships m
JOIN organizations o ON o.id = m.organization_id
WHERE m.user_id = $1
ORDER BY o.name, o.id;

-- name: create_api_key
INSERT INTO api_keys (user_id, name, secret_hash, expires_at)
VALUES ($1, $2, $3, now() + $4::interval)
RETURNING id, user_id, name, created_at, expires_at, revoked_at, last_used_at;

-- name: authenticate_api_key
SELECT k.id AS api_key_id, k.last_used_at, u.id AS user_id, u.email, u.full_name
FROM api_keys k
JOIN users u ON u.id = k.user_id
WHERE k.secret_hash = $1
  AND k.revoked_at IS NULL
  AND (k.expires_at IS NULL OR k.expires_at > now());

-- Conditional so that concurrent requests with one key write at most once a minute.
-- name: touch_api_key
UPDATE api_keys SET last_used_at = now()
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= now() - interval '1 minute');

-- name: api_key_is_active
SELECT EXISTS (
    SELECT 1 FROM api_keys
    WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
);

-- name: get_api_key
SELECT id, user_id, name, created_at, expires_at, revoked_at, last_used_at
FROM api_keys WHERE id = $1;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1
RETURNING id, user_id, name, created_at, expires_at, revoked_at, last_used_at;

-- name: list_api_keys
SELECT id, user_id, name, created_at, expires_at, revoked_at, last_used_at
FROM api_keys WHERE user_id = $1
ORDER BY created_at, id;
