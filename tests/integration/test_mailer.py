"""Export emails through a real SMTP server, built from real export rows."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import asyncpg
import pytest

from devtools.services import SmtpSink, free_port
from logexport.config import Settings
from logexport.exports import delivery, downloads
from logexport.exports.mailer import MailError, SmtpTarget, send_message, send_to

BASE_URL = "https://logs.example.test"


def mail_settings(smtp_url: str) -> Settings:
    return Settings(base_url=BASE_URL, mail_from="logexport@example.test", smtp_url=smtp_url)


async def completed_export(conn: asyncpg.Connection, email: str) -> UUID:
    org_id = await conn.fetchval("INSERT INTO organizations (name) VALUES ('Acme') RETURNING id")
    user_id = await conn.fetchval(
        "INSERT INTO users (email, full_name) VALUES ($1, 'Grace Hopper') RETURNING id", email
    )
    await conn.execute(
        "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'ADMIN')",
        org_id,
        user_id,
    )
    export_id: UUID = await conn.fetchval(
        """
        INSERT INTO log_exports (organization_id, kind, status, from_time, to_time, requested_by,
                                 storage_key, file_name, content_type, byte_size, row_count,
                                 sha256, completed_at, expires_at, error_message)
        VALUES ($1, 'SCIM_EVENT', 'COMPLETED', '2026-03-01T00:00:00Z', '2026-03-08T00:00:00Z',
                $2, 'k/attempt-1/f.jsonl', 'scim-event-export-2026-03-01-to-2026-03-07.jsonl',
                'application/x-ndjson', 2048, 7, $3, now(), now() + interval '1 day',
                'Storage was unavailable; try again.')
        RETURNING id
        """,
        org_id,
        user_id,
        "ab" * 32,
    )
    return export_id


def plain_message(to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "logexport@example.test"
    message["To"] = to
    message["Subject"] = "A test message"
    message.set_content("Hello")
    return message


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    content: str = part.get_content()
    return content


def unique_email() -> str:
    return f"user-{secrets.token_hex(4)}@example.test"


async def test_ready_email_arrives_with_a_working_link(
    pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    email = unique_email()
    settings = mail_settings(smtp_sink.url)
    async with pool.acquire() as conn:
        export_id = await completed_export(conn, email)
        message = await delivery.compose_ready_email(conn, settings, export_id)
    await send_message(settings, message)

    received = await smtp_sink.wait_for(lambda m: email in str(m["To"]))
    assert received["Subject"] == "Your SCIM event export is ready"
    assert received["To"].addresses[0].display_name == "Grace Hopper"
    text = plain_text(received)
    link = next(word for word in text.split() if word.startswith(f"{BASE_URL}/exports/"))
    parts = urlsplit(link)
    assert parts.path == f"/exports/{export_id}/download"
    token = parse_qs(parts.query)["token"][0]
    assert len(token) >= 22  # at least 128 bits in base64url
    async with pool.acquire() as conn:
        match = await downloads.resolve_download_token(conn, export_id, token)
        stored = await conn.fetchval(
            "SELECT count(*) FROM log_export_download_tokens WHERE token_hash = $1",
            token.encode(),
        )
    assert match is not None and match.purpose == "EMAIL"
    assert stored == 0, "the token must be stored hashed, never in clear"


async def test_failed_email_arrives_with_the_reason(
    pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    email = unique_email()
    settings = mail_settings(smtp_sink.url)
    async with pool.acquire() as conn:
        export_id = await completed_export(conn, email)
        message = await delivery.compose_failed_email(conn, settings, export_id)
    await send_message(settings, message)

    received = await smtp_sink.wait_for(lambda m: email in str(m["To"]))
    assert received["Subject"] == "Your SCIM event export failed"
    assert "Storage was unavailable; try again." in plain_text(received)


async def test_temporary_refusal_raises_mail_error(pool: asyncpg.Pool, smtp_sink: SmtpSink) -> None:
    email = unique_email()
    settings = mail_settings(smtp_sink.url)
    async with pool.acquire() as conn:
        message = await delivery.compose_failed_email(
            conn, settings, await completed_export(conn, email)
        )
    smtp_sink.fail_next(1)
    with pytest.raises(MailError) as raised:
        await send_message(settings, message)
    assert "451" in raised.value.message
    assert not raised.value.permanent
    assert not [m for m in smtp_sink.messages() if email in str(m["To"])]

    await send_message(settings, message)  # the next attempt goes through
    await smtp_sink.wait_for(lambda m: email in str(m["To"]))


async def test_mail_error_never_shows_the_password(smtp_sink: SmtpSink) -> None:
    message = plain_message(unique_email())
    # The sink offers no AUTH, so logging in fails after the connection is made.
    target = SmtpTarget.from_url(f"smtp://alice:hunter2-secret@{smtp_sink.host}:{smtp_sink.port}")
    with pytest.raises(MailError) as raised:
        await send_to(target, message)
    assert "hunter2-secret" not in str(raised.value)
    assert "alice" not in str(raised.value)


async def test_unreachable_server_raises_mail_error() -> None:
    settings = mail_settings(f"smtp://127.0.0.1:{free_port()}")
    message = plain_message(unique_email())
    started = datetime.now(UTC)
    with pytest.raises(MailError) as raised:
        await send_message(settings, message)
    assert "127.0.0.1" in raised.value.message
    assert datetime.now(UTC) - started < timedelta(seconds=10)
