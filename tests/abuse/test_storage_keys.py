"""Path tricks cannot reach the file system or the bucket: export file names come from
dates only, object keys from ids, and the local backend refuses keys that climb."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from logexport.exports.filenames import export_file_name, object_key
from logexport.exports.storage import InvalidKey, LocalStorage
from tests.abuse.conftest import Stack

NAME = re.compile(
    r"^(audit-log|scim-event)-export-\d{4}-\d{2}-\d{2}-to-\d{4}-\d{2}-\d{2}\.(jsonl|csv)(\.gz)?$"
)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(1, 1, 2, tzinfo=UTC)),
        (
            datetime(9999, 12, 30, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC),
        ),
        (
            datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=14))),
            datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-12))),
        ),
    ],
)
def test_file_names_are_built_from_dates_only(start: datetime, end: datetime):
    for kind in ("AUDIT_LOG", "SCIM_EVENT"):
        for fmt in ("JSONL", "CSV"):
            for compression in ("NONE", "GZIP"):
                name = export_file_name(kind, start, end, fmt, compression)
                assert NAME.match(name), name


@pytest.mark.parametrize("file_name", ["../x", "a/b", "..", ".", ""])
def test_object_keys_take_one_plain_file_name(file_name: str):
    with pytest.raises(ValueError):
        object_key("2b1c5f2e-8c8e-4c53-9f5e-2f0c8a1f7e10", 1, file_name)


@pytest.mark.parametrize(
    "key",
    [
        "../escape.txt",
        "a/../../escape.txt",
        "a/./b",
        "/etc/passwd",
        "a//b",
        "a\\..\\b",
        "a/\x00/b",
        "..",
        "",
    ],
)
async def test_the_local_backend_refuses_keys_that_could_climb(tmp_path: Path, key: str):
    storage = LocalStorage(str(tmp_path / "root"))
    with pytest.raises(InvalidKey):
        storage.path_for(key)
    with pytest.raises(InvalidKey):
        await storage.open_writer(key, content_type="text/plain", file_name="x")
    with pytest.raises(InvalidKey):
        await storage.delete(key)


def test_the_local_backend_refuses_a_symlink_out_of_its_root(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(InvalidKey):
        LocalStorage(str(root)).path_for("link/file.txt")


async def test_completed_exports_are_stored_under_their_id_with_a_date_name(stack: Stack):
    rows = await stack.pool.fetch(
        "SELECT id, file_name, storage_key FROM log_exports WHERE status = 'COMPLETED'"
    )
    assert rows
    for row in rows:
        assert NAME.match(row["file_name"]), row["file_name"]
        key = re.escape(str(row["id"])) + r"/attempt-[0-9A-Za-z-]+/" + re.escape(row["file_name"])
        assert re.fullmatch(key, row["storage_key"]), row["storage_key"]
