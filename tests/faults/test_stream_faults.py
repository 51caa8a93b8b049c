"""Log streams run by real worker processes: a worker killed mid-delivery, and many workers
sharing many streams. What the receiver ends up with is checked as a customer would: every
sequence once (a retry repeats the same delivery id and bytes), no gap, signatures and
manifests valid, every row exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import pytest

from logexport import identity
from logexport.config import Settings
from tests.faults import owner_of, start_workers
from tests.support.receiver import Receiver, receiver
from tests.support.stream_checks import (
    chained_row_ids,
    create_stream,
    write_entries,
)
from tests.support.world import eventually

pytestmark = pytest.mark.faults

PAST = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def http() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def stream_env(worker_env: dict[str, str], settings: Settings) -> dict[str, str]:
    return {
        **worker_env,
        "LOGEXPORT_SECRET_KEY": settings.require("secret_key"),
        "LOGEXPORT_STREAM_ALLOW_PRIVATE": "1",
        "LOGEXPORT_STREAM_MAX_ROWS": "10",
        "LOGEXPORT_STREAM_RETRY_CAP": "1s",
    }


async def _org(pool: asyncpg.Pool, name: str) -> UUID:
    async with pool.acquire() as conn:
        return (await identity.create_organization(conn, name)).id


async def _new_stream(
    pool: asyncpg.Pool, settings: Settings, http: Receiver, org: UUID, n: int
) -> UUID:
    secret = f"secret-{n}"
    http.secrets[f"/s/{n}"] = secret
    async with pool.acquire() as conn:
        stream = await create_stream(
            conn,
            secret_key=settings.require("secret_key"),
            organization_id=org,
            url=http.url(f"/s/{n}"),
            secret=secret,
            start_at=PAST,
        )
    return stream.id


async def test_a_worker_killed_mid_delivery_leaves_no_gap_and_no_second_sequence(
    pool, settings, http, processes, stream_env
):
    org = await _org(pool, "Killco")
    async with pool.acquire() as conn:
        written = await write_entries(conn, org, 25)
    http.hold()
    workers = await start_workers(processes, stream_env, 2)
    stream_id = await _new_stream(pool, settings, http, org, 0)

    async def in_flight() -> bool:
        return http.holding() >= 1

    await eventually(in_flight, timeout=30, what="a delivery in flight")
    async with pool.acquire() as conn:
        leased = await conn.fetchrow("SELECT * FROM log_streams WHERE id = $1", stream_id)
        recorded = await conn.fetchrow(
            "SELECT * FROM log_stream_deliveries WHERE stream_id = $1", stream_id
        )
    assert recorded["sequence"] == 1 and recorded["status"] == "PENDING"
    victim = owner_of(workers, leased["lease_owner"])
    (survivor,) = [w for w in workers if w is not victim]
    victim.kill()
    killed_at = time.monotonic()
    async with pool.acquire() as conn:
        written += await write_entries(conn, org, 12)
    # The killed worker's request completes on the receiver's side only after it died: the
    # receiver has sequence 1, the database does not know it.
    http.release()

    ids = await chained_row_ids(http, "/s/0", stream_id, 37, timeout=60, interval=0.2)
    recovered_after = time.monotonic() - killed_at

    assert len(ids) == len(set(ids)) == 37
    assert set(ids) == {str(i) for i in written}
    copies = [r for r in http.received("/s/0") if r.sequence == 1]
    assert len(copies) == 2, "sequence 1 should have been sent again after the kill"
    assert {c.delivery_id for c in copies} == {str(recorded["id"])}
    assert copies[0].body == copies[1].body

    # The receiver has the last delivery a moment before the commit that records it.
    async def recorded() -> list[asyncpg.Record] | None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT sequence, status FROM log_stream_deliveries WHERE stream_id = $1"
                " ORDER BY sequence",
                stream_id,
            )
        return rows if {r["status"] for r in rows} == {"DELIVERED"} else None

    sequences = await eventually(recorded, timeout=10, what="deliveries recorded DELIVERED")
    assert [r["sequence"] for r in sequences] == list(range(1, len(sequences) + 1))
    assert survivor.alive()
    assert await survivor.terminate() == 0
    print(f"\nkill -9 mid-delivery: all 37 rows delivered {recovered_after:.1f}s after the kill")


async def test_four_workers_share_twenty_streams_and_deliver_each_sequence_exactly_once(
    pool, settings, http, processes, stream_env
):
    env = {**stream_env, "LOGEXPORT_STREAM_MAX_ROWS": "25"}
    orgs = [await _org(pool, "Fanout A"), await _org(pool, "Fanout B")]
    streams = {
        n: (orgs[n % 2], await _new_stream(pool, settings, http, orgs[n % 2], n)) for n in range(20)
    }
    workers = await start_workers(processes, env, 4)
    started = time.monotonic()
    written: dict[UUID, list[UUID]] = {org: [] for org in orgs}
    for _ in range(10):
        async with pool.acquire() as conn:
            for org in orgs:
                written[org] += await write_entries(conn, org, 6)
        await asyncio.sleep(0.3)

    for n, (org, stream_id) in streams.items():
        ids = await chained_row_ids(http, f"/s/{n}", stream_id, 60, timeout=90, interval=0.2)
        assert sorted(ids) == sorted(str(i) for i in written[org]), f"stream {n}"
    elapsed = time.monotonic() - started

    # No crash here: not even a retry. Each sequence reached the receiver exactly once.
    for n in range(20):
        sequences = [r.sequence for r in http.received(f"/s/{n}")]
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), f"stream {n}"
    total = sum(len(http.received(f"/s/{n}")) for n in range(20))

    # Logged once each delivery's commit is done, a moment after the receiver has it.
    async def all_logged() -> list[int] | None:
        sent = [sum(1 for m in w.messages() if m == "stream delivery sent") for w in workers]
        return sent if sum(sent) == total else None

    sent_by = await eventually(all_logged, timeout=15, what="every delivery logged as sent")
    assert sum(1 for count in sent_by if count > 0) >= 2, sent_by
    for worker in workers:
        assert await worker.terminate() == 0
    print(
        f"\n4 workers x 20 streams: {total} deliveries (1200 rows in all), each exactly once, in "
        f"{elapsed:.1f}s; deliveries per worker {sent_by}"
    )


async def test_a_worker_stopped_mid_delivery_finishes_it_before_exiting(
    pool, settings, http, processes, stream_env
):
    """SIGTERM (a deploy): the delivery in flight completes and is recorded by the same
    worker within the shutdown grace, so no other worker sends it a second time."""
    org = await _org(pool, "Deployco")
    async with pool.acquire() as conn:
        written = await write_entries(conn, org, 4)
    http.hold()
    [worker] = await start_workers(processes, stream_env, 1)
    stream_id = await _new_stream(pool, settings, http, org, 0)

    async def in_flight() -> bool:
        return http.holding() >= 1

    await eventually(in_flight, timeout=30, what="a delivery in flight")
    worker.send(signal.SIGTERM)
    await worker.wait_for_line(
        lambda rec: str(rec.get("message", "")).startswith("stopping"), timeout=10
    )
    http.release()

    assert await worker.wait_exit(timeout=30) == 0
    [only] = http.received("/s/0")
    assert only.sequence == 1 and [r["id"] for r in only.rows()] == sorted(map(str, written))
    async with pool.acquire() as conn:
        delivery = await conn.fetchrow(
            "SELECT status FROM log_stream_deliveries WHERE stream_id = $1", stream_id
        )
        stream = await conn.fetchrow("SELECT * FROM log_streams WHERE id = $1", stream_id)
    assert delivery["status"] == "DELIVERED"
    assert stream["lease_owner"] is None and stream["last_sequence"] == 1
