-- Export requests, the job queue, and the rows an export reads.

-- name: lock_organization_exports
-- Serializes the active-export cap check of one organization.
SELECT pg_advisory_xact_lock(7001, hashtext($1::uuid::text));

-- name: find_export_by_idempotency_key
SELECT * FROM log_exports
WHERE requested_by = $1 AND idempotency_key = $2
FOR UPDATE;

-- name: release_idempotency_key
UPDATE log_exports SET idempotency_key = NULL, updated_at = now() WHERE id = $1;

-- name: count_active_exports
SELECT count(*) FROM log_exports
WHERE organization_id = $1 AND status IN ('PENDING', 'PROCESSING');

-- name: insert_export
INSERT INTO log_exports (
    organization_id, kind, from_time, to_time, format, compression, csv_bom, filter,
    requested_by, api_key_id, idempotency_key, request_hash
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (requested_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: notify_export
SELECT pg_notify('logexport_jobs', $1::uuid::text);

-- name: get_export
SELECT * FROM log_exports WHERE id = $1;

-- name: get_export_for_update
SELECT * FROM log_exports WHERE id = $1 FOR UPDATE;

-- name: list_exports
-- Newest first, keyset pagination on (created_at, id).
SELECT * FROM log_exports
WHERE organization_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $4;

-- name: cancel_export
UPDATE log_exports
SET status = 'CANCELED', finished_at = now(), updated_at = now(),
    lease_owner = NULL, lease_expires_at = NULL, lease_lock_key = NULL,
    email_run_after = NULL
WHERE id = $1 AND status IN ('PENDING', 'PROCESSING', 'COMPLETED')
RETURNING *;

-- name: export_status_counts
SELECT status, count(*) AS n FROM log_exports GROUP BY status;

-- name: queue_depth
SELECT count(*) FROM log_exports WHERE status = 'PENDING' AND run_after <= now();

-- name: export_audit_log_jsonl
-- An export's lines, written by PostgreSQL (sql/migrations/0010_export_lines.sql) and read
-- with COPY; an export read in slices runs this once per time slice.
SELECT jsonl
FROM audit_log_export_lines
WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3
  AND ($4::text[] IS NULL OR action = ANY ($4))
  AND ($5::text[] IS NULL OR actor_id = ANY ($5))
  AND ($6::text[] IS NULL OR resource_type = ANY ($6))
ORDER BY created_at, id;

-- name: export_audit_log_csv
SELECT csv_cells, metadata
FROM audit_log_export_lines
WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3
  AND ($4::text[] IS NULL OR action = ANY ($4))
  AND ($5::text[] IS NULL OR actor_id = ANY ($5))
  AND ($6::text[] IS NULL OR resource_type = ANY ($6))
ORDER BY created_at, id;

-- name: export_audit_log_exact
-- The text fields of some rows one by one, within a snapshot (log streams, whose packed rows
-- cannot be split when a field holds the separator).
SELECT id::text, to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), actor_type, actor_id, actor_email, actor_name, action,
       resource_type, resource_id, host(ip_address), user_agent
FROM audit_log_entries
WHERE id = ANY ($1::uuid[]) AND organization_id = $2;

-- name: export_scim_event_jsonl
SELECT jsonl
FROM scim_event_export_lines
WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3
  AND ($4::text[] IS NULL OR method = ANY ($4))
  AND ($5::text IS NULL OR lower(user_name) = lower($5))
  AND ($6::int[] IS NULL OR status_code = ANY ($6))
ORDER BY created_at, id;

-- name: export_scim_event_csv
SELECT csv_cells, request_body, response_body
FROM scim_event_export_lines
WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3
  AND ($4::text[] IS NULL OR method = ANY ($4))
  AND ($5::text IS NULL OR lower(user_name) = lower($5))
  AND ($6::int[] IS NULL OR status_code = ANY ($6))
ORDER BY created_at, id;

-- name: export_scim_event_exact
SELECT id::text, to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), method, path, user_name, status_code::text, error_message,
       host(ip_address), user_agent
FROM scim_events
WHERE id = ANY ($1::uuid[]) AND organization_id = $2;

-- name: snapshot_time
SELECT clock_timestamp();

-- name: export_plan_settings
-- For the export's transaction: read in index order, as a cursor would. Without these, the
-- planner may prefer, for one large organization, a scan of the whole table and a sort
-- that writes the entire export to temporary files before the first line; and the export
-- chooses its own parallelism (slices), so that its cost to the database is what it says.
-- No JIT: an export's time goes into functions (to_json, jsonb output, to_char) that
-- compiled expressions still call, so compiling a large export's query only adds its cost
-- (about 0.1-0.3 s of CPU a query here).
SELECT set_config('enable_sort', 'off', true),
       set_config('max_parallel_workers_per_gather', '0', true),
       set_config('jit', 'off', true);

-- name: export_snapshot
-- The export's snapshot, for the connections that read its other slices.
SELECT pg_export_snapshot();
