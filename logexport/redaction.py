"""What is stripped or shrunk before a body or metadata object is stored.

SCIM clients send passwords in user resources (``"password": "…"``), in PATCH operations
(``{"op": "replace", "path": "password", "value": "…"}``) and inside ``/Bulk`` requests
that wrap either. The log must never keep them, so redaction is applied to every body
whatever the method or path: a rule that depended on recognising the request shape would
miss the shapes nobody thought of.

Two rules, applied at every depth of objects and arrays:

- the value of a key whose name ends in ``password`` is replaced by ``"[REDACTED]"``;
- in an object that has a ``path`` member ending in ``password`` (a PATCH operation,
  possibly URN-qualified as ``urn:…:User:password``), every ``value`` member is replaced.

Names are compared the way SCIM servers compare them: case-insensitively (``Path``,
``VALUE``, ``PassWord``), after dropping trailing ASCII whitespace, with the long s
(U+017F, which Java's ``equalsIgnoreCase`` equates with ``s``) read as ``s``. A JSON
``null`` holds no secret and stays ``null``. The data migration
``0002_redact_scim_secrets.sql`` applies the same rules in SQL to bodies stored earlier;
the two are kept in step by a test that runs both on the same generated bodies.
"""

from __future__ import annotations

import json

REDACTED = "[REDACTED]"
MAX_JSON_BYTES = 64 * 1024
_SECRET_SUFFIX = "password"  # noqa: S105 (a name, not a secret)
_TRAILING_SPACE = " \t\n\r\x0b\x0c"


def normalize_name(name: str) -> str:
    """The form in which key names and operation paths are compared."""
    return name.rstrip(_TRAILING_SPACE).lower().replace("\u017f", "s")


def _is_secret_name(name: object) -> bool:
    return isinstance(name, str) and normalize_name(name).endswith(_SECRET_SUFFIX)


def _is_password_operation(value: dict[str, object]) -> bool:
    return any(
        normalize_name(key) == "path" and _is_secret_name(path) for key, path in value.items()
    )


def _redact(value: object) -> object:
    if isinstance(value, list):
        return [_redact(item) for item in value]
    if not isinstance(value, dict):
        return value
    # PATCH operations (also those nested in /Bulk ``data``) carry the secret under a
    # neutral key, ``value``, named only by the operation's ``path``.
    password_operation = _is_password_operation(value)
    redacted: dict[str, object] = {}
    for key, item in value.items():
        secret = _is_secret_name(key) or (password_operation and normalize_name(key) == "value")
        if secret and item is not None:
            redacted[key] = REDACTED
        else:
            redacted[key] = _redact(item)
    return redacted


def redact_scim_body(body: object, *, method: str, path: str) -> object:
    """A copy of ``body`` with every password value replaced by ``"[REDACTED]"``.

    ``method`` and ``path`` describe the request the body belongs to; the rules apply to
    PUT, POST, PATCH and ``/Bulk`` bodies alike, so they do not change the outcome.
    """
    del method, path
    return _redact(body)


def to_compact_json(value: object) -> str:
    """The JSON text Postgres receives for a ``jsonb`` value (see ``db._encode_json``)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def limit_json_size(value: object, limit: int = MAX_JSON_BYTES) -> object:
    """``value`` itself when its compact JSON fits in ``limit`` bytes, else a stand-in.

    The stand-in keeps what a reader needs to recognise the original::

        {"_truncated": true, "_original_size": <bytes>, "_preview": "<JSON text prefix>"}

    ``_preview`` is the start of the original compact JSON, cut on a character boundary so
    that the stand-in itself stays within ``limit``.
    """
    if value is None:
        return None
    text = to_compact_json(value)
    encoded = text.encode()
    if len(encoded) <= limit:
        return value
    budget = limit - 128
    while True:
        preview = encoded[: max(budget, 0)].decode(errors="ignore")
        stand_in = {"_truncated": True, "_original_size": len(encoded), "_preview": preview}
        size = len(to_compact_json(stand_in).encode())
        if size <= limit or budget <= 0:
            return stand_in
        # Escaping (quotes, backslashes, control characters) grows the preview; shrink by
        # the overshoot and try again. Converges in a few rounds.
        budget -= size - limit
