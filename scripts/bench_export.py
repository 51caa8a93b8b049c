#!/usr/bin/env python3
"""Export throughput, CPU, memory and dispatch latency, against baselines measured in the
same run, on several data shapes.

    .venv/bin/python scripts/bench_export.py [--rows 1000000] [--shapes seed,wide,scim]
                                             [--skip-s3] [--dispatch 200] [--parallelism 2]

Shapes (each in its own organization of one private PostgreSQL cluster):

  seed   audit entries written by ``logexport.seed`` (short lines, a few hostile values);
  wide   an independent audit set written here with COPY: JSONL lines of about 670 bytes,
         nested ``metadata`` (request id, source, changes with field / old / new), 500
         distinct actors, long browser user agents;
  scim   SCIM events with large request bodies (8-64 KiB), ``--scim-rows`` of them
         (default: a twentieth of ``--rows``).

For each shape, over the same rows and the same query:

  psql \\copy (SELECT row_to_json(t) FROM (<query>) t) TO file          (naive JSONL)
  psql \\copy (<query>) TO file WITH (FORMAT csv, HEADER)               (psql CSV)
  COPY (<query>) TO '/dev/null'                 (ceiling: the database reading the rows)
  logexport's pipeline to the local backend: JSONL and CSV, each with and without gzip,
  each in a fresh process, reading through --parallelism connections (default: the
  LOGEXPORT_EXPORT_PARALLELISM default), and each format once more through 1 connection;
  and JSONL to S3 (moto over HTTP on 127.0.0.1) unless --skip-s3

with seconds, rows/s, MB/s, the ratio to its psql baseline (JSONL against the naive
``row_to_json``, CSV against psql's CSV), client CPU µs/row (the export process, or psql),
database CPU µs/row (utime + stime of the export's backends from /proc; for psql, the
postmaster's reaped-children time across the run), and the pipeline's peak RSS at N/10 and
at N. Then dispatch latency (request committed → job PROCESSING) over requests to an idle
worker. It passes or fails nothing: the figures are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import itertools
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import services
from logexport import db, identity
from logexport.config import Settings
from logexport.exports.models import Compression, ExportFormat, ExportKind
from logexport.exports.pipeline import run_export
from logexport.exports.requests import ExportInput
from logexport.exports.storage import ObjectWriter, StoredObject, storage_from_settings
from logexport.policy import Role
from logexport.seed import seed

START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)
SHAPES = ("seed", "wide", "scim")
AUDIT_COLUMNS = (
    "id, organization_id, created_at, actor_type, actor_id, actor_email, actor_name, action, "
    "resource_type, resource_id, ip_address, user_agent, metadata"
)
SCIM_COLUMNS = (
    "id, organization_id, created_at, method, path, user_name, status_code, error_message, "
    "ip_address, user_agent, request_body, response_body"
)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Shape:
    name: str
    kind: ExportKind
    table: str
    columns: str


def _shape(name: str) -> Shape:
    if name == "scim":
        return Shape(name, ExportKind.SCIM_EVENT, "scim_events", SCIM_COLUMNS)
    return Shape(name, ExportKind.AUDIT_LOG, "audit_log_entries", AUDIT_COLUMNS)


def _sql_literal_query(shape: Shape, org: UUID, start: datetime, end: datetime) -> str:
    # Values are ours (a UUID and two datetimes we formatted), not user input.
    return (
        f"SELECT {shape.columns} FROM {shape.table} "
        f"WHERE organization_id = '{org}' AND created_at >= '{start.isoformat()}' "
        f"AND created_at < '{end.isoformat()}' ORDER BY created_at, id"
    )


# ------------------------------------------------------------------ CPU from /proc


def _proc_ticks(pid: int) -> tuple[int, int]:
    """(utime + stime, cutime + cstime) of ``pid``, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    label: str
    seconds: float
    size: int
    client_cpu: float | None = None
    db_cpu: float | None = None
    peak_rss_mib: float | None = None
    baseline: str | None = None
    # Seconds the pipeline waited on the storage writer (writes and the final complete),
    # and of them the complete (the local writer's fsync, the S3 writer's last part).
    storage_wait: float | None = None
    storage_complete: float | None = None


_BACKEND_PID = ("-c", "SELECT pg_backend_pid()")


def _psql(url: str, command: str, postmaster: int, label: str, out: Path | None) -> Run:
    """One psql session: its backend's CPU is what the postmaster reaps when it ends."""
    client_before = _children_cpu()
    db_before = _proc_ticks(postmaster)[1]
    started = time.perf_counter()
    proc = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            *_BACKEND_PID,
            "-c",
            command,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    backend = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{backend}").exists() and time.monotonic() < deadline:
        time.sleep(0.005)  # the postmaster reaps the backend shortly after psql leaves
    db_cpu = (_proc_ticks(postmaster)[1] - db_before) / _CLK_TCK
    size = 0
    if out is not None:
        size = out.stat().st_size
        out.unlink()
    return Run(label, elapsed, size, _children_cpu() - client_before, db_cpu)


# ------------------------------------------------------------------ child: one pipeline run


async def _child(args: argparse.Namespace) -> None:
    env = json.loads(os.environ["BENCH_SETTINGS"])
    settings = Settings.from_env(env=env)
    # The bench opens the export's connections so that it can read their backends' CPU.
    parallelism = args.parallelism or settings.export_parallelism
    conns = [await db.connect(settings.require("database_url")) for _ in range(parallelism)]
    conn, helpers = conns[0], conns[1:]
    backends = [await c.fetchval("SELECT pg_backend_pid()") for c in conns]
    storage = storage_from_settings(settings)
    spec = ExportInput(
        organization_id=UUID(args.org),
        kind=ExportKind(args.kind),
        from_time=datetime.fromisoformat(args.start),
        to_time=datetime.fromisoformat(args.end),
        format=ExportFormat(args.format),
        compression=Compression.GZIP if args.gzip else Compression.NONE,
    )
    key = f"bench/{args.format.lower()}-{os.getpid()}"
    async with storage:
        db_before = sum(_proc_ticks(backend)[0] for backend in backends)
        cpu_before = time.process_time()
        started = time.perf_counter()
        writer = await storage.open_writer(
            key, content_type="application/octet-stream", file_name="b"
        )
        timed = _TimedWriter(writer)
        try:
            result = await run_export(conn, spec, timed, helpers=helpers)
            await timed.complete()
        except BaseException:
            await writer.abort()
            raise
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        db_cpu = (sum(_proc_ticks(backend)[0] for backend in backends) - db_before) / _CLK_TCK
        await storage.delete(key)
    for c in conns:
        await c.close()
    peak_kib = _peak_rss_kib()
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "rows": result.row_count,
                "bytes": result.byte_size,
                "client_cpu": cpu,
                "db_cpu": db_cpu,
                "peak_rss_mib": peak_kib / 1024,
                "storage_wait": timed.seconds,
                "storage_complete": timed.completing,
            }
        )
    )


class _TimedWriter:
    """The storage writer, with the time spent waiting on it added up."""

    def __init__(self, writer: ObjectWriter) -> None:
        self._writer = writer
        self.seconds = 0.0
        self.completing = 0.0

    async def __aenter__(self) -> _TimedWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._writer.__aexit__(exc_type, exc, tb)

    async def write(self, data: bytes) -> None:
        started = time.perf_counter()
        await self._writer.write(data)
        self.seconds += time.perf_counter() - started

    async def complete(self) -> StoredObject:
        started = time.perf_counter()
        stored = await self._writer.complete()
        self.completing = time.perf_counter() - started
        self.seconds += self.completing
        return stored

    async def abort(self) -> None:
        await self._writer.abort()


def _peak_rss_kib() -> int:
    """This process's peak resident set. Not ``getrusage``'s ``ru_maxrss``: Linux carries
    that over ``exec``, so a child would report its parent's peak (the bench holding a
    generated data set) instead of its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_child(
    settings_env: dict[str, str],
    shape: Shape,
    org: UUID,
    start: datetime,
    end: datetime,
    fmt: str,
    *,
    gzip: bool = False,
    parallelism: int | None = None,
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--kind", shape.kind.value, "--org", str(org)]
    command += ["--start", start.isoformat(), "--end", end.isoformat(), "--format", fmt]
    if parallelism:
        command += ["--parallelism", str(parallelism)]
    out = subprocess.run(
        command + (["--gzip"] if gzip else []),
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_SETTINGS": json.dumps(settings_env)},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _child_run(label: str, result: dict[str, Any], baseline: str) -> Run:
    return Run(
        label,
        result["seconds"],
        result["bytes"],
        result["client_cpu"],
        result["db_cpu"],
        result["peak_rss_mib"],
        baseline,
        result["storage_wait"],
        result["storage_complete"],
    )


# ------------------------------------------------------------------ data shapes

_BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.{b}.{p} Safari/537.36 Edg/{v}.0.{b}.{p}",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{p} Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{p} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.{p} Mobile/15E148 Safari/604.1",
]
_ACTIONS = [
    "user.updated", "user.login", "role.assigned", "group.member_added", "api_key.created",
    "settings.changed", "sso.connection_updated", "directory.synced", "export.requested",
]  # fmt: skip
_FIELDS = ["email", "role", "display_name", "department", "title", "mfa_enabled", "locale"]
_SOURCES = ["dashboard", "api", "scim", "terraform", "admin-cli"]


def _user_agents(rng: random.Random, count: int) -> list[str]:
    return [
        rng.choice(_BROWSERS).format(
            v=rng.randrange(100, 131), b=rng.randrange(1000, 7000), p=rng.randrange(0, 200)
        )
        for _ in range(count)
    ]


def _wide_rows(org: UUID, rows: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    span_us = (END - START) // timedelta(microseconds=1)
    actors = [
        (f"usr_{rng.getrandbits(64):016x}", f"person{i}@corp-{i % 37}.example.com", f"Person {i}")
        for i in range(500)
    ]
    agents = _user_agents(rng, 200)
    for _ in range(rows):
        actor_id, email, name = rng.choice(actors)
        field = rng.choice(_FIELDS)
        metadata = {
            "request_id": f"req_{rng.getrandbits(96):024x}",
            "source": rng.choice(_SOURCES),
            "changes": {
                "field": field,
                "old": f"{field}-value-{rng.getrandbits(40):010x}",
                "new": f"{field}-value-{rng.getrandbits(40):010x}",
            },
        }
        yield (
            uuid.UUID(int=rng.getrandbits(128), version=4),
            org,
            START + timedelta(microseconds=rng.randrange(span_us)),
            "USER",
            actor_id,
            email,
            name,
            rng.choice(_ACTIONS),
            "User",
            f"usr_{rng.getrandbits(64):016x}",
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rng.choice(agents),
            json.dumps(metadata),
        )


def _scim_rows(org: UUID, rows: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    span_us = (END - START) // timedelta(microseconds=1)
    members = [
        {"value": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "display": f"Member {i}"}
        for i in range(2000)
    ]
    member_size = len(json.dumps(members[0])) + 2
    members += members  # a slice from any start holds up to 2,000 members
    agents = _user_agents(rng, 20)
    for _ in range(rows):
        target = rng.randrange(8 * 1024, 64 * 1024)
        first = rng.randrange(len(members))
        count = target // member_size
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": f"Group {rng.randrange(10_000)}",
            "members": members[first : first + count],
        }
        group = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        yield (
            uuid.UUID(int=rng.getrandbits(128), version=4),
            org,
            START + timedelta(microseconds=rng.randrange(span_us)),
            "PUT",
            f"/scim/v2/Groups/{group}",
            None,
            200,
            None,
            f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rng.choice(agents),
            json.dumps(body),
            json.dumps({"id": group, "meta": {"resourceType": "Group"}}),
        )


async def _prepare(url: str, shape: Shape, rows: int) -> tuple[UUID, float]:
    conn = await db.connect(url)
    org = await identity.create_organization(conn, f"Bench {shape.name}")
    rng = random.Random(12)
    started = time.perf_counter()
    if shape.name == "seed":
        await seed(conn, org.id, audit_entries=rows, scim_events=0, start=START, end=END)
    else:
        produce = _scim_rows if shape.name == "scim" else _wide_rows
        columns = [c.strip() for c in shape.columns.split(",")]
        rows_left = iter(produce(org.id, rows, rng))
        while batch := list(itertools.islice(rows_left, 2000)):
            buffer = io.StringIO()
            csv.writer(buffer).writerows(batch)
            await conn.copy_to_table(
                shape.table,
                source=io.BytesIO(buffer.getvalue().encode()),
                columns=columns,
                format="csv",
            )
    seeded = time.perf_counter() - started
    await conn.execute(f"VACUUM ANALYZE {shape.table}")
    await conn.close()
    return org.id, seeded


async def _tenth_boundary(url: str, shape: Shape, org: UUID, rows: int) -> datetime:
    conn = await db.connect(url)
    value = await conn.fetchval(
        f"SELECT created_at FROM {shape.table} WHERE organization_id = $1 "
        "ORDER BY created_at, id OFFSET $2 LIMIT 1",
        org,
        max(rows // 10, 1),
    )
    await conn.close()
    assert isinstance(value, datetime)
    return value


async def _postmaster_pid(url: str) -> int:
    conn = await db.connect(url)
    try:
        return _parent_pid(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()


# ------------------------------------------------------------------ dispatch latency


async def _dispatch(settings: Settings, org: UUID, count: int) -> list[float]:
    from logexport.exports.requests import request_export
    from logexport.exports.worker import Worker

    pool = await db.create_pool(settings.require("database_url"))
    async with pool.acquire() as conn:
        user = await identity.create_user(conn, f"bench-{time.time_ns()}@example.test", "Bench")
        await identity.add_member(conn, org, user.id, Role.ADMIN)
    principal = user.as_principal()
    latencies = []
    async with Worker(settings.derive(worker_poll_interval=30.0), pool=pool, concurrency=1):
        await asyncio.sleep(0.5)  # let the listener connect before the first request
        for i in range(count):
            request = ExportInput(
                organization_id=org,
                kind=ExportKind.AUDIT_LOG,
                from_time=datetime(2030, 1, 1, tzinfo=UTC),
                to_time=datetime(2030, 1, 2, tzinfo=UTC),
                idempotency_key=f"bench-{i}-{time.time_ns()}",
            )
            export = await request_export(pool, settings, principal, request)
            deadline = time.monotonic() + 10
            while True:
                row = await pool.fetchrow(
                    "SELECT status, started_at, created_at FROM log_exports WHERE id = $1",
                    export.id,
                )
                if row["status"] in ("COMPLETED", "FAILED"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("dispatch did not finish")
                await asyncio.sleep(0.005)
            latencies.append((row["started_at"] - row["created_at"]).total_seconds() * 1000)
    await pool.close()
    return latencies


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ------------------------------------------------------------------ main


def _print_table(shape: Shape, rows: int, runs: list[Run]) -> None:
    by_label = {run.label: run for run in runs}
    print()
    print(f"### {shape.name}: {rows:,} rows")
    print()
    print(
        "| run | seconds | rows/s | MB/s | vs psql | client CPU µs/row | DB CPU µs/row "
        "| peak RSS MiB | storage wait s | of it complete s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        mbps = f"{run.size / run.seconds / 1e6:,.1f}" if run.size else "-"
        ratio = "-"
        if run.baseline is not None:
            ratio = f"{by_label[run.baseline].seconds / run.seconds:.2f}x"
        client = "-" if run.client_cpu is None else f"{run.client_cpu / rows * 1e6:,.1f}"
        db_cpu = "-" if run.db_cpu is None else f"{run.db_cpu / rows * 1e6:,.1f}"
        rss = "-" if run.peak_rss_mib is None else f"{run.peak_rss_mib:.0f}"
        wait = "-" if run.storage_wait is None else f"{run.storage_wait:.2f}"
        done = "-" if run.storage_complete is None else f"{run.storage_complete:.2f}"
        print(
            f"| {run.label} | {run.seconds:.2f} | {rows / run.seconds:,.0f} | {mbps} "
            f"| {ratio} | {client} | {db_cpu} | {rss} | {wait} | {done} |"
        )


NAIVE = "psql \\copy row_to_json → file"
PSQL_CSV = "psql \\copy CSV HEADER → file"


def _bench_shape(
    url: str,
    shape: Shape,
    rows: int,
    workdir: Path,
    s3_env: dict[str, str],
    s3_pid: int | None,
    parallelism: int,
) -> UUID:
    org, seeded = asyncio.run(_prepare(url, shape, rows))
    print(f"{shape.name}: seeded {rows:,} rows in {seeded:.1f} s ({rows / seeded:,.0f} rows/s)")
    postmaster = asyncio.run(_postmaster_pid(url))
    query = _sql_literal_query(shape, org, START, END)
    out_file = workdir / f"{shape.name}.out"
    runs = [
        _psql(
            url,
            f"\\copy (SELECT row_to_json(t) FROM ({query}) t) TO '{out_file}'",
            postmaster,
            NAIVE,
            out_file,
        ),
        _psql(
            url,
            f"\\copy ({query}) TO '{out_file}' WITH (FORMAT csv, HEADER)",
            postmaster,
            PSQL_CSV,
            out_file,
        ),
        _psql(url, f"COPY ({query}) TO '/dev/null'", postmaster, "COPY … TO /dev/null", None),
    ]
    local_env = {"LOGEXPORT_DATABASE_URL": url, "LOGEXPORT_STORAGE_URL": f"file://{workdir}"}
    full: dict[str, Any] = {}
    for fmt in ("JSONL", "CSV"):
        baseline = NAIVE if fmt == "JSONL" else PSQL_CSV
        one = _run_child(local_env, shape, org, START, END, fmt, parallelism=1)
        assert one["rows"] == rows, one
        runs.append(_child_run(f"logexport → local, {fmt}, 1 connection", one, baseline))
        for gzip in (False, True):
            result = _run_child(
                local_env, shape, org, START, END, fmt, gzip=gzip, parallelism=parallelism
            )
            assert result["rows"] == rows, result
            full.setdefault(fmt, result)
            label = f"logexport → local, {fmt}" + (" + gzip" if gzip else "")
            runs.append(_child_run(label, result, baseline))
    s3_cpu = None
    if s3_pid is not None:
        moto_before = _proc_ticks(s3_pid)[0]
        result = _run_child(s3_env, shape, org, START, END, "JSONL", parallelism=parallelism)
        s3_cpu = (_proc_ticks(s3_pid)[0] - moto_before) / _CLK_TCK
        runs.append(_child_run("logexport → S3 (moto), JSONL", result, NAIVE))
    _print_table(shape, rows, runs)
    if s3_cpu is not None:
        s3_run = runs[-1]
        print()
        print(
            f"{shape.name}: S3 run {s3_run.seconds:.2f} s: the pipeline waited "
            f"{s3_run.storage_wait or 0:.2f} s on the writer ({s3_run.storage_complete or 0:.2f} s "
            f"of it completing the upload); the moto server used {s3_cpu:.2f} s of CPU "
            "on the same cores"
        )
    by_label = {run.label: run for run in runs}
    jsonl = by_label["logexport → local, JSONL"]
    csv_ = by_label["logexport → local, CSV"]
    jsonl_one = by_label["logexport → local, JSONL, 1 connection"]
    csv_one = by_label["logexport → local, CSV, 1 connection"]
    naive, psql_csv = by_label[NAIVE].seconds, by_label[PSQL_CSV].seconds
    print()
    print(
        f"{shape.name}: JSONL vs naive row_to_json {naive / jsonl.seconds:.2f}x "
        f"(1 connection {naive / jsonl_one.seconds:.2f}x; target ≥ 1.6); "
        f"CSV vs psql CSV {psql_csv / csv_.seconds:.2f}x "
        f"(1 connection {psql_csv / csv_one.seconds:.2f}x; target ≥ 1.0)"
    )
    tenth_end = asyncio.run(_tenth_boundary(url, shape, org, rows))
    small = _run_child(local_env, shape, org, START, tenth_end, "JSONL", parallelism=parallelism)
    growth = full["JSONL"]["peak_rss_mib"] - small["peak_rss_mib"]
    print(
        f"{shape.name}: peak RSS {small['peak_rss_mib']:.0f} MiB at {small['rows']:,} rows, "
        f"{full['JSONL']['peak_rss_mib']:.0f} MiB at {rows:,} rows "
        f"(growth {growth:+.0f} MiB, target < 50)"
    )
    return org


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scim-rows", type=int, help="SCIM events (default: rows / 20)")
    parser.add_argument("--shape", choices=SHAPES, help="one shape (default: seed)")
    parser.add_argument("--shapes", help="several shapes, comma-separated: seed,wide,scim")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--dispatch", type=int, default=200)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="AUDIT_LOG", help=argparse.SUPPRESS)
    parser.add_argument("--org", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    parser.add_argument("--format", default="JSONL", help=argparse.SUPPRESS)
    parser.add_argument("--gzip", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--parallelism",
        type=int,
        help="connections per export (default: LOGEXPORT_EXPORT_PARALLELISM's default); "
        "the runs are also made with 1 for comparison",
    )
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args))
        return
    names = [args.shape or "seed"]
    if args.shapes:
        names = [name.strip() for name in args.shapes.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SHAPES))
    if unknown:
        parser.error(f"--shapes: unknown shape {', '.join(unknown)} (choose from seed, wide, scim)")
    n = args.rows
    scim_rows = args.scim_rows or max(n // 20, 1)

    parallelism = args.parallelism or Settings.from_env(env={}).export_parallelism
    print(
        f"== logexport export benchmark: {', '.join(names)}, {os.cpu_count()} cores, "
        f"{parallelism} connections per export"
    )
    cluster = services.PostgresCluster(name=f"bench-{os.getpid()}").start()
    s3 = None
    smtp = services.SmtpSink().start()
    workdir = Path(tempfile.mkdtemp(prefix="logexport-bench-"))
    try:
        url = asyncio.run(cluster.create_database("bench"))
        asyncio.run(db.migrate(url))
        s3_env: dict[str, str] = {}
        if not args.skip_s3:
            s3 = services.S3Server().start()
            s3.create_bucket("bench-exports")
            s3_env = {
                "LOGEXPORT_DATABASE_URL": url,
                "LOGEXPORT_STORAGE_URL": "s3://bench-exports/exports",
                "LOGEXPORT_S3_ENDPOINT_URL": s3.endpoint_url,
                "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
            }
            os.environ.update(
                AWS_ACCESS_KEY_ID=services.S3_ACCESS_KEY,
                AWS_SECRET_ACCESS_KEY=services.S3_SECRET_KEY,
                AWS_DEFAULT_REGION=services.S3_REGION,
            )
        orgs = []
        for name in names:
            rows = scim_rows if name == "scim" else n
            s3_pid = s3.pid if s3 is not None else None
            orgs.append(_bench_shape(url, _shape(name), rows, workdir, s3_env, s3_pid, parallelism))

        if args.dispatch:
            settings = Settings.from_env(
                env={
                    "LOGEXPORT_DATABASE_URL": url,
                    "LOGEXPORT_STORAGE_URL": f"file://{workdir}",
                    "LOGEXPORT_BASE_URL": "http://127.0.0.1:1",
                    "LOGEXPORT_SMTP_URL": smtp.url,
                    "LOGEXPORT_MAIL_FROM": "bench@example.test",
                    "LOGEXPORT_MAX_ACTIVE_EXPORTS_PER_ORG": "1000",
                    "LOGEXPORT_SIGNING_KEY": services.dev_signing_key(),
                }
            )
            latencies = asyncio.run(_dispatch(settings, orgs[0], args.dispatch))
            print()
            print(
                f"dispatch latency over {len(latencies)} requests: "
                f"p50 {_pct(latencies, 50):.1f} ms, "
                f"p99 {_pct(latencies, 99):.1f} ms, max {max(latencies):.1f} ms "
                f"(mean {statistics.mean(latencies):.1f}; target p99 < 50 ms)"
            )
    finally:
        smtp.stop()
        if s3 is not None:
            s3.stop()
        cluster.stop(remove=True)
        for path in workdir.glob("**/*"):
            if path.is_file():
                path.unlink()


if __name__ == "__main__":
    main()
