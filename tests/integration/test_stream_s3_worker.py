"""An S3 stream run by the worker's stream loop, into a customer's bucket on a server of its
own with IAM enforced (other credentials than the service's storage): every entry lands once,
in numbered objects whose manifests verify as one chain, through an outage of the customer's
permissions."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
import pytest_asyncio

from devtools import services
from devtools.customer_aws import CustomerAccount, KeyPair, customer_account
from logexport import identity, manifests
from logexport.config import Settings
from logexport.entries import record_audit_log_entry
from logexport.streams.loop import StreamLoop
from logexport.streams.secrets import seal
from logexport.streams.store import insert_stream
from tests.support.stream_checks import running_stream_loop
from tests.support.world import eventually

SIGNING_KEY = manifests.generate_signing_key()


@pytest.fixture(scope="module")
def customer() -> Iterator[CustomerAccount]:
    with customer_account(
        log_file=services.run_dir() / f"moto-customer-worker-{os.getpid()}.log"
    ) as account:
        yield account


@pytest.fixture
def stream_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        signing_key=SIGNING_KEY,
        stream_allow_private=True,
        stream_max_rows=10,
        stream_retry_cap=1.0,
        worker_retry_base=0.2,
        worker_lease=5.0,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def running_loop(stream_settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[StreamLoop]:
    async with running_stream_loop(stream_settings, pool, "s3-test-worker") as loop:
        yield loop


async def new_stream(
    pool: asyncpg.Pool,
    settings: Settings,
    customer: CustomerAccount,
    org: UUID,
    prefix: str,
    *,
    keys: KeyPair | None = None,
    role: bool = False,
) -> UUID:
    stream_id = uuid4()
    sealed = (
        seal(
            settings.require("secret_key"), stream_id, {"secret_access_key": keys.secret_access_key}
        )
        if keys
        else None
    )
    async with pool.acquire() as conn:
        await insert_stream(
            conn,
            stream_id=stream_id,
            organization_id=org,
            kind="AUDIT_LOG",
            destination_type="S3",
            destination={
                "bucket": customer.bucket,
                "prefix": prefix,
                "region": customer.region,
                "endpoint_url": customer.endpoint_url,
                "access_key_id": keys.access_key_id if keys else None,
                "role_arn": customer.role_arn if role else None,
                "external_id": customer.external_id if role else None,
            },
            secret=sealed,
            interval_seconds=1,
            filter=None,
            start_at=None,
            created_by=None,
        )
    return stream_id


async def write_entries(pool: asyncpg.Pool, org: UUID, count: int, label: str) -> list[str]:
    ids = []
    async with pool.acquire() as conn:
        for n in range(count):
            entry_id = await record_audit_log_entry(
                conn,
                organization_id=org,
                action="user.login",
                actor_type="USER",
                actor_id=f"usr_{n}",
                metadata={"batch": label, "n": n},
            )
            ids.append(str(entry_id))
    return ids


async def delivered_rows(pool: asyncpg.Pool, stream_id: UUID) -> int:
    async with pool.acquire() as conn:
        total: int = await conn.fetchval(
            "SELECT coalesce(sum(row_count), 0) FROM log_stream_deliveries "
            "WHERE stream_id = $1 AND status = 'DELIVERED'",
            stream_id,
        )
    return total


async def stream_row(pool: asyncpg.Pool, stream_id: UUID) -> asyncpg.Record:
    async with pool.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM log_streams WHERE id = $1", stream_id)


def verify_bucket(customer: CustomerAccount, prefix: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Download every object and manifest under ``prefix``, verify each file and the chain
    offline, and return the rows in delivery order."""
    public = manifests.parse_signing_key(SIGNING_KEY).public_key()
    keys = {manifests.key_id(public): public}
    folder = tmp_path / "bucket"
    folder.mkdir()
    by_sequence: dict[int, list[dict[str, Any]]] = {}
    for key in customer.keys(prefix):
        if not key.endswith(".jsonl.gz"):
            continue
        name = key.rsplit("/", 1)[1]
        (folder / name).write_bytes(customer.get(key))
        (folder / (name + manifests.MANIFEST_SUFFIX)).write_bytes(
            customer.get(key + manifests.MANIFEST_SUFFIX)
        )
        envelope = json.loads((folder / (name + manifests.MANIFEST_SUFFIX)).read_bytes())
        summary = manifests.verify_file(folder / name, envelope, keys)
        sequence = summary.manifest["sequence"]
        assert name == f"{summary.manifest['organization_id']}-{sequence}.jsonl.gz"
        by_sequence[sequence] = [
            json.loads(line) for line in gzip.decompress((folder / name).read_bytes()).splitlines()
        ]
    chain = manifests.verify_chain(folder, keys)
    assert (chain.first_sequence, chain.count) == (1, len(by_sequence))
    return [row for _, rows in sorted(by_sequence.items()) for row in rows]


async def test_s3_stream_delivers_every_entry_once_through_an_outage_of_permissions(
    pool: asyncpg.Pool,
    stream_settings: Settings,
    customer: CustomerAccount,
    running_loop: StreamLoop,
    tmp_path: Path,
) -> None:
    async with pool.acquire() as conn:
        org = (await identity.create_organization(conn, "Bucketco")).id
    prefix = f"worker/{uuid4().hex[:8]}"
    stream_id = await new_stream(pool, stream_settings, customer, org, prefix, keys=customer.writer)
    before = await write_entries(pool, org, 15, "before")

    async def all_delivered(count: int) -> bool:
        return await delivered_rows(pool, stream_id) >= count

    await eventually(lambda: all_delivered(15), timeout=30, what="the first 15 rows")

    customer.allow_writer(False)
    try:
        during = await write_entries(pool, org, 12, "during")

        async def failing() -> asyncpg.Record | None:
            row = await stream_row(pool, stream_id)
            return row if row["state"] == "FAILING" else None

        row = await eventually(failing, timeout=30, what="the stream to fail")
        assert "AccessDenied" in row["last_error"]
        assert customer.bucket in row["last_error"]
        assert customer.writer.secret_access_key not in row["last_error"]
        assert await delivered_rows(pool, stream_id) == 15
    finally:
        customer.allow_writer(True)
    after = await write_entries(pool, org, 4, "after")

    await eventually(lambda: all_delivered(31), timeout=30, what="the catch-up")

    async def active() -> bool:
        return (await stream_row(pool, stream_id))["state"] == "ACTIVE"

    await eventually(active, timeout=10, what="the stream to be ACTIVE again")
    rows = verify_bucket(customer, prefix, tmp_path)
    assert [r["id"] for r in rows] == before + during + after
    assert all(r["organization_id"] == str(org) for r in rows)
    row = await stream_row(pool, stream_id)
    objects = [k for k in customer.keys(prefix) if k.endswith(".jsonl.gz")]
    assert len(objects) == row["last_sequence"]
    assert row["last_error"] is None


async def test_role_stream_assumes_the_role_with_the_service_identity(
    pool: asyncpg.Pool,
    stream_settings: Settings,
    customer: CustomerAccount,
    running_loop: StreamLoop,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", customer.service.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", customer.service.secret_access_key)
    async with pool.acquire() as conn:
        org = (await identity.create_organization(conn, "Roleco")).id
    prefix = f"role/{uuid4().hex[:8]}"
    stream_id = await new_stream(pool, stream_settings, customer, org, prefix, role=True)
    written = await write_entries(pool, org, 12, "role")

    await eventually(
        lambda: _at_least(delivered_rows(pool, stream_id), 12), timeout=30, what="12 rows"
    )

    rows = verify_bucket(customer, prefix, tmp_path)
    assert [r["id"] for r in rows] == written


async def _at_least(count: Any, expected: int) -> bool:
    return bool(await count >= expected)
