"""RFC 3339 timestamps as the API speaks them: parsed strictly, always shown in UTC."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Literal

from logexport.errors import BadUserInput

# Strict RFC 3339 date-time: an offset is mandatory and at most microsecond precision is
# accepted, because Postgres stores microseconds and silently rounding a boundary would
# move rows in or out of an export.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$",
    re.ASCII,
)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)

_EXAMPLE = "2026-03-01T00:00:00Z"
_EXPECTED_TIMESTAMP = f"expected RFC 3339, e.g. {_EXAMPLE}"
_EXPECTED_BOUND = f"expected a date such as 2026-01-31 or RFC 3339, e.g. {_EXAMPLE}"


def _reject(field: str, reason: str, expected: str = _EXPECTED_TIMESTAMP) -> BadUserInput:
    return BadUserInput(f"{field}: {reason} ({expected})", field=field)


def parse_rfc3339(text: str, field: str) -> datetime:
    """Parse an RFC 3339 timestamp with offset into an aware UTC ``datetime``.

    Raises ``BadUserInput`` naming ``field`` for anything else: no offset, more than
    six fractional digits, ``24:00``, leap seconds, impossible dates, years outside 1..9999.
    """
    return _parse_rfc3339(text, field, _EXPECTED_TIMESTAMP)


def parse_time_bound(value: str | date | datetime, field: str, *, end: bool) -> datetime:
    """One end of a range as an aware UTC ``datetime``: a UTC day or an exact instant.

    A day (``"2026-01-31"`` or a ``date``) is a UTC day: as a start it begins at its
    midnight; as an end (``end=True``) it includes the whole day, so the exclusive end is
    the next midnight. An aware ``datetime`` or an RFC 3339 string with an offset is taken
    exactly at either end. The CLI's ``--from``/``--to`` and the library client both read
    their bounds here, so both accept the same forms. Raises ``BadUserInput`` naming
    ``field``.
    """
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise _reject(field, "the datetime has no UTC offset", _EXPECTED_BOUND)
        try:
            return value.astimezone(UTC)
        except (ValueError, OverflowError):
            raise _reject(field, "date out of range", _EXPECTED_BOUND) from None
    if isinstance(value, date):
        return _day_bound(value, field, end=end)
    if not isinstance(value, str):
        raise _reject(field, "not a date or timestamp", _EXPECTED_BOUND)
    text = value.strip()
    if _DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise _reject(field, f"{text} is not a calendar date", _EXPECTED_BOUND) from None
        return _day_bound(day, field, end=end)
    return _parse_rfc3339(text, field, _EXPECTED_BOUND)


def _day_bound(day: date, field: str, *, end: bool) -> datetime:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    if not end:
        return start
    try:
        return start + timedelta(days=1)
    except OverflowError:
        raise _reject(field, f"{day} is the last representable day", _EXPECTED_BOUND) from None


def _parse_rfc3339(text: str, field: str, expected: str) -> datetime:
    if not isinstance(text, str):
        raise _reject(field, "not a timestamp", expected)
    match = _RFC3339.match(text.strip())
    if not match:
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", text.strip()):
            raise _reject(field, "the timestamp has no UTC offset", expected)
        raise _reject(field, "not a valid timestamp", expected)
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    if len(fraction) > 6:
        raise _reject(field, "more than 6 fractional digits", expected)
    if hour > 23 or minute > 59 or second > 59:
        raise _reject(field, "time of day out of range", expected)
    if match.group(8):
        offset = timedelta(0)
    else:
        off_hours, off_minutes = int(match.group(10)), int(match.group(11))
        if off_hours > 23 or off_minutes > 59:
            raise _reject(field, "UTC offset out of range", expected)
        offset = timedelta(hours=off_hours, minutes=off_minutes)
        if match.group(9) == "-":
            offset = -offset
    try:
        local = datetime(
            year,
            month,
            day,
            hour,
            minute,
            second,
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=timezone(offset),
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _reject(field, "date out of range", expected) from None


def format_rfc3339(moment: datetime, *, fraction: Literal["always", "if_any"] = "always") -> str:
    """The instant in UTC with a ``Z``, e.g. ``2026-03-01T00:00:00.000000Z``.

    ``fraction="always"`` (the API, files, the CLI) writes six fractional digits, so every
    timestamp has the same width and sorts as text. ``fraction="if_any"`` (what people
    read: emails, the download page) drops them when they are all zero, as in
    ``2026-03-01T00:00:00Z``.
    """
    if moment.tzinfo is None:
        raise ValueError("naive datetimes have no defined instant")
    utc = moment.astimezone(UTC)
    if fraction == "if_any" and not utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_readable(moment: datetime) -> str:
    """The instant in UTC as a person reads it: ``Monday, 2 February 2026, 09:30:15 UTC``."""
    utc = moment.astimezone(UTC)
    return f"{utc:%A}, {utc.day} {utc:%B %Y}, {utc:%H:%M:%S} UTC"


def utc_now() -> datetime:
    return datetime.now(UTC)
