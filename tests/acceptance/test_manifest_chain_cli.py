"""An auditor's export commands as subprocesses against a running ``logexport serve``."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import Api, Result, api, run_logexport

COMMAND_TIMEOUT = 90


async def cli(*args: str, env: dict[str, str]) -> Result:
    return await run_logexport(*args, env=env, timeout=COMMAND_TIMEOUT)


def error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


async def completed_export(server: Api, day: str) -> str:
    """A COMPLETED audit-log export of one UTC day, requested and waited for; its id."""
    org = str(server.world.organization_id)
    done = await cli(
        "audit-log", "export", "--org", org, "--from", day, "--to", day, "--wait", "--json",
        env=server.env(),
    )  # fmt: skip
    assert done.code == 0, done.stderr
    export = done.json()
    assert export["status"] == "COMPLETED", export
    return str(export["id"])


async def canceled_after_completion(server: Api, day: str) -> str:
    export_id = await completed_export(server, day)
    canceled = await cli("export", "cancel", export_id, "--json", env=server.env())
    assert canceled.code == 0, canceled.stderr
    assert canceled.json()["status"] == "CANCELED"
    return export_id


async def test_downloading_a_canceled_export_names_it_once(pool, settings, s3, tmp_path: Path):
    async with api(pool, settings, tmp_path) as server:
        export_id = await canceled_after_completion(server, "2026-01-01")
        target = tmp_path / "file.jsonl"
        refused = await cli("export", "download", export_id, "-o", str(target), env=server.env())
        assert refused.code == 1
        assert error_line(refused) == (
            f"error: export {export_id} is CANCELED; only a COMPLETED export can be downloaded"
        )
        assert not target.exists()
