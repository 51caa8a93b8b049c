#!/usr/bin/env python3
"""What expensive GraphQL queries cost a real ``logexport serve``, and what the loop feels.

    .venv/bin/python scripts/bench_graphql_cost.py [--schema-aliases 3000] [--scim-aliases 39]
                                                   [--clients 6] [--time-cap 20]
                                                   [--skip SCENARIO]...

Starts private services on 127.0.0.1 (a PostgreSQL cluster, moto S3, an SMTP sink),
migrates, seeds one organization with 100 SCIM events whose request and response bodies
are 64 KiB each and a VIEWER with an API key, starts ``logexport serve`` on a free port,
then sends, one at a time, while another task polls ``/healthz`` every 20 ms:

  schema-bomb   N aliases of ``__schema { ...F }`` (a fragment over every type's fields)
  scim-bomb     N aliases of ``scimEvents(first: 100)`` selecting both bodies
  legit-page    one full page: 100 SCIM events, every field
  introspection the standard full introspection query, once

after 5 s of ``/healthz`` alone (``idle``, what the machine itself allows), and finally
``--clients`` clients sending both bombs in a loop (bounded by count and
``--time-cap``) while ``/healthz`` is polled. Each line gives the HTTP status, the
``extensions.code`` of the first error, response bytes, seconds, the server's resident
memory after the request, and the ``/healthz`` latency p99/max seen meanwhile. It passes or
fails nothing: the figures are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from graphql import get_introspection_query

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import services
from devtools.serving import serve_env, serving
from logexport import db, identity
from logexport.entries import ScimEventInput, record_scim_events
from logexport.policy import Role

REPO = Path(__file__).resolve().parent.parent
BUCKET = "bench-graphql-cost"
BODY_BYTES = 64 * 1024
SCHEMA_FRAGMENT = (
    "fragment F on __Schema { types { name kind fields { name type { name kind } } } }"
)
SCIM_FIELDS = (
    "id createdAt method path userName statusCode errorMessage ipAddress userAgent "
    "requestBody responseBody"
)
STANDARD_INTROSPECTION = get_introspection_query(
    descriptions=True,
    specified_by_url=True,
    directive_is_repeatable=True,
    schema_description=True,
    input_value_deprecation=True,
)


def schema_bomb(aliases: int) -> str:
    return "{" + " ".join(f"a{i}:__schema{{...F}}" for i in range(aliases)) + "}" + SCHEMA_FRAGMENT


def scim_bomb(aliases: int) -> str:
    pages = " ".join(
        f"p{i}: scimEvents(first: 100) {{ edges {{ node {{ requestBody responseBody }} }} }}"
        for i in range(aliases)
    )
    return f"query($org: ID!) {{ organization(id: $org) {{ {pages} }} }}"


LEGIT_PAGE = f"""query($org: ID!) {{ organization(id: $org) {{
  scimEvents(first: 100) {{ edges {{ cursor node {{ {SCIM_FIELDS} }} }}
                          pageInfo {{ hasNextPage endCursor }} }} }} }}"""


def body_of(size: int, salt: int) -> dict[str, Any]:
    """A SCIM PATCH adding group members whose compact JSON is just under ``size`` bytes."""
    member = {"value": f"{salt:08d}-0000-4000-8000-000000000000", "display": "member"}
    one = len(json.dumps(member, separators=(",", ":"))) + 1
    count = (size - 200) // one
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [member] * count}],
    }


# ------------------------------------------------------------------ setup


async def prepare(url: str) -> tuple[str, str]:
    """Migrate, seed one organization, and return (organization id, VIEWER token)."""
    await db.migrate(url)
    conn = await db.connect(url)
    try:
        org = await identity.create_organization(conn, "Cost Bench Org")
        viewer = await identity.create_user(conn, "cost.viewer@example.test", "Cost Viewer")
        await identity.add_member(conn, org.id, viewer.id, Role.VIEWER)
        _, token = await identity.create_api_key(conn, viewer.id, "bench-cost", None)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        await record_scim_events(
            conn,
            [
                ScimEventInput(
                    organization_id=org.id,
                    method="PATCH",
                    path=f"/Groups/{i}",
                    status_code=200,
                    user_name=f"user{i}@example.test",
                    ip_address="198.51.100.7",
                    user_agent="Okta SCIM Client 1.0",
                    request_body=body_of(BODY_BYTES, i),
                    response_body=body_of(BODY_BYTES, i + 1000),
                    created_at=start + timedelta(minutes=i),
                )
                for i in range(100)
            ],
        )
    finally:
        await conn.close()
    return str(org.id), token


def resident_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid`` in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# ------------------------------------------------------------------ measuring


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Probe:
    """Polls ``/healthz`` every 20 ms until stopped; keeps each answer's latency."""

    base: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    response = await client.get(f"{self.base}/healthz")
                    response.raise_for_status()
                    self.latencies.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    self.failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.02)

    def summary(self) -> str:
        ms = [v * 1000 for v in self.latencies]
        return (
            f"healthz n={len(ms)} p50={percentile(ms, 50):.0f} ms "
            f"p99={percentile(ms, 99):.0f} ms max={max(ms, default=float('nan')):.0f} ms"
            + (f" failures={self.failures}" if self.failures else "")
        )


@dataclass
class Answer:
    status: int
    code: str
    size: int
    seconds: float


async def post(client: httpx.AsyncClient, base: str, token: str, payload: dict) -> Answer:
    """Send one request and stream its answer: only its size and first error are kept."""
    started = time.perf_counter()
    size = 0
    head = bytearray()
    async with client.stream(
        "POST",
        f"{base}/graphql",
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if len(head) < 4096:
                head += chunk[: 4096 - len(head)]
    seconds = time.perf_counter() - started
    code = "-"
    text = head.decode(errors="replace")
    if size <= 4096:
        with contextlib.suppress(ValueError):
            errors = json.loads(text).get("errors") or []
            if errors:
                code = errors[0].get("extensions", {}).get("code", "?")
                code += f" ({errors[0].get('message', '')[:90]})"
    elif '"errors"' in text:
        code = "errors in a large answer"
    return Answer(response.status_code, code, size, seconds)


async def single(base: str, pid: int, token: str, name: str, payload: dict) -> None:
    stop = asyncio.Event()
    probe = Probe(base)
    prober = asyncio.create_task(probe.run(stop))
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(timeout=600) as client:
        answer = await post(client, base, token, payload)
    await asyncio.sleep(0.1)
    stop.set()
    await prober
    rss, peak = resident_mib(pid)
    request_bytes = len(json.dumps(payload))
    print(
        f"{name:<14} request {request_bytes:>7,} B -> HTTP {answer.status} {answer.code}; "
        f"{answer.size:,} B in {answer.seconds:.2f} s; server RSS {rss:.0f} MiB "
        f"(peak {peak:.0f}); {probe.summary()}",
        flush=True,
    )


async def concurrent(
    base: str, token: str, payloads: list[dict], clients: int, total: int, time_cap: float
) -> None:
    stop = asyncio.Event()
    probe = Probe(base)
    prober = asyncio.create_task(probe.run(stop))
    answers: list[Answer] = []
    deadline = time.monotonic() + time_cap

    async def attacker(index: int) -> None:
        async with httpx.AsyncClient(timeout=600) as client:
            n = index
            while len(answers) < total and time.monotonic() < deadline:
                answers.append(await post(client, base, token, payloads[n % len(payloads)]))
                n += 1

    started = time.perf_counter()
    await asyncio.gather(*(attacker(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    stop.set()
    await prober
    codes: dict[str, int] = {}
    for answer in answers:
        key = f"{answer.status} {answer.code.split(' ')[0]}"
        codes[key] = codes.get(key, 0) + 1
    seconds = [a.seconds for a in answers]
    print(
        f"concurrency    {clients} clients, {len(answers)} requests in {elapsed:.1f} s "
        f"({codes}); request p50 {percentile(seconds, 50) * 1000:.0f} ms, "
        f"p99 {percentile(seconds, 99) * 1000:.0f} ms; "
        f"{sum(a.size for a in answers):,} B answered; {probe.summary()}",
        flush=True,
    )


async def scenarios(base: str, pid: int, token: str, org: str, args: argparse.Namespace) -> None:
    schema = {"query": schema_bomb(args.schema_aliases)}
    scim = {"query": scim_bomb(args.scim_aliases), "variables": {"org": org}}
    runs = {
        "schema-bomb": schema,
        "scim-bomb": scim,
        "legit-page": {"query": LEGIT_PAGE, "variables": {"org": org}},
        "introspection": {"query": STANDARD_INTROSPECTION},
    }
    if "idle" not in args.skip:
        stop = asyncio.Event()
        probe = Probe(base)
        prober = asyncio.create_task(probe.run(stop))
        await asyncio.sleep(5)
        stop.set()
        await prober
        print(f"{'idle':<14} nothing else sent for 5 s; {probe.summary()}", flush=True)
    for name, payload in runs.items():
        if name not in args.skip:
            await single(base, pid, token, name, payload)
    if "concurrency" not in args.skip:
        await concurrent(base, token, [schema, scim], args.clients, args.requests, args.time_cap)
    rss, peak = resident_mib(pid)
    print(f"server RSS at the end {rss:.0f} MiB, peak {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schema-aliases", type=int, default=3000)
    parser.add_argument("--scim-aliases", type=int, default=39)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--requests", type=int, default=600, help="concurrency scenario cap")
    parser.add_argument("--time-cap", type=float, default=20.0, help="concurrency seconds")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["idle", "schema-bomb", "scim-bomb", "legit-page", "introspection", "concurrency"],
    )
    args = parser.parse_args()

    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    print(
        f"== logexport GraphQL cost: {args.schema_aliases} __schema aliases, "
        f"{args.scim_aliases} scimEvents aliases, {os.cpu_count()} cores",
        flush=True,
    )
    cluster = services.PostgresCluster(name=f"bench-cost-{os.getpid()}")
    s3 = services.S3Server()
    smtp = services.SmtpSink()
    workdir = Path(tempfile.mkdtemp(prefix="logexport-bench-cost-"))
    try:
        cluster.start()
        s3.start()
        s3.create_bucket(BUCKET)
        smtp.start()
        url = asyncio.run(cluster.create_database("bench"))
        org, token = asyncio.run(prepare(url))
        port = services.free_port()
        env = serve_env(url, s3, smtp, port, BUCKET)
        with serving(env, port, workdir / "serve.log") as (base, pid):
            asyncio.run(scenarios(base, pid, token, org, args))
    finally:
        smtp.stop()
        s3.stop()
        cluster.stop(remove=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
