"""``logexport serve`` as a real process: readiness follows the database, SIGTERM ends it
cleanly, and its JSON log lines never carry a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from devtools import services
from logexport.logs import redact
from tests.support.world import build_world, eventually

LOGEXPORT = str(Path(sys.executable).with_name("logexport"))


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log_file: Path

    def log_lines(self) -> list[str]:
        return self.log_file.read_text().splitlines()


def _environment(settings, base_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "LOGEXPORT_DATABASE_URL": settings.database_url,
        "LOGEXPORT_STORAGE_URL": settings.storage_url,
        "LOGEXPORT_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
        "LOGEXPORT_SMTP_URL": settings.smtp_url,
        "LOGEXPORT_MAIL_FROM": settings.mail_from,
        "LOGEXPORT_SECRET_KEY": settings.secret_key,
        "LOGEXPORT_SIGNING_KEY": settings.signing_key,
        "LOGEXPORT_BASE_URL": base_url,
        "LOGEXPORT_WORKER_POLL_INTERVAL": "0.5s",
        "LOGEXPORT_SHUTDOWN_GRACE": "5s",
    }


def _launch(args: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("wb") as log:
        return subprocess.Popen([LOGEXPORT, *args], env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest_asyncio.fixture(loop_scope="session")
async def served(settings, tmp_path) -> AsyncIterator[Served]:
    port = services.free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "serve.log"
    process = _launch(["serve", "--port", str(port)], _environment(settings, url), log_file)
    served = Served(process, url, log_file)
    try:

        async def healthy() -> bool:
            assert process.poll() is None, "serve exited:\n" + log_file.read_text()
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{url}/healthz", timeout=2)).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy, timeout=30, interval=0.1, what="logexport serve to answer")
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def cluster(pg_cluster) -> Iterator[services.PostgresCluster]:
    if pg_cluster is None:
        pytest.skip("needs the private PostgreSQL cluster to stop and start it")
    try:
        yield pg_cluster
    finally:
        if not pg_cluster.is_running():
            pg_cluster.start()


async def _readiness(url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/readyz", timeout=10)
    return response.status_code, response.json()


async def test_readyz_follows_the_database(served, cluster):
    async def status_is(code: int) -> dict | None:
        status, body = await _readiness(served.url)
        return body if status == code else None

    body = await eventually(lambda: status_is(200), timeout=20, interval=0.2, what="ready")
    assert body["checks"]["listener"] == {"ok": True}

    cluster.stop()
    body = await eventually(lambda: status_is(503), timeout=20, interval=0.2, what="not ready")
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["database"]["reason"]

    cluster.start()
    # The listener reconnects with backoff, so readiness may trail the database a little.
    await eventually(lambda: status_is(200), timeout=45, interval=0.3, what="ready again")
    assert served.process.poll() is None


async def test_sigterm_exits_cleanly_and_logs_hold_no_tokens(served, pool):
    world = await build_world(pool)
    async with httpx.AsyncClient(base_url=served.url) as client:
        response = await client.post(
            "/graphql",
            json={"query": "{ viewer { email } }"},
            headers={"Authorization": f"Bearer {world.owner.token}"},
        )
        assert response.json() == {"data": {"viewer": {"email": "olivia.owner@acme.test"}}}
        secret = "s3cr3t-download-token-value"
        link = f"/exports/00000000-0000-4000-8000-000000000000/download?token={secret}"
        assert (await client.get(link)).status_code == 404

    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    code = served.process.wait(timeout=15)
    assert code == 0, served.log_file.read_text()
    assert time.monotonic() - started < 10  # within LOGEXPORT_SHUTDOWN_GRACE and then some

    lines = served.log_lines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert records, "serve wrote no log lines"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "logexport.access"]
    assert any(
        "/exports/00000000-0000-4000-8000-000000000000/download" in r["message"] for r in access
    )
    text = served.log_file.read_text()
    assert world.owner.token not in text
    assert secret not in text
    assert any(r["message"] == "worker stopped" for r in records)


async def test_worker_command_stops_on_sigterm_with_exit_0(settings, tmp_path):
    log_file = tmp_path / "worker.log"
    process = _launch(
        ["worker", "--concurrency", "1"], _environment(settings, "http://x"), log_file
    )
    try:

        async def running() -> bool:
            assert process.poll() is None, "worker exited:\n" + log_file.read_text()
            return '"worker running"' in log_file.read_text()

        await eventually(running, timeout=30, interval=0.1, what="logexport worker to start")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log_file.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert '"worker stopped"' in log_file.read_text()
    assert settings.signing_key not in log_file.read_text()


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        (["worker"], None, "error: LOGEXPORT_SIGNING_KEY is not set"),
        (["serve", "--port", "1"], None, "error: LOGEXPORT_SIGNING_KEY is not set"),
        (
            ["worker"],
            "hunter2-not-a-key",
            "error: LOGEXPORT_SIGNING_KEY is malformed: expected the base64url of a 32-byte "
            "Ed25519 seed or a PKCS#8 PEM",
        ),
    ],
)
def test_a_worker_without_a_signing_key_does_not_start(settings, args, key, message):
    env = {
        k: v for k, v in _environment(settings, "http://x").items() if k != "LOGEXPORT_SIGNING_KEY"
    }
    if key is not None:
        env["LOGEXPORT_SIGNING_KEY"] = key
    result = subprocess.run(
        [LOGEXPORT, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stderr, result.stdout) == (2, message + "\n", "")


def test_log_lines_redact_credentials():
    line = redact(
        "GET https://bucket.s3.example/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc123 "
        "link /exports/1/download?token=t0ken&x=1 smtp://mailer:hunter2@mail.example:587 "
        "Authorization: Bearer lex_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    )
    for leaked in ("abc123", "AKIA", "t0ken", "hunter2", "lex_abcdefgh"):
        assert leaked not in line
    assert "https://bucket.s3.example/k?[REDACTED]" in line
    assert "smtp://mailer:[REDACTED]@mail.example:587" in line
