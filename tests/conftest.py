"""Shared fixtures: real PostgreSQL, S3 (moto over HTTP) and SMTP servers on 127.0.0.1.

PostgreSQL: a private cluster per test session (or ``LOGEXPORT_TEST_DATABASE_URL``, a
superuser URL of an existing server, or a container when
``LOGEXPORT_TEST_USE_CONTAINERS=1`` and Docker answers). A template database is migrated
once per session; each test gets ``CREATE DATABASE … TEMPLATE`` of it, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from devtools import services
from logexport import db
from logexport.config import Settings
from tests.support.keys import TEST_SIGNING_KEY

# Test traffic stays on loopback: no proxy, no cloud metadata probes.
os.environ["NO_PROXY"] = ",".join(
    filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost"])
)
os.environ["no_proxy"] = os.environ["NO_PROXY"]
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

TEST_SECRET_KEY = "test-secret-key-0123456789abcdef-0123456789abcdef"
TEST_MAIL_FROM = "logexport@example.test"


def _unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


# ------------------------------------------------------------------------------ PostgreSQL


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


def _use_containers() -> bool:
    return os.environ.get("LOGEXPORT_TEST_USE_CONTAINERS") == "1" and _docker_answers()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[services.PostgresCluster | None]:
    """This session's private cluster; None when tests use an external server or container."""
    if os.environ.get("LOGEXPORT_TEST_DATABASE_URL") or _use_containers():
        yield None
        return
    services.sweep_stale_clusters("pg-test-")
    cluster = services.PostgresCluster(
        name=f"test-{os.getpid()}-{secrets.token_hex(3)}", remove_at_exit=True
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(remove=True)


@pytest.fixture(scope="session")
def pg_admin_url(pg_cluster: services.PostgresCluster | None) -> Iterator[str]:
    """Superuser URL (database ``postgres``) of the server tests run against."""
    external = os.environ.get("LOGEXPORT_TEST_DATABASE_URL")
    if external:
        yield external
    elif pg_cluster is not None:
        yield pg_cluster.url()
    else:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()


def _ensure_server(pg_cluster: services.PostgresCluster | None) -> None:
    # A fault test may leave the server stopped; later tests still need it.
    if pg_cluster is not None and not pg_cluster.is_running():
        pg_cluster.start()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_database(
    pg_admin_url: str, pg_cluster: services.PostgresCluster | None
) -> AsyncIterator[str]:
    """Name of a database migrated once per session, cloned for every test."""
    name = _unique("tmpl")
    await services.create_database(pg_admin_url, name)
    await db.migrate(services.with_database(pg_admin_url, name))
    try:
        yield name
    finally:
        _ensure_server(pg_cluster)
        await services.drop_database(pg_admin_url, name)


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(
    pg_admin_url: str,
    template_database: str,
    pg_cluster: services.PostgresCluster | None,
) -> AsyncIterator[str]:
    """A fresh, migrated database private to this test."""
    name = _unique("t")
    await services.create_database(pg_admin_url, name, template=template_database)
    try:
        yield services.with_database(pg_admin_url, name)
    finally:
        _ensure_server(pg_cluster)
        await services.drop_database(pg_admin_url, name)


@pytest_asyncio.fixture(loop_scope="session")
async def empty_database_url(
    pg_admin_url: str, pg_cluster: services.PostgresCluster | None
) -> AsyncIterator[str]:
    """A fresh database with no migrations applied."""
    name = _unique("e")
    await services.create_database(pg_admin_url, name)
    try:
        yield services.with_database(pg_admin_url, name)
    finally:
        _ensure_server(pg_cluster)
        await services.drop_database(pg_admin_url, name)


@pytest_asyncio.fixture(loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url)
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            pool.terminate()


# ------------------------------------------------------------------------------ S3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[services.S3Server]:
    """moto in server mode; ``.stop()``/``.start()`` keep the port but forget all buckets."""
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ["AWS_ACCESS_KEY_ID"] = services.S3_ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = services.S3_SECRET_KEY
    os.environ["AWS_DEFAULT_REGION"] = services.S3_REGION
    server = services.S3Server(log_file=services.run_dir() / f"moto-test-{os.getpid()}.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if server.log_file is not None:
            server.log_file.unlink(missing_ok=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class S3Bucket:
    server: services.S3Server
    bucket: str
    endpoint_url: str
    region: str = services.S3_REGION
    access_key: str = services.S3_ACCESS_KEY
    secret_key: str = services.S3_SECRET_KEY

    @property
    def storage_url(self) -> str:
        return f"s3://{self.bucket}/exports"

    def client(self) -> Any:
        """A synchronous boto3 client, for assertions."""
        return self.server.client()

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def get(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body


@pytest.fixture
def s3(s3_server: services.S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh bucket on the session's moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", services.S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", services.S3_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", services.S3_REGION)
    if not s3_server.is_running():
        s3_server.start()
    bucket = f"t-{secrets.token_hex(8)}"
    s3_server.create_bucket(bucket)
    yield S3Bucket(server=s3_server, bucket=bucket, endpoint_url=s3_server.endpoint_url)
    if not s3_server.is_running():
        s3_server.start()


# ------------------------------------------------------------------------------ SMTP


@pytest.fixture(scope="session")
def smtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.SmtpSink]:
    sink = services.SmtpSink(directory=tmp_path_factory.mktemp("mail")).start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(autouse=True)
def _smtp_failures_do_not_leak(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "smtp_sink" in request.fixturenames:
        request.getfixturevalue("smtp_sink").reset_failures()


# ------------------------------------------------------------------------------ settings


@pytest.fixture
def settings(database_url: str, s3: S3Bucket, smtp_sink: services.SmtpSink) -> Settings:
    return Settings.from_env(
        env={
            "LOGEXPORT_DATABASE_URL": database_url,
            "LOGEXPORT_STORAGE_URL": s3.storage_url,
            "LOGEXPORT_S3_ENDPOINT_URL": s3.endpoint_url,
            "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
            "LOGEXPORT_SMTP_URL": smtp_sink.url,
            "LOGEXPORT_MAIL_FROM": TEST_MAIL_FROM,
            "LOGEXPORT_BASE_URL": "http://127.0.0.1:1",
            "LOGEXPORT_SECRET_KEY": TEST_SECRET_KEY,
            "LOGEXPORT_SIGNING_KEY": TEST_SIGNING_KEY,
            "LOGEXPORT_WORKER_POLL_INTERVAL": "0.5s",
            "LOGEXPORT_WORKER_LEASE": "5s",
            "LOGEXPORT_SHUTDOWN_GRACE": "5s",
        }
    )


# ------------------------------------------------------------------------------ artifacts


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """test-output/<test name>/ for screenshots, traces and files worth keeping."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")[:150]
    path = Path(request.config.rootpath) / "test-output" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
