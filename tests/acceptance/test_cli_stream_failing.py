"""A stream whose destination fails, as its owner sees it through ``logexport stream …``
against a running ``logexport serve`` (its worker included), and as its operator reads the
server's log: the failure names the stream, its organization and the delivery; resuming
retries at once; the error stays on show until a delivery succeeds."""

from __future__ import annotations

import json
from typing import Any

from tests.acceptance.test_cli_streams import cli
from tests.support.cli import api
from tests.support.receiver import receiver
from tests.support.world import eventually

SECRET = "failing-hmac-secret-0123456789"
REFUSED = "127.0.0.1 answered HTTP 503"


async def test_a_failing_stream_stays_failing_with_its_error_until_a_delivery_succeeds(
    pool, settings, tmp_path
):
    # A backoff far longer than the test: any prompt retry is the owner's resume.
    private = settings.derive(
        stream_allow_private=True, stream_min_interval=1.0, worker_retry_base=600.0
    )
    with receiver(SECRET) as http:
        http.status = 503
        async with api(pool, private, tmp_path) as server:
            org = str(server.world.organization_id)
            env = server.env(server.world.owner.token)
            created = await cli(
                "stream", "create", "--org", org, "--kind", "audit-log",
                "--https-url", http.url("/in"), "--secret", "-", "--interval", "1s", "--json",
                env=env, stdin=SECRET + "\n",
            )  # fmt: skip
            assert created.code == 0, created.stderr
            stream_id = created.json()["id"]

            async def shown() -> dict[str, Any]:
                result = await cli("stream", "show", stream_id, "--json", env=env)
                assert result.code == 0, result.stderr
                return dict(result.json())

            async def failing() -> dict[str, Any] | None:
                stream = await shown()
                return stream if stream["state"] == "FAILING" else None

            stream = await eventually(failing, timeout=60, interval=0.2, what="FAILING")
            assert stream["lastError"] == REFUSED

            # The operator's log names the organization, the stream and the delivery.
            def failure_lines() -> list[dict[str, Any]]:
                log = (tmp_path / "serve.log").read_text()
                return [
                    json.loads(line)
                    for line in log.splitlines()
                    if "stream delivery failed" in line
                ]

            [line] = await eventually(
                lambda: _async(failure_lines()), timeout=10, what="the failure logged"
            )
            assert line["organization_id"] == org
            assert line["stream_id"] == stream_id
            assert line["sequence"] == 1 and line["delivery_id"]
            assert line["error"] == REFUSED

            # Resuming a FAILING stream tries again now, not in ten minutes, and it stays
            # FAILING since the destination still refuses.
            attempts = len(http.received("/in"))
            resumed = await cli("stream", "resume", stream_id, "--json", env=env)
            assert resumed.code == 0, resumed.stderr
            assert resumed.json()["state"] == "FAILING"
            await eventually(
                lambda: _async(len(http.received("/in")) > attempts),
                timeout=30,
                interval=0.2,
                what="a retry right after resume",
            )
            await eventually(
                lambda: _async(len(failure_lines()) == 2), timeout=10, what="the retry's failure"
            )
            assert (await shown())["lastError"] == REFUSED

            # Paused and resumed, it has still not been seen to work: FAILING, error shown.
            paused = await cli("stream", "pause", stream_id, "--json", env=env)
            assert paused.code == 0, paused.stderr
            assert paused.json()["state"] == "PAUSED"
            http.status = 200
            resumed = await cli("stream", "resume", stream_id, "--json", env=env)
            assert resumed.code == 0, resumed.stderr
            assert (resumed.json()["state"], resumed.json()["lastError"]) == ("FAILING", REFUSED)

            async def active() -> dict[str, Any] | None:
                stream = await shown()
                return stream if stream["state"] == "ACTIVE" else None

            # The destination is back: the first delivery that succeeds clears the error.
            stream = await eventually(active, timeout=30, interval=0.2, what="ACTIVE again")
            assert stream["lastError"] is None
            assert http.accepted("/in")


async def _async(value: Any) -> Any:
    return value
