"""JSONL lines come from COPY's CSV format with control bytes as delimiter and quote, which
writes JSON text unchanged: the worker passes the bytes on as they are, and refuses a chunk
COPY had to quote (a line holding a control character is not JSON text)."""

from __future__ import annotations

import json

import pytest

from logexport.exports.lines import JsonlLines, line_format
from logexport.exports.models import ExportFormat, ExportKind


def _line(n: int, text: str) -> bytes:
    entry = {
        "id": f"00000000-0000-0000-0000-{n:012d}",
        "organization_id": "11111111-1111-1111-1111-111111111111",
        "created_at": f"2026-03-01T00:00:{n:02d}.000000Z",
        "action": text,
    }
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def test_lines_pass_through_unchanged_with_their_marks() -> None:
    lines = line_format(ExportKind.AUDIT_LOG, ExportFormat.JSONL)
    assert isinstance(lines, JsonlLines)
    assert lines.copy_options["format"] == "csv"
    data = b"".join(
        _line(n, text) for n, text in enumerate(['a\\"b', "tab\there", "é, \u2028", "\\N"])
    )
    chunk = lines.chunk(data)
    assert chunk.data is data
    assert chunk.rows == 4
    assert lines.mark(chunk.first) == (
        "2026-03-01T00:00:00.000000Z",
        "00000000-0000-0000-0000-000000000000",
    )
    assert lines.mark(chunk.last) == (
        "2026-03-01T00:00:03.000000Z",
        "00000000-0000-0000-0000-000000000003",
    )


def test_a_line_copy_had_to_quote_is_refused() -> None:
    lines = JsonlLines(ExportKind.AUDIT_LOG)
    quoted = b"\x02" + _line(0, "x\x01y").rstrip(b"\n") + b"\x02\n"
    with pytest.raises(ValueError, match="control character"):
        lines.chunk(_line(1, "fine") + quoted)
