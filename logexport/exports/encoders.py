"""Row encoders: JSONL and spreadsheet-safe CSV, optionally wrapped in gzip (SPEC §5).

Both take rows as the export queries deliver them (``sql/queries/exports.sql``): the text
fields packed into one ``bytes`` value, then the JSON columns. Encoding a whole batch into
one ``bytes`` keeps the per-row work to a few C-level operations.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from uuid import UUID

AUDIT_LOG_COLUMNS = (
    "id",
    "organization_id",
    "created_at",
    "actor_type",
    "actor_id",
    "actor_email",
    "actor_name",
    "action",
    "resource_type",
    "resource_id",
    "ip_address",
    "user_agent",
    "metadata",
)
SCIM_EVENT_COLUMNS = (
    "id",
    "organization_id",
    "created_at",
    "method",
    "path",
    "user_name",
    "status_code",
    "error_message",
    "ip_address",
    "user_agent",
    "request_body",
    "response_body",
)


def columns_for(kind: str) -> tuple[str, ...]:
    return AUDIT_LOG_COLUMNS if kind == "AUDIT_LOG" else SCIM_EVENT_COLUMNS


class Encoder(Protocol):
    def header(self) -> bytes: ...

    def encode(self, rows: Sequence[Sequence[Any]]) -> bytes: ...


_quote: Callable[[str], str] = json.encoder.encode_basestring


# JSONL rows arrive packed (see the export_*_jsonl queries): the text fields in one bytes
# value separated by 0xFF, NULL written as 0xFE, then the JSON columns as they are. Neither
# byte occurs in UTF-8, so splitting is exact and a quoted 0xFE can only be a NULL.
FIELD_SEPARATOR = b"\xff"
NULL_MARK = b"\xfe"
_QUOTED_NULL = b'"' + NULL_MARK + b'"'
# What JSON requires escaped inside a string; everything else, UTF-8 included, goes as is.
_NEEDS_ESCAPE = bytes(range(0x20)) + b'"\\'
_CONTROL = bytes(range(0x20))
_CONTROL_CHAR = re.compile(b"[\\x00-\\x1f]")
_SHORT_ESCAPES = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}


def _escape_control(match: re.Match[bytes]) -> bytes:
    code = match.group()[0]
    return _SHORT_ESCAPES.get(code) or b"\\u%04x" % code


def escape_packed(packed: bytes) -> bytes:
    """JSON string escaping of every field of a packed row at once (separators untouched)."""
    escaped = packed.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    if len(escaped.translate(None, _CONTROL)) != len(escaped):
        escaped = _CONTROL_CHAR.sub(_escape_control, escaped)
    return escaped


# Column by column: how each value is written. Quoted text, raw JSON (numbers and JSON
# columns), or the organization id, which is the same on every row of an export.
_TEXT, _RAW, _ORG = "text", "raw", "org"
_AUDIT_LAYOUT = {"organization_id": _ORG, "metadata": _RAW}
_SCIM_LAYOUT = {
    "organization_id": _ORG,
    "status_code": _RAW,
    "request_body": _RAW,
    "response_body": _RAW,
}


def _template(columns: Sequence[str], layout: dict[str, str], organization_id: str) -> bytes:
    """``{"id":"%s","organization_id":"<org>",...}\n`` as bytes, one ``%s`` per value."""
    parts = []
    for column in columns:
        how = layout.get(column, _TEXT)
        value = {_TEXT: '"%s"', _RAW: "%s", _ORG: f'"{organization_id}"'}[how]
        parts.append(_quote(column) + ":" + value)
    return ("{" + ",".join(parts) + "}\n").encode()


class JsonlEncoder:
    """One JSON object per line, every key present, ``null`` for empty values.

    Each row costs one check for bytes that need escaping, one split and one ``%``, all in
    C; rows holding quotes, backslashes or control characters take ``escape_packed``.
    """

    def __init__(self, kind: str, organization_id: str) -> None:
        self.columns = columns_for(kind)
        layout = _AUDIT_LAYOUT if kind == "AUDIT_LOG" else _SCIM_LAYOUT
        # The org id is a UUID rendered by us: safe to place in the template unescaped.
        self._template = _template(self.columns, layout, str(UUID(str(organization_id))))

    def header(self) -> bytes:
        return b""

    def encode(self, rows: Sequence[Sequence[bytes]]) -> bytes:
        template, separator, needs_escape = self._template, FIELD_SEPARATOR, _NEEDS_ESCAPE
        lines = []
        for packed, *json_values in rows:
            if len(packed.translate(None, needs_escape)) != len(packed):
                packed = escape_packed(packed)
            lines.append(template % (*packed.split(separator), *json_values))
        return b"".join(lines).replace(_QUOTED_NULL, b"null")


_FORMULA_START = frozenset("=+-@\t\r")
_FORMULA_AFTER_SPACE = frozenset("=+-@\t\r|%")


def guard_cell(value: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would run as a formula (SPEC §5)."""
    if not value:
        return value
    if value[0] in _FORMULA_START:
        return "'" + value
    stripped = value.lstrip()
    if stripped and stripped[0] in _FORMULA_AFTER_SPACE:
        return "'" + value
    return value


def compact_json(text: bytes) -> bytes:
    """PostgreSQL's JSON text without the spaces it puts after ``,`` and ``:``.

    Without a backslash every ``"`` delimits a string, so the spaces to drop are those in
    the even-numbered pieces between quotes; numbers keep their exact digits.
    """
    if b"\\" in text:
        value = json.loads(text)
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    pieces = text.split(b'"')
    pieces[0::2] = [p.replace(b", ", b",").replace(b": ", b":") for p in pieces[0::2]]
    return b'"'.join(pieces)


def _json_cell(value: bytes) -> bytes:
    """A JSON column as a quoted CSV cell; SQL NULL as an empty cell."""
    if value == b"null":
        return b""
    compact = compact_json(value)
    if compact.startswith(b"-"):  # a bare negative number is the only risky JSON start
        compact = b"'" + compact
    return b'"' + compact.replace(b'"', b'""') + b'"'


def _text_cell(value: str) -> str:
    return '"' + guard_cell(value).replace('"', '""') + '"'


# Bytes that may start a cell needing the formula guard: the guard's characters,
# whitespace (str.lstrip's ASCII set) and any non-ASCII lead byte, since Unicode has spaces
# of its own. Rows with none of them at a cell start — nearly all — need no per-cell work.
_RISKY_START = frozenset(b"=+-@|%\t\n\x0b\x0c\r \x1c\x1d\x1e\x1f" + bytes(range(0x80, 0xFE)))
_START_CLASS = bytes(0xFF if b == 0xFF else 0x01 if b in _RISKY_START else 0x00 for b in range(256))
_RISKY_FIELD = FIELD_SEPARATOR + b"\x01"
_QUOTED_NULL_CELL = b'"' + NULL_MARK + b'"'


class CsvEncoder:
    """RFC 4180: CRLF line ends, a header row, and every value cell quoted — which keeps
    commas, quotes and line breaks inside cells safe without looking at each one. Cells a
    spreadsheet would run as a formula are prefixed with ``'``. NULL is an empty cell.

    Takes the same packed rows as ``JsonlEncoder``.
    """

    def __init__(self, kind: str, organization_id: str, *, bom: bool = False) -> None:
        self.columns = columns_for(kind)
        self.bom = bom
        self._organization_id = str(UUID(str(organization_id)))
        self._org_cell = b'","' + self._organization_id.encode() + b'","'

    def header(self) -> bytes:
        text = ",".join(self.columns) + "\r\n"
        return ("\ufeff" + text).encode() if self.bom else text.encode()

    def encode(self, rows: Sequence[Sequence[bytes]]) -> bytes:
        lines = []
        for packed, *json_values in rows:
            tail = b",".join([_json_cell(v) for v in json_values])
            if _RISKY_FIELD in packed.translate(_START_CLASS):
                lines.append(self._guarded_line(packed, tail))
                continue
            first, rest = packed.split(FIELD_SEPARATOR, 1)
            rest = rest.replace(b'"', b'""').replace(FIELD_SEPARATOR, b'","')
            lines.append(b'"' + first + self._org_cell + rest + b'",' + tail + b"\r\n")
        return b"".join(lines).replace(_QUOTED_NULL_CELL, b"")

    def _guarded_line(self, packed: bytes, tail: bytes) -> bytes:
        fields = packed.split(FIELD_SEPARATOR)
        cells = ["" if f == NULL_MARK else _text_cell(f.decode()) for f in fields]
        cells.insert(1, '"' + self._organization_id + '"')
        return ",".join(cells).encode() + b"," + tail + b"\r\n"


def make_encoder(
    kind: str, format: str, *, organization_id: object, csv_bom: bool = False
) -> Encoder:
    if format == "CSV":
        return CsvEncoder(kind, str(organization_id), bom=csv_bom)
    return JsonlEncoder(kind, str(organization_id))


class Gzip:
    """Incremental gzip (``.gz`` container) of the encoded stream."""

    def __init__(self, level: int = 6) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data)

    def flush(self) -> bytes:
        return self._compressor.flush()
