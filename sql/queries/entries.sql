-- Audit log entries and SCIM events: single inserts and the newest-first listings.
-- Bulk loads go through COPY (entries.record_*_entries), which needs no SQL text.

-- name: insert_audit_log_entry
INSERT INTO audit_log_entries (
    organization_id, created_at, actor_type, actor_id, actor_email, actor_name,
    action, resource_type, resource_id, ip_address, user_agent, metadata
) VALUES ($1, coalesce($2::timestamptz, now()), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING id;

-- name: insert_scim_event
INSERT INTO scim_events (
    organization_id, created_at, method, path, user_name, status_code, error_message,
    ip_address, user_agent, request_body, response_body
) VALUES ($1, coalesce($2::timestamptz, now()), $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING id;

-- name: transaction_now
SELECT now();

-- Keyset page, newest first. ($2, $3) is the last row of the previous page; the first
-- page passes NULLs, replaced by values above every real key so that the row comparison
-- stays an index condition on (organization_id, created_at, id). [$4, $5) is the optional
-- time range, half-open like an export's; NULL bounds become infinities for the same reason.
-- name: list_audit_log_entries
SELECT id, organization_id, created_at, actor_type, actor_id, actor_email, actor_name,
       action, resource_type, resource_id, host(ip_address) AS ip_address, user_agent,
       metadata
FROM audit_log_entries
WHERE organization_id = $1
  AND (created_at, id) < (coalesce($2::timestamptz, 'infinity'),
                          coalesce($3::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
  AND created_at >= coalesce($4::timestamptz, '-infinity')
  AND created_at < coalesce($5::timestamptz, 'infinity')
  AND ($6::text[] IS NULL OR action = ANY($6))
  AND ($7::text[] IS NULL OR actor_id = ANY($7))
  AND ($8::text[] IS NULL OR resource_type = ANY($8))
ORDER BY created_at DESC, id DESC
LIMIT $9;

-- name: list_scim_events
SELECT id, organization_id, created_at, method, path, user_name, status_code,
       error_message, host(ip_address) AS ip_address, user_agent, request_body,
       response_body
FROM scim_events
WHERE organization_id = $1
  AND (created_at, id) < (coalesce($2::timestamptz, 'infinity'),
                          coalesce($3::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
  AND created_at >= coalesce($4::timestamptz, '-infinity')
  AND created_at < coalesce($5::timestamptz, 'infinity')
  AND ($6::text[] IS NULL OR method = ANY($6))
  AND ($7::text IS NULL OR lower(user_name) = lower($7))
  AND ($8::int[] IS NULL OR status_code = ANY($8))
ORDER BY created_at DESC, id DESC
LIMIT $9;
