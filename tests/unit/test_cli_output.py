"""What the client commands print: errors in the flags' words, sizes, JSON counts, progress."""

from __future__ import annotations

import asyncio
import io

import pytest
from click.testing import CliRunner

from logexport.cli import main
from logexport.cli.client import flag_message, human_size, json_counts, wait_for_export
from logexport.cli.progress import ProgressReporter
from logexport.client import BadUserInput, Forbidden, NotFound


@pytest.mark.parametrize(
    ("message", "field", "expected"),
    [
        ("fromTime must be earlier than toTime", "toTime", "--from must be earlier than --to"),
        (
            "The range from fromTime to toTime may span at most 366 days",
            "toTime",
            "The range from --from to --to may span at most 366 days",
        ),
        (
            "toTime: the timestamp has no UTC offset (expected RFC 3339)",
            "toTime",
            "--to: the timestamp has no UTC offset (expected RFC 3339)",
        ),
        ("organizationId is not a valid id", "organizationId", "--org is not a valid id"),
        (
            "filter.actions must list 1 to 100 values",
            "filter.actions",
            "--action must list 1 to 100 values",
        ),
        (
            "filter.statusCodes values must be HTTP status codes",
            "filter.statusCodes",
            "--status-code values must be HTTP status codes",
        ),
        (
            "idempotencyKey was used with a different request",
            "idempotencyKey",
            "--idempotency-key was used with a different request",
        ),
        # Ordinary words are field names only where the message starts with them.
        (
            "csvBom applies to the CSV format only",
            "csvBom",
            "--csv-bom applies to the CSV format only",
        ),
        ("format must be one of JSONL, CSV", "format", "--format must be one of JSONL, CSV"),
        ("the value is not allowed", "fromTime", "--from: the value is not allowed"),
    ],
)  # fmt: skip
def test_api_fields_become_the_commands_flags(message, field, expected):
    assert flag_message(BadUserInput(message, field)) == expected


def test_a_command_can_name_its_own_subject():
    error = NotFound("id is not a valid id", "id")
    assert flag_message(error) == "ID is not a valid id"
    assert flag_message(error, {"id": "--org"}) == "--org is not a valid id"
    assert flag_message(Forbidden("You do not have access")) == "You do not have access"


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (None, "-"),
        ("", "-"),
        ("0", "0 B"),
        (1023, "1023 B"),
        ("1024", "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**4, "3.0 TiB"),
        (5000 * 1024**4, "5000.0 TiB"),
    ],
)
def test_human_size(size, shown):
    assert human_size(size) == shown


def test_json_counts_turns_bigint_strings_into_numbers_at_any_depth():
    page = {
        "edges": [{"node": {"id": "1", "rowCount": "90", "rowsWritten": "90", "byteSize": "12"}}],
        "pageInfo": {"endCursor": "42"},
    }
    assert json_counts(page) == {
        "edges": [{"node": {"id": "1", "rowCount": 90, "rowsWritten": 90, "byteSize": 12}}],
        "pageInfo": {"endCursor": "42"},
    }
    assert json_counts({"rowCount": None, "byteSize": "-"}) == {"rowCount": None, "byteSize": "-"}


def test_usage_errors_are_one_line_naming_the_option_and_the_help():
    result = CliRunner().invoke(
        main,
        ["audit-log", "export", "--org", "x", "--from", "2026-01-01", "--to", "tomorrow"],
        prog_name="logexport",
        env={"LOGEXPORT_API_URL": "http://127.0.0.1:1", "LOGEXPORT_TOKEN": "lex_x"},
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: Invalid value for '--to': ")
    assert lines[0].endswith("(see 'logexport audit-log export --help')")


class _SlowExport:
    """Stands in for the API: the export sits PENDING for a while, then completes."""

    def __init__(self, pending_for: float) -> None:
        self.pending_for = pending_for

    async def wait_for_export(self, export_id, *, on_progress, interval, max_interval):
        await asyncio.sleep(self.pending_for)
        done = {"id": export_id, "status": "COMPLETED", "rowsWritten": "7"}
        on_progress(done)
        return done


async def test_a_terminal_line_keeps_counting_while_nothing_changes():
    stream = io.StringIO()
    reporter = ProgressReporter(stream, interactive=True)
    export = {"id": "e1", "status": "PENDING", "rowsWritten": "0"}
    done = await wait_for_export(_SlowExport(0.35), export, reporter, 0.05)  # type: ignore[arg-type]
    assert done["status"] == "COMPLETED"
    frames = stream.getvalue().split("\r\x1b[K")[1:]
    pending = [frame for frame in frames if frame.startswith("PENDING")]
    # Redrawn between changes (elapsed time moves on), then the final line and a newline.
    assert len(pending) >= 3, frames
    assert frames[-1].startswith("COMPLETED") and frames[-1].endswith("\n")
    assert "7 rows" in frames[-1]


async def test_plain_output_has_one_line_per_change_and_no_redraws():
    stream = io.StringIO()
    reporter = ProgressReporter(stream, interactive=False)
    export = {"id": "e1", "status": "PENDING", "rowsWritten": "0"}
    await wait_for_export(_SlowExport(0.2), export, reporter, 0.05)  # type: ignore[arg-type]
    lines = stream.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["PENDING", "COMPLETED"]
    assert "\r" not in stream.getvalue()
