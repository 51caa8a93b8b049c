#!/usr/bin/env python3
"""Export throughput, memory and dispatch latency, against baselines measured in the same run.

    .venv/bin/python scripts/bench_export.py [--rows 1000000] [--skip-s3] [--dispatch 200]

Seeds N audit entries into a private PostgreSQL cluster, then measures over the same rows:

  (a) naive    psql \\copy (SELECT row_to_json(t) FROM (<export query>) t) TO file
  (b) ceiling  COPY (<export query>) TO '/dev/null' — the database reading the rows, nothing else
  (c) logexport's pipeline to the local backend, JSONL and CSV (each in a fresh process)
  (d) the same to S3 (moto over HTTP on 127.0.0.1)

and prints rows/s, MB/s, the ratios (c)/(a) and (c)/(b), the pipeline's peak RSS at N/10 and
at N, and dispatch latency (request committed → job PROCESSING) over requests to an idle
worker. It passes or fails nothing: the figures are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import services
from logexport import db, identity
from logexport.config import Settings
from logexport.exports.models import ExportFormat, ExportKind
from logexport.exports.pipeline import run_export
from logexport.exports.requests import ExportInput
from logexport.exports.storage import storage_from_settings
from logexport.policy import Role
from logexport.seed import seed

START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS = (
    "id, organization_id, created_at, actor_type, actor_id, actor_email, actor_name, action, "
    "resource_type, resource_id, ip_address, user_agent, metadata"
)


def _sql_literal_query(org: UUID, start: datetime, end: datetime) -> str:
    # Values are ours (a UUID and two datetimes we formatted), not user input.
    return (
        f"SELECT {COLUMNS} FROM audit_log_entries "
        f"WHERE organization_id = '{org}' AND created_at >= '{start.isoformat()}' "
        f"AND created_at < '{end.isoformat()}' ORDER BY created_at, id"
    )


def _psql(url: str, command: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", command],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


# ------------------------------------------------------------------ child: one pipeline run


async def _child(args: argparse.Namespace) -> None:
    env = json.loads(os.environ["BENCH_SETTINGS"])
    settings = Settings.from_env(env=env)
    conn = await db.connect(settings.require("database_url"))
    storage = storage_from_settings(settings)
    spec = ExportInput(
        organization_id=UUID(args.org),
        kind=ExportKind.AUDIT_LOG,
        from_time=datetime.fromisoformat(args.start),
        to_time=datetime.fromisoformat(args.end),
        format=ExportFormat(args.format),
    )
    key = f"bench/{args.format.lower()}-{os.getpid()}"
    started = time.perf_counter()
    async with storage:
        writer = await storage.open_writer(
            key, content_type="application/octet-stream", file_name="b"
        )
        try:
            result = await run_export(conn, spec, writer)
            await writer.complete()
        except BaseException:
            await writer.abort()
            raise
        elapsed = time.perf_counter() - started
        await storage.delete(key)
    await conn.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "rows": result.row_count,
                "bytes": result.byte_size,
                "peak_rss_mib": peak_kib / 1024,
            }
        )
    )


def _run_child(
    settings_env: dict[str, str], org: UUID, start: datetime, end: datetime, fmt: str
) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--org",
            str(org),
            "--start",
            start.isoformat(),
            "--end",
            end.isoformat(),
            "--format",
            fmt,
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_SETTINGS": json.dumps(settings_env)},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


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


async def _prepare(url: str, rows: int) -> tuple[UUID, float]:
    conn = await db.connect(url)
    org = await identity.create_organization(conn, "Bench Org")
    started = time.perf_counter()
    await seed(conn, org.id, audit_entries=rows, scim_events=0, start=START, end=END)
    seeded = time.perf_counter() - started
    await conn.execute("VACUUM ANALYZE audit_log_entries")
    await conn.close()
    return org.id, seeded


async def _tenth_boundary(url: str, org: UUID, rows: int) -> datetime:
    conn = await db.connect(url)
    value = await conn.fetchval(
        "SELECT created_at FROM audit_log_entries WHERE organization_id = $1 "
        "ORDER BY created_at, id OFFSET $2 LIMIT 1",
        org,
        max(rows // 10, 1),
    )
    await conn.close()
    assert isinstance(value, datetime)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--dispatch", type=int, default=200)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--org", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    parser.add_argument("--format", default="JSONL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args))
        return

    n = args.rows
    print(f"== logexport export benchmark: {n:,} audit entries, {os.cpu_count()} cores")
    cluster = services.PostgresCluster(name=f"bench-{os.getpid()}").start()
    s3 = None
    smtp = services.SmtpSink().start()
    workdir = Path(tempfile.mkdtemp(prefix="logexport-bench-"))
    try:
        url = asyncio.run(cluster.create_database("bench"))
        asyncio.run(db.migrate(url))
        org, seeded = asyncio.run(_prepare(url, n))
        print(f"seeded {n:,} rows in {seeded:.1f} s ({n / seeded:,.0f} rows/s, COPY)")
        query = _sql_literal_query(org, START, END)

        results: list[tuple[str, float, int]] = []
        out_file = workdir / "naive.jsonl"
        naive = _psql(url, f"\\copy (SELECT row_to_json(t) FROM ({query}) t) TO '{out_file}'")
        naive_bytes = out_file.stat().st_size
        out_file.unlink()
        results.append(("(a) psql \\copy row_to_json → file", naive, naive_bytes))
        ceiling = _psql(url, f"COPY ({query}) TO '/dev/null'")
        results.append(("(b) COPY … TO '/dev/null' (ceiling)", ceiling, 0))

        local_env = {
            "LOGEXPORT_DATABASE_URL": url,
            "LOGEXPORT_STORAGE_URL": f"file://{workdir}",
        }
        runs: dict[str, dict[str, Any]] = {}
        for fmt in ("JSONL", "CSV"):
            runs[f"local-{fmt}"] = _run_child(local_env, org, START, END, fmt)
            results.append(
                (
                    f"(c) logexport → local, {fmt}",
                    runs[f"local-{fmt}"]["seconds"],
                    runs[f"local-{fmt}"]["bytes"],
                )
            )
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
            runs["s3-JSONL"] = _run_child(s3_env, org, START, END, "JSONL")
            results.append(
                (
                    "(d) logexport → S3 (moto), JSONL",
                    runs["s3-JSONL"]["seconds"],
                    runs["s3-JSONL"]["bytes"],
                )
            )

        tenth_end = asyncio.run(_tenth_boundary(url, org, n))
        small = _run_child(local_env, org, START, tenth_end, "JSONL")

        print()
        print("| run | seconds | rows/s | MB/s |")
        print("|---|---:|---:|---:|")
        for label, seconds, size in results:
            mbps = f"{size / seconds / 1e6:,.1f}" if size else "-"
            print(f"| {label} | {seconds:.2f} | {n / seconds:,.0f} | {mbps} |")
        jsonl = runs["local-JSONL"]["seconds"]
        csv_ = runs["local-CSV"]["seconds"]
        print()
        print(f"(c)/(a) JSONL speed-up over naive: {naive / jsonl:.2f}x   (target ≥ 1.5)")
        print(f"(c)/(a) CSV speed-up over naive:   {naive / csv_:.2f}x")
        print(f"(c)/(b) JSONL share of ceiling:     {ceiling / jsonl:.2f}    (target ≥ 0.5)")
        growth = runs["local-JSONL"]["peak_rss_mib"] - small["peak_rss_mib"]
        print(
            f"peak RSS: {small['peak_rss_mib']:.0f} MiB at {small['rows']:,} rows, "
            f"{runs['local-JSONL']['peak_rss_mib']:.0f} MiB at {n:,} rows "
            f"(growth {growth:+.0f} MiB, target < 50)"
        )

        if args.dispatch:
            settings = Settings.from_env(
                env={
                    **local_env,
                    "LOGEXPORT_BASE_URL": "http://127.0.0.1:1",
                    "LOGEXPORT_SMTP_URL": smtp.url,
                    "LOGEXPORT_MAIL_FROM": "bench@example.test",
                    "LOGEXPORT_MAX_ACTIVE_EXPORTS_PER_ORG": "1000",
                }
            )
            latencies = asyncio.run(_dispatch(settings, org, args.dispatch))
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
