-- Log streams: claiming a due stream, its lease and fenced writes, its deliveries, and the
-- rows a delivery carries. Every write about a running stream is fenced by
-- ($1 id, $2 lease_owner, $3 lease_attempt).

-- name: claim_stream
-- Due streams are ACTIVE or FAILING ones whose next run time has come and that no live run
-- holds: never leased, lease expired, or whose worker let go of its liveness lock (it
-- died). $1 worker id, $2 lease seconds, $3 the worker's liveness lock key (NULL: none).
WITH candidate AS (
    SELECT s.id
    FROM log_streams s
    WHERE s.deleted_at IS NULL
      AND s.state IN ('ACTIVE', 'FAILING')
      AND s.next_run_at <= clock_timestamp()
      AND (s.lease_owner IS NULL
           OR s.lease_expires_at <= clock_timestamp()
           OR (s.lease_lock_key IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM held_liveness_locks h
                               WHERE h.lock_key = s.lease_lock_key)))
    ORDER BY s.next_run_at, s.id
    LIMIT 1
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE log_streams s
SET lease_owner = $1,
    lease_expires_at = clock_timestamp() + make_interval(secs => $2),
    lease_attempt = s.lease_attempt + 1,
    lease_lock_key = $3,
    updated_at = now()
FROM candidate
WHERE s.id = candidate.id
RETURNING s.*;

-- name: stream_heartbeat
-- No row back: the lease went elsewhere, or the stream was deleted.
UPDATE log_streams
SET lease_expires_at = now() + make_interval(secs => $4), lease_lock_key = $5
WHERE id = $1 AND lease_owner = $2 AND lease_attempt = $3 AND deleted_at IS NULL
RETURNING id;

-- name: get_fenced_stream
-- The stream as this run sees it now (its state may have been changed by an owner).
SELECT * FROM log_streams
WHERE id = $1 AND lease_owner = $2 AND lease_attempt = $3 AND deleted_at IS NULL;

-- name: release_stream
-- The run is over: the next one is due in $4 seconds. An owner's pause during the run stays.
UPDATE log_streams
SET lease_owner = NULL, lease_expires_at = NULL, lease_lock_key = NULL,
    state = CASE WHEN state = 'PAUSED' THEN 'PAUSED' ELSE 'ACTIVE' END,
    last_error = CASE WHEN state = 'PAUSED' THEN last_error END,
    failures = 0,
    next_run_at = now() + make_interval(secs => $4),
    updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND lease_attempt = $3
RETURNING *;

-- name: hand_back_stream
-- The worker is stopping mid-run: the stream is due again at once, for another worker, in
-- the state it had (a FAILING stream keeps its last error until a delivery succeeds).
UPDATE log_streams
SET lease_owner = NULL, lease_expires_at = NULL, lease_lock_key = NULL,
    next_run_at = now(), updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND lease_attempt = $3
RETURNING *;

-- name: fail_stream
-- The destination failed: FAILING (unless paused meanwhile), tried again after $4 seconds.
UPDATE log_streams
SET lease_owner = NULL, lease_expires_at = NULL, lease_lock_key = NULL,
    state = CASE WHEN state = 'PAUSED' THEN 'PAUSED' ELSE 'FAILING' END,
    last_error = $5,
    failures = failures + 1,
    next_run_at = now() + make_interval(secs => $4),
    updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND lease_attempt = $3
RETURNING *;

-- name: pending_delivery
-- The delivery recorded but not yet delivered (at most one per stream).
SELECT * FROM log_stream_deliveries
WHERE stream_id = $1 AND status = 'PENDING' AND NOT test;

-- name: take_sequence
-- Numbers the next delivery and links it into the chain; fenced, and only from the chain
-- head this run read ($4), so no number is shared or skipped.
UPDATE log_streams
SET last_sequence = last_sequence + 1, last_manifest_sha256 = $5, updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND lease_attempt = $3 AND deleted_at IS NULL
  AND last_sequence = $4
RETURNING last_sequence;

-- name: insert_delivery
INSERT INTO log_stream_deliveries (
    id, stream_id, organization_id, sequence, test, status,
    xid_from, xid_to, after_created_at, after_id, last_created_at, last_id, completes_range,
    row_count, byte_size, sha256, manifest, manifest_sha256, created_at
) VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
          $17, $18)
RETURNING *;

-- name: delivery_attempt_failed
UPDATE log_stream_deliveries
SET attempts = attempts + 1, error = $2, updated_at = now()
WHERE id = $1 AND status = 'PENDING'
RETURNING *;

-- name: mark_delivered
UPDATE log_stream_deliveries
SET status = 'DELIVERED', attempts = attempts + 1, error = NULL, delivered_at = now(),
    updated_at = now()
WHERE id = $1 AND status = 'PENDING'
RETURNING *;

-- name: advance_checkpoint
-- In the commit that marks a delivery delivered: the whole range done moves the horizon to
-- its end ($4, $5 NULL); otherwise the range stays open at its end $4 and the cursor
-- moves to the delivery's last row ($5, $6).
UPDATE log_streams
SET horizon = CASE WHEN $7 THEN $4::xid8 ELSE horizon END,
    range_end = CASE WHEN $7 THEN NULL ELSE $4::xid8 END,
    cursor_created_at = CASE WHEN $7 THEN NULL ELSE $5::timestamptz END,
    cursor_id = CASE WHEN $7 THEN NULL ELSE $6::uuid END,
    lease_expires_at = GREATEST(lease_expires_at, now() + make_interval(secs => $8)),
    updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND lease_attempt = $3 AND deleted_at IS NULL
RETURNING *;

-- name: snapshot_horizon
-- The first statement of a run's snapshot: every transaction below this xmin has ended.
SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin, clock_timestamp() AS at;

-- name: stream_audit_log_rows
-- The rows of a later range: transaction id in [$3, $4), created_at from the stream's
-- start $2, (created_at, id) after ($5, $6) and up to ($7, $8) when given, the filter
-- $9-$11, at most $12 rows. Packed as the export query packs them.
SELECT packed, metadata, null_mask
FROM audit_log_packed_rows
WHERE organization_id = $1 AND created_at >= $2
  AND xid >= $3::xid8 AND xid < $4::xid8
  AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6::uuid))
  AND ($7::timestamptz IS NULL OR (created_at, id) <= ($7, $8::uuid))
  AND ($9::text[] IS NULL OR action = ANY ($9))
  AND ($10::text[] IS NULL OR actor_id = ANY ($10))
  AND ($11::text[] IS NULL OR resource_type = ANY ($11))
ORDER BY created_at, id
LIMIT $12;

-- name: stream_audit_log_rows_first
-- The first range: from the beginning (rows written before transaction ids were recorded
-- included) up to $4, bounded below by the stream's start $2; $3 is unused (NULL).
SELECT packed, metadata, null_mask
FROM audit_log_packed_rows
WHERE organization_id = $1 AND created_at >= $2
  AND $3::xid8 IS NULL AND (xid IS NULL OR xid < $4::xid8)
  AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6::uuid))
  AND ($7::timestamptz IS NULL OR (created_at, id) <= ($7, $8::uuid))
  AND ($9::text[] IS NULL OR action = ANY ($9))
  AND ($10::text[] IS NULL OR actor_id = ANY ($10))
  AND ($11::text[] IS NULL OR resource_type = ANY ($11))
ORDER BY created_at, id
LIMIT $12;

-- name: stream_scim_event_rows
SELECT packed, request_body, response_body, null_mask
FROM scim_event_packed_rows
WHERE organization_id = $1 AND created_at >= $2
  AND xid >= $3::xid8 AND xid < $4::xid8
  AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6::uuid))
  AND ($7::timestamptz IS NULL OR (created_at, id) <= ($7, $8::uuid))
  AND ($9::text[] IS NULL OR method = ANY ($9))
  AND ($10::text IS NULL OR lower(user_name) = lower($10))
  AND ($11::int[] IS NULL OR status_code = ANY ($11))
ORDER BY created_at, id
LIMIT $12;

-- name: stream_scim_event_rows_first
SELECT packed, request_body, response_body, null_mask
FROM scim_event_packed_rows
WHERE organization_id = $1 AND created_at >= $2
  AND $3::xid8 IS NULL AND (xid IS NULL OR xid < $4::xid8)
  AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6::uuid))
  AND ($7::timestamptz IS NULL OR (created_at, id) <= ($7, $8::uuid))
  AND ($9::text[] IS NULL OR method = ANY ($9))
  AND ($10::text IS NULL OR lower(user_name) = lower($10))
  AND ($11::int[] IS NULL OR status_code = ANY ($11))
ORDER BY created_at, id
LIMIT $12;
