-- Redact passwords in SCIM bodies stored before names were compared case-insensitively
-- everywhere (an operation written {"Path": "password", "Value": "…"} was kept verbatim).
-- The rules are those of logexport/redaction.py, which redacts every body before it is
-- stored:
--   * the value of a key whose name ends in "password" becomes "[REDACTED]";
--   * in an object with a "path" member ending in "password", every "value" member does;
--   * names compare after dropping trailing ASCII whitespace, in lower case, with the long
--     s (U+017F) read as s; JSON null stays null; objects and arrays are walked at any depth.

CREATE FUNCTION logexport_scim_name(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
AS $$ SELECT replace(lower(rtrim(name, E' \t\n\r\x0b\x0c')), U&'\017F', 's') $$;

CREATE FUNCTION logexport_redact_scim_body(body jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    password_operation boolean;
    redacted jsonb := '{}';
    member record;
BEGIN
    IF body IS NULL THEN
        RETURN NULL;
    ELSIF jsonb_typeof(body) = 'array' THEN
        RETURN (
            SELECT coalesce(jsonb_agg(logexport_redact_scim_body(item) ORDER BY position), '[]')
            FROM jsonb_array_elements(body) WITH ORDINALITY AS e (item, position)
        );
    ELSIF jsonb_typeof(body) <> 'object' THEN
        RETURN body;
    END IF;
    SELECT coalesce(bool_or(right(logexport_scim_name(value #>> '{}'), 8) = 'password'), false)
    INTO password_operation
    FROM jsonb_each(body)
    WHERE logexport_scim_name(key) = 'path' AND jsonb_typeof(value) = 'string';
    FOR member IN SELECT key, value FROM jsonb_each(body) LOOP
        IF jsonb_typeof(member.value) <> 'null' AND (
            right(logexport_scim_name(member.key), 8) = 'password'
            OR (password_operation AND logexport_scim_name(member.key) = 'value')
        ) THEN
            redacted := redacted || jsonb_build_object(member.key, '[REDACTED]'::text);
        ELSE
            redacted := redacted
                || jsonb_build_object(member.key, logexport_redact_scim_body(member.value));
        END IF;
    END LOOP;
    RETURN redacted;
END
$$;

-- Only bodies that mention a password in some spelling can change; the others are left
-- untouched (no new row versions).
UPDATE scim_events
SET request_body = logexport_redact_scim_body(request_body),
    response_body = logexport_redact_scim_body(response_body)
WHERE request_body::text ~* U&'pa[s\017F][s\017F]word'
   OR response_body::text ~* U&'pa[s\017F][s\017F]word';

DROP FUNCTION logexport_redact_scim_body(jsonb);
DROP FUNCTION logexport_scim_name(text);
