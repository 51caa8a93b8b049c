from datetime import UTC, datetime, timedelta, timezone

import pytest

from logexport.errors import BadUserInput
from logexport.timeutil import format_readable, format_rfc3339, parse_rfc3339, utc_now


def test_z_offset_parses_to_utc():
    assert parse_rfc3339("2026-03-01T00:00:00Z", "fromTime") == datetime(2026, 3, 1, tzinfo=UTC)


def test_positive_offset_is_honored():
    parsed = parse_rfc3339("2026-03-01T05:30:00+05:30", "fromTime")
    assert parsed == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert parsed.utcoffset().total_seconds() == 0


def test_negative_offset_crosses_midnight():
    assert parse_rfc3339("2026-02-28T23:00:00-02:00", "toTime") == datetime(
        2026, 3, 1, 1, 0, tzinfo=UTC
    )


def test_leap_day_in_leap_year_is_accepted():
    assert parse_rfc3339("2024-02-29T12:00:00Z", "fromTime").day == 29


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29T00:00:00Z",  # not a leap year
        "2026-03-01T24:00:00Z",  # 24:00 is not a time of day here
        "2026-03-01T00:00:00",  # no offset
        "2026-03-01",  # a date alone
        "2026-03-01T00:00:00.1234567Z",  # 7 fractional digits
        "2026-03-01T00:00:60Z",  # leap second
        "2026-03-01T00:00:00+24:00",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
        "9999-12-31T23:00:00-05:00",  # after year 9999 once in UTC
        "yesterday",
        "",
    ],
)
def test_invalid_timestamps_are_rejected_naming_the_field(text):
    with pytest.raises(BadUserInput) as info:
        parse_rfc3339(text, "fromTime")
    assert info.value.field == "fromTime"
    assert "fromTime" in info.value.message


def test_missing_offset_message_says_so():
    with pytest.raises(BadUserInput, match="no UTC offset"):
        parse_rfc3339("2026-03-01T00:00:00", "toTime")


def test_six_fractional_digits_are_kept_exactly():
    parsed = parse_rfc3339("2026-03-01T00:00:00.000001Z", "fromTime")
    assert parsed.microsecond == 1
    assert parse_rfc3339("2026-03-01T00:00:00.5Z", "fromTime").microsecond == 500000


def test_format_is_utc_with_six_digits_and_z():
    assert format_rfc3339(datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01T00:00:00.000000Z"
    parsed = parse_rfc3339("2026-03-01T05:30:00.25+05:30", "x")
    assert format_rfc3339(parsed) == "2026-03-01T00:00:00.250000Z"


def test_format_rejects_naive_datetimes():
    with pytest.raises(ValueError):
        format_rfc3339(datetime(2026, 3, 1))


def test_utc_now_is_aware_utc():
    assert utc_now().utcoffset().total_seconds() == 0


def test_format_for_people_drops_an_all_zero_fraction_only():
    whole = datetime(2026, 2, 2, 9, 30, 15, tzinfo=UTC)
    assert format_rfc3339(whole, fraction="if_any") == "2026-02-02T09:30:15Z"
    assert format_rfc3339(whole.replace(microsecond=250000), fraction="if_any") == (
        "2026-02-02T09:30:15.250000Z"
    )


def test_readable_time_names_the_weekday_and_utc():
    moment = datetime(2026, 2, 2, 10, 30, 15, tzinfo=timezone(timedelta(hours=1)))
    assert format_readable(moment) == "Monday, 2 February 2026, 09:30:15 UTC"
