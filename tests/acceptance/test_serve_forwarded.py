"""``logexport serve`` records the address a download came from: the peer, or whom a proxy
in ``LOGEXPORT_TRUSTED_PROXIES`` names in ``X-Forwarded-For`` — never what a client claims."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from devtools import services
from logexport.config import Settings
from logexport.exports import downloads
from logexport.exports.storage import storage_from_settings
from tests.support.world import build_world, eventually

LOGEXPORT = str(Path(sys.executable).with_name("logexport"))
CLAIMED = "198.51.100.23"


def environment(settings: Settings, base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGEXPORT_")}
    env.update(
        {
            "LOGEXPORT_DATABASE_URL": settings.database_url,
            "LOGEXPORT_STORAGE_URL": settings.storage_url,
            "LOGEXPORT_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
            "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
            "LOGEXPORT_SMTP_URL": settings.smtp_url,
            "LOGEXPORT_MAIL_FROM": settings.mail_from,
            "LOGEXPORT_SECRET_KEY": settings.secret_key,
            "LOGEXPORT_BASE_URL": base_url,
            "LOGEXPORT_SHUTDOWN_GRACE": "2s",
            **extra,
        }
    )
    return env


@contextmanager
def serving(env: dict[str, str], port: int, log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [LOGEXPORT, "serve", "--no-worker", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def completed_export_link(pool: asyncpg.Pool, settings: Settings) -> tuple[str, str]:
    """A COMPLETED export with its file in the bucket; its download path and EMAIL token."""
    world = await build_world(pool)
    content = b'{"n": 1}\n'
    async with pool.acquire() as conn:
        export_id = await conn.fetchval(
            "INSERT INTO log_exports (organization_id, kind, from_time, to_time, requested_by) "
            "VALUES ($1, 'AUDIT_LOG', '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', $2) "
            "RETURNING id",
            world.organization_id,
            world.admin.user_id,
        )
        key = f"{export_id}/attempt-1/f.jsonl"
        async with storage_from_settings(settings) as storage:
            writer = await storage.open_writer(
                key, content_type="application/x-ndjson", file_name="f.jsonl"
            )
            async with writer:
                await writer.write(content)
                await writer.complete()
        expires_at = datetime.now(UTC) + timedelta(hours=1)
        await conn.execute(
            "UPDATE log_exports SET status = 'COMPLETED', attempts = 1, storage_key = $2, "
            "file_name = 'f.jsonl', byte_size = $3, row_count = 1, sha256 = repeat('0', 64), "
            "completed_at = now(), expires_at = $4 WHERE id = $1",
            export_id,
            key,
            len(content),
            expires_at,
        )
        token = await downloads.issue_download_token(
            conn,
            export_id=export_id,
            user_id=world.admin.user_id,
            purpose="EMAIL",
            expires_at=expires_at,
        )
    return f"/exports/{export_id}/download", token


async def recorded_ip_of_a_download(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, **extra: str
) -> str:
    """Download once through a fresh ``serve``, claiming to be CLAIMED; the IP recorded."""
    path, token = await completed_export_link(pool, settings)
    port = services.free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / f"serve-{port}.log"
    with serving(environment(settings, base_url, **extra), port, log_file) as process:

        async def healthy() -> bool:
            assert process.poll() is None, "serve exited:\n" + log_file.read_text()
            try:
                async with httpx.AsyncClient(trust_env=False) as client:
                    return (await client.get(f"{base_url}/healthz", timeout=2)).is_success
            except httpx.TransportError:
                return False

        await eventually(healthy, timeout=30, interval=0.1, what="logexport serve to answer")
        async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
            response = await client.post(
                path,
                data={"token": token},
                headers={"Origin": base_url, "X-Forwarded-For": CLAIMED},
            )
        assert response.status_code == 303, response.text
    async with pool.acquire() as conn:
        ip = await conn.fetchval(
            "SELECT ip_address FROM audit_log_entries WHERE action = 'iam:log-export:download' "
            "AND resource_id = $1",
            path.split("/")[2],
        )
    return str(ip)


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(pool, settings, tmp_path):
    # The peer is 127.0.0.1, which the HTTP server alone would have believed.
    assert await recorded_ip_of_a_download(pool, settings, tmp_path) == "127.0.0.1"


async def test_forwarded_for_from_a_trusted_proxy_is_recorded(pool, settings, tmp_path):
    recorded = await recorded_ip_of_a_download(
        pool, settings, tmp_path, LOGEXPORT_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1/32"
    )
    assert recorded == CLAIMED


def test_malformed_trusted_proxies_stop_serve_with_exit_2(settings, tmp_path):
    env = environment(
        settings, "http://127.0.0.1:1", LOGEXPORT_TRUSTED_PROXIES="10.0.0.0/8,10.1/33"
    )
    result = subprocess.run(
        [LOGEXPORT, "serve", "--no-worker", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "LOGEXPORT_TRUSTED_PROXIES" in lines[0]
    assert "entry 2 of 2" in lines[0]
