-- Log streams: continuous delivery of new entries to a customer's destination.
--
-- Entry tables carry the id of the transaction that wrote each row. A stream delivers the
-- rows whose transaction id lies between its checkpoint and the xmin of a snapshot: every
-- transaction below that xmin has ended, so no row can still appear in a range once it has
-- been read, and a row committed late by a long transaction lands in a later range.
--
-- Two statements per table, not one: ADD COLUMN with a volatile default would rewrite the
-- whole table under an exclusive lock. Rows written before this migration keep NULL; they
-- predate every stream's first checkpoint and are reached by created_at alone.
ALTER TABLE audit_log_entries ADD COLUMN xid xid8;
ALTER TABLE audit_log_entries ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
ALTER TABLE scim_events ADD COLUMN xid xid8;
ALTER TABLE scim_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();

CREATE INDEX audit_log_entries_org_xid ON audit_log_entries (organization_id, xid);
CREATE INDEX scim_events_org_xid ON scim_events (organization_id, xid);

CREATE TABLE log_streams (
    -- Chosen before the insert: the sealed secret is bound to it.
    id                    uuid PRIMARY KEY,
    organization_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    kind                  text NOT NULL CHECK (kind IN ('AUDIT_LOG', 'SCIM_EVENT')),
    destination_type      text NOT NULL CHECK (destination_type IN ('HTTPS', 'S3')),
    -- Non-secret parts only; secrets are sealed in ``secret``.
    destination           jsonb NOT NULL,
    secret                bytea,
    interval_seconds      integer NOT NULL CHECK (interval_seconds > 0),
    -- NULL: every entry of the kind.
    filter                jsonb,
    state                 text NOT NULL DEFAULT 'ACTIVE'
                          CHECK (state IN ('ACTIVE', 'PAUSED', 'FAILING')),
    last_error            text,
    next_run_at           timestamptz NOT NULL DEFAULT now(),
    -- Entries created before it are not streamed.
    start_at              timestamptz NOT NULL DEFAULT now(),
    -- The checkpoint: every row below it (by transaction id) has been delivered. NULL before
    -- the first range is done: the first range starts at the beginning (rows without an id
    -- included) and is bounded by start_at.
    horizon               xid8,
    -- A range being worked through in several deliveries: its end, and the last row
    -- delivered in it by (created_at, id). NULL when no range is half done.
    range_end             xid8,
    cursor_created_at     timestamptz,
    cursor_id             uuid,
    last_sequence         bigint NOT NULL DEFAULT 0,
    last_manifest_sha256  text,
    failures              integer NOT NULL DEFAULT 0,
    lease_owner           text,
    lease_expires_at      timestamptz,
    lease_attempt         integer NOT NULL DEFAULT 0,
    -- The running worker's liveness lock key (as for exports): a crash frees the stream at once.
    lease_lock_key        bigint,
    created_by            uuid REFERENCES users (id) ON DELETE RESTRICT,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- Delete is soft: the deliveries and their chain stay on record.
    deleted_at            timestamptz,
    CHECK ((cursor_created_at IS NULL) = (cursor_id IS NULL)),
    CHECK (range_end IS NOT NULL OR cursor_id IS NULL)
);

CREATE INDEX log_streams_due ON log_streams (next_run_at)
    WHERE deleted_at IS NULL AND state IN ('ACTIVE', 'FAILING');
CREATE INDEX log_streams_org ON log_streams (organization_id, created_at)
    WHERE deleted_at IS NULL;

CREATE TABLE log_stream_deliveries (
    -- Sent as X-Logexport-Delivery: the same on every retry of the delivery.
    id                 uuid PRIMARY KEY,
    stream_id          uuid NOT NULL REFERENCES log_streams (id) ON DELETE RESTRICT,
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    -- NULL for a test delivery (no rows, outside the chain).
    sequence           bigint CHECK (sequence >= 1),
    test               boolean NOT NULL DEFAULT false,
    status             text NOT NULL DEFAULT 'PENDING'
                       CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    -- The rows, fixed when the delivery is recorded so that a retry reads exactly them:
    -- transaction id in [xid_from, xid_to) (xid_from NULL: from the beginning, rows without
    -- an id included), created_at >= the stream's start_at, and (created_at, id) after
    -- (after_created_at, after_id) (NULL: from the first) up to (last_created_at, last_id).
    xid_from           xid8,
    xid_to             xid8,
    after_created_at   timestamptz,
    after_id           uuid,
    last_created_at    timestamptz,
    last_id            uuid,
    -- Whether this delivery finishes its range: delivering it moves the checkpoint to xid_to.
    completes_range    boolean NOT NULL DEFAULT false,
    row_count          bigint NOT NULL DEFAULT 0,
    byte_size          bigint NOT NULL DEFAULT 0,
    sha256             text,
    -- The signed envelope, text so that its bytes are kept; and the SHA-256 of its manifest.
    manifest           text,
    manifest_sha256    text,
    attempts           integer NOT NULL DEFAULT 0,
    error              text,
    delivered_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, sequence),
    CHECK (test = (sequence IS NULL))
);

CREATE INDEX log_stream_deliveries_recent ON log_stream_deliveries (stream_id, created_at DESC);
-- At most one delivery of a stream's chain waits to be sent: runs go one at a time.
CREATE UNIQUE INDEX log_stream_deliveries_one_pending ON log_stream_deliveries (stream_id)
    WHERE status = 'PENDING' AND NOT test;
