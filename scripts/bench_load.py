#!/usr/bin/env python3
"""GraphQL throughput and latency of a real ``logexport serve`` under bounded concurrent load.

    .venv/bin/python scripts/bench_load.py [--entries 100000] [--concurrency 16]
                                           [--requests 2000] [--time-cap 60]

Starts private services on 127.0.0.1 (a PostgreSQL cluster, moto S3, an SMTP sink),
migrates, seeds one organization with N audit entries and an admin with an API key, starts
``logexport serve`` (worker included) on a free port, then runs two scenarios, each until
its request count or its time cap is reached:

  (b) auditLogEntries paging: first 50, each client following endCursor to the end of the
      log and starting again at the top;
  (a) requestAuditLogExport with unique idempotency keys (the active-export cap is raised
      so that the queue, not the cap, absorbs the load; the worker drains it meanwhile).

Paging runs first so that the worker's export queue does not share its measurements. Prints
one Markdown table (requests/s, p50/p99 latency, errors). Every process it starts is stopped
on exit, including on Ctrl-C. It passes or fails nothing: the figures are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import services
from devtools.serving import serve_env, serving
from logexport import db, identity
from logexport.policy import Role
from logexport.seed import seed

REPO = Path(__file__).resolve().parent.parent
SEED_START = datetime(2025, 1, 1, tzinfo=UTC)
SEED_END = datetime(2026, 1, 1, tzinfo=UTC)
BUCKET = "bench-load"

PAGE = """
query($org: ID!, $after: String) {
  organization(id: $org) {
    auditLogEntries(first: 50, after: $after) {
      edges { cursor node { id createdAt actorType actorEmail action resourceType ipAddress } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
REQUEST = """
mutation($input: RequestAuditLogExportInput!) {
  requestAuditLogExport(input: $input) { logExport { id status } }
}
"""


@dataclass
class Outcome:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ------------------------------------------------------------------ setup


async def prepare(url: str, entries: int) -> tuple[str, str]:
    """Migrate, seed one organization, and return (organization id, admin API token)."""
    await db.migrate(url)
    conn = await db.connect(url)
    try:
        org = await identity.create_organization(conn, "Load Test Org")
        admin = await identity.create_user(conn, "load.admin@example.test", "Load Admin")
        await identity.add_member(conn, org.id, admin.id, Role.ADMIN)
        _, token = await identity.create_api_key(conn, admin.id, "bench-load", None)
        await seed(
            conn, org.id, audit_entries=entries, scim_events=0, start=SEED_START, end=SEED_END
        )
        await conn.execute("VACUUM ANALYZE audit_log_entries")
    finally:
        await conn.close()
    return str(org.id), token


# ------------------------------------------------------------------ load


async def run_load(
    name: str,
    client: httpx.AsyncClient,
    *,
    concurrency: int,
    total: int,
    time_cap: float,
    make_task: Callable[[int], Callable[[], Awaitable[str | None]]],
) -> Outcome:
    """``concurrency`` clients issue requests until ``total`` were sent or time runs out.

    Each client gets its own request function from ``make_task``; it returns an error kind
    or None, and is timed from send to parsed answer.
    """
    outcome = Outcome(name)
    issued = 0
    started = time.perf_counter()
    deadline = started + time_cap

    async def client_loop(index: int) -> None:
        nonlocal issued
        request = make_task(index)
        while issued < total and time.perf_counter() < deadline:
            issued += 1
            sent = time.perf_counter()
            try:
                problem = await request()
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if problem is None:
                outcome.latencies.append((time.perf_counter() - sent) * 1000)
            else:
                outcome.error(problem)

    await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
    outcome.seconds = time.perf_counter() - started
    return outcome


def problem_of(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    body = response.json()
    if body.get("errors"):
        return str(body["errors"][0].get("extensions", {}).get("code", "ERROR"))
    return None


async def scenarios(base: str, token: str, org: str, args: argparse.Namespace) -> list[Outcome]:
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {token}", "User-Agent": "bench-load/1.0"},
        timeout=30,
        limits=limits,
        trust_env=False,
    ) as client:

        def pager(_index: int) -> Callable[[], Awaitable[str | None]]:
            cursor: list[str | None] = [None]

            async def next_page() -> str | None:
                response = await client.post(
                    "/graphql", json={"query": PAGE, "variables": {"org": org, "after": cursor[0]}}
                )
                problem = problem_of(response)
                if problem is None:
                    info = response.json()["data"]["organization"]["auditLogEntries"]["pageInfo"]
                    cursor[0] = info["endCursor"] if info["hasNextPage"] else None
                return problem

            return next_page

        def requester(index: int) -> Callable[[], Awaitable[str | None]]:
            counter = [0]
            run = secrets.token_hex(4)

            async def request() -> str | None:
                counter[0] += 1
                day = 1 + counter[0] % 28
                variables = {
                    "input": {
                        "organizationId": org,
                        "fromTime": f"2025-02-{day:02d}T00:00:00Z",
                        "toTime": f"2025-02-{day:02d}T01:00:00Z",
                        "idempotencyKey": f"bench-{run}-{index}-{counter[0]}",
                    }
                }
                response = await client.post(
                    "/graphql", json={"query": REQUEST, "variables": variables}
                )
                return problem_of(response)

            return request

        paging = await run_load(
            "(b) auditLogEntries paging, first: 50",
            client,
            concurrency=args.concurrency,
            total=args.requests,
            time_cap=args.time_cap,
            make_task=pager,
        )
        exports = await run_load(
            "(a) requestAuditLogExport",
            client,
            concurrency=args.concurrency,
            total=args.requests,
            time_cap=args.time_cap,
            make_task=requester,
        )
    return [exports, paging]


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| scenario | requests | ok | errors | seconds | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        errors = sum(o.errors.values())
        detail = (
            f" ({', '.join(f'{k}: {v}' for k, v in sorted(o.errors.items()))})" if errors else ""
        )
        lines.append(
            f"| {o.name} | {o.requests} | {len(o.latencies)} | {errors}{detail} | {o.seconds:.1f} "
            f"| {o.requests / o.seconds:,.1f} | {percentile(o.latencies, 50):.1f} "
            f"| {percentile(o.latencies, 99):.1f} |"
        )
    return "\n".join(lines)


async def queue_state(url: str) -> dict[str, int]:
    conn = await db.connect(url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM log_exports GROUP BY status")
    finally:
        await conn.close()
    return {row["status"]: row["n"] for row in rows}


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000, help="audit entries to seed")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000, help="per scenario")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per scenario")
    args = parser.parse_args()

    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    print(
        f"== logexport GraphQL load: {args.entries:,} entries, concurrency {args.concurrency}, "
        f"{args.requests} requests or {args.time_cap:.0f} s per scenario, {os.cpu_count()} cores"
    )
    cluster = services.PostgresCluster(name=f"bench-load-{os.getpid()}")
    s3 = services.S3Server()
    smtp = services.SmtpSink()
    workdir = Path(tempfile.mkdtemp(prefix="logexport-bench-load-"))
    try:
        cluster.start()
        s3.start()
        s3.create_bucket(BUCKET)
        smtp.start()
        url = asyncio.run(cluster.create_database("bench"))
        started = time.perf_counter()
        org, token = asyncio.run(prepare(url, args.entries))
        print(f"seeded {args.entries:,} entries in {time.perf_counter() - started:.1f} s")
        port = services.free_port()
        extra = {"LOGEXPORT_MAX_ACTIVE_EXPORTS_PER_ORG": "1000000"}
        env = serve_env(url, s3, smtp, port, BUCKET, extra)
        with serving(env, port, workdir / "serve.log") as (base, _):
            outcomes = asyncio.run(scenarios(base, token, org, args))
            queue = asyncio.run(queue_state(url))
        print()
        print(table(outcomes))
        print()
        print(f"exports by status when serve stopped: {dict(sorted(queue.items()))}")
        print(f"emails received: {len(smtp.messages())}")
    finally:
        smtp.stop()
        s3.stop()
        cluster.stop(remove=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
