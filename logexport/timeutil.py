"""RFC 3339 timestamps as the API speaks them: parsed strictly, always shown in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from logexport.errors import BadUserInput

# Strict RFC 3339 date-time: an offset is mandatory and at most microsecond precision is
# accepted, because Postgres stores microseconds and silently rounding a boundary would
# move rows in or out of an export.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$",
    re.ASCII,
)

_EXAMPLE = "2026-03-01T00:00:00Z"


def _reject(field: str, reason: str) -> BadUserInput:
    return BadUserInput(f"{field}: {reason} (expected RFC 3339, e.g. {_EXAMPLE})", field=field)


def parse_rfc3339(text: str, field: str) -> datetime:
    """Parse an RFC 3339 timestamp with offset into an aware UTC ``datetime``.

    Raises ``BadUserInput`` naming ``field`` for anything else: no offset, more than
    six fractional digits, ``24:00``, leap seconds, impossible dates, years outside 1..9999.
    """
    if not isinstance(text, str):
        raise _reject(field, "not a timestamp")
    match = _RFC3339.match(text.strip())
    if not match:
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", text.strip()):
            raise _reject(field, "the timestamp has no UTC offset")
        raise _reject(field, "not a valid timestamp")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    if len(fraction) > 6:
        raise _reject(field, "more than 6 fractional digits")
    if hour > 23 or minute > 59 or second > 59:
        raise _reject(field, "time of day out of range")
    if match.group(8):
        offset = timedelta(0)
    else:
        off_hours, off_minutes = int(match.group(10)), int(match.group(11))
        if off_hours > 23 or off_minutes > 59:
            raise _reject(field, "UTC offset out of range")
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
        raise _reject(field, "date out of range") from None


def format_rfc3339(dt: datetime) -> str:
    """``2026-03-01T00:00:00.000000Z``: UTC, six fractional digits, ``Z``."""
    if dt.tzinfo is None:
        raise ValueError("naive datetimes have no defined instant")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> datetime:
    return datetime.now(UTC)
