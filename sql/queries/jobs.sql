-- The job queue: claiming, leases and fenced writes of running exports, the liveness lock,
-- the email queue and the sweeper's bookkeeping. Every write about a running export is
-- fenced by ($1 id, $2 lease_owner, $3 attempts).

-- name: claim_lock
-- Claims take turns so the per-organization running cap holds at every moment.
SELECT pg_advisory_xact_lock(7002, 0);

-- name: claim_export
-- Runnable jobs are pending ones whose retry time has come, and abandoned ones: PROCESSING
-- with an expired lease, or whose worker no longer holds its liveness lock (it crashed, its
-- connection closed). An organization already running $3 exports is passed over. Among the
-- rest, the organization served least recently goes first (so one tenant's backlog never
-- holds up another's first export), then the oldest job. $4 is the claiming worker's own
-- liveness lock key (NULL when it holds none: the lease alone then tells it is alive).
WITH held AS (
    -- Read once: both steps below ask it.
    SELECT lock_key FROM held_liveness_locks
), abandoned AS (
    SELECT e.id
    FROM log_exports e
    WHERE e.status = 'PROCESSING'
      AND (e.lease_expires_at <= clock_timestamp()
           OR (e.lease_lock_key IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM held h WHERE h.lock_key = e.lease_lock_key)))
), running AS (
    SELECT organization_id, count(*) AS n
    FROM log_exports
    WHERE status = 'PROCESSING' AND id NOT IN (SELECT id FROM abandoned)
    GROUP BY organization_id
), runnable AS (
    SELECT e.id, e.organization_id, e.run_after, e.created_at
    FROM log_exports e
    LEFT JOIN running r ON r.organization_id = e.organization_id
    WHERE ((e.status = 'PENDING' AND e.run_after <= clock_timestamp())
           OR e.id IN (SELECT id FROM abandoned))
      AND COALESCE(r.n, 0) < $3
), last_served AS (
    SELECT organization_id, max(started_at) AS at
    FROM log_exports
    WHERE organization_id IN (SELECT organization_id FROM runnable)
    GROUP BY organization_id
), candidate AS (
    -- Checked again on the locked row: a cancel or a heartbeat may have come meanwhile.
    SELECT e.id
    FROM log_exports e
    JOIN runnable USING (id)
    LEFT JOIN last_served s ON s.organization_id = e.organization_id
    WHERE ((e.status = 'PENDING' AND e.run_after <= clock_timestamp())
           OR (e.status = 'PROCESSING'
               AND (e.lease_expires_at <= clock_timestamp()
                    OR (e.lease_lock_key IS NOT NULL
                        AND NOT EXISTS (SELECT 1 FROM held h
                                        WHERE h.lock_key = e.lease_lock_key)))))
    ORDER BY s.at NULLS FIRST, e.run_after, e.created_at, e.id
    LIMIT 1
    FOR UPDATE OF e SKIP LOCKED
)
-- clock_timestamp(), not now(): the transaction may have waited for claim_lock, and the
-- lease and start time count from the claim itself.
UPDATE log_exports e
SET status = 'PROCESSING',
    attempts = e.attempts + 1,
    lease_owner = $1,
    lease_expires_at = clock_timestamp() + make_interval(secs => $2),
    lease_lock_key = $4,
    started_at = COALESCE(e.started_at, clock_timestamp()),
    rows_written = 0,
    updated_at = now()
FROM candidate
WHERE e.id = candidate.id
RETURNING e.*, (now() - e.run_after) AS claim_delay;

-- name: abandoned_export_exists
-- Whether some PROCESSING export's worker let go of its liveness lock while its lease still
-- runs: a worker that died. Cheap enough to ask every second, so that claims follow a crash
-- within seconds.
SELECT EXISTS (
    SELECT 1
    FROM log_exports e
    WHERE e.status = 'PROCESSING' AND e.lease_lock_key IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM held_liveness_locks h WHERE h.lock_key = e.lease_lock_key)
);

-- name: take_liveness_lock
-- Held by the worker's long-lived connection for as long as that connection lives.
SELECT pg_try_advisory_lock($1::bigint);

-- name: heartbeat
-- Renews the lease, stores progress and the worker's current liveness lock key ($6; it
-- changes when the lock connection is replaced). No row back means the lease is lost or the
-- export was canceled.
UPDATE log_exports
SET lease_expires_at = now() + make_interval(secs => $4), rows_written = $5,
    lease_lock_key = $6, updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'PROCESSING'
RETURNING id;

-- name: export_fate
-- Whether the attempt still holds the export, and its status now: why a fenced write found
-- nothing (canceled, or the lease went elsewhere).
SELECT status, (lease_owner = $2 AND attempts = $3 AND status = 'PROCESSING') IS TRUE AS ours
FROM log_exports WHERE id = $1;

-- name: set_snapshot_time
UPDATE log_exports SET snapshot_at = $4, updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'PROCESSING'
RETURNING id;

-- name: record_object_key
INSERT INTO log_export_objects (storage_key, export_id, attempt)
SELECT $4, id, attempts FROM log_exports
WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'PROCESSING'
RETURNING storage_key;

-- name: complete_export
UPDATE log_exports
SET status = 'COMPLETED', completed_at = now(), finished_at = now(), updated_at = now(),
    lease_owner = NULL, lease_expires_at = NULL, lease_lock_key = NULL,
    storage_key = $4, file_name = $5, content_type = $6, byte_size = $7, row_count = $8,
    sha256 = $9, rows_written = $8, expires_at = now() + make_interval(secs => $10),
    error_code = NULL, error_message = NULL,
    email_run_after = now()
WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'PROCESSING'
RETURNING *;

-- name: advance_manifest_chain
-- Takes the next number of the (organization, kind) chain and locks its head until the
-- completing transaction ends, so concurrent completions queue here one by one. One
-- statement, so the first manifest of a chain serialises too: a second inserter waits on
-- the key, then takes the update path. Returns the number taken and the previous
-- manifest's SHA-256 (NULL for the first: '' is a placeholder store_manifest replaces).
INSERT INTO manifest_chains AS c (organization_id, kind, last_sequence, last_manifest_sha256)
VALUES ($1, $2, 1, '')
ON CONFLICT (organization_id, kind) DO UPDATE
SET last_sequence = c.last_sequence + 1, updated_at = now()
RETURNING c.last_sequence AS sequence, NULLIF(c.last_manifest_sha256, '') AS previous_sha256;

-- name: store_manifest
-- The signed manifest on its export, and the chain head moved to it, in the transaction
-- that holds the head's lock ($1 export, $2 organization, $3 kind, $4 sequence).
WITH head AS (
    UPDATE manifest_chains
    SET last_manifest_sha256 = $6, updated_at = now()
    WHERE organization_id = $2 AND kind = $3 AND last_sequence = $4
    RETURNING last_sequence
)
UPDATE log_exports e
SET manifest = $5, manifest_sequence = head.last_sequence, manifest_sha256 = $6
FROM head
WHERE e.id = $1 AND e.status = 'COMPLETED'
RETURNING e.*;

-- name: mark_manifest_stored
-- The copy beside the object is written. Only while the export is still completed with
-- this manifest: when it was canceled or expired meanwhile, the caller deletes the copy.
UPDATE log_exports SET manifest_stored_at = now()
WHERE id = $1 AND status = 'COMPLETED' AND storage_key = $2 AND manifest_sha256 = $3
RETURNING id;

-- name: manifests_to_store
-- Completed exports whose manifest copy was not written (storage failed right after the
-- commit, or the worker stopped), completed at least $2 seconds ago so that the completing
-- worker's own write goes first.
SELECT id, storage_key, file_name, manifest, manifest_sha256
FROM log_exports
WHERE status = 'COMPLETED' AND manifest IS NOT NULL AND manifest_stored_at IS NULL
  AND completed_at < now() - make_interval(secs => $2)
ORDER BY completed_at
LIMIT $1;

-- name: retry_export
UPDATE log_exports
SET status = 'PENDING', lease_owner = NULL, lease_expires_at = NULL, lease_lock_key = NULL,
    run_after = now() + make_interval(secs => $4), error_code = $5, error_message = $6,
    updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'PROCESSING'
RETURNING *;

-- name: hand_back_export
-- Shutdown: back to the queue at once, and the attempt does not count.
UPDATE log_exports
SET status = 'PENDING', lease_owner = NULL, lease_expires_at = NULL, lease_lock_key = NULL,
    attempts = attempts - 1, run_after = now(), rows_written = 0, updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'PROCESSING'
RETURNING id;

-- name: fail_export
-- $4 says whether the requester gets a failure email.
UPDATE log_exports
SET status = 'FAILED', lease_owner = NULL, lease_expires_at = NULL, lease_lock_key = NULL,
    finished_at = now(), updated_at = now(), error_code = $5, error_message = $6,
    email_run_after = CASE WHEN $4 THEN now() END
WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'PROCESSING'
RETURNING *;

-- name: claim_due_emails
-- An email lease: the row is pushed ahead so that no other worker sends it meanwhile.
WITH due AS (
    SELECT id FROM log_exports
    WHERE emailed_at IS NULL AND email_run_after IS NOT NULL AND email_run_after <= now()
      AND status IN ('COMPLETED', 'FAILED')
    ORDER BY email_run_after
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE log_exports e
SET email_run_after = now() + make_interval(secs => $2), email_attempts = e.email_attempts + 1
FROM due WHERE e.id = due.id
RETURNING e.*;

-- name: mark_emailed
UPDATE log_exports SET emailed_at = now(), updated_at = now()
WHERE id = $1 AND emailed_at IS NULL
RETURNING id;

-- name: retry_email
UPDATE log_exports SET email_run_after = now() + make_interval(secs => $2), updated_at = now()
WHERE id = $1 AND emailed_at IS NULL;

-- name: drop_email
-- The requester may no longer see the export: the mail is not sent.
UPDATE log_exports SET email_run_after = NULL, updated_at = now() WHERE id = $1;

-- name: expire_exports
UPDATE log_exports
SET status = 'EXPIRED', updated_at = now(), email_run_after = NULL
WHERE status = 'COMPLETED' AND expires_at <= now()
RETURNING id, organization_id;

-- name: unadopted_objects
-- Keys that no fenced commit adopted (or whose export is over), and that no live attempt
-- is writing.
SELECT o.storage_key, o.export_id, o.attempt, e.status,
       (e.manifest IS NOT NULL AND e.storage_key = o.storage_key) AS has_manifest,
       (e.status IN ('COMPLETED', 'EXPIRED', 'CANCELED', 'FAILED')
        AND o.created_at < now() - make_interval(secs => $2)) AS settled
FROM log_export_objects o
JOIN log_exports e ON e.id = o.export_id
WHERE o.deleted_at IS NULL
  AND NOT (e.status = 'COMPLETED' AND e.storage_key = o.storage_key)
  AND NOT (e.status = 'PROCESSING' AND e.attempts = o.attempt AND e.lease_expires_at > now())
ORDER BY o.created_at
LIMIT $1;

-- name: mark_object_deleted
UPDATE log_export_objects SET deleted_at = now() WHERE storage_key = $1;
