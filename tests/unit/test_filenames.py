from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from logexport.exports.filenames import (
    content_disposition,
    content_type,
    export_file_name,
    object_key,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_to_time_at_midnight_names_the_previous_day() -> None:
    name = export_file_name("AUDIT_LOG", utc(2026, 1, 1), utc(2026, 2, 1), "JSONL", "NONE")
    assert name == "audit-log-export-2026-01-01-to-2026-01-31.jsonl"


def test_to_time_mid_day_names_that_day() -> None:
    name = export_file_name(
        "SCIM_EVENT", utc(2026, 1, 1, 8), utc(2026, 1, 5, 13, 30), "CSV", "GZIP"
    )
    assert name == "scim-event-export-2026-01-01-to-2026-01-05.csv.gz"


def test_one_microsecond_after_midnight_names_the_new_day() -> None:
    to_time = utc(2026, 2, 1) + timedelta(microseconds=1)
    name = export_file_name("AUDIT_LOG", utc(2026, 1, 1), to_time, "CSV", "NONE")
    assert name.endswith("-to-2026-02-01.csv")


def test_leap_day_is_the_last_day_before_march() -> None:
    name = export_file_name("AUDIT_LOG", utc(2028, 2, 1), utc(2028, 3, 1), "JSONL", "GZIP")
    assert name == "audit-log-export-2028-02-01-to-2028-02-29.jsonl.gz"


def test_same_day_range_names_one_day_twice() -> None:
    name = export_file_name("AUDIT_LOG", utc(2026, 3, 1, 1), utc(2026, 3, 1, 2), "JSONL", "NONE")
    assert name == "audit-log-export-2026-03-01-to-2026-03-01.jsonl"


def test_dates_are_taken_in_utc_whatever_the_offset() -> None:
    plus_two = timezone(timedelta(hours=2))
    from_time = datetime(2026, 1, 1, 1, tzinfo=plus_two)  # 2025-12-31T23:00Z
    to_time = datetime(2026, 2, 1, 2, tzinfo=plus_two)  # 2026-02-01T00:00Z
    name = export_file_name("AUDIT_LOG", from_time, to_time, "JSONL", "NONE")
    assert name == "audit-log-export-2025-12-31-to-2026-01-31.jsonl"


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError):
        export_file_name("AUDIT_LOG", datetime(2026, 1, 1), utc(2026, 2, 1), "JSONL", "NONE")


def test_unknown_kind_or_format_is_refused() -> None:
    with pytest.raises(ValueError):
        export_file_name("USERS", utc(2026, 1, 1), utc(2026, 2, 1), "JSONL", "NONE")
    with pytest.raises(ValueError):
        export_file_name("AUDIT_LOG", utc(2026, 1, 1), utc(2026, 2, 1), "XML", "NONE")
    with pytest.raises(ValueError):
        content_type("CSV", "ZSTD")


def test_content_types() -> None:
    assert content_type("JSONL", "NONE") == "application/x-ndjson"
    assert content_type("CSV", "NONE") == "text/csv; charset=utf-8"
    assert content_type("JSONL", "GZIP") == "application/gzip"
    assert content_type("CSV", "GZIP") == "application/gzip"
    assert content_type("csv", "none") == "text/csv; charset=utf-8"


def test_object_key_holds_export_id_and_attempt() -> None:
    export_id = UUID("3f0c1f9e-8a51-4f51-9f57-2d5b0e2f6a10")
    key = object_key(export_id, 2, "audit-log-export-2026-01-01-to-2026-01-31.jsonl")
    assert key == f"{export_id}/attempt-2/audit-log-export-2026-01-01-to-2026-01-31.jsonl"
    assert object_key(str(export_id), 2, "a.jsonl") == object_key(export_id, 2, "a.jsonl")


def test_object_key_refuses_path_tricks() -> None:
    export_id = UUID("3f0c1f9e-8a51-4f51-9f57-2d5b0e2f6a10")
    for bad in ("../x.jsonl", "a/b.jsonl", "..", ""):
        with pytest.raises(ValueError):
            object_key(export_id, 1, bad)
    with pytest.raises(ValueError):
        object_key("not-a-uuid/..", 1, "a.jsonl")
    with pytest.raises(ValueError):
        object_key(export_id, 0, "a.jsonl")


def test_content_disposition_is_an_attachment_with_both_name_forms() -> None:
    value = content_disposition("audit-log-export-2026-01-01-to-2026-01-31.csv.gz")
    assert value == (
        'attachment; filename="audit-log-export-2026-01-01-to-2026-01-31.csv.gz"; '
        "filename*=UTF-8''audit-log-export-2026-01-01-to-2026-01-31.csv.gz"
    )


def test_content_disposition_cannot_be_broken_out_of() -> None:
    value = content_disposition('x"; filename="evil.html\r\n.csv')
    assert value.startswith('attachment; filename="x_; filename=_evil.html__.csv"; ')
    assert "\r" not in value and "\n" not in value
    assert value.endswith("filename*=UTF-8''x%22%3B%20filename%3D%22evil.html%0D%0A.csv")
