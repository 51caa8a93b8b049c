"""A column of JSON values turned into CSV cells in one pass over the batch matches the
cell-by-cell rendering, whatever the values hold."""

from __future__ import annotations

import json

import pytest

from logexport.exports.encoders import _json_cell, json_cells

VALUES = [
    b"null",
    b"-5",
    b"12.50",
    b'"-x"',
    b'"null"',
    b"{}",
    b"[]",
    b'{"a": 1, "b": [1, 2, {"c": "d, e: f"}]}',
    b'{"note": ": starts with a colon", "list": [", ", ": "]}',
    b'{"q": "say \\"hi\\", then: go"}',
    b'{"ctl": "tab\\there"}',
    b'{"u": "\xc3\xa9t\xc3\xa9, \xe2\x80\x83"}',
    b'[-1, "x"]',
    b"true",
]


@pytest.mark.parametrize("start", range(len(VALUES)))
def test_batch_cells_match_cell_by_cell(start: int) -> None:
    column = VALUES[start:] + VALUES[:start]
    assert json_cells(column) == [_json_cell(v) for v in column]


def test_batch_without_backslashes_takes_the_joined_path_and_still_matches() -> None:
    column = [v for v in VALUES if b"\\" not in v] * 3
    cells = json_cells(column)
    assert cells == [_json_cell(v) for v in column]
    for value, cell in zip(column, cells, strict=True):
        if value == b"null":
            assert cell == b""
        else:
            inner = cell[1:-1].replace(b'""', b'"')
            inner = inner[1:] if inner.startswith(b"'-") else inner
            assert json.loads(inner) == json.loads(value)


def test_a_column_larger_than_one_join_is_rendered_in_groups_alike() -> None:
    big = json.dumps({"members": [{"value": f"m{i}", "display": f"M, {i}"} for i in range(9000)]})
    column = [v for v in VALUES if b"\\" not in v] + [big.encode()] * 8 + [b"-1", b"null"]
    assert len(b"".join(column)) > 2 * 1024 * 1024
    assert json_cells(column) == [_json_cell(v) for v in column]
