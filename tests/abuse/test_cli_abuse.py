"""Hostile input to the ``logexport`` command line: names and emails with Unicode and
control characters (``admin create-user``), and timestamps on the client's ``--from``/``--to``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from logexport.cli import main
from logexport.cli.client import parse_time_bound
from tests.abuse.conftest import Stack

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


async def logexport(database_url: str, *args: str) -> Result:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from logexport.cli import main; sys.exit(main())",
        *args,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(REPO),
            "LOGEXPORT_DATABASE_URL": database_url,
        },
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


async def test_create_user_keeps_unicode_and_refuses_control_characters(stack: Stack):
    unicode_name = "Zoë Ōkubo-山田 \u05e9\u05dc\u05d5\u05dd 🦊"
    cases = [
        ("zoe.okubo@b\u00fccher.example", unicode_name),
        ("eve@acme.test", "Eve\r\nBcc: evil@x.test"),
        ("tab@acme.test", "Tab\tName"),
        ("bidi@acme.test", "Bidi\u2028Name"),
        ("crlf@acme.test\r\nBcc: evil@x.test", "Crlf"),
        ("two@@acme.test", "Two"),
        ("  spaced @acme.test", "Spaced"),
        ("'; DROP TABLE users; --@acme.test", "Sql"),
    ]
    before = await stack.counts()
    results = await asyncio.gather(
        *(
            logexport(stack.database_url, "admin", "create-user", email, "--name", name)
            for email, name in cases
        )
    )
    ok, *refused = results
    assert ok.code == 0, ok.stderr
    for (email, _), result in zip(cases[1:], refused, strict=True):
        assert result.code == 1, (email, result)
        assert result.stdout == ""
        line = result.stderr.strip()
        assert line.startswith("error: ") and "\n" not in line, result.stderr
        assert "must not contain control characters" in line or "not a valid email" in line
        assert "Traceback" not in result.stderr
    assert (await stack.counts())["users"] == before["users"] + 1
    row = await stack.pool.fetchrow(
        "SELECT id, email, full_name FROM users WHERE id = $1", ok.stdout.strip()
    )
    assert row["full_name"] == unicode_name
    assert row["email"] == "zoe.okubo@b\u00fccher.example"


@pytest.mark.parametrize(
    ("value", "end", "expected"),
    [
        ("2024-02-29", False, datetime(2024, 2, 29, tzinfo=UTC)),
        ("2024-02-29", True, datetime(2024, 3, 1, tzinfo=UTC)),
        ("2026-01-01t00:00:00z", False, datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00+14:00", False, datetime(2025, 12, 31, 10, tzinfo=UTC)),
        ("2026-01-01T00:00:00-12:00", True, datetime(2026, 1, 1, 12, tzinfo=UTC)),
        ("0001-01-01", False, datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_client_time_bounds_accept_rfc3339_edge_cases(value: str, end: bool, expected: datetime):
    assert parse_time_bound(value, end=end) == expected


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--from", "2023-02-29"),
        ("--from", "2023-02-29T00:00:00Z"),
        ("--from", "2026-01-01T24:00:00Z"),
        ("--from", "2026-01-01T00:00:00"),
        ("--from", "2026-01-01T00:00:00.1234567Z"),
        ("--to", "9999-12-31"),
        ("--to", "'; DROP TABLE log_exports; --"),
    ],
)
def test_client_refuses_bad_time_bounds_before_contacting_the_api(option: str, value: str):
    bounds = {"--from": "2026-01-01", "--to": "2026-01-31"} | {option: value}
    result = CliRunner().invoke(
        main,
        ["audit-log", "export", "--org", "x", "--from", bounds["--from"], "--to", bounds["--to"]],
        # Nothing listens there: a request that got this far would fail differently.
        env={"LOGEXPORT_API_URL": "http://127.0.0.1:1", "LOGEXPORT_TOKEN": "lex_x"},
    )
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["audit-log", "export", "--org", "x", "--from", "2026-01-01", "--to", "2026-01-02"],
        ["export", "download", "00000000-0000-0000-0000-000000000000"],
    ],
)
@pytest.mark.parametrize(
    ("target", "reason"),
    [
        # Renaming a file over a device would replace the device (as root, /dev/null).
        ("/dev/null", "not a regular file"),
        ("/dev", "is a directory"),
        ("/proc/self/status/x", "not a directory"),
        ("/no/such/dir/out.jsonl", "does not exist"),
        ("", "is a directory"),
    ],
)
def test_download_targets_that_cannot_be_written_are_refused_before_contacting_the_api(
    args: list[str], target: str, reason: str
):
    option = "--download" if args[0] == "audit-log" else "--output"
    result = CliRunner().invoke(
        main,
        [*args, option, target],
        # Nothing listens there: a request that got this far would fail differently.
        env={"LOGEXPORT_API_URL": "http://127.0.0.1:1", "LOGEXPORT_TOKEN": "lex_x"},
    )
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: "), result.output
    assert option in line and reason in line, line
    assert Path("/dev/null").is_char_device()
