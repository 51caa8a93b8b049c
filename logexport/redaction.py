"""What is stripped or shrunk before a body or metadata object is stored (SPEC §2).

SCIM clients send passwords in user resources (``"password": "…"``), in PATCH operations
(``{"op": "replace", "path": "password", "value": "…"}``) and inside ``/Bulk`` requests
that wrap either. The log must never keep them, so redaction is applied to every body
whatever the method or path: a rule that depended on recognising the request shape would
miss the shapes nobody thought of.
"""

from __future__ import annotations

import json
from typing import Any

REDACTED = "[REDACTED]"
MAX_JSON_BYTES = 64 * 1024


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.strip().lower().endswith("password")


def _is_password_operation(operation: dict[str, Any]) -> bool:
    path = operation.get("path")
    return isinstance(path, str) and path.strip().lower().endswith("password")


def _redact(value: Any) -> Any:
    if isinstance(value, list):
        return [_redact(item) for item in value]
    if not isinstance(value, dict):
        return value
    redacted: dict[str, Any] = {}
    for key, item in value.items():
        if _is_secret_key(key) and item is not None:
            redacted[key] = REDACTED
        else:
            redacted[key] = _redact(item)
    # PATCH bodies (and PATCH bodies nested in /Bulk ``data``) carry the secret under a
    # neutral key, ``value``, named only by the operation's ``path``.
    for key, item in redacted.items():
        if key.lower() == "operations" and isinstance(item, list):
            redacted[key] = [
                {**op, "value": REDACTED}
                if isinstance(op, dict) and _is_password_operation(op) and "value" in op
                else op
                for op in item
            ]
    return redacted


def redact_scim_body(body: Any, *, method: str, path: str) -> Any:
    """A copy of ``body`` with every password value replaced by ``"[REDACTED]"``.

    ``method`` and ``path`` describe the request the body belongs to; the rules apply to
    PUT, POST, PATCH and ``/Bulk`` bodies alike, so they do not change the outcome.
    """
    del method, path
    return _redact(body)


def compact_json(value: Any) -> str:
    """The JSON text Postgres receives for a ``jsonb`` value (see ``db._encode_json``)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def limit_json_size(value: Any, limit: int = MAX_JSON_BYTES) -> Any:
    """``value`` itself when its compact JSON fits in ``limit`` bytes, else a stand-in.

    The stand-in keeps what a reader needs to recognise the original::

        {"_truncated": true, "_original_size": <bytes>, "_preview": "<JSON text prefix>"}

    ``_preview`` is the start of the original compact JSON, cut on a character boundary so
    that the stand-in itself stays within ``limit``.
    """
    if value is None:
        return None
    text = compact_json(value)
    encoded = text.encode()
    if len(encoded) <= limit:
        return value
    budget = limit - 128
    while True:
        preview = encoded[: max(budget, 0)].decode(errors="ignore")
        stand_in = {"_truncated": True, "_original_size": len(encoded), "_preview": preview}
        size = len(compact_json(stand_in).encode())
        if size <= limit or budget <= 0:
            return stand_in
        # Escaping (quotes, backslashes, control characters) grows the preview; shrink by
        # the overshoot and try again. Converges in a few rounds.
        budget -= size - limit
