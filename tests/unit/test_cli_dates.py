"""--from / --to of the client commands: UTC days, or exact RFC 3339 timestamps; and the
library client's from_time / to_time, read by the same parser."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import click
import pytest
from click.testing import CliRunner

from logexport import client as client_module
from logexport import timeutil
from logexport.cli.client import TimeBound, parse_time_bound
from logexport.errors import BadUserInput


def test_from_date_starts_at_utc_midnight():
    assert parse_time_bound("2026-01-31", end=False) == datetime(2026, 1, 31, tzinfo=UTC)


def test_to_date_includes_the_whole_day():
    assert parse_time_bound("2026-01-31", end=True) == datetime(2026, 2, 1, tzinfo=UTC)


def test_to_date_at_the_end_of_a_year_and_on_a_leap_day():
    assert parse_time_bound("2026-12-31", end=True) == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_time_bound("2028-02-29", end=True) == datetime(2028, 3, 1, tzinfo=UTC)


def test_timestamps_are_taken_exactly_for_both_bounds():
    text = "2026-01-31T12:30:00.250000+02:00"
    expected = datetime(2026, 1, 31, 10, 30, 0, 250000, tzinfo=UTC)
    assert parse_time_bound(text, end=False) == expected
    assert parse_time_bound(text, end=True) == expected


def test_z_timestamp():
    assert parse_time_bound("2026-02-01T00:00:00Z", end=True) == datetime(2026, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-01-31T00:00:00", "no UTC offset"),
        ("2026-02-30", "not a calendar date"),
        ("31/01/2026", "not a valid timestamp"),
        ("2026-01-31T00:00:00.1234567Z", "more than 6 fractional digits"),
        ("", "not a valid timestamp"),
    ],
)
def test_malformed_values_are_rejected_with_a_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_time_bound(text, end=False)


def test_a_bad_value_is_a_usage_error_naming_the_option():
    @click.command()
    @click.option("--to", "to_time", type=TimeBound(end=True), required=True)
    def command(to_time):
        click.echo(to_time.isoformat())

    runner = CliRunner()
    good = runner.invoke(command, ["--to", "2026-01-31"])
    assert good.exit_code == 0
    assert good.output.strip() == "2026-02-01T00:00:00+00:00"
    bad = runner.invoke(command, ["--to", "2026-01-31T10:00:00"])
    assert bad.exit_code == 2
    assert "--to" in bad.output
    assert "no UTC offset" in bad.output


# ---------------------------------------------------------------------------- one parser


def test_the_library_reads_bounds_with_the_same_parser():
    # The CLI's --from/--to and LogExportClient's from_time/to_time share one parser.
    text = "2026-01-31"
    assert timeutil.parse_time_bound(text, "toTime", end=True) == parse_time_bound(text, end=True)
    assert client_module._bound(text, "toTime", end=True) == "2026-02-01T00:00:00.000000Z"
    assert client_module._bound(text, "fromTime", end=False) == "2026-01-31T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("value", "end", "expected"),
    [
        (date(2026, 1, 31), False, datetime(2026, 1, 31, tzinfo=UTC)),
        (date(2026, 1, 31), True, datetime(2026, 2, 1, tzinfo=UTC)),
        # A datetime is an instant: exact at either end, whatever its zone.
        (datetime(2026, 1, 31, tzinfo=UTC), True, datetime(2026, 1, 31, tzinfo=UTC)),
        (
            datetime(2026, 1, 31, 1, tzinfo=timezone(timedelta(hours=2))),
            False,
            datetime(2026, 1, 30, 23, tzinfo=UTC),
        ),
        (" 2026-01-31 ", True, datetime(2026, 2, 1, tzinfo=UTC)),
    ],
)
def test_dates_and_datetimes_are_bounds_too(value, end, expected):
    parsed = timeutil.parse_time_bound(value, "fromTime", end=end)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (datetime(2026, 1, 31), "the datetime has no UTC offset"),
        (20260131, "not a date or timestamp"),
        (None, "not a date or timestamp"),
        ("2026-13-01", "not a calendar date"),
        (date(9999, 12, 31), "last representable day"),
    ],
)
def test_unreadable_bounds_name_the_field(value, reason):
    with pytest.raises(BadUserInput) as info:
        timeutil.parse_time_bound(value, "toTime", end=True)
    assert info.value.field == "toTime"
    assert info.value.message.startswith("toTime: ")
    assert reason in info.value.message
    assert "2026-01-31" in info.value.message  # the example of a date that works
