"""``logexport stream update``: an owner changes a stream's interval or filter in place, so
it goes on from its checkpoint instead of being deleted and created again (which would
leave a gap, or send entries twice)."""

from __future__ import annotations

from tests.support.cli import Result, api, run_logexport

COMMAND_TIMEOUT = 60
SECRET = "cli-hmac-secret-0123456789"
# A public address written as such: resolving it needs no DNS, and no test sends to it.
PUBLIC_URL = "https://93.184.215.14/ingest"


async def cli(*args: str, env: dict[str, str]) -> Result:
    return await run_logexport(*args, env=env, timeout=COMMAND_TIMEOUT)


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


async def test_owner_changes_the_interval_and_the_filter_of_a_stream(pool, settings, tmp_path):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        org = str(server.world.organization_id)
        env = server.env(server.world.owner.token)
        created = await cli(
            "stream", "create", "--org", org, "--kind", "audit-log", "--https-url", PUBLIC_URL,
            "--secret", SECRET, "--json", env=env,
        )  # fmt: skip
        assert created.code == 0, created.stderr
        stream_id = created.json()["id"]

        slower = await cli("stream", "update", stream_id, "--interval", "15m", env=env)
        assert slower.code == 0, slower.stderr
        assert "  interval: 15m" in slower.stdout

        narrowed = await cli(
            "stream", "update", stream_id, "--action", "user.login", "--action", "user.logout",
            "--json", env=env,
        )  # fmt: skip
        assert narrowed.code == 0, narrowed.stderr
        assert narrowed.json()["filter"] == {"actions": ["user.login", "user.logout"]}
        assert narrowed.json()["intervalSeconds"] == 900

        widened = await cli("stream", "update", stream_id, "--every-entry", "--json", env=env)
        assert widened.code == 0, widened.stderr
        assert widened.json()["filter"] is None

        for extra, code, text in [
            ((), 2, "give --interval, a filter flag or --every-entry"),
            (("--interval", "5"), 2, "--interval 5: give a unit"),
            (("--method", "GET"), 2, "--method does not apply to an audit-log stream"),
            (("--every-entry", "--action", "user.login"), 2, "--every-entry drops the filter"),
            (("--interval", "10s"), 1, "--interval must be between 60 and 86400 seconds"),
        ]:
            result = await cli("stream", "update", stream_id, *extra, env=env)
            assert result.code == code, (extra, result.stderr)
            assert text in one_error_line(result), (extra, result.stderr)

        viewer = await cli(
            "stream", "update", stream_id, "--interval", "1h",
            env=server.env(server.world.viewer.token),
        )  # fmt: skip
        assert viewer.code == 1
        assert "iam:log-stream:manage" in one_error_line(viewer)

        async with pool.acquire() as conn:
            interval = await conn.fetchval(
                "SELECT interval_seconds FROM log_streams WHERE id = $1::uuid", stream_id
            )
            updates = await conn.fetchval(
                "SELECT count(*) FROM audit_log_entries WHERE action = 'iam:log-stream:update'"
                " AND resource_id = $1",
                stream_id,
            )
        assert interval == 900
        assert updates == 3
