-- Managing log streams: what owners create, change, test and delete, and what members list.
-- Every statement names the organization, so an id from another organization finds nothing.

-- name: lock_organization_streams
-- Serializes the per-organization stream cap check. Advisory lock classes: 7001 export
-- requests per organization, 7002 the export claim, 7003 this.
SELECT pg_advisory_xact_lock(7003, hashtext($1::uuid::text));

-- name: count_live_streams
SELECT count(*) FROM log_streams WHERE organization_id = $1 AND deleted_at IS NULL;

-- name: s3_stream_sharing_keys
-- Objects are named by kind, hour, organization and sequence only: another S3 stream of the
-- organization and kind writing to the same bucket, prefix and endpoint would overwrite
-- them (one deleted within the hour still owns this hour's names).
SELECT id FROM log_streams
WHERE organization_id = $1 AND kind = $2 AND destination_type = 'S3'
  AND destination->>'bucket' = $3
  AND coalesce(destination->>'prefix', '') = coalesce($4::text, '')
  AND coalesce(destination->>'endpoint_url', '') = coalesce($5::text, '')
  AND (deleted_at IS NULL OR deleted_at > now() - interval '1 hour')
LIMIT 1;

-- name: insert_log_stream
-- start_at NULL: the default, now.
INSERT INTO log_streams (
    id, organization_id, kind, destination_type, destination, secret, interval_seconds,
    filter, start_at, created_by
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, now()), $10)
RETURNING *;

-- name: list_log_streams
SELECT * FROM log_streams
WHERE organization_id = $1 AND deleted_at IS NULL
ORDER BY created_at DESC, id DESC;

-- name: find_log_stream
-- Any live stream by id; the caller then checks membership of its organization.
SELECT * FROM log_streams WHERE id = $1 AND deleted_at IS NULL;

-- name: lock_log_stream
SELECT * FROM log_streams
WHERE id = $1 AND organization_id = $2 AND deleted_at IS NULL
FOR UPDATE;

-- name: update_log_stream
-- A resumed stream runs at once; a shorter interval brings the next run closer.
UPDATE log_streams
SET state = $3,
    interval_seconds = $4::integer,
    filter = $5,
    failures = CASE WHEN $6::boolean THEN 0 ELSE failures END,
    next_run_at = CASE
        WHEN $6::boolean THEN now()
        ELSE least(next_run_at, now() + make_interval(secs => $4::integer))
    END,
    updated_at = now()
WHERE id = $1 AND organization_id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: delete_log_stream
UPDATE log_streams SET deleted_at = now(), updated_at = now()
WHERE id = $1 AND organization_id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: insert_test_delivery
INSERT INTO log_stream_deliveries (id, stream_id, organization_id, sequence, test, status)
VALUES ($1, $2, $3, NULL, true, 'PENDING')
RETURNING *;

-- name: finish_test_delivery
UPDATE log_stream_deliveries
SET status = $3,
    error = $4,
    byte_size = $5,
    sha256 = $6,
    attempts = attempts + 1,
    delivered_at = CASE WHEN $3 = 'DELIVERED' THEN now() END,
    updated_at = now()
WHERE id = $1 AND organization_id = $2 AND test
RETURNING *;

-- name: record_test_result
-- A failed test shows as the stream's last error, a passed one clears it; but a stream
-- failing its real deliveries keeps their error (the test's is on the test delivery), and
-- a test that passes there has them retried now rather than after the backoff.
UPDATE log_streams
SET last_error = CASE
        WHEN state = 'FAILING' THEN last_error
        WHEN $3::text IS NOT NULL THEN $3
    END,
    next_run_at = CASE
        WHEN state = 'FAILING' AND $3::text IS NULL THEN least(next_run_at, now())
        ELSE next_run_at
    END,
    updated_at = now()
WHERE id = $1 AND organization_id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: list_stream_deliveries
-- Newest first; $3/$4: the (created_at, id) of the last delivery already seen.
SELECT * FROM log_stream_deliveries
WHERE stream_id = $1 AND organization_id = $2
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5;
