"""An auditor collects an organization's chain of signed manifests with ``export manifests``
and checks it with ``logexport verify --chain``, both as subprocesses against a running
``logexport serve``; canceled and expired exports stay in the chain, a removed manifest is
named."""

from __future__ import annotations

import json
from pathlib import Path

from logexport import manifests
from tests.support.cli import Api, Result, api, run_logexport
from tests.support.world import eventually

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


async def expired_export(server: Api, pool, day: str) -> str:
    """A COMPLETED export whose link time is over: the server's sweep expires it."""
    export_id = await completed_export(server, day)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE log_exports SET expires_at = now() WHERE id = $1", export_id)

    async def expired() -> bool:
        shown = await cli("export", "show", export_id, "--json", env=server.env())
        assert shown.code == 0, shown.stderr
        return bool(shown.json()["status"] == "EXPIRED")

    await eventually(expired, timeout=30, interval=0.3, what="the export EXPIRED")
    return export_id


async def test_collected_manifests_verify_as_one_chain_and_a_removed_one_is_named(
    pool, settings, s3, tmp_path: Path
):
    async with api(pool, settings, tmp_path) as server:
        env = server.env()
        org = str(server.world.organization_id)
        # Two exports of the same day have the same file name; their manifests must not
        # overwrite each other in the folder.
        await completed_export(server, "2026-01-01")
        await canceled_after_completion(server, "2026-01-01")
        await completed_export(server, "2026-01-02")
        await expired_export(server, pool, "2026-01-03")
        keys_url = server.url + manifests.KEYS_PATH
        chain = tmp_path / "chain"

        saved = await cli(
            "export", "manifests", "--org", org, "--kind", "audit-log", "-o", str(chain), env=env
        )
        assert saved.code == 0, saved.stderr
        lines = saved.stdout.strip().splitlines()
        assert len(lines) == 1, saved.stdout
        assert lines[0].startswith(f"4 manifests written to {chain}"), lines[0]
        assert "sequences 1 to 4" in lines[0]
        names = sorted(p.name for p in chain.iterdir())
        assert [n[:7] for n in names] == ["000001-", "000002-", "000003-", "000004-"]
        assert all(n.endswith(".manifest.json") for n in names)
        sequences = [json.loads((chain / n).read_text())["manifest"]["sequence"] for n in names]
        assert sequences == [1, 2, 3, 4]

        verified = await cli("verify", "--chain", str(chain), "--keys", keys_url, env=env)
        assert verified.code == 0, verified.stderr

        # Running it again keeps the identical files and writes nothing.
        again = await cli(
            "export", "manifests", "--org", org, "--kind", "audit-log", "-o", str(chain), env=env
        )
        assert again.code == 0, again.stderr
        assert again.stdout.startswith(f"0 manifests written to {chain} (4 already there)")

        # A file of the same name with other contents is not replaced silently.
        altered = chain / names[0]
        original = altered.read_bytes()
        altered.write_bytes(original + b"\n")
        refused = await cli(
            "export", "manifests", "--org", org, "--kind", "audit-log", "-o", str(chain), env=env
        )
        assert refused.code == 1
        assert names[0] in error_line(refused) and "other contents" in error_line(refused)
        altered.write_bytes(original)

        (chain / names[1]).unlink()
        broken = await cli("verify", "--chain", str(chain), "--keys", keys_url, env=env)
        assert broken.code == 1, broken.stdout + broken.stderr
        assert "sequence 2 missing" in broken.stdout + broken.stderr


async def test_manifests_of_the_other_kind_are_not_mixed_into_a_chain(
    pool, settings, s3, tmp_path: Path
):
    async with api(pool, settings, tmp_path) as server:
        env = server.env()
        org = str(server.world.organization_id)
        await completed_export(server, "2026-01-01")
        chain = tmp_path / "chain"

        none = await cli(
            "export", "manifests", "--org", org, "--kind", "scim-event", "-o", str(chain), env=env
        )
        assert none.code == 1
        assert "no scim-event export has a signed manifest" in error_line(none)
        assert not chain.exists()

        saved = await cli(
            "export", "manifests", "--org", org, "--kind", "audit-log", "-o", str(chain), env=env
        )
        assert saved.code == 0, saved.stderr
        # A folder that already holds another chain's manifest is refused as a whole.
        stranger = chain / "other.manifest.json"
        envelope = json.loads(next(chain.iterdir()).read_text())
        envelope["manifest"]["organization_id"] = "00000000-0000-0000-0000-000000000000"
        stranger.write_text(json.dumps(envelope))
        mixed = await cli(
            "export", "manifests", "--org", org, "--kind", "audit-log", "-o", str(chain), env=env
        )
        assert mixed.code == 1
        assert "other.manifest.json" in error_line(mixed)


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
