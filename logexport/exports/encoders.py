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
# How each column is written as a JSON value: quoted text, or raw (JSON and numbers, already
# valid JSON text as the database prints them).
_RAW_JSON = {"metadata", "request_body", "response_body", "status_code"}
_JSON_TEXT = {"metadata", "request_body", "response_body"}


def columns_for(kind: str) -> tuple[str, ...]:
    return AUDIT_LOG_COLUMNS if kind == "AUDIT_LOG" else SCIM_EVENT_COLUMNS


class Encoder(Protocol):
    def header(self) -> bytes: ...

    def encode(self, rows: Sequence[Row]) -> bytes: ...


_quote: Callable[[str], str] = json.encoder.encode_basestring


def _json_text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _json_raw(value: str | None) -> str:
    return "null" if value is None else value


class JsonlEncoder:
    """One JSON object per line, every key present, ``null`` for empty values."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self._converters = tuple(_json_raw if c in _RAW_JSON else _json_text for c in columns)
        keys = [_quote(c) + ":" for c in columns]
        # "{k0:%s,k1:%s,...}\n" with '%' in keys escaped: one C-level format per row.
        self._template = "{" + ",".join(k.replace("%", "%%") + "%s" for k in keys) + "}\n"

    def header(self) -> bytes:
        return b""

    def encode(self, rows: Sequence[Row]) -> bytes:
        template = self._template
        converters = self._converters
        lines = [
            template % tuple(convert(value) for convert, value in zip(converters, row))
            for row in rows
        ]
        return "".join(lines).encode()


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
    return JsonlEncoder(columns)


class Gzip:
    """Incremental gzip (``.gz`` container) of the encoded stream."""

    def __init__(self, level: int = 6) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data)

    def flush(self) -> bytes:
        return self._compressor.flush()
