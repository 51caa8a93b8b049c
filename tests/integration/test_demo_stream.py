"""The demo's log stream step against the real application served on a port: the owner's
stream over GraphQL, its first delivery at the demo's endpoint, verified."""

from __future__ import annotations

import dataclasses
import re

import asyncpg
import pytest

from logexport import identity
from logexport.cli.demo_stream import (
    Received,
    StreamDemoFailed,
    check_delivery,
    show_stream_delivery,
)
from logexport.config import Settings
from logexport.manifests import generate_signing_key
from tests.support.app import running_app


@pytest.fixture
def demo_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        signing_key=generate_signing_key(),
        stream_allow_private=True,
        stream_min_interval=2.0,
    )


async def test_stream_step_shows_one_verified_delivery_and_replaces_an_earlier_runs_stream(
    pool: asyncpg.Pool, demo_settings: Settings, database_url: str
) -> None:
    async with pool.acquire() as conn:
        org = await identity.create_organization(conn, "Acme Corp")
    lines: list[str] = []
    async with running_app(demo_settings, pool) as base_url:
        await show_stream_delivery(base_url, database_url, org.id, lines.append)
        first = "\n".join(lines)
        lines.clear()
        await show_stream_delivery(base_url, database_url, org.id, lines.append)
        second = "\n".join(lines)

    for output in (first, second):
        assert re.search(r"created as owner@acme\.example \(owner\)", output), output
        assert re.search(
            r"sequence \d+: [1-9]\d* rows, HMAC signature verified, manifest signed by key "
            r"[0-9a-f]{16} verified",
            output,
        ), output
        assert "demo.stream.hello" in output
    assert "of an earlier demo run" not in first
    assert re.search(r"deleted stream [0-9a-f-]{36} of an earlier demo run", second), second
    async with pool.acquire() as conn:
        live = await conn.fetchval(
            "SELECT count(*) FROM log_streams WHERE organization_id = $1 AND deleted_at IS NULL",
            org.id,
        )
    assert live == 1


def test_a_body_that_does_not_match_its_signature_is_refused() -> None:
    received = Received(
        {"x-logexport-signature": "sha256=" + "0" * 64, "x-logexport-sequence": "1"}, b"body"
    )
    with pytest.raises(StreamDemoFailed, match="X-Logexport-Signature"):
        check_delivery(received, "secret", b'{"keys": []}')
