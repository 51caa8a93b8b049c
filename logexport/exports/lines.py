"""File bytes from the lines PostgreSQL writes for an export.

The views of ``sql/migrations/0010_export_lines.sql`` build each entry's JSONL line, or its
CSV text cells, in the database; the worker reads them with ``COPY … TO STDOUT`` and only
joins them up, a chunk of rows at a time, with a few byte operations per chunk and none per
field. Text never holds a NUL byte, so NUL can mark places in a chunk safely.

JSONL comes as COPY writes one column of JSON text in its CSV format, unchanged (see
``JsonlLines``). CSV comes in COPY's text format, as two or three columns (the text cells,
then the JSON columns). It escapes a backslash as ``\\\\`` and BS, FF, LF, CR, TAB and VT as ``\\b``
``\\f`` ``\\n`` ``\\r`` ``\\t`` ``\\v``, and nothing else, so a raw TAB only separates columns
and a raw LF only ends a row; Python's ``escape_decode`` undoes exactly those escapes.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass

from logexport.exports.encoders import csv_header, json_cells
from logexport.exports.models import ExportFormat, ExportKind
from logexport.kinds import LOG_KINDS

# Enough of a line's start to hold its id and created_at (the first three cells).
_MARK_BYTES = 160
_JOIN = b"\x00"
_CRLF = b"\r\n"
_SEPARATORS_TO_NUL = bytes.maketrans(b"\t\n", _JOIN * 2)


@dataclass(frozen=True)
class Chunk:
    """Some consecutive lines of the file: their bytes, how many, and the start of the
    first and of the last line (for the manifest's first and last rows)."""

    data: bytes
    rows: int
    first: bytes
    last: bytes


def unescape(copied: bytes) -> bytes:
    """COPY text format back to the text itself."""
    return codecs.escape_decode(copied)[0] if b"\\" in copied else copied


class JsonlLines:
    """Each COPY row is a whole JSONL line. JSON text holds no byte below 0x20, so COPY's
    CSV format with two such bytes as delimiter and quote writes every line as it is:
    nothing is quoted, nothing is escaped, and the worker has nothing to undo."""

    copy_options: Mapping[str, str] = {"format": "csv", "delimiter": "\x01", "quote": "\x02"}

    def __init__(self, kind: ExportKind) -> None:
        self.query = LOG_KINDS[kind].jsonl_query

    def header(self) -> bytes:
        return b""

    def chunk(self, copied: bytes) -> Chunk:
        if b"\x02" in copied:
            # COPY quoted a line: one held a control character, which JSON text cannot.
            raise ValueError("an export line is not JSON text: it holds a control character")
        last = copied.rfind(b"\n", 0, len(copied) - 1) + 1
        first, last_line = copied[:_MARK_BYTES], copied[last : last + _MARK_BYTES]
        return Chunk(copied, copied.count(b"\n"), first, last_line)

    @staticmethod
    def mark(line: bytes) -> tuple[str, str]:
        """``(created_at, id)`` of a line: ``{"id":"<36>","organization_id":"<36>",
        "created_at":"<27>"``, at fixed places."""
        return line[116:143].decode(), line[7:43].decode()


class CsvLines:
    """COPY rows of the text cells (quoted, formula-guarded, each followed by a comma) and
    the JSON columns as PostgreSQL writes them; the JSON cells are made here, compact, for a
    whole chunk at once (``encoders.json_cells``), and each line ends with CRLF."""

    copy_options: Mapping[str, str] = {"format": "text"}

    def __init__(self, kind: ExportKind, *, bom: bool) -> None:
        self.query = LOG_KINDS[kind].csv_query
        self._columns = LOG_KINDS[kind].columns
        # The text cells are the id, the organization and the packed fields; the columns
        # after them are JSON cells.
        json_cells_count = len(self._columns) - 1 - len(LOG_KINDS[kind].packed_fields)
        self._width = 1 + json_cells_count
        self._bom = bom

    def header(self) -> bytes:
        return csv_header(self._columns, bom=self._bom)

    def chunk(self, copied: bytes) -> Chunk:
        # Raw TAB and LF only separate values: NUL marks them all, the width tells rows.
        fields = unescape(copied.translate(_SEPARATORS_TO_NUL)).split(_JOIN)
        fields.pop()  # after the last row's LF
        width = self._width
        for column in range(1, width):
            suffix = _CRLF if column == width - 1 else b","
            fields[column::width] = json_cells(fields[column::width], suffix)
        first, last = fields[0][:_MARK_BYTES], fields[-width][:_MARK_BYTES]
        return Chunk(b"".join(fields), len(fields) // width, first, last)

    @staticmethod
    def mark(line: bytes) -> tuple[str, str]:
        """``(created_at, id)`` of a line: ``"<36>","<36>","<27>"``, at fixed places."""
        return line[79:106].decode(), line[1:37].decode()


def line_format(
    kind: ExportKind, format: ExportFormat, *, csv_bom: bool = False
) -> JsonlLines | CsvLines:
    """The lines of an export: the named query giving them, the header, the chunk maker
    and the mark reader."""
    if format is ExportFormat.CSV:
        return CsvLines(kind, bom=csv_bom)
    return JsonlLines(kind)
