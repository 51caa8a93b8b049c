"""A real ``logexport serve`` process against the local servers, for the benchmarks."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from devtools import services

REPO = Path(__file__).resolve().parent.parent


def process_env(url: str, s3: services.S3Server, bucket: str) -> dict[str, str]:
    """The environment of a ``logexport`` process against the local PostgreSQL and S3,
    free of the caller's settings; signs with the development key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGEXPORT_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "NO_PROXY": "127.0.0.1,localhost",
            "AWS_ACCESS_KEY_ID": services.S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": services.S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": services.S3_REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "LOGEXPORT_DATABASE_URL": url,
            "LOGEXPORT_STORAGE_URL": f"s3://{bucket}/exports",
            "LOGEXPORT_S3_ENDPOINT_URL": s3.endpoint_url,
            "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
            "LOGEXPORT_SIGNING_KEY": services.dev_signing_key(),
        }
    )
    return env


def serve_env(
    url: str,
    s3: services.S3Server,
    smtp: services.SmtpSink,
    port: int,
    bucket: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a ``serve`` on 127.0.0.1:``port``, free of the caller's settings."""
    env = process_env(url, s3, bucket)
    env.update(
        {
            "LOGEXPORT_SMTP_URL": smtp.url,
            "LOGEXPORT_MAIL_FROM": "bench@example.test",
            "LOGEXPORT_BASE_URL": f"http://127.0.0.1:{port}",
            "LOGEXPORT_SECRET_KEY": secrets.token_urlsafe(48),
            **(extra or {}),
        }
    )
    return env


@contextlib.contextmanager
def serving(env: dict[str, str], port: int, log_path: Path) -> Iterator[tuple[str, int]]:
    """``logexport serve`` on 127.0.0.1:``port`` until the block ends; yields (base URL, pid)."""
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from logexport.cli import main; sys.exit(main())",
         "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"logexport serve exited with {process.returncode}; see {log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"logexport serve was not ready within 60 s; see {log_path}")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
