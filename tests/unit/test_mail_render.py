"""What the export emails say, and that a hostile name cannot change what they are."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from uuid import UUID

import pytest

from logexport.config import Settings
from logexport.exports.describe import human_size
from logexport.exports.mailer import (
    ExportFacts,
    MailError,
    Recipient,
    SmtpTarget,
    build_failed_message,
    build_ready_message,
)

SETTINGS = Settings(
    base_url="https://logs.example.test",
    mail_from="logexport@example.test",
    smtp_url="smtp://127.0.0.1:2525",
)
EXPORT_ID = UUID("0c6f2d4e-7a51-4c8e-9a0b-1d2e3f405162")
LINK = f"https://logs.example.test/exports/{EXPORT_ID}/download?token=abc_DEF-123"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def facts(kind: str = "AUDIT_LOG", **changes: object) -> ExportFacts:
    values: dict[str, object] = {
        "export_id": EXPORT_ID,
        "kind": kind,
        "from_time": datetime(2026, 1, 1, tzinfo=UTC),
        "to_time": datetime(2026, 2, 1, tzinfo=UTC),
        "format": "CSV",
        "compression": "GZIP",
        "csv_bom": False,
        "filter": {"actions": ["user.login", "user.logout"]},
        "file_name": "audit-log-export-2026-01-01-to-2026-01-31.csv.gz",
        "row_count": 1234567,
        "byte_size": 3_456_789,
        "sha256": SHA,
        "expires_at": datetime(2026, 2, 2, 9, 30, 15, tzinfo=UTC),
        "error_code": None,
        "error_message": None,
    }
    values.update(changes)
    return ExportFacts(**values)  # type: ignore[arg-type]


def ready(recipient: Recipient | None = None, kind: str = "AUDIT_LOG") -> EmailMessage:
    return build_ready_message(
        SETTINGS, recipient or Recipient("ada@example.test", "Ada Lovelace"), facts(kind), LINK
    )


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def reparsed(message: EmailMessage) -> EmailMessage:
    """The message as a receiving server would see it."""
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        ("AUDIT_LOG", "Your audit log export is ready"),
        ("SCIM_EVENT", "Your SCIM event export is ready"),
    ],
)
def test_ready_subject_names_the_kind(kind: str, subject: str) -> None:
    assert ready(kind=kind)["Subject"] == subject


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        ("AUDIT_LOG", "Your audit log export failed"),
        ("SCIM_EVENT", "Your SCIM event export failed"),
    ],
)
def test_failed_subject_names_the_kind(kind: str, subject: str) -> None:
    message = build_failed_message(
        SETTINGS, Recipient("ada@example.test", "Ada"), facts(kind, error_message="boom")
    )
    assert message["Subject"] == subject


def test_ready_email_shows_every_fact_in_both_parts() -> None:
    message = ready()
    assert message["From"] == "logexport@example.test"
    assert message["To"] == "Ada Lovelace <ada@example.test>"
    for body in parts(message):
        assert "Ada Lovelace" in body
        assert "2026-01-01T00:00:00Z" in body and "inclusive" in body
        assert "2026-02-01T00:00:00Z" in body and "exclusive" in body
        assert "2026-01-01 through 2026-01-31" in body
        assert "CSV, gzip-compressed" in body
        assert "1,234,567" in body
        assert "3.3 MiB" in body and "3,456,789 bytes" in body
        assert SHA in body
        assert LINK in body
        assert "2026-02-02T09:30:15Z" in body
        assert "Monday, 2 February 2026, 09:30:15 UTC" in body
        assert "audit-log-export-2026-01-01-to-2026-01-31.csv.gz" in body
        assert "user.login, user.logout" in body


def test_ready_email_link_survives_transfer_encoding() -> None:
    text, html = parts(reparsed(ready()))
    assert LINK in text
    assert f'href="{LINK}"' in html


def test_failed_email_gives_reason_and_says_it_can_be_requested_again() -> None:
    message = build_failed_message(
        SETTINGS,
        Recipient("ada@example.test", "Ada"),
        facts("SCIM_EVENT", error_message="The export failed after 5 attempts."),
    )
    for body in parts(message):
        assert "The export failed after 5 attempts." in body
        assert "request the export again" in body
        assert "https://logs.example.test/console" in body
        assert "2026-01-01T00:00:00Z" in body


def test_hostile_name_is_escaped_in_html_and_plain_in_text() -> None:
    text, html = parts(ready(Recipient("eve@example.test", '<script>alert("x")</script>')))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert '<script>alert("x")</script>' in text


def test_error_message_is_escaped_in_html() -> None:
    message = build_failed_message(
        SETTINGS, Recipient("ada@example.test", "Ada"), facts(error_message="<img src=x onerror=1>")
    )
    _, html = parts(message)
    assert "<img" not in html and "&lt;img src=x onerror=1&gt;" in html


def test_linebreaks_in_name_cannot_add_a_header() -> None:
    hostile = Recipient("eve@example.test", "Eve\r\nBcc: victim@example.test\r\n\r\nhello")
    received = reparsed(ready(hostile))
    assert received["Bcc"] is None
    assert received.get_all("To") is not None and len(received.get_all("To") or []) == 1
    to = received["To"]
    assert to.addresses[0].addr_spec == "eve@example.test"
    assert "\n" not in str(to) and "\r" not in str(to)
    assert received["Subject"] == "Your audit log export is ready"


def test_linebreak_in_address_is_refused() -> None:
    with pytest.raises(MailError):
        ready(Recipient("eve@example.test\r\nBcc: victim@example.test", "Eve"))


def test_empty_name_greets_without_a_name() -> None:
    text, _ = parts(ready(Recipient("ada@example.test", "")))
    assert text.startswith("Hello,")


def test_human_size() -> None:
    assert human_size(0) == "0 bytes"
    assert human_size(1) == "1 byte"
    assert human_size(1023) == "1023 bytes"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(5 * 1024**3) == "5.0 GiB"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.test", SmtpTarget("mail.example.test", 25)),
        (
            "smtp://u%40x:p%3Aw%2Fd@mail.example.test:2525?starttls=1",
            SmtpTarget("mail.example.test", 2525, "u@x", "p:w/d", starttls=True),
        ),
        (
            "smtp://mail.example.test?starttls=1",
            SmtpTarget("mail.example.test", 587, starttls=True),
        ),
        (
            "smtps://u:p@mail.example.test",
            SmtpTarget("mail.example.test", 465, "u", "p", implicit_tls=True),
        ),
    ],
)
def test_smtp_url_parsing(url: str, expected: SmtpTarget) -> None:
    assert SmtpTarget.from_url(url) == expected


def test_smtp_target_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(SmtpTarget.from_url("smtp://user:s3cret@mail.example.test"))


@pytest.mark.parametrize(
    "url", ["http://mail.example.test", "smtp://", "smtps://h?starttls=1", "smtp://h?tls=1"]
)
def test_smtp_url_rejects_malformed(url: str) -> None:
    with pytest.raises(ValueError):
        SmtpTarget.from_url(url)
