"""``logexport`` as a subprocess, the way a person runs it, for acceptance tests; and a
``logexport serve`` process for those commands (and the library client) to talk to."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devtools import services
from logexport.config import Settings
from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from tests.support.world import World, build_world

REPO = Path(__file__).resolve().parents[2]
SEED_START = datetime(2026, 1, 1, tzinfo=UTC)


def logexport_command() -> list[str]:
    """The installed ``logexport`` script, or the same entry point through this interpreter."""
    installed = Path(sys.prefix) / "bin" / "logexport"
    if installed.exists():
        return [str(installed)]
    return [sys.executable, "-c", "import sys; from logexport.cli import main; sys.exit(main())"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_logexport(
    *args: str, env: dict[str, str], timeout: float, merge_stderr: bool = False
) -> Result:
    """Run ``logexport *args`` to completion; killed if it outlives ``timeout`` seconds.

    With ``merge_stderr`` both streams land in ``stdout`` in the order written.
    """
    process = await asyncio.create_subprocess_exec(
        *logexport_command(),
        *args,
        env=env,
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), (stderr or b"").decode())


# ---------------------------------------------------------------------------- a served API


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``LOGEXPORT_*`` variables a ``logexport serve`` process reads."""
    env = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is None or f.name in ("api_url", "token"):
            continue
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, tuple):
            text = ",".join(str(item) for item in value)
        else:
            text = str(value)
        env[f.metadata["env"]] = text
    return env


@contextlib.asynccontextmanager
async def serving(settings: Settings, log_dir: Path, *extra: str) -> AsyncIterator[str]:
    """``logexport serve`` on a free port until the block ends; yields its base URL."""
    port = services.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **settings_env(settings.derive(base_url=url))}
    log_path = log_dir / "serve.log"
    log = log_path.open("wb")
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
                    raise AssertionError(f"logexport serve exited: {log_path.read_text()[-2000:]}")
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


async def seed(pool: asyncpg.Pool, world: World, count: int = 90) -> None:
    """``count`` audit entries from 2026-01-01T00:00Z, one every 30 minutes; every third
    is ``user.logout``, the rest ``user.login``."""
    entries = [
        AuditLogEntryInput(
            organization_id=world.organization_id,
            action="user.login" if i % 3 else "user.logout",
            actor_type="USER",
            actor_id=f"u{i}",
            actor_email=f"user{i}@acme.test",
            created_at=SEED_START + timedelta(minutes=30 * i),
        )
        for i in range(count)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)


@dataclass
class Api:
    """A served API with its people, and a private config home for ``logexport login``."""

    url: str
    world: World
    home: Path

    def env(self, token: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of a client command run as the admin (or ``token``'s owner)."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NO_PROXY": "127.0.0.1,localhost",
            "XDG_CONFIG_HOME": str(self.home),
            "LOGEXPORT_API_URL": self.url,
            "LOGEXPORT_TOKEN": token if token is not None else self.world.admin.token,
        }
        env.update(extra)
        return {k: v for k, v in env.items() if v != ""}


@contextlib.asynccontextmanager
async def api(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, *serve_args: str
) -> AsyncIterator[Api]:
    """A world with seeded entries behind a running ``logexport serve``."""
    world = await build_world(pool)
    await seed(pool, world)
    async with serving(settings, tmp_path, *serve_args) as url:
        yield Api(url, world, tmp_path / "config")
