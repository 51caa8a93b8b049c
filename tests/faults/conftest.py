"""Fixtures for fault tests: a seeded database cloned per test, real worker processes.

Seeding happens once per session into a template (generated in SQL: the row contents do not
matter here, only their number and size);
each test gets ``CREATE DATABASE … TEMPLATE`` of it (``database_url`` is overridden here, so
the shared ``pool`` and ``settings`` fixtures point at the seeded copy).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from devtools import services
from logexport import db
from logexport.config import Settings
from tests.support.processes import ProcessGroup, service_env
from tests.support.throttle import ThrottledRelay
from tests.support.world import World, build_world

SEED_START = datetime(2026, 1, 1, tzinfo=UTC)
SEED_END = datetime(2026, 1, 13, tzinfo=UTC)
SEED_ROWS = 50_000

# About 450 bytes a row in JSONL, so the whole range is over 20 MiB: a multipart upload.
_SEED_SQL = """
INSERT INTO audit_log_entries (
    organization_id, created_at, actor_type, actor_id, actor_email, actor_name, action,
    resource_type, resource_id, ip_address, user_agent, metadata)
SELECT $1::uuid,
       $2::timestamptz + (($3::timestamptz - $2::timestamptz) / $4::int) * i,
       'USER', 'usr_' || (i % 500), 'user' || (i % 500) || '@example.com',
       'User ' || (i % 500),
       (ARRAY['user.login', 'user.logout', 'document.download', 'role.assign'])[1 + i % 4],
       'Document', 'doc_' || i, ('203.0.113.' || (i % 250))::inet,
       'Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0',
       jsonb_build_object('request_id', md5(i::text), 'session', md5((i * 7)::text),
                          'n', i)
FROM generate_series(0, $4::int - 1) AS i
"""


@dataclass(frozen=True)
class SeededTemplate:
    name: str
    world: World


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def seeded_template(
    pg_admin_url: str,
    template_database: str,
    pg_cluster: services.PostgresCluster | None,
) -> AsyncIterator[SeededTemplate]:
    name = f"faults_{os.getpid()}_{secrets.token_hex(4)}"
    await services.create_database(pg_admin_url, name, template=template_database)
    pool = await db.create_pool(services.with_database(pg_admin_url, name))
    try:
        world = await build_world(pool)
        async with pool.acquire() as conn:
            await conn.execute(_SEED_SQL, world.organization_id, SEED_START, SEED_END, SEED_ROWS)
            await conn.execute("ANALYZE")
    finally:
        await pool.close()
    try:
        yield SeededTemplate(name, world)
    finally:
        if pg_cluster is not None and not pg_cluster.is_running():
            pg_cluster.start()
        await services.drop_database(pg_admin_url, name)


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(
    pg_admin_url: str,
    seeded_template: SeededTemplate,
    pg_cluster: services.PostgresCluster | None,
) -> AsyncIterator[str]:
    """A private copy of the seeded database."""
    name = f"f_{os.getpid()}_{secrets.token_hex(4)}"
    await services.create_database(pg_admin_url, name, template=seeded_template.name)
    try:
        yield services.with_database(pg_admin_url, name)
    finally:
        if pg_cluster is not None and not pg_cluster.is_running():
            pg_cluster.start()
        await services.drop_database(pg_admin_url, name)


@pytest.fixture
def world(seeded_template: SeededTemplate) -> World:
    return seeded_template.world


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def slow_s3(s3_server: services.S3Server) -> Iterator[ThrottledRelay]:
    """The S3 endpoint behind an 8 MB/s link: an export's upload lasts a few seconds on any
    machine, long enough to be interrupted on purpose."""
    relay = ThrottledRelay(s3_server.port, 8_000_000).start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def worker_env(settings: Settings, slow_s3: ThrottledRelay) -> dict[str, str]:
    """Environment of a worker process against this test's database, bucket and mail sink."""
    return service_env(
        database_url=settings.database_url,
        storage_url=settings.storage_url,
        smtp_url=settings.smtp_url,
        s3_endpoint_url=slow_s3.endpoint_url,
        worker_poll_interval="0.5s",
        worker_lease="3s",
        worker_retry_base="0.3s",
        shutdown_grace="30s",
    )
