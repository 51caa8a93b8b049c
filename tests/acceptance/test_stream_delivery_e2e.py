"""A log stream as an owner lives it: created with ``logexport stream create`` against a
running ``logexport serve`` (its worker included), then new entries arrive at their HTTPS
endpoint in signed, numbered deliveries; pausing holds them, resuming brings them in order."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from tests.acceptance.test_cli_streams import cli
from tests.support.cli import api
from tests.support.receiver import Receiver, receiver
from tests.support.stream_checks import check_chain, distinct_deliveries, write_entries
from tests.support.world import eventually

SECRET = "e2e-hmac-secret-0123456789"


async def _rows(http: Receiver, stream_id: UUID, count: int) -> list[dict[str, Any]]:
    """The rows delivered once at least ``count`` of them are ``user.login`` entries (the
    stream also carries the audit entries of its own management)."""

    async def probe() -> list[dict[str, Any]] | None:
        rows = check_chain(distinct_deliveries(http.received("/in")), stream_id)
        logins = [r for r in rows if r["action"] == "user.login"]
        return rows if len(logins) >= count else None

    return await eventually(probe, timeout=60, interval=0.2, what=f"{count} entries delivered")


def _ids(rows: list[dict[str, Any]], action: str) -> list[str]:
    return [r["id"] for r in rows if r["action"] == action]


async def test_new_entries_reach_the_owners_endpoint_signed_in_order_and_wait_while_paused(
    pool, settings, tmp_path
):
    private = settings.derive(stream_allow_private=True, stream_min_interval=1.0, stream_max_rows=5)
    with receiver(SECRET) as http:
        async with api(pool, private, tmp_path) as server:
            org = server.world.organization_id
            env = server.env(server.world.owner.token)
            created = await cli(
                "stream", "create", "--org", str(org), "--kind", "audit-log",
                "--https-url", http.url("/in"), "--secret", "-", "--interval", "1s", "--json",
                env=env, stdin=SECRET + "\n",
            )  # fmt: skip
            assert created.code == 0, created.stderr
            stream_id = UUID(created.json()["id"])

            async with pool.acquire() as conn:
                written = await write_entries(conn, org, 12)
            rows = await _rows(http, stream_id, 12)
            # Entries seeded before the stream was created are not streamed; its own creation,
            # audited after it, is.
            assert _ids(rows, "user.login") == sorted(str(i) for i in written)
            assert [r["action"] for r in rows].count("iam:log-stream:create") == 1
            assert len(rows) == 13

            paused = await cli("stream", "pause", str(stream_id), env=env)
            assert paused.code == 0, paused.stderr
            async with pool.acquire() as conn:
                held = await write_entries(conn, org, 3)
            before = len(http.received("/in"))
            # Three intervals go by: a running stream would have delivered by now.
            await asyncio.sleep(3.5)
            assert len(http.received("/in")) == before

            resumed = await cli("stream", "resume", str(stream_id), env=env)
            assert resumed.code == 0, resumed.stderr
            rows = await _rows(http, stream_id, 15)
            assert _ids(rows, "user.login")[12:] == sorted(str(i) for i in held)
            assert len({r["id"] for r in rows}) == len(rows)

            shown = await cli("stream", "show", str(stream_id), env=env)
            assert shown.code == 0, shown.stderr
            assert f"audit-log stream {stream_id}: ACTIVE" in shown.stdout
            assert SECRET not in shown.stdout + shown.stderr
