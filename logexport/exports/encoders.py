"""Row encoders: JSONL and spreadsheet-safe CSV, optionally wrapped in gzip (SPEC §5).

The pipeline hands encoders batches of rows as tuples of ``str | None``, already cast to
text by the export query (ids, timestamps in ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, plain IP
addresses, JSON as its text form). Encoding a whole batch into one ``bytes`` keeps the
per-row work to string formatting done in C.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Callable, Sequence
from typing import Protocol

Row = Sequence[str | None]

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
_JSON_TEXT = {"metadata", "request_body", "response_body"}


def columns_for(kind: str) -> tuple[str, ...]:
    return AUDIT_LOG_COLUMNS if kind == "AUDIT_LOG" else SCIM_EVENT_COLUMNS


class Encoder(Protocol):
    def header(self) -> bytes: ...

    def encode(self, rows: Sequence[Row]) -> bytes: ...


_quote: Callable[[str], str] = json.encoder.encode_basestring


def _q(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _raw(value: str | None) -> str:
    return "null" if value is None else value


def _template(columns: Sequence[str], plain: frozenset[str]) -> str:
    """``{"id":"%s",...}\n``: plain columns are quoted in the template, the rest arrive as
    JSON text."""
    parts = []
    for column in columns:
        value = '"%s"' if column in plain else "%s"
        parts.append(_quote(column) + ":" + value)
    return "{" + ",".join(parts) + "}\n"


# Ids and timestamps need no escaping: the query prints them in a fixed alphabet.
_PLAIN = frozenset({"id", "organization_id", "created_at"})
_AUDIT_JSONL = _template(AUDIT_LOG_COLUMNS, _PLAIN)
_SCIM_JSONL = _template(SCIM_EVENT_COLUMNS, _PLAIN)


def _audit_line(r: Row) -> str:
    return _AUDIT_JSONL % (
        r[0], r[1], r[2], _q(r[3]), _q(r[4]), _q(r[5]), _q(r[6]), _q(r[7]), _q(r[8]),
        _q(r[9]), _q(r[10]), _q(r[11]), _raw(r[12]),
    )  # fmt: skip


def _scim_line(r: Row) -> str:
    return _SCIM_JSONL % (
        r[0], r[1], r[2], _q(r[3]), _q(r[4]), _q(r[5]), _raw(r[6]), _q(r[7]), _q(r[8]),
        _q(r[9]), _raw(r[10]), _raw(r[11]),
    )  # fmt: skip


class JsonlEncoder:
    """One JSON object per line, every key present, ``null`` for empty values.

    One hand-written formatter per kind: a single C-level ``%`` per row, and escaping only
    where a value can need it.
    """

    def __init__(self, kind: str) -> None:
        self.columns = columns_for(kind)
        self._line = _audit_line if kind == "AUDIT_LOG" else _scim_line

    def header(self) -> bytes:
        return b""

    def encode(self, rows: Sequence[Row]) -> bytes:
        line = self._line
        return "".join([line(row) for row in rows]).encode()


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


def _compact_json(value: str) -> str:
    return json.dumps(json.loads(value), separators=(",", ":"), ensure_ascii=False)


class CsvEncoder:
    """RFC 4180 (CRLF, minimal quoting), a header row, formula-guarded cells."""

    def __init__(self, columns: Sequence[str], *, bom: bool = False) -> None:
        self.columns = tuple(columns)
        self.bom = bom
        self._json_columns = tuple(i for i, c in enumerate(columns) if c in _JSON_TEXT)
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def header(self) -> bytes:
        self._writer.writerow(self.columns)
        text = self._take()
        return ("\ufeff" + text).encode() if self.bom else text.encode()

    def _take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def encode(self, rows: Sequence[Row]) -> bytes:
        json_columns = self._json_columns
        cleaned = []
        for row in rows:
            cells = ["" if v is None else v for v in row]
            for i in json_columns:
                if cells[i]:
                    cells[i] = _compact_json(cells[i])
            cleaned.append([guard_cell(c) for c in cells])
        self._writer.writerows(cleaned)
        return self._take().encode()


def make_encoder(kind: str, format: str, *, csv_bom: bool = False) -> Encoder:
    columns = columns_for(kind)
    if format == "CSV":
        return CsvEncoder(columns, bom=csv_bom)
    return JsonlEncoder(kind)


class Gzip:
    """Incremental gzip (``.gz`` container) of the encoded stream."""

    def __init__(self, level: int = 6) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data)

    def flush(self) -> bytes:
        return self._compressor.flush()
