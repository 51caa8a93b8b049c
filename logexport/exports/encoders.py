"""Row encoders: JSONL and spreadsheet-safe CSV, optionally wrapped in gzip.

Both take rows as the export queries deliver them (``sql/queries/exports.sql``): the text
fields packed into one ``bytes`` value, then the JSON columns. Encoding a whole batch into
one ``bytes`` keeps the per-row work to a few C-level operations.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol
from uuid import UUID

from logexport.exports.models import ExportFormat, ExportKind
from logexport.kinds import LOG_KINDS, LogKind


class Encoder(Protocol):
    def header(self) -> bytes: ...

    def encode(self, rows: Sequence[Sequence[Any]], exact: ExactFields | None = None) -> bytes: ...


_quote: Callable[[str], str] = json.encoder.encode_basestring


# Rows arrive packed (see export_*_rows in sql/queries/exports.sql): the text fields joined
# by U+001F into one bytes value (NULL as an empty string), the JSON columns, and a bit mask
# of the NULL text fields. A row with more separators than fields has U+001F in its data:
# the encoder cannot split it and asks for its exact fields (``AmbiguousRows``).
FIELD_SEPARATOR = b"\x1f"
# What JSON requires escaped inside a string; everything else, UTF-8 included, goes as is.
_NEEDS_ESCAPE = bytes(range(0x20)) + b'"\\'
_CONTROL = bytes(range(0x20))
_CONTROL_CHAR = re.compile(b"[\\x00-\\x1f]")
_SHORT_ESCAPES = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}


class AmbiguousRows(Exception):
    """Rows whose data holds the field separator; ``ids`` are their ids."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"{len(ids)} rows need their exact fields")
        self.ids = ids


ExactFields = Mapping[str, Sequence[str | None]]


def _escape_control(match: re.Match[bytes]) -> bytes:
    code = match.group()[0]
    return _SHORT_ESCAPES.get(code) or b"\\u%04x" % code


_CONTROL_BUT_SEPARATOR = bytes(range(0x1F))
_CONTROL_CHAR_BUT_SEPARATOR = re.compile(b"[\\x00-\\x1e]")


def escape_json_text(text: bytes, *, packed: bool = False) -> bytes:
    """JSON string escaping (without the quotes) of UTF-8 text; ``packed`` keeps the field
    separators of a packed row as they are."""
    control = _CONTROL_BUT_SEPARATOR if packed else _CONTROL
    pattern = _CONTROL_CHAR_BUT_SEPARATOR if packed else _CONTROL_CHAR
    escaped = text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    if len(escaped.translate(None, control)) != len(escaped):
        escaped = pattern.sub(_escape_control, escaped)
    return escaped


def _repack(kind: LogKind, fields: Sequence[str | None]) -> tuple[bytes, int]:
    """Exact fields as a packed value, escaped for JSON, and their NULL mask."""
    nullable = kind.nullable_fields
    mask = 0
    for name, value in zip(kind.packed_fields, fields, strict=True):
        if value is None:
            mask |= 1 << nullable.index(name)
    parts = [escape_json_text((v or "").encode()) for v in fields]
    return FIELD_SEPARATOR.join(parts), mask


class _PackedRows:
    """What both encoders share: the kind's layout and the separator check."""

    def __init__(self, kind: ExportKind, organization_id: str) -> None:
        self.kind = LOG_KINDS[kind]
        self.columns = self.kind.columns
        # The org id is a UUID rendered by us: safe to write unescaped and unquoted-checked.
        self.organization_id = str(UUID(str(organization_id)))
        self._separators = len(self.kind.packed_fields) - 1

    def _ambiguous(self, rows: Sequence[Sequence[Any]], exact: ExactFields | None) -> None:
        """Raise ``AmbiguousRows`` for rows that cannot be split and have no exact fields."""
        separators = self._separators
        missing = [
            row[0].split(FIELD_SEPARATOR, 1)[0].decode()
            for row in rows
            if row[0].count(FIELD_SEPARATOR) != separators
        ]
        missing = [i for i in missing if exact is None or i not in exact]
        if missing:
            raise AmbiguousRows(missing)


# Column by column: how each value is written. Quoted text, raw JSON (numbers and JSON
# columns), or the organization id, which is the same on every row of an export.
_TEXT, _RAW, _ORG = "text", "raw", "org"


class JsonlEncoder(_PackedRows):
    """One JSON object per line, every key present, ``null`` for empty values.

    A row costs one check for bytes needing escape, one split and one ``%`` with the
    template for its NULL mask, all in C; rows holding quotes, backslashes or control
    characters are escaped first, all fields at once.
    """

    def __init__(self, kind: ExportKind, organization_id: str) -> None:
        super().__init__(kind, organization_id)
        self._layout = {"organization_id": _ORG} | dict.fromkeys(self.kind.json_columns, _RAW)
        self._templates: dict[int, bytes] = {}

    def header(self) -> bytes:
        return b""

    def _template(self, mask: int) -> bytes:
        """``{"id":"%s","organization_id":"<org>",...}\n``; NULL fields print ``null``
        and swallow their (empty) value with ``%.0s``."""
        template = self._templates.get(mask)
        if template is None:
            nullable = self.kind.nullable_fields
            parts = []
            for column in self.columns:
                how = self._layout.get(column, _TEXT)
                if how == _ORG:
                    value = f'"{self.organization_id}"'
                elif how == _RAW:
                    value = "%s"
                elif column in nullable and mask >> nullable.index(column) & 1:
                    value = "null%.0s"
                else:
                    value = '"%s"'
                parts.append(_quote(column) + ":" + value)
            template = self._templates[mask] = ("{" + ",".join(parts) + "}\n").encode()
        return template

    def encode(self, rows: Sequence[Sequence[Any]], exact: ExactFields | None = None) -> bytes:
        self._ambiguous(rows, exact)
        separator, separators, needs_escape = FIELD_SEPARATOR, self._separators, _NEEDS_ESCAPE
        templates, template = self._templates, self._template
        lines = []
        for row in rows:
            packed = row[0]
            nulls = row[-1]
            if len(packed.translate(None, needs_escape)) != len(packed) - separators:
                if packed.count(separator) != separators:
                    assert exact is not None
                    row_id = packed.split(separator, 1)[0].decode()
                    packed, nulls = _repack(self.kind, exact[row_id])
                else:
                    packed = escape_json_text(packed, packed=True)
            values = packed.split(separator)
            values += row[1:-1]
            lines.append((templates.get(nulls) or template(nulls)) % tuple(values))
        return b"".join(lines)


_FORMULA_START = frozenset("=+-@\t\r")
_FORMULA_AFTER_SPACE = frozenset("=+-@\t\r|%")


def guard_cell(value: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would run as a formula."""
    if not value:
        return value
    if value[0] in _FORMULA_START:
        return "'" + value
    stripped = value.lstrip()
    if stripped and stripped[0] in _FORMULA_AFTER_SPACE:
        return "'" + value
    return value


# Inside its strings PostgreSQL's JSON text writes a backslash as \\\\ and a quote as \\";
# replaced by two bytes that JSON text never holds raw (it escapes control characters),
# every quote left delimits a string. The pairs are replaced from the left, as written.
_BACKSLASH_STAND_IN, _QUOTE_STAND_IN = b"\x02", b"\x03"


def _hide_escapes(text: bytes) -> bytes:
    return text.replace(b"\\\\", _BACKSLASH_STAND_IN).replace(b'\\"', _QUOTE_STAND_IN)


def _restore_escapes(text: bytes) -> bytes:
    return text.replace(_QUOTE_STAND_IN, b'\\"').replace(_BACKSLASH_STAND_IN, b"\\\\")


def compact_pg_json(text: bytes) -> bytes:
    """PostgreSQL's JSON text without the spaces it puts after ``,`` and ``:``.

    Once escaped quotes are out of the way every ``"`` delimits a string, so the spaces to
    drop are those in the even-numbered pieces between quotes; numbers keep their exact
    digits and strings their exact escapes.
    """
    escaped = b"\\" in text
    if escaped:
        text = _hide_escapes(text)
    pieces = text.split(b'"')
    pieces[0::2] = [p.replace(b", ", b",").replace(b": ", b":") for p in pieces[0::2]]
    text = b'"'.join(pieces)
    return _restore_escapes(text) if escaped else text


def _json_cell(value: bytes) -> bytes:
    """A JSON column as a quoted CSV cell; SQL NULL as an empty cell."""
    if value == b"null":
        return b""
    compact = compact_pg_json(value)
    if compact.startswith(b"-"):  # a bare negative number is the only risky JSON start
        compact = b"'" + compact
    return b'"' + compact.replace(b'"', b'""') + b'"'


# Neither byte occurs in PostgreSQL's JSON text outside an escape (control characters in
# strings are written escaped, with a backslash), so they can join values of one column.
_VALUE_JOIN = b"\x00"
_PIECE_JOIN = b"\x01"
_NULL_CELL = b'"null"'


def _fix_json_cell(cell: bytes) -> bytes:
    if cell == _NULL_CELL:
        return b""
    if cell.startswith(b'"-'):
        return b"\"'" + cell[1:]
    return cell


# Values are joined up to about this many bytes at a time: splitting the joined text at
# quotes makes one object per piece, which must stay bounded for large JSON bodies.
_JOINED_BYTES = 1024 * 1024


def json_cells(values: list[bytes], suffix: bytes = b"") -> list[bytes]:
    """``_json_cell`` of every value of a column, each followed by ``suffix``, with a few
    byte operations per group of values rather than per value."""
    if sum(map(len, values)) <= _JOINED_BYTES:
        return _joined_json_cells(values, suffix)
    cells: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for value in values:
        group.append(value)
        size += len(value)
        if size >= _JOINED_BYTES:
            cells += _joined_json_cells(group, suffix)
            group, size = [], 0
    if group:
        cells += _joined_json_cells(group, suffix)
    return cells


def _joined_json_cells(values: list[bytes], suffix: bytes) -> list[bytes]:
    """Every value holds whole strings only, so once escaped quotes are out of the way the
    pieces between quotes alternate outside / inside strings across the joined values as
    within each."""
    joined = _VALUE_JOIN.join(values)
    escaped = b"\\" in joined
    if escaped:
        joined = _hide_escapes(joined)
    pieces = joined.split(b'"')
    outside = _PIECE_JOIN.join(pieces[0::2]).replace(b", ", b",").replace(b": ", b":")
    pieces[0::2] = outside.split(_PIECE_JOIN)
    compact = b'"'.join(pieces)
    if escaped:
        compact = _restore_escapes(compact)
    quoted = compact.replace(b'"', b'""').replace(_VALUE_JOIN, b'"' + suffix + b'\x00"')
    text = b'"' + quoted + b'"' + suffix
    cells = text.split(_VALUE_JOIN)
    if _NULL_CELL + suffix in cells or text.startswith(b'"-') or b'\x00"-' in text:
        cells = [_fix_json_cell(c[: len(c) - len(suffix)]) + suffix for c in cells]
    return cells


def _text_cell(value: str) -> str:
    return '"' + guard_cell(value).replace('"', '""') + '"'


# Bytes that may start a cell needing the formula guard: the guard's characters,
# whitespace (str.lstrip's ASCII set) and any non-ASCII lead byte, since Unicode has spaces
# of its own. Rows with none of them at a cell start — nearly all — need no per-cell work.
_RISKY_START = frozenset(b"=+-@|%\t\n\x0b\x0c\r \x1c\x1d\x1e" + bytes(range(0x80, 0x100)))
_START_CLASS = bytes(
    0xFF if b == FIELD_SEPARATOR[0] else 0x01 if b in _RISKY_START else 0x00 for b in range(256)
)
_RISKY_FIELD = b"\xff\x01"
# Rows of a batch joined by a byte that is then checked to occur only between them: as a
# cell start it is harmless (every row starts with its id).
_ROW_JOIN = b"\x1e"
_BATCH_START_CLASS = _START_CLASS[: _ROW_JOIN[0]] + b"\x00" + _START_CLASS[_ROW_JOIN[0] + 1 :]


def csv_header(columns: Sequence[str], *, bom: bool) -> bytes:
    """The CSV header row, CRLF-ended, after a UTF-8 BOM when asked for."""
    text = ",".join(columns) + "\r\n"
    return ("\ufeff" + text).encode() if bom else text.encode()


class CsvEncoder(_PackedRows):
    """RFC 4180: CRLF line ends, a header row, and every value cell quoted — which keeps
    commas, quotes and line breaks inside cells safe without looking at each one. Cells a
    spreadsheet would run as a formula are prefixed with ``'``. NULL is an empty cell.
    """

    def __init__(self, kind: ExportKind, organization_id: str, *, bom: bool = False) -> None:
        super().__init__(kind, organization_id)
        self.bom = bom
        self._org_cell = b'","' + self.organization_id.encode() + b'","'
        self._line = b'"%s' + self._org_cell + b'%s",%s\r\n'

    def header(self) -> bytes:
        return csv_header(self.columns, bom=self.bom)

    def encode(self, rows: Sequence[Sequence[Any]], exact: ExactFields | None = None) -> bytes:
        if not rows:
            return b""
        self._ambiguous(rows, exact)
        separator, separators = FIELD_SEPARATOR, self._separators
        tails = self._tails(rows)
        packed_rows = [row[0] for row in rows]
        body = _ROW_JOIN.join(packed_rows)
        if (
            body.count(_ROW_JOIN) == len(rows) - 1
            and body.count(separator) == separators * len(rows)
            and _RISKY_FIELD not in body.translate(_BATCH_START_CLASS)
        ):
            # Nearly every batch: no cell to guard, none to read again. Quote and split the
            # whole batch at once; each line is then one ``%``.
            body = body.replace(b'"', b'""').replace(separator, b'","')
            line = self._line
            return b"".join(
                [
                    line % (*packed.split(b'","', 1), tail)
                    for packed, tail in zip(body.split(_ROW_JOIN), tails, strict=True)
                ]
            )
        lines = []
        for packed, tail in zip(packed_rows, tails, strict=True):
            if packed.count(separator) != separators:
                assert exact is not None
                exact_fields = exact[packed.split(separator, 1)[0].decode()]
                lines.append(self._guarded_line([f or "" for f in exact_fields], tail))
            elif _RISKY_FIELD in packed.translate(_START_CLASS):
                fields = [f.decode() for f in packed.split(separator)]
                lines.append(self._guarded_line(fields, tail))
            else:
                first, rest = packed.split(separator, 1)
                rest = rest.replace(b'"', b'""').replace(separator, b'","')
                lines.append(self._line % (first, rest, tail))
        return b"".join(lines)

    def _tails(self, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """The JSON cells of each row, joined: column by column over the batch."""
        columns = [json_cells([row[i] for row in rows]) for i in range(1, len(rows[0]) - 1)]
        if len(columns) == 1:
            return columns[0]
        return [b",".join(cells) for cells in zip(*columns, strict=True)]

    def _guarded_line(self, fields: list[str], tail: bytes) -> bytes:
        cells = [_text_cell(f) for f in fields]
        cells.insert(1, '"' + self.organization_id + '"')
        return ",".join(cells).encode() + b"," + tail + b"\r\n"


def make_encoder(
    kind: ExportKind, format: ExportFormat, *, organization_id: UUID, csv_bom: bool = False
) -> Encoder:
    if format is ExportFormat.CSV:
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
