"""JSONL and CSV encoders and gzip, without a database (SPEC §5)."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest

from logexport.exports.encoders import (
    AUDIT_LOG_COLUMNS,
    SCIM_EVENT_COLUMNS,
    CsvEncoder,
    Gzip,
    JsonlEncoder,
    guard_cell,
    make_encoder,
)

HOSTILE = [
    '=HYPERLINK("http://x","y")',
    "+1",
    "-1+1",
    "@SUM(A1)",
    "\tleading tab",
    "\rleading carriage return",
    " =1",
    "|cmd",
    "%0A",
    "  \t@indented",
    " |pipe after space",
    " %percent after space",
]
BENIGN = ["", "a=b", "hello, world", "1-2", "user.login", "x|y", "50%", "café = 1"]


def audit_row(**values: str | None) -> tuple[str | None, ...]:
    row = dict.fromkeys(AUDIT_LOG_COLUMNS)
    row.update(
        id="00000000-0000-0000-0000-000000000001",
        organization_id="00000000-0000-0000-0000-0000000000aa",
        created_at="2026-03-01T00:00:00.000000Z",
        actor_type="USER",
        action="user.login",
        metadata="{}",
    )
    row.update(values)
    return tuple(row[c] for c in AUDIT_LOG_COLUMNS)


def parse_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_cells_are_prefixed_with_a_quote_and_otherwise_kept(value: str) -> None:
    assert guard_cell(value) == "'" + value


@pytest.mark.parametrize("value", BENIGN)
def test_harmless_cells_are_left_alone(value: str) -> None:
    assert guard_cell(value) == value


def test_csv_has_header_crlf_line_ends_and_guarded_cells() -> None:
    encoder = CsvEncoder(AUDIT_LOG_COLUMNS)
    rows = [audit_row(actor_name=value, user_agent=value) for value in HOSTILE]
    data = encoder.header() + encoder.encode(rows)

    text = data.decode()
    assert text.startswith(",".join(AUDIT_LOG_COLUMNS) + "\r\n")
    assert text.endswith("\r\n")
    # Every line break between records is CRLF; bare LFs only occur inside quoted cells.
    assert text.count("\r\n") >= len(rows) + 1

    parsed = parse_csv(data)
    assert parsed[0] == list(AUDIT_LOG_COLUMNS)
    name_at = AUDIT_LOG_COLUMNS.index("actor_name")
    agent_at = AUDIT_LOG_COLUMNS.index("user_agent")
    assert [r[name_at] for r in parsed[1:]] == ["'" + v for v in HOSTILE]
    assert [r[agent_at] for r in parsed[1:]] == ["'" + v for v in HOSTILE]


def test_quotes_commas_and_newlines_round_trip_through_the_csv_module() -> None:
    awkward = 'say "hi", then\nleave\r\nnow'
    encoder = CsvEncoder(AUDIT_LOG_COLUMNS)
    data = encoder.header() + encoder.encode([audit_row(actor_name=awkward, resource_id=None)])
    [header, row] = parse_csv(data)
    assert row[header.index("actor_name")] == awkward
    assert row[header.index("resource_id")] == ""


def test_csv_writes_json_columns_as_compact_json() -> None:
    encoder = CsvEncoder(AUDIT_LOG_COLUMNS)
    data = encoder.encode([audit_row(metadata='{"b": [1, 2], "a": "=x"}')])
    [row] = parse_csv(data)
    assert row[AUDIT_LOG_COLUMNS.index("metadata")] == '{"b":[1,2],"a":"=x"}'


def test_bom_only_when_asked() -> None:
    with_bom = CsvEncoder(AUDIT_LOG_COLUMNS, bom=True).header()
    without = CsvEncoder(AUDIT_LOG_COLUMNS).header()
    assert with_bom.startswith(b"\xef\xbb\xbf")
    assert with_bom[3:] == without
    assert not without.startswith(b"\xef\xbb\xbf")


def test_jsonl_has_every_key_in_order_and_nulls_for_empty_values() -> None:
    encoder = JsonlEncoder("AUDIT_LOG")
    assert encoder.header() == b""
    data = encoder.encode(
        [audit_row(actor_name='Zoë "Q" \n', metadata='{"n": 1}'), audit_row(metadata="[]")]
    )
    lines = data.decode().split("\n")
    assert lines[-1] == ""
    first, second = (json.loads(line) for line in lines[:-1])
    assert list(first) == list(AUDIT_LOG_COLUMNS)
    assert first["actor_name"] == 'Zoë "Q" \n'
    assert first["metadata"] == {"n": 1}
    assert first["ip_address"] is None
    assert second["metadata"] == []


def test_jsonl_escapes_every_text_column() -> None:
    nasty = 'q"uote \\ back\\slash\n\t\x00\x1f \u2028 é 🙂 %s %%'
    text_columns = AUDIT_LOG_COLUMNS[3:12]
    row = audit_row(**dict.fromkeys(text_columns, nasty))
    # Split on LF only: str.splitlines would also break at the U+2028 inside the value.
    [line, end] = JsonlEncoder("AUDIT_LOG").encode([row]).decode().split("\n")
    assert end == ""
    parsed = json.loads(line)
    assert {column: parsed[column] for column in text_columns} == dict.fromkeys(text_columns, nasty)


def test_scim_jsonl_writes_status_code_as_a_number() -> None:
    encoder = make_encoder("SCIM_EVENT", "JSONL")
    row = dict.fromkeys(SCIM_EVENT_COLUMNS)
    row.update(method="POST", path="/Users", status_code="201", request_body='{"a":1}')
    [line] = encoder.encode([tuple(row[c] for c in SCIM_EVENT_COLUMNS)]).decode().splitlines()
    parsed = json.loads(line)
    assert list(parsed) == list(SCIM_EVENT_COLUMNS)
    assert parsed["status_code"] == 201
    assert parsed["request_body"] == {"a": 1}
    assert parsed["response_body"] is None


def test_make_encoder_picks_format_and_columns() -> None:
    csv_encoder = make_encoder("SCIM_EVENT", "CSV", csv_bom=True)
    assert isinstance(csv_encoder, CsvEncoder)
    assert csv_encoder.columns == SCIM_EVENT_COLUMNS
    assert csv_encoder.bom
    assert isinstance(make_encoder("AUDIT_LOG", "JSONL"), JsonlEncoder)


def test_incremental_gzip_is_one_valid_gzip_stream() -> None:
    compressor = Gzip()
    chunks = [b"line %d\n" % i * 50 for i in range(200)]
    data = b"".join(compressor.compress(c) for c in chunks) + compressor.flush()
    assert data[:2] == b"\x1f\x8b"
    assert gzip.decompress(data) == b"".join(chunks)
