"""The client commands as a user runs them: subprocesses against a running ``logexport serve``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import stat
from pathlib import Path

import click
import graphql

from devtools import services
from logexport.cli import main
from logexport.cli.client import human_size
from logexport.client import DOCUMENTS
from tests.support.cli import REPO, Result, api, logexport_command, run_logexport
from tests.support.world import wait_for_status

COMMAND_TIMEOUT = 60


async def cli(*args: str, env: dict[str, str], timeout: float = COMMAND_TIMEOUT) -> Result:
    return await run_logexport(*args, env=env, timeout=timeout)


async def export_count(pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM log_exports"))


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------------------- tests


def test_every_client_document_is_valid_against_the_schema():
    schema = graphql.build_schema((REPO / "schema.graphql").read_text())
    for name, document in DOCUMENTS.items():
        errors = graphql.validate(schema, graphql.parse(document))
        assert errors == [], (name, errors)


async def test_export_wait_download_show_list_and_checksum(pool, settings, s3, tmp_path):
    async with api(pool, settings, tmp_path) as server:
        org = str(server.world.organization_id)
        env = server.env()
        target = tmp_path / "jan-1.jsonl"
        # 2026-01-01 as a date includes the whole day: entries 0..47 (every 30 minutes).
        done = await cli(
            "audit-log", "export", "--org", org, "--from", "2026-01-01", "--to", "2026-01-01",
            "--action", "user.login", "--download", str(target), "--json", env=env,
        )  # fmt: skip
        assert done.code == 0, done.stderr
        export = done.json()
        assert export["status"] == "COMPLETED"
        assert export["fromTime"] == "2026-01-01T00:00:00.000000Z"
        assert export["toTime"] == "2026-01-02T00:00:00.000000Z"
        # BigInt counts are strings in GraphQL; --json prints them as numbers.
        assert export["rowCount"] == 32
        assert export["rowsWritten"] == 32
        assert isinstance(export["byteSize"], int) and export["byteSize"] > 0
        assert "COMPLETED" in done.stderr  # plain progress lines: stderr is not a terminal
        body = target.read_bytes()
        assert hashlib.sha256(body).hexdigest() == export["sha256"]
        rows = [json.loads(line) for line in body.decode().splitlines()]
        assert len(rows) == 32
        assert {row["action"] for row in rows} == {"user.login"}
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []

        shown = await cli("export", "show", export["id"], env=env)
        assert shown.code == 0, shown.stderr
        assert export["id"] in shown.stdout
        assert "COMPLETED" in shown.stdout
        assert export["sha256"] in shown.stdout

        listed = await cli("export", "list", "--org", org, env=env)
        assert listed.code == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split() == [
            "ID", "KIND", "STATUS", "FORMAT", "FROM", "TO", "ROWS", "SIZE", "CREATED",
        ]  # fmt: skip
        assert row.startswith(export["id"])
        assert "jsonl" in row.split()
        assert human_size(export["byteSize"]) in row
        assert human_size(export["byteSize"]).endswith((" B", " KiB"))
        # Columns line up under their headers.
        assert row.index(human_size(export["byteSize"])) == header.index("SIZE")

        listed_json = await cli("export", "list", "--org", org, "--json", env=env)
        assert listed_json.code == 0, listed_json.stderr
        node = listed_json.json()["edges"][0]["node"]
        assert (node["rowCount"], node["byteSize"]) == (32, export["byteSize"])

        again = tmp_path / "again.jsonl"
        downloaded = await cli("export", "download", export["id"], "-o", str(again), env=env)
        assert downloaded.code == 0, downloaded.stderr
        assert again.read_bytes() == body

        entries = await cli("audit-log", "list", "--org", org, "--first", "2", "--json", env=env)
        assert entries.code == 0, entries.stderr
        page = entries.json()
        assert len(page["edges"]) == 2
        assert page["pageInfo"]["hasNextPage"] is True

        # The recorded digest no longer matches the stored file: nothing may be kept.
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE log_exports SET sha256 = $2 WHERE id = $1::uuid", export["id"], "0" * 64
            )
        tampered = tmp_path / "tampered.jsonl"
        mismatch = await cli("export", "download", export["id"], "-o", str(tampered), env=env)
        assert mismatch.code == 1
        assert "SHA-256" in one_error_line(mismatch)
        assert not tampered.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tampered")] == []


async def test_idempotency_filters_and_rejections(pool, settings, s3, tmp_path):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        org = str(server.world.organization_id)
        env = server.env()
        args = [
            "scim-event", "export", "--org", org,
            "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-08",
            "--method", "POST", "--method", "PATCH", "--status-code", "201",
            "--user-name", "jane@acme.test", "--format", "csv", "--gzip", "--csv-bom",
            "--idempotency-key", "nightly-2026-01", "--json",
        ]  # fmt: skip
        first = await cli(*args, env=env)
        second = await cli(*args, env=env)
        assert first.code == 0, first.stderr
        assert second.code == 0, second.stderr
        assert first.json()["id"] == second.json()["id"]
        export = first.json()
        assert export["kind"] == "SCIM_EVENT"
        assert (export["format"], export["compression"], export["csvBom"]) == ("CSV", "GZIP", True)
        assert export["toTime"] == "2026-01-09T00:00:00.000000Z"
        assert export["filter"] == {
            "methods": ["PATCH", "POST"],
            "statusCodes": [201],
            "userName": "jane@acme.test",
        }

        human = await cli(
            "audit-log", "export", "--org", org, "--from", "2026-01-01", "--to", "2026-01-31",
            env=env,
        )  # fmt: skip
        assert human.code == 0, human.stderr
        assert "PENDING" in human.stdout
        assert "logexport export show" in human.stdout

        missing_id = "00000000-0000-0000-0000-000000000000"
        backwards, too_long, bad_org, bad_list_org, bad_key, viewer, missing = (
            await asyncio.gather(
                cli(
                    "audit-log", "export", "--org", org, "--from", "2026-02-01",
                    "--to", "2026-01-01", env=env,
                ),
                cli(
                    "audit-log", "export", "--org", org, "--from", "2020-01-01",
                    "--to", "2026-01-01", env=env,
                ),
                cli(
                    "audit-log", "export", "--org", "acme", "--from", "2026-01-01",
                    "--to", "2026-01-02", env=env,
                ),
                cli("export", "list", "--org", "acme", env=env),
                cli(
                    "audit-log", "export", "--org", org, "--from", "2026-01-01",
                    "--to", "2026-01-02", "--idempotency-key", "clé", env=env,
                ),
                cli(
                    "audit-log", "export", "--org", org, "--from", "2026-01-01",
                    "--to", "2026-01-02", env=server.env(server.world.viewer.token),
                ),
                cli("export", "show", missing_id, env=env),
            )
        )  # fmt: skip
        # Errors name the flags the user typed, never the API's input fields.
        api_fields = ("fromTime", "toTime", "organizationId", "idempotencyKey", "input.")
        for result, flags in [
            (backwards, ("--from", "--to")),
            (too_long, ("--to", "366 days")),
            (bad_org, ("--org",)),
            (bad_list_org, ("--org",)),
            (bad_key, ("--idempotency-key",)),
        ]:
            assert result.code == 1, result
            line = one_error_line(result)
            for flag in flags:
                assert flag in line, line
            for field in api_fields:
                assert field not in line, line
        # An error about the organization shows the value that was typed.
        assert "--org acme" in one_error_line(bad_org)
        assert "--org acme" in one_error_line(bad_list_org)
        assert one_error_line(backwards) == "error: --from must be earlier than --to"
        assert viewer.code == 1
        assert "permission" in one_error_line(viewer)
        assert missing.code == 1
        assert missing_id in one_error_line(missing)

        canceled = await cli("export", "cancel", export["id"], "--json", env=env)
        assert canceled.code == 0, canceled.stderr
        assert canceled.json()["status"] == "CANCELED"
        async with pool.acquire() as conn:
            count = await conn.fetchval("SELECT count(*) FROM log_exports")
        assert count == 2


async def test_usage_auth_and_network_errors(pool, settings, s3, tmp_path):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        org = str(server.world.organization_id)
        env = server.env()

        bad = "lex_" + "A" * 43
        closed = f"http://127.0.0.1:{services.free_port()}"
        # Independent commands: run together, the test waits for the slowest only.
        usage, missing_option, unauthenticated, no_token, unreachable = await asyncio.gather(
            cli(
                "audit-log", "export", "--org", org, "--from", "2026-01-01T00:00:00",
                "--to", "2026-01-02", env=env,
            ),
            cli("audit-log", "export", "--from", "2026-01-01", env=env),
            cli("export", "list", "--org", org, env=server.env(bad)),
            cli("export", "list", "--org", org, env=server.env("")),
            cli("export", "list", "--org", org, env=server.env(LOGEXPORT_API_URL=closed)),
        )  # fmt: skip
        assert usage.code == 2
        assert "--from" in usage.stderr
        assert "offset" in usage.stderr
        assert missing_option.code == 2
        assert unauthenticated.code == 1
        assert bad not in one_error_line(unauthenticated)
        assert no_token.code == 2
        assert "LOGEXPORT_TOKEN" in one_error_line(no_token)
        assert unreachable.code == 1
        line = one_error_line(unreachable)
        assert "cannot reach" in line
        assert server.world.admin.token not in line

        # login checks the token, then saves it privately; later commands need no env.
        logged_in = await cli(
            "login", "--api-url", server.url, "--token", server.world.admin.token,
            env={"PATH": env["PATH"], "XDG_CONFIG_HOME": str(server.home)},
        )  # fmt: skip
        assert logged_in.code == 0, logged_in.stderr
        saved = server.home / "logexport" / "config.json"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert json.loads(saved.read_text()) == {
            "api_url": server.url,
            "token": server.world.admin.token,
        }
        from_file = await cli(
            "export", "list", "--org", org, "--json",
            env={"PATH": env["PATH"], "XDG_CONFIG_HOME": str(server.home)},
        )  # fmt: skip
        assert from_file.code == 0, from_file.stderr
        assert from_file.json()["edges"] == []

        refused = await cli(
            "login", "--api-url", server.url, "--token", bad,
            env={"PATH": env["PATH"], "XDG_CONFIG_HOME": str(tmp_path / "other")},
        )  # fmt: skip
        assert refused.code == 1
        assert not (tmp_path / "other" / "logexport" / "config.json").exists()


async def test_ctrl_c_stops_waiting_without_canceling(pool, settings, s3, tmp_path):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        org = str(server.world.organization_id)
        process = await asyncio.create_subprocess_exec(
            *logexport_command(),
            "audit-log", "export", "--org", org, "--from", "2026-01-01", "--to", "2026-01-02",
            "--wait",
            env=server.env(),
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        # The first progress line means the export exists and the command is waiting.
        first_line = await asyncio.wait_for(process.stderr.readline(), COMMAND_TIMEOUT)
        assert b"waiting" in first_line
        export_id = first_line.split()[1].decode()
        await asyncio.wait_for(process.stderr.readline(), COMMAND_TIMEOUT)
        process.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
        assert process.returncode == 130
        assert f"logexport export show {export_id}" in rest.decode()
        row = await wait_for_status(pool, export_id, "PENDING", timeout=5)
        assert row["status"] == "PENDING"


async def test_help_needs_no_settings():
    result = await cli("export", "download", "--help", env={"PATH": os.environ.get("PATH", "")})
    assert result.code == 0
    assert "Usage" in result.stdout


async def test_whoami_and_login_show_each_organization_with_its_role(pool, settings, s3, tmp_path):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        world = server.world
        acme, globex = str(world.organization_id), str(world.other_organization_id)
        admin, outsider, admin_json = await asyncio.gather(
            cli("whoami", env=server.env()),
            cli("whoami", env=server.env(world.outsider.token)),
            cli("whoami", "--json", env=server.env()),
        )
        assert admin.code == 0, admin.stderr
        lines = admin.stdout.splitlines()
        assert lines[0] == (f"Adam Admin <adam.admin@acme.test>  user {world.admin.user_id}")
        assert lines[1].split() == ["ORGANIZATION", "NAME", "ROLE"]
        assert lines[2].split() == [acme, "Acme", "Corp", "ADMIN"]
        assert len(lines) == 3  # Globex is not his
        assert outsider.code == 0, outsider.stderr
        assert outsider.stdout.splitlines()[2].split() == [globex, "Globex", "OWNER"]
        assert acme not in outsider.stdout
        viewer = admin_json.json()
        assert viewer["email"] == "adam.admin@acme.test"
        assert [(o["id"], o["name"], o["viewerRole"]) for o in viewer["organizations"]] == [
            (acme, "Acme Corp", "ADMIN")
        ]

        logged_in = await cli(
            "login", "--api-url", server.url, "--token", world.owner.token,
            env={"PATH": os.environ.get("PATH", ""), "XDG_CONFIG_HOME": str(server.home)},
        )  # fmt: skip
        assert logged_in.code == 0, logged_in.stderr
        lines = logged_in.stdout.splitlines()
        assert lines[0].startswith(f"logged in to {server.url}; saved to ")
        assert lines[1] == f"Olivia Owner <olivia.owner@acme.test>  user {world.owner.user_id}"
        assert lines[3].split() == [acme, "Acme", "Corp", "OWNER"]


async def test_download_target_that_cannot_be_written_is_refused_before_requesting(
    pool, settings, s3, tmp_path
):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        org = str(server.world.organization_id)
        a_file = tmp_path / "a-file"
        a_file.write_text("")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        # root writes into a 0500 directory regardless; /proc takes no new files from anyone.
        unwritable = Path("/proc") if os.geteuid() == 0 else locked
        targets = {
            "missing directory": (tmp_path / "no-such-dir" / "out.jsonl", "does not exist"),
            "parent is a file": (a_file / "out.jsonl", "not a directory"),
            "target is a directory": (tmp_path, "is a directory"),
            "unwritable directory": (unwritable / "out.jsonl", "cannot write"),
        }
        results = await asyncio.gather(
            *(
                cli(
                    "audit-log", "export", "--org", org, "--from", "2026-01-01",
                    "--to", "2026-01-02", "--download", str(target), env=server.env(),
                )
                for target, _ in targets.values()
            ),
            cli(
                "export", "download", "00000000-0000-0000-0000-000000000000",
                "-o", str(tmp_path / "no-such-dir" / "out.jsonl"), env=server.env(),
            ),
        )  # fmt: skip
        for (case, (_, reason)), result in zip(targets.items(), results, strict=False):
            assert result.code == 2, (case, result)
            line = one_error_line(result)
            assert "--download" in line and reason in line, (case, line)
            assert "Traceback" not in result.stderr
        assert results[-1].code == 2
        assert "--output" in one_error_line(results[-1])
        # Refused before the request: no export was created.
        assert await export_count(pool) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["a-file", "locked", "serve.log"]
        )


def _commands(command: click.Command, path: str):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_every_option_has_help_and_repeatable_ones_say_so():
    missing, unmarked = [], []
    for path, command in _commands(main, "logexport"):
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            if not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}")
            elif param.multiple and "repeatable" not in param.help:
                unmarked.append(f"{path} {param.opts[0]}")
    assert missing == []
    assert unmarked == []


async def test_help_shows_repeatable_options_as_a_user_sees_them():
    result = await cli("scim-event", "export", "--help", env={"PATH": os.environ.get("PATH", "")})
    assert result.code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--method M Only events with this HTTP method, e.g. POST; repeatable." in text
    assert "--status-code N Only events answered with this HTTP status code; repeatable." in text
