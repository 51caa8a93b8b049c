-- Entry rows as exports and stream deliveries read them, defined once. A row travels as a
-- few values: the text fields joined by the unit separator U+001F into one bytea (NULLs as
-- empty strings), the JSON column(s), and a bit mask of the NULL fields; the worker then
-- decodes three or four values instead of thirteen and writes a line with a few byte
-- operations (see exports/encoders.py). A field that itself holds U+001F shows up as an
-- extra separator, and the worker reads that row again field by field.
--
-- PostgreSQL inlines these views, so the conditions of the queries reading them still use
-- the entry tables' indexes, and the packing runs only for the rows returned.
CREATE VIEW audit_log_packed_rows AS
SELECT id, organization_id, created_at, xid, action, actor_id, resource_type,
       textsend(concat_ws(E'\x1f', id, to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           actor_type, COALESCE(actor_id, ''), COALESCE(actor_email, ''),
           COALESCE(actor_name, ''), action, COALESCE(resource_type, ''),
           COALESCE(resource_id, ''), COALESCE(host(ip_address), ''),
           COALESCE(user_agent, ''))) AS packed,
       textsend(metadata::text) AS metadata,
       (actor_id IS NULL)::int + 2 * (actor_email IS NULL)::int
       + 4 * (actor_name IS NULL)::int + 8 * (resource_type IS NULL)::int
       + 16 * (resource_id IS NULL)::int + 32 * (ip_address IS NULL)::int
       + 64 * (user_agent IS NULL)::int AS null_mask
FROM audit_log_entries;

CREATE VIEW scim_event_packed_rows AS
SELECT id, organization_id, created_at, xid, method, user_name, status_code,
       textsend(concat_ws(E'\x1f', id, to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           method, path, COALESCE(user_name, ''), status_code, COALESCE(error_message, ''),
           COALESCE(host(ip_address), ''), COALESCE(user_agent, ''))) AS packed,
       COALESCE(textsend(request_body::text), textsend('null')) AS request_body,
       COALESCE(textsend(response_body::text), textsend('null')) AS response_body,
       (user_name IS NULL)::int + 2 * (error_message IS NULL)::int
       + 4 * (ip_address IS NULL)::int + 8 * (user_agent IS NULL)::int AS null_mask
FROM scim_events;
