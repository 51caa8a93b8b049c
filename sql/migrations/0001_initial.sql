-- logexport initial schema: identities, the two logs, and the export queue.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    full_name   text NOT NULL DEFAULT '' CHECK (length(full_name) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    role            text NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'VIEWER')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_hash   bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);

CREATE TABLE audit_log_entries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    created_at      timestamptz NOT NULL DEFAULT now(),
    actor_type      text NOT NULL CHECK (actor_type IN ('USER', 'API_KEY', 'SYSTEM', 'SCIM')),
    actor_id        text,
    actor_email     text,
    actor_name      text,
    action          text NOT NULL,
    resource_type   text,
    resource_id     text,
    ip_address      inet,
    user_agent      text,
    metadata        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_entries_org_time_idx
    ON audit_log_entries (organization_id, created_at, id);

CREATE TABLE scim_events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    created_at      timestamptz NOT NULL DEFAULT now(),
    method          text NOT NULL,
    path            text NOT NULL,
    user_name       text,
    status_code     integer NOT NULL CHECK (status_code BETWEEN 100 AND 599),
    error_message   text,
    ip_address      inet,
    user_agent      text,
    request_body    jsonb DEFAULT '{}',
    response_body   jsonb DEFAULT '{}'
);
CREATE INDEX scim_events_org_time_idx ON scim_events (organization_id, created_at, id);

-- The export queue. Every column the worker writes is fenced by (lease_owner, attempts).
CREATE TABLE log_exports (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    kind                text NOT NULL CHECK (kind IN ('AUDIT_LOG', 'SCIM_EVENT')),
    status              text NOT NULL DEFAULT 'PENDING'
                        CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'EXPIRED',
                                          'FAILED', 'CANCELED')),
    from_time           timestamptz NOT NULL,
    to_time             timestamptz NOT NULL,
    format              text NOT NULL DEFAULT 'JSONL' CHECK (format IN ('JSONL', 'CSV')),
    compression         text NOT NULL DEFAULT 'NONE' CHECK (compression IN ('NONE', 'GZIP')),
    csv_bom             boolean NOT NULL DEFAULT false,
    filter              jsonb NOT NULL DEFAULT '{}',
    requested_by        uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    api_key_id          uuid REFERENCES api_keys (id) ON DELETE RESTRICT,
    idempotency_key     text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    request_hash        text,
    attempts            integer NOT NULL DEFAULT 0,
    run_after           timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,
    lease_expires_at    timestamptz,
    rows_written        bigint NOT NULL DEFAULT 0,
    storage_key         text,
    file_name           text,
    content_type        text,
    byte_size           bigint,
    row_count           bigint,
    sha256              text,
    snapshot_at         timestamptz,
    started_at          timestamptz,
    completed_at        timestamptz,
    emailed_at          timestamptz,
    email_attempts      integer NOT NULL DEFAULT 0,
    email_run_after     timestamptz,
    expires_at          timestamptz,
    finished_at         timestamptz,
    error_code          text,
    error_message       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (from_time < to_time),
    CHECK (status <> 'PROCESSING' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX log_exports_org_created_idx ON log_exports (organization_id, created_at, id);
CREATE INDEX log_exports_runnable_idx ON log_exports (run_after, created_at)
    WHERE status IN ('PENDING', 'PROCESSING');
CREATE INDEX log_exports_active_org_idx ON log_exports (organization_id)
    WHERE status IN ('PENDING', 'PROCESSING');
CREATE INDEX log_exports_email_due_idx ON log_exports (email_run_after)
    WHERE emailed_at IS NULL AND email_run_after IS NOT NULL;
CREATE INDEX log_exports_expiry_idx ON log_exports (expires_at) WHERE status = 'COMPLETED';
CREATE UNIQUE INDEX log_exports_idempotency_key
    ON log_exports (requested_by, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Every object key an attempt may write is recorded before the upload starts, so the
-- sweeper can delete what no fenced commit adopted.
CREATE TABLE log_export_objects (
    storage_key   text PRIMARY KEY,
    export_id     uuid NOT NULL REFERENCES log_exports (id) ON DELETE RESTRICT,
    attempt       integer NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX log_export_objects_pending_idx ON log_export_objects (created_at)
    WHERE deleted_at IS NULL;

CREATE TABLE log_export_download_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    export_id     uuid NOT NULL REFERENCES log_exports (id) ON DELETE RESTRICT,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    purpose       text NOT NULL CHECK (purpose IN ('EMAIL', 'DIRECT')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX log_export_download_tokens_export_idx ON log_export_download_tokens (export_id);
