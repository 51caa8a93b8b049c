"""File names, content types and object keys of exported files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from uuid import UUID

from logexport.exports.models import ExportKind
from logexport.kinds import log_kind

_FORMAT_EXTENSION = {"JSONL": "jsonl", "CSV": "csv"}
_FORMAT_CONTENT_TYPE = {"JSONL": "application/x-ndjson", "CSV": "text/csv; charset=utf-8"}
_COMPRESSIONS = ("NONE", "GZIP")


def _utc_date(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must carry a UTC offset")
    return moment.astimezone(UTC).date().isoformat()


def _check_format(format: str, compression: str) -> tuple[str, str]:
    """The canonical (upper-case) format and compression, as stored in ``log_exports``."""
    format, compression = format.upper(), compression.upper()
    if format not in _FORMAT_EXTENSION:
        raise ValueError(f"unknown format {format!r}")
    if compression not in _COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}")
    return format, compression


def export_file_name(
    kind: ExportKind | str, from_time: datetime, to_time: datetime, format: str, compression: str
) -> str:
    """``audit-log-export-2026-01-01-to-2026-01-31.jsonl`` and the like.

    ``to_time`` is exclusive, so the last day named is the one holding its last included
    microsecond: an export up to midnight of Feb 1 ends on Jan 31.
    """
    try:
        stem = log_kind(kind).file_stem
    except ValueError:
        raise ValueError(f"unknown export kind {kind!r}") from None
    format, compression = _check_format(format, compression)
    first_day = _utc_date(from_time)
    last_day = _utc_date(to_time - timedelta(microseconds=1))
    extension = _FORMAT_EXTENSION[format] + (".gz" if compression == "GZIP" else "")
    return f"{stem}-{first_day}-to-{last_day}.{extension}"


def content_type(format: str, compression: str) -> str:
    """The stored object's Content-Type; gzip is the file's type, never a Content-Encoding."""
    format, compression = _check_format(format, compression)
    if compression == "GZIP":
        return "application/gzip"
    return _FORMAT_CONTENT_TYPE[format]


def object_key(export_id: UUID | str, attempt: int, file_name: str, claim: str = "") -> str:
    """A storage key unique to one attempt, so only the fenced commit adopts an object.

    ``claim`` tells apart claims that share an attempt number: a shutdown hand-back gives
    the attempt back, so the next claim runs under the same number and must not reuse (or
    have the sweeper delete) the key of the upload that was handed back.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if "/" in file_name or file_name in ("", ".", ".."):
        raise ValueError("file name must be a single path segment")
    if claim and not claim.isalnum():
        raise ValueError("claim must be letters and digits")
    suffix = f"-{claim}" if claim else ""
    return f"{UUID(str(export_id))}/attempt-{attempt}{suffix}/{file_name}"


def content_disposition(file_name: str) -> str:
    """``attachment`` with both the plain and the RFC 5987 form of the name.

    Export names are ASCII already; the plain form still drops anything that could break
    out of the quoted string, and ``filename*`` carries the exact name.
    """
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in file_name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(file_name, safe='')}"
