#!/usr/bin/env python3
"""Log stream delivery lag and catch-up rate, end to end through a real ``logexport worker``.

    .venv/bin/python scripts/bench_streams.py [--interval 60] [--rate 100] [--duration 240]
                                              [--catchup-rows 1000000] [--skip-lag]
                                              [--skip-https] [--skip-s3]

Private services on 127.0.0.1: a PostgreSQL cluster, a moto server for the service's own
storage and another for the customer's bucket, an HTTP receiver in this process (the HTTPS
destination, on loopback with ``LOGEXPORT_STREAM_ALLOW_PRIVATE=1``), and one ``logexport
worker`` process running the streams.

lag        one HTTPS stream at ``--interval`` seconds; this process writes ``--rate`` audit
           entries a second for ``--duration`` seconds, each batch its own transaction, and
           notes when each commit returned; the receiver notes when each entry arrived.
           Reported: p50, p99 and max of (arrived - committed) over every entry.
catch-up   the destination is down (the receiver answers 503; the bucket does not exist yet)
           while ``--catchup-rows`` entries are written; then it comes back. Reported: rows
           per second from its return to the last row delivered (the stream's retry wait is
           capped at 2 s in this run, so little of that time is waiting), and the deliveries.

It passes or fails nothing: the figures are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from devtools import services, serving
from logexport import db, identity
from logexport.streams.secrets import seal
from logexport.streams.store import insert_stream

REPO = Path(__file__).resolve().parent.parent
SECRET_KEY = secrets.token_urlsafe(48)
SERVICE_BUCKET = "bench-service"
CUSTOMER_KEY = ("BENCHCUSTOMERKEY0001", "bench-customer-secret")
BATCHES_PER_SECOND = 10


# ------------------------------------------------------------------ the receiver


@dataclass
class Receiver:
    """The customer's HTTPS endpoint: counts rows, and for ``track`` notes when each arrived."""

    url: str = ""
    status: int = 200
    track: bool = False
    rows: int = 0
    requests: int = 0
    arrived: dict[str, float] = field(default_factory=dict)
    first_at: float | None = None
    last_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.time()
            status = receiver.status
            if status == 200 and self.headers.get("X-Logexport-Sequence") != "test":
                data = gzip.decompress(body)
                with receiver.lock:
                    receiver.requests += 1
                    receiver.rows += data.count(b"\n")
                    receiver.first_at = receiver.first_at or now
                    receiver.last_at = now
                    if receiver.track:
                        for line in data.splitlines():
                            receiver.arrived.setdefault(json.loads(line)["id"], now)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/ingest"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ the worker


def worker_env(url: str, storage: services.S3Server) -> dict[str, str]:
    env = serving.process_env(url, storage, SERVICE_BUCKET)
    env.update(
        {
            # No export runs here: mail is never sent.
            "LOGEXPORT_SMTP_URL": "smtp://127.0.0.1:1",
            "LOGEXPORT_MAIL_FROM": "bench@example.test",
            "LOGEXPORT_BASE_URL": "http://127.0.0.1:1",
            "LOGEXPORT_SECRET_KEY": SECRET_KEY,
            "LOGEXPORT_STREAM_ALLOW_PRIVATE": "1",
            "LOGEXPORT_STREAM_MIN_INTERVAL": "1s",
            "LOGEXPORT_STREAM_RETRY_CAP": "2s",
        }
    )
    return env


@contextmanager
def worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from logexport.cli import main; sys.exit(main())",
             "worker"],
            env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def check_alive(process: subprocess.Popen[bytes], log_path: Path) -> None:
    if process.poll() is not None:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"logexport worker exited with {process.returncode}:\n{tail}")


# ------------------------------------------------------------------ data


async def new_organization(conn: asyncpg.Connection, name: str) -> UUID:
    org = await identity.create_organization(conn, name)
    return org.id


async def create_stream(
    conn: asyncpg.Connection,
    org: UUID,
    *,
    interval: int,
    https_url: str | None = None,
    s3: dict[str, Any] | None = None,
) -> UUID:
    stream_id = uuid.uuid4()
    if https_url is not None:
        destination_type, destination = "HTTPS", {"url": https_url}
        sealed = seal(SECRET_KEY, stream_id, {"secret": secrets.token_urlsafe(24)})
    else:
        assert s3 is not None
        destination_type, destination = "S3", s3
        sealed = seal(SECRET_KEY, stream_id, {"secret_access_key": CUSTOMER_KEY[1]})
    await insert_stream(
        conn,
        stream_id=stream_id,
        organization_id=org,
        kind="AUDIT_LOG",
        destination_type=destination_type,
        destination=destination,
        secret=sealed,
        interval_seconds=interval,
        filter=None,
        start_at=None,
        created_by=None,
    )
    return stream_id


# The benchmark's own rows, written in bulk as the application would store them; the
# values are fixed text, not input.
_INSERT_GENERATED = """
INSERT INTO audit_log_entries (organization_id, created_at, actor_type, actor_id, actor_email,
    actor_name, action, resource_type, resource_id, ip_address, user_agent, metadata)
SELECT $1, clock_timestamp(), 'USER', 'usr_' || (i % 500), 'user' || (i % 500) || '@example.test',
    'Bench User ' || (i % 500), 'user.login', 'Session', 'ses_' || i, '203.0.113.7',
    'Mozilla/5.0 (X11; Linux x86_64) bench', jsonb_build_object('n', i, 'source', 'bench')
FROM generate_series(1, $2) AS i
"""
_INSERT_IDS = """
INSERT INTO audit_log_entries (id, organization_id, created_at, actor_type, actor_id,
    action, ip_address, metadata)
SELECT id, $1, clock_timestamp(), 'USER', 'usr_1', 'user.login', '203.0.113.7', '{}'
FROM unnest($2::uuid[]) AS id
"""


async def write_rows(url: str, org: UUID, count: int, per_transaction: int = 10_000) -> float:
    """``count`` entries in transactions of ``per_transaction``; seconds taken."""
    started = time.perf_counter()
    conn = await db.connect(url)
    try:
        left = count
        while left:
            batch = min(left, per_transaction)
            await conn.execute(_INSERT_GENERATED, org, batch)
            left -= batch
    finally:
        await conn.close()
    return time.perf_counter() - started


async def stream_state(url: str, stream_id: UUID) -> tuple[str, int, int, int]:
    """(state, delivered rows, delivered deliveries, last sequence)."""
    conn = await db.connect(url)
    try:
        state = await conn.fetchval("SELECT state FROM log_streams WHERE id = $1", stream_id)
        row = await conn.fetchrow(
            "SELECT coalesce(sum(row_count), 0) AS rows, count(*) AS n, "
            "coalesce(max(sequence), 0) AS last FROM log_stream_deliveries "
            "WHERE stream_id = $1 AND status = 'DELIVERED' AND NOT test",
            stream_id,
        )
    finally:
        await conn.close()
    return str(state), int(row["rows"]), int(row["n"]), int(row["last"])


async def wait_for(
    what: str, condition: Any, timeout: float, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        check_alive(process, log)
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ lag


@dataclass(frozen=True)
class LagResult:
    written: int
    delivered: int
    p50: float
    p99: float
    maximum: float
    deliveries: int


async def measure_lag(
    url: str, receiver: Receiver, args: argparse.Namespace, process: Any, log: Path
) -> LagResult:
    conn = await db.connect(url)
    try:
        org = await new_organization(conn, "Bench Lag")
        stream_id = await create_stream(conn, org, interval=args.interval, https_url=receiver.url)
    finally:
        await conn.close()
    receiver.track = True
    committed: dict[str, float] = {}
    per_batch = max(1, args.rate // BATCHES_PER_SECOND)
    writer = await db.connect(url)
    try:
        started = time.monotonic()
        batches = int(args.duration * BATCHES_PER_SECOND)
        for number in range(batches):
            # Paced against the start, so a slow commit does not lower the rate.
            await asyncio.sleep(max(0.0, started + number / BATCHES_PER_SECOND - time.monotonic()))
            ids = [str(uuid.uuid4()) for _ in range(per_batch)]
            await writer.execute(_INSERT_IDS, org, ids)
            now = time.time()
            for entry_id in ids:
                committed[entry_id] = now
            check_alive(process, log)
    finally:
        await writer.close()

    async def all_arrived() -> bool:
        with receiver.lock:
            return all(entry_id in receiver.arrived for entry_id in committed)

    await wait_for("every entry to arrive", all_arrived, 2 * args.interval + 120, process, log)
    with receiver.lock:
        lags = sorted(receiver.arrived[e] - committed[e] for e in committed)
    _, _, deliveries, _ = await stream_state(url, stream_id)
    receiver.track = False
    return LagResult(
        written=len(committed),
        delivered=len(lags),
        p50=statistics.median(lags),
        p99=lags[min(len(lags) - 1, int(len(lags) * 0.99))],
        maximum=lags[-1],
        deliveries=deliveries,
    )


# ------------------------------------------------------------------ catch-up


@dataclass(frozen=True)
class CatchUp:
    destination: str
    rows: int
    write_seconds: float
    seconds: float
    first_delivery_after: float
    deliveries: int

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


async def write_rows_while_failing(
    url: str, org: UUID, stream_id: UUID, rows: int, process: Any, log: Path
) -> float:
    """Write ``rows`` for the stream's organization and wait until its destination, down
    since before the first row, has made it FAILING; the seconds the writing took."""

    async def failing() -> bool:
        return (await stream_state(url, stream_id))[0] == "FAILING"

    write_seconds = await write_rows(url, org, rows)
    await wait_for("the stream to fail", failing, 120, process, log)
    return write_seconds


async def catch_up_https(
    url: str, receiver: Receiver, rows: int, process: Any, log: Path
) -> CatchUp:
    receiver.status = 503
    conn = await db.connect(url)
    try:
        org = await new_organization(conn, "Bench Catch-up HTTPS")
        stream_id = await create_stream(conn, org, interval=5, https_url=receiver.url)
    finally:
        await conn.close()

    write_seconds = await write_rows_while_failing(url, org, stream_id, rows, process, log)
    with receiver.lock:
        receiver.rows = receiver.requests = 0
        receiver.first_at = receiver.last_at = None
    back = time.time()
    receiver.status = 200

    async def caught_up() -> bool:
        with receiver.lock:
            return receiver.rows >= rows

    await wait_for("the HTTPS catch-up", caught_up, 3600, process, log)
    with receiver.lock:
        assert receiver.last_at is not None and receiver.first_at is not None
        seconds, first = receiver.last_at - back, receiver.first_at - back
    state = await stream_state(url, stream_id)
    return CatchUp("HTTPS (127.0.0.1)", rows, write_seconds, seconds, first, state[2])


async def catch_up_s3(
    url: str, customer: services.S3Server, rows: int, process: Any, log: Path
) -> CatchUp:
    bucket = f"customer-{secrets.token_hex(4)}"
    conn = await db.connect(url)
    try:
        org = await new_organization(conn, "Bench Catch-up S3")
        stream_id = await create_stream(
            conn,
            org,
            interval=5,
            s3={
                "bucket": bucket,
                "prefix": "logexport",
                "region": services.S3_REGION,
                "endpoint_url": customer.endpoint_url,
                "access_key_id": CUSTOMER_KEY[0],
            },
        )
    finally:
        await conn.close()

    write_seconds = await write_rows_while_failing(url, org, stream_id, rows, process, log)
    back = time.time()
    customer.create_bucket(bucket)
    first: list[float] = []

    async def caught_up() -> bool:
        _, delivered, _, _ = await stream_state(url, stream_id)
        if delivered and not first:
            first.append(time.time() - back)
        return delivered >= rows

    await wait_for("the S3 catch-up", caught_up, 3600, process, log)
    seconds = time.time() - back
    state = await stream_state(url, stream_id)
    objects = [
        key
        for page in customer.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix="logexport/")
        for obj in page.get("Contents", [])
        for key in [obj["Key"]]
        if key.endswith(".jsonl.gz")
    ]
    if len(objects) != state[2]:
        raise RuntimeError(f"{len(objects)} objects in the bucket for {state[2]} deliveries")
    return CatchUp("S3 (moto, 127.0.0.1)", rows, write_seconds, seconds, first[0], state[2])


# ------------------------------------------------------------------ main


async def run(args: argparse.Namespace, url: str, env: dict[str, str], workdir: Path,
              customer: services.S3Server) -> None:  # fmt: skip
    await db.migrate(url)
    log = workdir / "worker.log"
    with receiving() as receiver, worker(env, log) as process:
        if not args.skip_lag:
            lag = await measure_lag(url, receiver, args, process, log)
            print(
                f"lag: interval {args.interval} s, {args.rate} entries/s for {args.duration:g} s:"
                f" {lag.delivered:,} of {lag.written:,} entries delivered in {lag.deliveries}"
                f" deliveries; committed → received p50 {lag.p50:.2f} s, p99 {lag.p99:.2f} s,"
                f" max {lag.maximum:.2f} s"
            )
        results: list[CatchUp] = []
        if not args.skip_https:
            results.append(await catch_up_https(url, receiver, args.catchup_rows, process, log))
        if not args.skip_s3:
            results.append(await catch_up_s3(url, customer, args.catchup_rows, process, log))
        for result in results:
            print(
                f"catch-up {result.destination}: {result.rows:,} rows in {result.seconds:.1f} s"
                f" = {result.rate:,.0f} rows/s, {result.deliveries} deliveries, first delivered"
                f" {result.first_delivery_after:.1f} s after the destination came back"
                f" (rows written in {result.write_seconds:.1f} s)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=int, default=60, help="stream interval, seconds")
    parser.add_argument("--rate", type=int, default=100, help="entries written per second")
    parser.add_argument("--duration", type=float, default=240, help="seconds of writing")
    parser.add_argument("--catchup-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--skip-https", action="store_true")
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()

    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    print(
        f"== logexport streams: interval {args.interval} s, {args.rate} entries/s for"
        f" {args.duration:g} s, catch-up of {args.catchup_rows:,} rows, {os.cpu_count()} cores"
    )
    cluster = services.PostgresCluster(name=f"bench-streams-{os.getpid()}")
    storage = services.S3Server()
    customer = services.S3Server()
    workdir = Path(tempfile.mkdtemp(prefix="logexport-bench-streams-"))
    try:
        cluster.start()
        storage.start()
        storage.create_bucket(SERVICE_BUCKET)
        customer.start()
        url = asyncio.run(cluster.create_database("bench"))
        asyncio.run(run(args, url, worker_env(url, storage), workdir, customer))
    finally:
        customer.stop()
        storage.stop()
        cluster.stop(remove=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
