-- Signed manifests: each COMPLETED export gets one, numbered in its chain (one organization's
-- exports of one kind). The chain's head is one row per (organization, kind): the completing
-- transaction locks it, takes the next sequence and links to the previous manifest's SHA-256,
-- so concurrent completions never share or skip a number.
CREATE TABLE manifest_chains (
    organization_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    kind                 text NOT NULL CHECK (kind IN ('AUDIT_LOG', 'SCIM_EVENT')),
    last_sequence        bigint NOT NULL CHECK (last_sequence >= 1),
    last_manifest_sha256 text NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, kind)
);

-- manifest: the signed envelope exactly as stored beside the file (text, not jsonb, so
-- that its bytes are kept). manifest_stored_at: when the copy beside the object was written
-- (NULL while it is still to be written).
ALTER TABLE log_exports
    ADD COLUMN manifest            text,
    ADD COLUMN manifest_sequence   bigint,
    ADD COLUMN manifest_sha256     text,
    ADD COLUMN manifest_stored_at  timestamptz;

-- A second line of defence behind the chain lock: no two manifests share a number.
CREATE UNIQUE INDEX log_exports_manifest_sequence
    ON log_exports (organization_id, kind, manifest_sequence)
    WHERE manifest_sequence IS NOT NULL;
