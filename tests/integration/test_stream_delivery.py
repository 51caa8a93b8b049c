"""Log stream deliveries through real parts: PostgreSQL, the worker's stream loop and an HTTP
receiver on 127.0.0.1 that checks each delivery's HMAC and signed manifest.

The guarantee under test: every entry of the stream's kind written after its start is
delivered once, in numbered, signed deliveries with no gap, whatever fails on the way."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest
import pytest_asyncio

from logexport import identity
from logexport.config import Settings
from logexport.kinds import LOG_KINDS, ExportKind
from logexport.metrics import WorkerMetrics
from logexport.streams.loop import StreamLoop
from logexport.streams.models import StreamState
from logexport.streams.runner import StreamRunner
from logexport.streams.store import StreamFence, StreamStore
from tests.support.keys import TEST_SIGNING_KEY
from tests.support.receiver import Receiver, receiver
from tests.support.stream_checks import (
    chained_row_ids,
    create_stream,
    distinct_deliveries,
    running_stream_loop,
    write_entries,
)
from tests.support.world import eventually

SECRET = "whsec-test-0123456789"
PAST = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def stream_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        signing_key=TEST_SIGNING_KEY,
        stream_allow_private=True,
        stream_max_rows=10,
        worker_retry_base=0.2,
        stream_retry_cap=1.0,
        worker_lease=5.0,
    )


@pytest.fixture
def http() -> Iterator[Receiver]:
    with receiver(SECRET) as r:
        yield r


@pytest_asyncio.fixture(loop_scope="session")
async def org(pool: asyncpg.Pool) -> UUID:
    async with pool.acquire() as conn:
        organization = await identity.create_organization(conn, "Streamco")
    return organization.id


@pytest_asyncio.fixture(loop_scope="session")
async def running_loop(stream_settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[StreamLoop]:
    """The stream loop as a worker runs it, polling every 0.1 s."""
    async with running_stream_loop(stream_settings, pool, "test-worker") as loop:
        yield loop


async def _stream_row(pool: asyncpg.Pool, stream_id: UUID) -> asyncpg.Record:
    async with pool.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM log_streams WHERE id = $1", stream_id)


async def _received_ids(http: Receiver, path: str, count: int) -> list[str]:
    return await chained_row_ids(http, path, _stream_of(http, path), count)


_paths: dict[tuple[int, str], UUID] = {}


def _stream_of(http: Receiver, path: str) -> UUID:
    return _paths[(id(http), path)]


async def _new_stream(
    pool: asyncpg.Pool, settings: Settings, http: Receiver, org: UUID, **kwargs: object
) -> UUID:
    async with pool.acquire() as conn:
        stream = await create_stream(
            conn,
            secret_key=settings.require("secret_key"),
            organization_id=org,
            url=http.url(f"/s/{len(_paths)}"),
            secret=SECRET,
            **kwargs,  # type: ignore[arg-type]
        )
    assert stream.url is not None
    path = stream.url.split(str(http.port), 1)[1]
    _paths[(id(http), path)] = stream.id
    return stream.id


async def test_rows_arrive_in_order_in_bounded_signed_deliveries_each_verifiable_offline(
    pool, stream_settings, http, org, running_loop
):
    async with pool.acquire() as conn:
        written = await write_entries(conn, org, 25, note='quote " and \\ backslash')
    stream_id = await _new_stream(pool, stream_settings, http, org, start_at=PAST)
    path = f"/s/{len(_paths) - 1}"

    ids = await _received_ids(http, path, 25)

    assert ids == sorted(str(i) for i in written)
    deliveries = distinct_deliveries(http.received(path))
    assert [len(d.rows()) for _, d in sorted(deliveries.items())] == [10, 10, 5]
    first = deliveries[1].rows()[0]
    assert list(first) == list(LOG_KINDS[ExportKind.AUDIT_LOG].columns)
    assert first["organization_id"] == str(org)
    assert first["metadata"]["note"] == 'quote " and \\ backslash'

    # The receiver has the last delivery a moment before the commit that records it.
    async def recorded() -> list[asyncpg.Record] | None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT sequence, status, row_count FROM log_stream_deliveries"
                " WHERE stream_id = $1 ORDER BY sequence",
                stream_id,
            )
        return rows if all(r["status"] == "DELIVERED" for r in rows) else None

    statuses = await eventually(recorded, timeout=10, what="deliveries recorded DELIVERED")
    row = await _stream_row(pool, stream_id)
    assert row["last_sequence"] == 3 and row["state"] == "ACTIVE"
    assert row["range_end"] is None and row["horizon"] is not None
    assert [(r["sequence"], r["status"], r["row_count"]) for r in statuses] == [
        (1, "DELIVERED", 10),
        (2, "DELIVERED", 10),
        (3, "DELIVERED", 5),
    ]

    # Later entries go out in the next runs, continuing the chain.
    async with pool.acquire() as conn:
        more = await write_entries(conn, org, 3)
    ids = await _received_ids(http, path, 28)
    assert ids[25:] == sorted(str(i) for i in more)
    assert len(set(ids)) == 28


async def test_a_start_time_keeps_older_entries_out_and_rows_without_a_transaction_id_count(
    pool, stream_settings, http, org, running_loop
):
    """Rows written before the column existed have no transaction id: a stream starting in
    the past reaches them by created_at, one starting later never sends them."""
    async with pool.acquire() as conn:
        old = await write_entries(conn, org, 4, created_at=datetime(2021, 6, 1, tzinfo=UTC))
        await conn.execute("UPDATE audit_log_entries SET xid = NULL WHERE id = ANY($1)", old)
        recent = await write_entries(conn, org, 2, created_at=datetime(2023, 6, 1, tzinfo=UTC))
        await conn.execute("UPDATE audit_log_entries SET xid = NULL WHERE id = ANY($1)", recent)
    await _new_stream(pool, stream_settings, http, org, start_at=PAST)
    from_2022 = await _new_stream(
        pool, stream_settings, http, org, start_at=datetime(2022, 1, 1, tzinfo=UTC)
    )
    everything = f"/s/{len(_paths) - 2}"
    later = f"/s/{len(_paths) - 1}"

    ids = await _received_ids(http, everything, 6)
    assert {str(i) for i in old + recent} <= set(ids)
    await _received_ids(http, later, 2)
    async with pool.acquire() as conn:
        new = await write_entries(conn, org, 1)
    later_ids = await _received_ids(http, later, 3)
    assert set(later_ids) == {str(i) for i in recent + new}
    row = await _stream_row(pool, from_2022)
    assert row["state"] == "ACTIVE"


async def test_a_receiver_that_is_down_keeps_the_rows_and_gets_them_all_in_order_when_back(
    pool, stream_settings, http, org, running_loop
):
    async with pool.acquire() as conn:
        before = await write_entries(conn, org, 5)
    http.down()
    assert http.refuses()
    stream_id = await _new_stream(pool, stream_settings, http, org, start_at=PAST)
    path = f"/s/{len(_paths) - 1}"

    async def failing_twice() -> asyncpg.Record | None:
        row = await _stream_row(pool, stream_id)
        return row if row["state"] == "FAILING" and row["failures"] >= 2 else None

    failing = await eventually(failing_twice, timeout=30, what="the stream to be FAILING")
    assert "could not connect to 127.0.0.1" in failing["last_error"]
    assert SECRET not in failing["last_error"]
    assert failing["next_run_at"] > failing["updated_at"]
    # Entries keep coming while the receiver is down: 5 + 22 rows, three deliveries' worth.
    async with pool.acquire() as conn:
        during = await write_entries(conn, org, 22)
        pending = await conn.fetchrow(
            "SELECT * FROM log_stream_deliveries WHERE stream_id = $1 AND status = 'PENDING'",
            stream_id,
        )
    assert pending["sequence"] == 1 and pending["attempts"] >= 2
    assert pending["error"] == failing["last_error"] or pending["error"]

    http.up()
    ids = await _received_ids(http, path, 27)

    assert len(ids) == len(set(ids)) == 27
    assert set(ids) == {str(i) for i in before + during}
    # The delivery that failed is the one that went out: same id, sequence 1.
    assert distinct_deliveries(http.received(path))[1].delivery_id == str(pending["id"])

    async def active() -> asyncpg.Record | None:
        row = await _stream_row(pool, stream_id)
        return row if row["state"] == "ACTIVE" else None

    row = await eventually(active, timeout=10, what="the stream to be ACTIVE again")
    assert row["last_error"] is None and row["failures"] == 0


async def test_rows_of_a_long_transaction_with_old_timestamps_are_delivered_after_it_commits(
    pool, stream_settings, http, org, running_loop, database_url
):
    """The open transaction holds the stream back (that is the lag it causes); its rows,
    stamped ten minutes before rows already delivered, still go out once it commits."""
    stream_id = await _new_stream(pool, stream_settings, http, org, start_at=PAST)
    path = f"/s/{len(_paths) - 1}"
    async with pool.acquire() as conn:
        early = await write_entries(conn, org, 3)
    long_tx = await asyncpg.connect(database_url)
    try:
        tx = long_tx.transaction()
        await tx.start()
        late = await write_entries(
            long_tx, org, 2, created_at=datetime.now(UTC) - timedelta(minutes=10)
        )
        late_xid = await long_tx.fetchval("SELECT pg_current_xact_id()")
        ids = await _received_ids(http, path, 3)
        assert ids == sorted(str(i) for i in early)

        async with pool.acquire() as conn:
            after = await write_entries(conn, org, 2)
        # Runs go by (one a second) while it stays open: none moves past its rows.
        runs_before = (await _stream_row(pool, stream_id))["updated_at"]

        async def two_more_runs() -> bool:
            row = await _stream_row(pool, stream_id)
            return row["updated_at"] > runs_before + timedelta(seconds=2)

        await eventually(two_more_runs, timeout=15, what="more runs")
        row = await _stream_row(pool, stream_id)
        assert row["horizon"] <= late_xid
        assert len(distinct_deliveries(http.received(path))) == 1
        await tx.commit()
    finally:
        await long_tx.close()

    ids = await _received_ids(http, path, 7)
    assert len(set(ids)) == 7
    # One range after the commit: (created_at, id) order puts the late rows first.
    assert ids[3:5] == sorted(str(i) for i in late)
    assert set(ids[5:]) == {str(i) for i in after}


async def test_a_paused_stream_is_not_run_and_a_private_address_is_refused_without_opt_in(
    pool, stream_settings, http, org
):
    store = StreamStore(pool)
    strict = dataclasses.replace(stream_settings, stream_allow_private=False)
    runner = StreamRunner(strict, store, snapshot_pool=pool, metrics=WorkerMetrics())
    async with pool.acquire() as conn:
        await write_entries(conn, org, 2)
    stream_id = await _new_stream(pool, strict, http, org, start_at=PAST)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE log_streams SET state = 'PAUSED' WHERE id <> $1", stream_id)

    claimed = await store.claim("w1", lease=5, lock_key=None)
    assert claimed is not None and claimed.id == stream_id
    result = await runner.run(claimed)

    assert result.error is not None and "destination refused" in result.error
    row = await _stream_row(pool, stream_id)
    assert row["state"] == StreamState.FAILING.value
    assert "must use https://" in row["last_error"]
    assert http.received() == []

    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE log_streams SET state = 'PAUSED', next_run_at = now() WHERE id = $1",
            stream_id,
        )
    assert await store.claim("w1", lease=5, lock_key=None) is None


async def test_a_filter_changed_while_a_delivery_waits_leaves_that_delivery_as_recorded(
    pool, stream_settings, http, org, running_loop
):
    async with pool.acquire() as conn:
        logins = await write_entries(conn, org, 3, action="user.login")
        await write_entries(conn, org, 3, action="user.logout")
    http.down()
    stream_id = await _new_stream(
        pool, stream_settings, http, org, start_at=PAST, filter={"actions": ["user.login"]}
    )
    path = f"/s/{len(_paths) - 1}"

    async def pending() -> asyncpg.Record | None:
        async with pool.acquire() as conn:
            return await conn.fetchrow(
                "SELECT * FROM log_stream_deliveries WHERE stream_id = $1 AND status = 'PENDING'",
                stream_id,
            )

    recorded = await eventually(pending, timeout=20, what="a recorded delivery")
    assert recorded["row_count"] == 3
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE log_streams SET filter = $2 WHERE id = $1",
            stream_id,
            {"actions": ["user.logout"]},
        )
        logouts = await write_entries(conn, org, 2, action="user.logout")
        await write_entries(conn, org, 2, action="user.login")
    http.up()

    ids = await _received_ids(http, path, 5)
    assert ids[:3] == sorted(str(i) for i in logins)
    assert ids[3:] == sorted(str(i) for i in logouts)
    deliveries = distinct_deliveries(http.received(path))
    assert deliveries[1].manifest()["filter"] == {"actions": ["user.login"]}
    assert deliveries[2].manifest()["filter"] == {"actions": ["user.logout"]}

    # Observed once each delivery's commit is done, a moment after the receiver has it.
    async def lag_observed() -> bool:
        return running_loop.runner.metrics.stream_lag.count >= 5

    await eventually(lag_observed, timeout=10, what="the lag of 5 rows observed")


async def test_a_worker_stopping_mid_run_hands_a_failing_stream_back_still_failing(
    pool: asyncpg.Pool, stream_settings: Settings, http: Receiver, org: UUID
) -> None:
    # A stop is no news about the destination: the stream keeps its state and last error,
    # and is due again at once for another worker.
    stream_id = await _new_stream(pool, stream_settings, http, org)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE log_streams SET state = 'FAILING', last_error = 'HTTP 503 from receiver',"
            " failures = 3, next_run_at = now() - interval '1 second' WHERE id = $1",
            stream_id,
        )
    store = StreamStore(pool)
    claimed = await store.claim("stopping-worker", lease=30.0, lock_key=None)
    assert claimed is not None and claimed.id == stream_id
    await store.hand_back(StreamFence.of(claimed))
    row = await _stream_row(pool, stream_id)
    assert row["state"] == StreamState.FAILING.value
    assert row["last_error"] == "HTTP 503 from receiver"
    assert row["failures"] == 3
    assert row["lease_owner"] is None
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT next_run_at <= now() FROM log_streams WHERE id = $1",
                                   stream_id)
