-- Export files are written by PostgreSQL, line by line: each view below gives an entry's
-- JSONL line, or its CSV text cells, as the file holds them; the worker reads them with COPY
-- and only joins them up, with a few byte operations per chunk of rows (exports/lines.py). SQL functions this simple are inlined,
-- so the views' conditions still use the entry tables' indexes and the work runs only for
-- the rows returned — and it runs in the database, where an export can spread it over
-- several connections sharing one snapshot (LOGEXPORT_EXPORT_PARALLELISM).

-- A quoted CSV cell, NULL as "" and quotes doubled; a cell a spreadsheet would run as a
-- formula gets a leading ' (SPEC §6: its first character is = + - @ TAB or CR, or its first
-- non-whitespace character is one of those or | or %). "Whitespace" is Python's str.isspace
-- set, as in exports/encoders.py. The cheap ascii() test keeps the pattern off nearly every
-- cell.
CREATE FUNCTION export_csv_text(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN (ascii(value) IN (9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 37, 43, 45, 61, 64, 124)
          OR ascii(value) > 127)
     AND value ~ E'^[\\t\\r]|^[\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[=+\\-@|%]'
        THEN '"''' || replace(value, '"', '""') || '"'
    ELSE '"' || replace(COALESCE(value, ''), '"', '""') || '"'
END
$$;

-- jsonl: the whole line but its newline: strings escaped by to_json (as Python's json
-- escapes them), the JSON columns as PostgreSQL writes them.
-- csv_cells: every cell before the JSON column(s), each followed by a comma; the JSON
-- cells (compact JSON, which PostgreSQL cannot write) are made by the worker from the JSON
-- columns.
CREATE VIEW audit_log_export_lines AS
SELECT id, organization_id, created_at, action, actor_id, resource_type,
       '{"id":"' || id || '","organization_id":"' || organization_id
       || '","created_at":"' || to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       || '","actor_type":' || to_json(actor_type)
       || ',"actor_id":' || COALESCE(to_json(actor_id)::text, 'null')
       || ',"actor_email":' || COALESCE(to_json(actor_email)::text, 'null')
       || ',"actor_name":' || COALESCE(to_json(actor_name)::text, 'null')
       || ',"action":' || to_json(action)
       || ',"resource_type":' || COALESCE(to_json(resource_type)::text, 'null')
       || ',"resource_id":' || COALESCE(to_json(resource_id)::text, 'null')
       || ',"ip_address":' || COALESCE('"' || host(ip_address) || '"', 'null')
       || ',"user_agent":' || COALESCE(to_json(user_agent)::text, 'null')
       || ',"metadata":' || metadata::text || '}' AS jsonl,
       '"' || id || '","' || organization_id
       || '","' || to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       || '",' || export_csv_text(actor_type) || ',' || export_csv_text(actor_id)
       || ',' || export_csv_text(actor_email) || ',' || export_csv_text(actor_name)
       || ',' || export_csv_text(action) || ',' || export_csv_text(resource_type)
       || ',' || export_csv_text(resource_id)
       || ',"' || COALESCE(host(ip_address), '') || '",' || export_csv_text(user_agent)
       || ',' AS csv_cells,
       metadata::text AS metadata
FROM audit_log_entries;

CREATE VIEW scim_event_export_lines AS
SELECT id, organization_id, created_at, method, user_name, status_code,
       '{"id":"' || id || '","organization_id":"' || organization_id
       || '","created_at":"' || to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       || '","method":' || to_json(method)
       || ',"path":' || to_json(path)
       || ',"user_name":' || COALESCE(to_json(user_name)::text, 'null')
       || ',"status_code":' || status_code
       || ',"error_message":' || COALESCE(to_json(error_message)::text, 'null')
       || ',"ip_address":' || COALESCE('"' || host(ip_address) || '"', 'null')
       || ',"user_agent":' || COALESCE(to_json(user_agent)::text, 'null')
       || ',"request_body":' || COALESCE(request_body::text, 'null')
       || ',"response_body":' || COALESCE(response_body::text, 'null') || '}' AS jsonl,
       '"' || id || '","' || organization_id
       || '","' || to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       || '",' || export_csv_text(method) || ',' || export_csv_text(path)
       || ',' || export_csv_text(user_name) || ',"' || status_code
       || '",' || export_csv_text(error_message)
       || ',"' || COALESCE(host(ip_address), '') || '",' || export_csv_text(user_agent)
       || ',' AS csv_cells,
       COALESCE(request_body::text, 'null') AS request_body,
       COALESCE(response_body::text, 'null') AS response_body
FROM scim_events;
