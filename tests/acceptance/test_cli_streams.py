"""``logexport stream …`` as a user runs it: subprocesses against ``logexport serve``."""

from __future__ import annotations

import asyncio
import json

from tests.support.cli import REPO, Result, api, logexport_command, run_logexport
from tests.support.receiver import receiver

COMMAND_TIMEOUT = 60
SECRET = "cli-hmac-secret-0123456789"
S3_SECRET = "cli-aws-secret-key-abcdefghijkl"


async def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> Result:
    """``logexport *args``; ``stdin`` is what the command reads from standard input."""
    if stdin is None:
        return await run_logexport(*args, env=env, timeout=COMMAND_TIMEOUT)
    process = await asyncio.create_subprocess_exec(
        *logexport_command(),
        *args,
        env=env,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), COMMAND_TIMEOUT)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


async def test_owner_creates_tests_pauses_resumes_and_deletes_a_stream(pool, settings, tmp_path):
    private = settings.derive(stream_allow_private=True, stream_min_interval=1.0)
    async with api(pool, private, tmp_path, "--no-worker") as server:
        org = str(server.world.organization_id)
        env = server.env(server.world.owner.token)
        outputs: list[Result] = []
        with receiver(SECRET) as http:
            url = http.url()
            created = await cli(
                "stream", "create", "--org", org, "--kind", "audit-log", "--https-url", url,
                "--secret", "-", "--interval", "2m", "--action", "user.login", "--json",
                env=env, stdin=SECRET + "\n",
            )  # fmt: skip
            outputs.append(created)
            assert created.code == 0, created.stderr
            stream = created.json()
            stream_id = stream["id"]
            assert (stream["state"], stream["intervalSeconds"]) == ("ACTIVE", 120)
            assert stream["filter"] == {"actions": ["user.login"]}

            tested = await cli("stream", "test", stream_id, env=env)
            outputs.append(tested)
            assert tested.code == 0, tested.stderr
            assert tested.stdout.strip().endswith(": DELIVERED")
            [received] = http.received()
            assert received.headers["x-logexport-sequence"] == "test"

        listed = await cli("stream", "list", "--org", org, env=env)
        outputs.append(listed)
        assert listed.code == 0, listed.stderr
        header, row = listed.stdout.splitlines()[:2]
        assert header.split()[:4] == ["ID", "KIND", "STATE", "INTERVAL"]
        assert row.split()[:5] == [stream_id, "AUDIT_LOG", "ACTIVE", "2m", url]

        shown = await cli("stream", "show", stream_id, env=env)
        outputs.append(shown)
        assert shown.code == 0, shown.stderr
        assert f"audit-log stream {stream_id}: ACTIVE" in shown.stdout
        assert "filter: actions=user.login" in shown.stdout
        assert "recent deliveries:" in shown.stdout
        assert "test      DELIVERED" in shown.stdout

        paused = await cli("stream", "pause", stream_id, "--json", env=env)
        outputs.append(paused)
        assert paused.json()["state"] == "PAUSED"
        resumed = await cli("stream", "resume", stream_id, env=env)
        outputs.append(resumed)
        assert f"stream {stream_id}: ACTIVE" in resumed.stdout

        # The viewer sees the stream, and may not pause it.
        viewer = server.env(server.world.viewer.token)
        seen = await cli("stream", "list", "--org", org, "--json", env=viewer)
        outputs.append(seen)
        assert [s["id"] for s in seen.json()] == [stream_id]
        refused = await cli("stream", "pause", stream_id, env=viewer)
        outputs.append(refused)
        assert refused.code == 1
        assert "iam:log-stream:manage" in one_error_line(refused)

        deleted = await cli("stream", "delete", stream_id, env=env)
        outputs.append(deleted)
        assert deleted.stdout.strip() == f"stream {stream_id} deleted"
        gone = await cli("stream", "show", stream_id, env=env)
        outputs.append(gone)
        assert gone.code == 1
        assert one_error_line(gone).startswith(f"error: stream {stream_id}:")

        for result in outputs:
            assert SECRET not in result.stdout + result.stderr


async def test_s3_stream_takes_its_secret_from_the_environment_only(pool, settings, tmp_path):
    private = settings.derive(stream_allow_private=True)
    async with api(pool, private, tmp_path, "--no-worker") as server:
        org = str(server.world.organization_id)
        env = server.env(server.world.owner.token)
        args = (
            "stream", "create", "--org", org, "--kind", "scim-event", "--s3-bucket",
            "customer-logs", "--s3-prefix", "acme", "--s3-region", "eu-west-1",
            "--s3-endpoint-url", "http://127.0.0.1:9", "--access-key-id", "AKIAEXAMPLE123",
        )  # fmt: skip
        missing = await cli(*args, env=env)
        assert missing.code == 2
        assert "LOGEXPORT_STREAM_SECRET_ACCESS_KEY is not set" in one_error_line(missing)

        created = await cli(
            *args, "--json", env={**env, "LOGEXPORT_STREAM_SECRET_ACCESS_KEY": S3_SECRET}
        )
        assert created.code == 0, created.stderr
        stream = created.json()
        assert stream["destination"] == {
            "type": "S3",
            "url": None,
            "bucket": "customer-logs",
            "prefix": "acme",
        }
        assert S3_SECRET not in created.stdout + created.stderr
        async with pool.acquire() as conn:
            sealed = await conn.fetchval(
                "SELECT secret FROM log_streams WHERE id = $1", stream["id"]
            )
        assert S3_SECRET.encode() not in sealed

        listed = await cli("stream", "list", "--org", org, env=env)
        assert "s3://customer-logs/acme" in listed.stdout


async def test_usage_and_refusals_are_one_line_naming_the_flags(pool, settings, tmp_path):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        org = str(server.world.organization_id)
        env = server.env(server.world.owner.token)
        base = ("stream", "create", "--org", org, "--kind", "audit-log")
        cases: list[tuple[tuple[str, ...], int, str]] = [
            (("--s3-bucket", "b-1", "--https-url", "https://93.184.215.14/"), 2, "exactly one"),
            (("--https-url", "https://93.184.215.14/"), 2, "--secret is required"),
            (("--s3-bucket", "bucket-1", "--secret", SECRET), 2, "--secret applies to an HTTPS"),
            (
                ("--https-url", "https://93.184.215.14/", "--secret", SECRET, "--interval", "soon"),
                2,
                "--interval soon",
            ),
            (
                ("--https-url", "https://93.184.215.14/", "--secret", SECRET, "--method", "GET"),
                2,
                "--method does not apply to an audit-log stream",
            ),
            (
                ("--https-url", "https://93.184.215.14/", "--secret", SECRET, "--interval", "5"),
                2,
                "--interval 5: give a unit, e.g. 5m or 5s",
            ),
            (
                ("--https-url", "93.184.215.14/in", "--secret", SECRET),
                1,
                "--https-url must start with https://",
            ),
            (
                ("--https-url", "https://10.0.0.1/in", "--secret", SECRET),
                1,
                "--https-url host 10.0.0.1 resolves to a private address",
            ),
            (
                ("--https-url", "https://127.0.0.1/in", "--secret", SECRET),
                1,
                "loopback",
            ),
            (
                ("--https-url", "https://169.254.169.254/", "--secret", SECRET),
                1,
                "metadata",
            ),
            (
                ("--https-url", "http://93.184.215.14/in", "--secret", SECRET),
                1,
                "--https-url must use https://",
            ),
            (
                ("--https-url", "https://93.184.215.14/", "--secret", SECRET, "--interval", "10s"),
                1,
                "--interval must be between 60 and 86400 seconds",
            ),
            (("--https-url", "https://93.184.215.14/", "--secret", "short"), 1, "--secret must"),
        ]
        for extra, code, text in cases:
            result = await cli(*base, *extra, env=env)
            assert result.code == code, (extra, result.stderr)
            assert text in one_error_line(result), (extra, result.stderr)

        admin = await cli(
            *base, "--https-url", "https://93.184.215.14/", "--secret", SECRET,
            env=server.env(server.world.admin.token),
        )  # fmt: skip
        assert admin.code == 1
        assert "iam:log-stream:manage" in one_error_line(admin)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM log_streams") == 0

        listed = await cli("stream", "list", "--org", org, "--json", env=env)
        assert json.loads(listed.stdout) == []
