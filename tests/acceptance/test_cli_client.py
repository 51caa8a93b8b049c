"""The client commands as a user runs them: subprocesses against a running ``logexport serve``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import graphql
import httpx

from logexport import devservices
from logexport.client import DOCUMENTS
from logexport.config import Settings
from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from tests.support.cli import REPO, Result, logexport_command, run_logexport
from tests.support.world import World, build_world, wait_for_status

START = datetime(2026, 1, 1, tzinfo=UTC)
COMMAND_TIMEOUT = 60


def settings_env(settings: Settings) -> dict[str, str]:
    env = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is None or f.name in ("api_url", "token"):
            continue
        env[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env


@dataclass
class Api:
    url: str
    world: World
    home: Path

    def env(self, token: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NO_PROXY": "127.0.0.1,localhost",
            "XDG_CONFIG_HOME": str(self.home),
            "LOGEXPORT_API_URL": self.url,
            "LOGEXPORT_TOKEN": token if token is not None else self.world.admin.token,
        }
        env.update(extra)
        return {k: v for k, v in env.items() if v != ""}


async def cli(*args: str, env: dict[str, str], timeout: float = COMMAND_TIMEOUT) -> Result:
    return await run_logexport(*args, env=env, timeout=timeout)


@contextlib.asynccontextmanager
async def serving(settings: Settings, tmp_path: Path, *extra: str) -> AsyncIterator[str]:
    """``logexport serve`` on a free port until the block ends; yields its base URL."""
    port = devservices.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **settings_env(settings.derive(base_url=url))}
    log = (tmp_path / "serve.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *logexport_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = asyncio.get_running_loop().time() + 60
        async with httpx.AsyncClient() as http:
            while True:
                if process.returncode is not None:
                    raise AssertionError(
                        f"logexport serve exited: {(tmp_path / 'serve.log').read_text()[-2000:]}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{url}/healthz", timeout=2)).status_code == 200:
                        break
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError("logexport serve did not answer /healthz within 60s")
                await asyncio.sleep(0.2)
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def seed(pool, world: World, count: int = 90) -> None:
    entries = [
        AuditLogEntryInput(
            organization_id=world.organization_id,
            action="user.login" if i % 3 else "user.logout",
            actor_type="USER",
            actor_id=f"u{i}",
            actor_email=f"user{i}@acme.test",
            created_at=START + timedelta(minutes=30 * i),
        )
        for i in range(count)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)


@contextlib.asynccontextmanager
async def api(pool, settings, tmp_path, *serve_args: str) -> AsyncIterator[Api]:
    world = await build_world(pool)
    await seed(pool, world)
    async with serving(settings, tmp_path, *serve_args) as url:
        yield Api(url, world, tmp_path / "config")


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
        assert export["rowCount"] == "32"
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
        assert export["id"] in listed.stdout

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

        backwards, viewer, missing = await asyncio.gather(
            cli(
                "audit-log", "export", "--org", org, "--from", "2026-02-01", "--to", "2026-01-01",
                env=env,
            ),
            cli(
                "audit-log", "export", "--org", org, "--from", "2026-01-01", "--to", "2026-01-02",
                env=server.env(server.world.viewer.token),
            ),
            cli("export", "show", "00000000-0000-0000-0000-000000000000", env=env),
        )  # fmt: skip
        assert backwards.code == 1
        assert one_error_line(backwards).startswith("error: toTime: ")
        assert viewer.code == 1
        assert "permission" in one_error_line(viewer)
        assert missing.code == 1
        one_error_line(missing)

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
        closed = f"http://127.0.0.1:{devservices.free_port()}"
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
