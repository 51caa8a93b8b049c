"""The kinds table: each row is whole and consistent, and what it says reaches the
file names, the emails and the policy."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from logexport.config import Settings
from logexport.db import q
from logexport.exports.filenames import export_file_name
from logexport.exports.mailer import (
    ExportFacts,
    Recipient,
    build_failed_message,
    build_ready_message,
)
from logexport.exports.models import ExportKind
from logexport.kinds import LOG_KINDS, console_kinds, log_kind
from logexport.policy import Role, allows

SETTINGS = Settings(
    base_url="https://logs.example.test",
    mail_from="logexport@example.test",
    smtp_url="smtp://127.0.0.1:2525",
)


def test_every_kind_has_one_row_keyed_by_itself() -> None:
    assert set(LOG_KINDS) == set(ExportKind)
    for kind, row in LOG_KINDS.items():
        assert row.kind is kind
        assert log_kind(kind.value) is row
        assert log_kind(kind.value.lower()) is row
    with pytest.raises(ValueError):
        log_kind("USERS")


@pytest.mark.parametrize("kind", list(ExportKind))
def test_every_column_comes_from_the_packed_fields_a_json_value_or_the_organization(
    kind: ExportKind,
) -> None:
    row = LOG_KINDS[kind]
    assert row.columns[:3] == ("id", "organization_id", "created_at")
    assert len(set(row.columns)) == len(row.columns)
    assert set(row.nullable_fields) <= set(row.packed_fields)
    # What the packed value does not hold arrives as a JSON value of its own.
    unpacked = set(row.columns) - set(row.packed_fields) - {"organization_id"}
    assert unpacked <= row.json_columns <= set(row.columns)
    # The packed fields and the JSON columns follow the file order.
    assert [c for c in row.columns if c in row.packed_fields] == list(row.packed_fields)


@pytest.mark.parametrize("kind", list(ExportKind))
def test_named_queries_exist_and_filters_parse_their_own_fields(kind: ExportKind) -> None:
    row = LOG_KINDS[kind]
    assert q(row.jsonl_query)
    assert q(row.csv_query)
    assert q(row.exact_query)
    assert row.filter_type.parse(None) == row.filter_type()
    assert row.filter_type.parse({}).to_json() == {}


def test_actions_follow_the_policy() -> None:
    for row in LOG_KINDS.values():
        assert row.list_action != row.export_action
        assert allows(Role.VIEWER, row.list_action)
        assert not allows(Role.VIEWER, row.export_action)
        assert allows(Role.ADMIN, row.export_action)


@pytest.mark.parametrize(
    ("kind", "file_name"),
    [
        (ExportKind.AUDIT_LOG, "audit-log-export-2026-01-01-to-2026-01-31.csv.gz"),
        (ExportKind.SCIM_EVENT, "scim-event-export-2026-01-01-to-2026-01-31.csv.gz"),
    ],
)
def test_file_names_start_with_the_kind_stem(kind: ExportKind, file_name: str) -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    assert export_file_name(kind, start, end, "CSV", "GZIP") == file_name


def _facts(kind: ExportKind) -> ExportFacts:
    return ExportFacts(
        export_id=UUID("0c6f2d4e-7a51-4c8e-9a0b-1d2e3f405162"),
        kind=kind.value,
        from_time=datetime(2026, 1, 1, tzinfo=UTC),
        to_time=datetime(2026, 2, 1, tzinfo=UTC),
        format="JSONL",
        compression="NONE",
        csv_bom=False,
        filter={},
        file_name="x.jsonl",
        row_count=2,
        byte_size=10,
        sha256="0" * 64,
        expires_at=datetime(2026, 2, 2, tzinfo=UTC),
        error_code="E",
        error_message="broken",
    )


@pytest.mark.parametrize(
    ("kind", "ready", "failed", "rows"),
    [
        (
            ExportKind.AUDIT_LOG,
            "Your audit log export is ready",
            "Your audit log export failed",
            "audit log entries",
        ),
        (
            ExportKind.SCIM_EVENT,
            "Your SCIM event export is ready",
            "Your SCIM event export failed",
            "SCIM events",
        ),
    ],
)
def test_emails_name_the_kind(kind: ExportKind, ready: str, failed: str, rows: str) -> None:
    recipient = Recipient("ada@example.test", "Ada")
    ready_mail = build_ready_message(SETTINGS, recipient, _facts(kind), "https://x.test/d")
    failed_mail = build_failed_message(SETTINGS, recipient, _facts(kind))
    assert ready_mail["Subject"] == ready
    assert failed_mail["Subject"] == failed
    body = ready_mail.get_body(("plain",))
    assert body is not None
    assert rows in body.get_content()


def test_download_page_titles_the_rows() -> None:
    assert LOG_KINDS[ExportKind.AUDIT_LOG].rows_title == "Audit log entries"
    assert LOG_KINDS[ExportKind.SCIM_EVENT].rows_title == "SCIM events"


@pytest.mark.parametrize("kind", list(ExportKind))
def test_the_consoles_filter_fields_are_the_filters_own(kind: ExportKind) -> None:
    row = LOG_KINDS[kind]
    values: dict[str, object] = {}
    for field in row.filter_fields:
        value: object = int(field.example) if field.integer else field.example
        values[field.key] = [value] if field.many else value
    parsed = row.filter_type.parse(values)
    assert list(parsed.to_json()) == [field.key for field in row.filter_fields]
    assert parsed.to_json() == values
    console = console_kinds()[kind.value]["filterFields"]
    assert isinstance(console, list)
    assert [field["key"] for field in console] == list(values)
