"""A display name carrying CR/LF cannot add mail headers or recipients.

The identity writers refuse control characters in names, but rows written by older
versions or other tools may still hold them; the mailer must not trust them either. This
module's application mails through an SMTP server of its own that records every
envelope, so an injected ``Bcc`` would show as a second recipient even after the client
strips the header.
"""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from devtools import services
from logexport import identity
from logexport.errors import BadUserInput
from logexport.policy import Role
from tests.abuse.conftest import Stack
from tests.support.world import eventually, wait_for_status

HOSTILE_NAME = "Mallory\r\nBcc: evil@x.test\r\nSubject: pwned"
HOSTILE_EMAIL = "mallory@acme.test"


@dataclass
class Delivery:
    mail_from: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class RecordingHandler:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.deliveries.append(Delivery(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 2.0.0 OK"


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingHandler]:
    handler = RecordingHandler()
    controller = Controller(
        handler, hostname="127.0.0.1", port=services.free_port(), ready_timeout=10
    )
    controller.start()
    handler.url = f"smtp://127.0.0.1:{controller.port}"
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def stack_smtp_url(recorder: RecordingHandler) -> str:
    return recorder.url


async def test_the_identity_writers_refuse_the_name(stack: Stack):
    async with stack.pool.acquire() as conn:
        with pytest.raises(BadUserInput) as refused:
            await identity.create_user(conn, "other@acme.test", HOSTILE_NAME)
    assert refused.value.field == "name"


async def test_a_crlf_display_name_adds_no_header_and_no_recipient(
    stack: Stack, recorder: RecordingHandler
):
    async with stack.pool.acquire() as conn:
        # Written around the validating writer, as a legacy row would be.
        user_id = await conn.fetchval(
            "INSERT INTO users (email, full_name) VALUES ($1, $2) RETURNING id",
            HOSTILE_EMAIL,
            HOSTILE_NAME,
        )
        await identity.add_member(conn, stack.world.organization_id, user_id, Role.ADMIN)
        _, token = await identity.create_api_key(conn, user_id, "mallory", None)
    body = await stack.gql(
        token,
        """mutation($input: RequestAuditLogExportInput!) {
             requestAuditLogExport(input: $input) { logExport { id requestedBy { fullName } } }
           }""",
        {
            "input": {
                "organizationId": str(stack.world.organization_id),
                "fromTime": "2026-01-01T00:00:00Z",
                "toTime": "2026-02-01T00:00:00Z",
            }
        },
    )
    assert "errors" not in body, body
    export_id = body["data"]["requestAuditLogExport"]["logExport"]["id"]
    await wait_for_status(stack.pool, export_id, "COMPLETED", timeout=60)

    def mentions_export(delivery: Delivery) -> bool:
        body = delivery.message.get_body(("plain",))
        return body is not None and export_id in body.get_content()

    async def delivered() -> Delivery | None:
        with recorder.lock:
            return next((d for d in recorder.deliveries if mentions_export(d)), None)

    delivery = await eventually(delivered, timeout=30, what="the ready email")
    message = delivery.message
    assert delivery.recipients == [HOSTILE_EMAIL]
    assert message.get_all("Bcc") is None
    assert message.get_all("Cc") is None
    assert len(message.get_all("To") or []) == 1
    assert [a.addr_spec for a in message["To"].addresses] == [HOSTILE_EMAIL]
    assert len(message.get_all("Subject") or []) == 1
    assert "pwned" not in message["Subject"]
    # The name survives only as a quoted display name, on one line.
    assert "\n" not in str(message["To"]) and "\r" not in str(message["To"])
    assert not any("evil@x.test" in d.recipients for d in recorder.deliveries)
