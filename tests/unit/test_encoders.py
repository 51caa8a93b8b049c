"""JSONL and CSV encoders and gzip, without a database."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from logexport.exports.encoders import (
    FIELD_SEPARATOR,
    AmbiguousRows,
    CsvEncoder,
    Gzip,
    JsonlEncoder,
    guard_cell,
    make_encoder,
)
from logexport.exports.models import ExportFormat, ExportKind
from logexport.kinds import LOG_KINDS

AUDIT_LOG_COLUMNS = LOG_KINDS[ExportKind.AUDIT_LOG].columns
SCIM_EVENT_COLUMNS = LOG_KINDS[ExportKind.SCIM_EVENT].columns

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
        organization_id=ORG,
        created_at="2026-03-01T00:00:00.000000Z",
        actor_type="USER",
        action="user.login",
        metadata="{}",
    )
    row.update(values)
    return tuple(row[c] for c in AUDIT_LOG_COLUMNS)


ORG = "00000000-0000-0000-0000-0000000000aa"
_JSON_COLUMNS = {"metadata", "request_body", "response_body"}


def packed_row(columns: tuple[str, ...], row: tuple[str | None, ...]) -> tuple[Any, ...]:
    """A row as the export queries deliver it: the text fields joined by U+001F (NULL as
    empty), the JSON columns (NULL as ``null``), then the NULL mask; no organization id."""
    values = dict(zip(columns, row, strict=True))
    [kind] = [k for k in LOG_KINDS.values() if k.columns == columns]
    fields = kind.packed_fields
    nullable = kind.nullable_fields
    mask = sum(1 << nullable.index(f) for f in fields if values[f] is None)
    packed = FIELD_SEPARATOR.join((values[f] or "").encode() for f in fields)
    json_values = [
        b"null" if values[c] is None else str(values[c]).encode()
        for c in columns
        if c in _JSON_COLUMNS
    ]
    return (packed, *json_values, mask)


def encode_like_the_pipeline(encoder: Any, columns: tuple[str, ...], rows: list[Any]) -> bytes:
    """Encode; rows the encoder cannot split get their exact fields, as the pipeline does."""
    packed = [packed_row(columns, r) for r in rows]
    try:
        return bytes(encoder.encode(packed))
    except AmbiguousRows as ambiguous:
        fields = encoder.kind.packed_fields
        exact = {
            r[0]: tuple(r[columns.index(f)] for f in fields) for r in rows if r[0] in ambiguous.ids
        }
        return bytes(encoder.encode(packed, exact))


def jsonl(kind: ExportKind, rows: list[tuple[str | None, ...]]) -> bytes:
    columns = LOG_KINDS[kind].columns
    return encode_like_the_pipeline(JsonlEncoder(kind, ORG), columns, rows)


def csv_rows(encoder: CsvEncoder, rows: list[tuple[str | None, ...]]) -> bytes:
    return encode_like_the_pipeline(encoder, encoder.columns, rows)


def parse_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_cells_are_prefixed_with_a_quote_and_otherwise_kept(value: str) -> None:
    assert guard_cell(value) == "'" + value


@pytest.mark.parametrize("value", BENIGN)
def test_harmless_cells_are_left_alone(value: str) -> None:
    assert guard_cell(value) == value


def test_csv_has_header_crlf_line_ends_and_guarded_cells() -> None:
    encoder = CsvEncoder(ExportKind.AUDIT_LOG, ORG)
    rows = [audit_row(actor_name=value, user_agent=value) for value in HOSTILE]
    data = encoder.header() + csv_rows(encoder, rows)

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
    encoder = CsvEncoder(ExportKind.AUDIT_LOG, ORG)
    data = encoder.header() + csv_rows(encoder, [audit_row(actor_name=awkward, resource_id=None)])
    [header, row] = parse_csv(data)
    assert row[header.index("actor_name")] == awkward
    assert row[header.index("resource_id")] == ""


def test_csv_writes_json_columns_as_compact_json() -> None:
    encoder = CsvEncoder(ExportKind.AUDIT_LOG, ORG)
    data = csv_rows(encoder, [audit_row(metadata='{"b": [1, 2], "a": "=x"}')])
    [row] = parse_csv(data)
    assert row[AUDIT_LOG_COLUMNS.index("metadata")] == '{"b":[1,2],"a":"=x"}'


def test_plain_rows_and_careful_rows_encode_alike() -> None:
    # The byte-replacement path and the csv-module path must agree cell for cell.
    encoder = CsvEncoder(ExportKind.AUDIT_LOG, ORG)
    plain = audit_row(actor_name="Ada Lovelace", user_agent="curl/8.5", resource_id=None)
    careful = audit_row(actor_name="Ada, Countess", user_agent="curl/8.5", resource_id=None)
    [plain_cells, careful_cells] = parse_csv(csv_rows(encoder, [plain, careful]))
    assert plain_cells[:6] == careful_cells[:6]
    assert careful_cells[AUDIT_LOG_COLUMNS.index("actor_name")] == "Ada, Countess"
    assert plain_cells[AUDIT_LOG_COLUMNS.index("organization_id")] == ORG
    assert plain_cells[7:] == careful_cells[7:]


@pytest.mark.parametrize("value", [*HOSTILE, "\u00a0=1", "\u2003+1", "\x1c-1"])
def test_cells_after_any_unicode_space_are_guarded_on_every_path(value: str) -> None:
    encoder = CsvEncoder(ExportKind.AUDIT_LOG, ORG)
    [row] = parse_csv(csv_rows(encoder, [audit_row(resource_type=value)]))
    assert row[AUDIT_LOG_COLUMNS.index("resource_type")] == guard_cell(value)


@pytest.mark.parametrize("kind_encoder", ["JSONL", "CSV"])
def test_a_row_holding_the_field_separator_is_written_from_its_exact_fields(
    kind_encoder: str,
) -> None:
    tricky = "agent\x1fwith a unit separator"
    row = audit_row(user_agent=tricky, resource_id=None)
    encoder = make_encoder(ExportKind.AUDIT_LOG, ExportFormat(kind_encoder), organization_id=ORG)
    packed = packed_row(AUDIT_LOG_COLUMNS, row)
    with pytest.raises(AmbiguousRows) as raised:
        encoder.encode([packed])
    assert raised.value.ids == [row[0]]
    exact = {
        row[0]: tuple(
            row[AUDIT_LOG_COLUMNS.index(f)] for f in LOG_KINDS[ExportKind.AUDIT_LOG].packed_fields
        )
    }
    data = encoder.encode([packed], exact)
    if kind_encoder == "JSONL":
        parsed = json.loads(data)
        assert parsed["user_agent"] == tricky
        assert parsed["resource_id"] is None
    else:
        [cells] = parse_csv(data)
        assert cells[AUDIT_LOG_COLUMNS.index("user_agent")] == tricky
        assert len(cells) == len(AUDIT_LOG_COLUMNS)


def test_bom_only_when_asked() -> None:
    with_bom = CsvEncoder(ExportKind.AUDIT_LOG, ORG, bom=True).header()
    without = CsvEncoder(ExportKind.AUDIT_LOG, ORG).header()
    assert with_bom.startswith(b"\xef\xbb\xbf")
    assert with_bom[3:] == without
    assert not without.startswith(b"\xef\xbb\xbf")


def test_jsonl_has_every_key_in_order_and_nulls_for_empty_values() -> None:
    assert JsonlEncoder(ExportKind.AUDIT_LOG, ORG).header() == b""
    data = jsonl(
        ExportKind.AUDIT_LOG,
        [audit_row(actor_name='Zoë "Q" \n', metadata='{"n": 1}'), audit_row(metadata="[]")],
    )
    lines = data.decode().split("\n")
    assert lines[-1] == ""
    first, second = (json.loads(line) for line in lines[:-1])
    assert list(first) == list(AUDIT_LOG_COLUMNS)
    assert first["actor_name"] == 'Zoë "Q" \n'
    assert first["metadata"] == {"n": 1}
    assert first["ip_address"] is None
    assert first["organization_id"] == ORG
    assert second["metadata"] == []


def test_jsonl_escapes_every_text_column() -> None:
    nasty = 'q"uote \\ back\\slash\n\t\x00\x1f \u2028 é 🙂 %s %%'
    text_columns = AUDIT_LOG_COLUMNS[3:12]
    row = audit_row(**dict.fromkeys(text_columns, nasty))
    # Split on LF only: str.splitlines would also break at the U+2028 inside the value.
    [line, end] = jsonl(ExportKind.AUDIT_LOG, [row]).decode().split("\n")
    assert end == ""
    parsed = json.loads(line)
    assert {column: parsed[column] for column in text_columns} == dict.fromkeys(text_columns, nasty)
    # Escaped exactly as Python's own JSON encoder would write it.
    assert json.dumps(nasty, ensure_ascii=False) in line


def test_scim_jsonl_writes_status_code_as_a_number() -> None:
    row = dict.fromkeys(SCIM_EVENT_COLUMNS)
    row.update(
        id="00000000-0000-0000-0000-000000000002",
        created_at="2026-03-01T00:00:00.000000Z",
        method="POST",
        path="/Users",
        status_code="201",
        request_body='{"a":1}',
    )
    [line] = (
        jsonl(ExportKind.SCIM_EVENT, [tuple(row[c] for c in SCIM_EVENT_COLUMNS)])
        .decode()
        .splitlines()
    )
    parsed = json.loads(line)
    assert list(parsed) == list(SCIM_EVENT_COLUMNS)
    assert parsed["status_code"] == 201
    assert parsed["request_body"] == {"a": 1}
    assert parsed["response_body"] is None


def test_make_encoder_picks_format_and_columns() -> None:
    csv_encoder = make_encoder(
        ExportKind.SCIM_EVENT, ExportFormat.CSV, organization_id=ORG, csv_bom=True
    )
    assert isinstance(csv_encoder, CsvEncoder)
    assert csv_encoder.columns == SCIM_EVENT_COLUMNS
    assert csv_encoder.bom
    assert isinstance(
        make_encoder(ExportKind.AUDIT_LOG, ExportFormat.JSONL, organization_id=ORG), JsonlEncoder
    )


def test_incremental_gzip_is_one_valid_gzip_stream() -> None:
    compressor = Gzip()
    chunks = [b"line %d\n" % i * 50 for i in range(200)]
    data = b"".join(compressor.compress(c) for c in chunks) + compressor.flush()
    assert data[:2] == b"\x1f\x8b"
    assert gzip.decompress(data) == b"".join(chunks)


# Look-alikes of the formula characters, probed in LibreOffice Calc 7.4 (CSV import to ODS
# and XLSX, with and without "evaluate formulas", "trim spaces" and quoted-as-text): Calc
# ran none of them as a formula, so they are exported as stored, like any other text.
# test_no_exported_cell_runs_as_a_formula_in_libreoffice repeats that probe on every run.
LOOKALIKES = [
    "\uff1d1+1",  # FULLWIDTH EQUALS SIGN
    "\uff0b1+1",  # FULLWIDTH PLUS SIGN
    "\uff0d1+1",  # FULLWIDTH HYPHEN-MINUS
    "\uff20SUM(1;1)",  # FULLWIDTH COMMERCIAL AT
    '\uff1dHYPERLINK("http://example.test";"x")',
    "\ufe661+1",  # SMALL EQUALS SIGN
    "\u200b=1+1",  # ZERO WIDTH SPACE
    "\ufeff=1+1",  # ZERO WIDTH NO-BREAK SPACE (BOM)
    "\u200b+1+1",
    "\ufeff-1+1",
    "\u200b@SUM(1;1)",
    "\u200c=1+1",  # ZERO WIDTH NON-JOINER
    "\u200d=1+1",  # ZERO WIDTH JOINER
    "\u2060=1+1",  # WORD JOINER
    "\u200e=1+1",  # LEFT-TO-RIGHT MARK
    "\u00ad=1+1",  # SOFT HYPHEN
]
# Their ASCII counterparts, and Unicode spaces (which str.isspace knows), are guarded.
GUARDED_CONTROLS = [
    "=1+1",
    "+1+1",
    "-1+1",
    "@SUM(1;1)",
    '=HYPERLINK("http://example.test";"x")',
    " =1+1",
    "\u00a0=1+1",
    "\u3000=1+1",
    "\u2003=1+1",
]


@pytest.mark.parametrize("value", LOOKALIKES)
def test_formula_lookalikes_are_exported_as_stored_on_every_path(value: str) -> None:
    encoder = CsvEncoder(ExportKind.AUDIT_LOG, ORG)
    # Alone, and beside a field holding the separator (the exact-fields path).
    rows = [
        audit_row(resource_type=value),
        audit_row(
            id="00000000-0000-0000-0000-000000000002", resource_type=value, resource_id="a\x1fb"
        ),
    ]
    for row in parse_csv(csv_rows(encoder, rows)):
        assert row[AUDIT_LOG_COLUMNS.index("resource_type")] == value
    assert guard_cell(value) == value


@pytest.mark.parametrize("value", GUARDED_CONTROLS)
def test_the_ascii_counterparts_are_guarded_on_every_path(value: str) -> None:
    encoder = CsvEncoder(ExportKind.AUDIT_LOG, ORG)
    rows = [
        audit_row(actor_name=value),
        audit_row(
            id="00000000-0000-0000-0000-000000000002", actor_name=value, resource_id="a\x1fb"
        ),
    ]
    for row in parse_csv(csv_rows(encoder, rows)):
        assert row[AUDIT_LOG_COLUMNS.index("actor_name")] == "'" + value


_ODF_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_ODF_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"


def _odf_text(element: Any) -> str:
    """A cell's text, with ODF's encoded spaces (``text:s``) and tabs put back."""
    parts = [element.text or ""]
    for child in element:
        if child.tag == f"{{{_ODF_TEXT}}}s":
            parts.append(" " * int(child.get(f"{{{_ODF_TEXT}}}c", "1")))
        elif child.tag == f"{{{_ODF_TEXT}}}tab":
            parts.append("\t")
        else:
            parts.append(_odf_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _calc_cells(csv_data: bytes, workdir: Path) -> list[list[tuple[str | None, str]]]:
    """Open CSV in LibreOffice Calc (headless, UTF-8, comma-separated, quoted cells parsed as
    a person opening the file gets them) and return each cell's (formula, text)."""
    import subprocess
    import zipfile
    from xml.etree import ElementTree

    soffice = shutil.which("soffice")
    assert soffice is not None
    workdir.mkdir()
    source = workdir / "export.csv"
    source.write_bytes(csv_data)
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation={(workdir / 'profile').as_uri()}",
            "--headless",
            "--infilter=CSV:44,34,76,1",
            "--convert-to",
            "ods",
            "--outdir",
            str(workdir),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env={"HOME": str(workdir), "PATH": "/usr/bin:/bin"},
    )
    # The file is Calc's own output for a CSV this test wrote.
    root = ElementTree.fromstring(  # noqa: S314
        zipfile.ZipFile(workdir / "export.ods").read("content.xml")
    )
    rows = []
    for row in root.iter(f"{{{_ODF_TABLE}}}table-row"):
        cells = []
        for cell in row.findall(f"{{{_ODF_TABLE}}}table-cell"):
            repeat = int(cell.get(f"{{{_ODF_TABLE}}}number-columns-repeated", "1"))
            paragraphs = cell.findall(f"{{{_ODF_TEXT}}}p")
            text = "\n".join(_odf_text(p) for p in paragraphs)
            cells.extend([(cell.get(f"{{{_ODF_TABLE}}}formula"), text)] * min(repeat, 64))
        rows.append(cells)
    return rows


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice (soffice) not installed")
def test_no_exported_cell_runs_as_a_formula_in_libreoffice(tmp_path: Path) -> None:
    values = GUARDED_CONTROLS + LOOKALIKES + HOSTILE
    name_at = AUDIT_LOG_COLUMNS.index("actor_name")

    # Control: the same values written without the guard, so the probe is known to see
    # formulas where Calc makes them.
    raw = io.StringIO()
    writer = csv.writer(raw, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(["value"])
    writer.writerows([v] for v in values)
    unguarded = _calc_cells(raw.getvalue().encode(), tmp_path / "unguarded")
    formulas = {values[i] for i, row in enumerate(unguarded[1:]) if row and row[0][0]}
    assert "=1+1" in formulas
    assert formulas.isdisjoint(LOOKALIKES), formulas

    encoder = CsvEncoder(ExportKind.AUDIT_LOG, ORG, bom=True)
    rows = [
        audit_row(id=f"00000000-0000-0000-0000-{i:012d}", actor_name=value, user_agent=value)
        for i, value in enumerate(values)
    ]
    exported = _calc_cells(encoder.header() + csv_rows(encoder, rows), tmp_path / "exported")
    assert [text for _, text in exported[0][: len(AUDIT_LOG_COLUMNS)]] == list(AUDIT_LOG_COLUMNS)
    ran = [(formula, text) for row in exported for formula, text in row if formula]
    assert ran == []
    shown = [row[name_at][1] for row in exported[1:] if row]
    # Calc shows a carriage return inside a cell as a line break.
    assert shown == [guard_cell(v).replace("\r", "\n") for v in values]
