"""Expensive GraphQL queries against a real ``logexport serve``: priced before they run,
refused with ``QUERY_TOO_COMPLEX`` naming cost and limit, answers capped at 32 MiB, and the
event loop free for ``/healthz`` while attackers keep sending them.

The organization holds 100 SCIM events whose request and response bodies are 64 KiB each:
one full page of them is the largest legitimate answer, and must still be served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from graphql import (
    GraphQLSyntaxError,
    build_client_schema,
    execute,
    get_introspection_query,
    parse,
    print_ast,
)

from devtools import services
from logexport import client, db
from logexport.entries import ScimEventInput, record_scim_events
from logexport.web import graphql_limits
from logexport.web.graphql import MAX_RESPONSE_BYTES, executable_schema
from logexport.web.graphql_limits import MAX_COST, query_cost
from tests.support.processes import REPO_ROOT, ProcessGroup, service_env
from tests.support.world import World, build_world, eventually

BODY_BYTES = 64 * 1024
EVENT_DAY = datetime(2026, 1, 5, tzinfo=UTC)
# Every field of a SCIM event, as the console's row detail and `scim-event list` show them.
SCIM_FIELDS = (
    "id createdAt method path userName statusCode errorMessage ipAddress userAgent "
    "requestBody responseBody"
)
FULL_PAGE = f"""query($org: ID!) {{ organization(id: $org) {{
  scimEvents(first: 100) {{ edges {{ cursor node {{ {SCIM_FIELDS} }} }}
                          pageInfo {{ hasNextPage endCursor }} }} }} }}"""
STANDARD_INTROSPECTION = get_introspection_query(
    descriptions=True,
    specified_by_url=True,
    directive_is_repeatable=True,
    schema_description=True,
    input_value_deprecation=True,
)
SCHEMA_FRAGMENT = (
    "fragment F on __Schema { types { name kind fields { name type { name kind } } } }"
)


def schema_bomb(aliases: int) -> str:
    """``aliases`` copies of ``__schema { ...F }``: 3,000 of them fit in 62 KB."""
    selections = " ".join(f"a{i}:__schema{{...F}}" for i in range(aliases))
    return "{" + selections + "}" + SCHEMA_FRAGMENT


def returned_fields(value: object) -> int:
    """How many fields an answer holds, at every depth."""
    if isinstance(value, dict):
        return sum(1 + returned_fields(item) for item in value.values())
    if isinstance(value, list):
        return sum(returned_fields(item) for item in value)
    return 0


def scim_bomb(aliases: int) -> str:
    """``aliases`` full pages of both bodies: 39 of them stay within the 200-field limit."""
    pages = " ".join(
        f"p{i}: scimEvents(first: 100) {{ edges {{ node {{ requestBody responseBody }} }} }}"
        for i in range(aliases)
    )
    return f"query($org: ID!) {{ organization(id: $org) {{ {pages} }} }}"


def body_of(salt: int, size: int = BODY_BYTES) -> dict[str, Any]:
    """A SCIM PATCH adding group members, its compact JSON just under ``size`` bytes."""
    member = {"value": f"{salt:08d}-0000-4000-8000-000000000000", "display": "member"}
    count = (size - 200) // (len(json.dumps(member, separators=(",", ":"))) + 1)
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [member] * count}],
    }


@dataclass
class Served:
    url: str
    world: World

    async def post(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.post(
                f"{self.url}/graphql",
                json={"query": query, "variables": variables or {}},
                headers={"Authorization": f"Bearer {token}"},
            )
        return response, time.monotonic() - started

    @property
    def org(self) -> dict[str, str]:
        return {"org": str(self.world.organization_id)}


async def _seed(database_url: str, world: World) -> None:
    conn = await db.connect(database_url)
    try:
        await record_scim_events(
            conn,
            [
                ScimEventInput(
                    organization_id=world.organization_id,
                    method="PATCH",
                    path=f"/Groups/{i}",
                    status_code=200,
                    user_name=f"user{i}@acme.test",
                    ip_address="198.51.100.7",
                    user_agent="Okta SCIM Client 1.0",
                    request_body=body_of(i),
                    response_body=body_of(i + 1000),
                    created_at=EVENT_DAY + timedelta(minutes=i),
                )
                for i in range(100)
            ],
        )
        # The other organization's events carry text fields at their 10,000-character
        # limit, each character a control character JSON writes as six bytes: a page the
        # cost estimate lets through but whose answer would pass 32 MiB.
        wide = "\x01" * 10_000
        await record_scim_events(
            conn,
            [
                ScimEventInput(
                    organization_id=world.other_organization_id,
                    method=wide,
                    path=wide,
                    status_code=400,
                    user_name=wide,
                    error_message=wide,
                    user_agent=wide,
                    request_body=body_of(i),
                    response_body=body_of(i + 1000),
                    created_at=EVENT_DAY + timedelta(minutes=i),
                )
                for i in range(100)
            ],
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def process_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path_factory.mktemp("graphql-cost"))
    try:
        yield group
    finally:
        group.stop_all()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served(
    pg_admin_url: str,
    template_database: str,
    s3_server: services.S3Server,
    smtp_sink: services.SmtpSink,
    process_group: ProcessGroup,
) -> AsyncIterator[Served]:
    name = f"cost_{os.getpid()}_{secrets.token_hex(4)}"
    await services.create_database(pg_admin_url, name, template=template_database)
    database_url = services.with_database(pg_admin_url, name)
    try:
        pool = await db.create_pool(database_url)
        try:
            world = await build_world(pool)
        finally:
            await pool.close()
        await _seed(database_url, world)
        port = services.free_port()
        url = f"http://127.0.0.1:{port}"
        env = service_env(
            database_url=database_url,
            storage_url=f"s3://cost-{secrets.token_hex(6)}/exports",
            smtp_url=smtp_sink.url,
            s3_endpoint_url=s3_server.endpoint_url,
            base_url=url,
            secret_key=secrets.token_urlsafe(48),
        )
        server = process_group.serve("serve", env, port=port, worker=False)

        async def answers() -> bool:
            assert server.alive(), "logexport serve exited:\n" + server.tail()
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{url}/healthz", timeout=2)).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(answers, timeout=60, interval=0.1, what="logexport serve to answer")
        yield Served(url, world)
        server.kill()
    finally:
        await services.drop_database(pg_admin_url, name)


def refusal(response: httpx.Response) -> str:
    """The message of the one QUERY_TOO_COMPLEX error of a small answer without data."""
    assert response.status_code == 200, response.text[:500]
    assert len(response.content) < 1024, f"{len(response.content):,} bytes answered"
    body = response.json()
    assert "data" not in body, body
    [error] = body["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX"}, error
    message: str = error["message"]
    return message


# ---------------------------------------------------------------------------- the attacks


async def test_the_schema_alias_bomb_is_refused_at_once(served: Served):
    # 3,000 aliases of an introspection fragment: 200 with 27 MB after 20 s before.
    query = schema_bomb(3000)
    assert 55_000 < len(query) < 64 * 1024
    response, seconds = await served.post(served.world.viewer.token, query)
    message = refusal(response)
    assert "more than 5,000 tokens" in message
    assert seconds < 5

    # Fewer aliases fit the token limit and are priced exactly: each copy of the fragment
    # costs what it would return (every field of the answer, counted in-process).
    per_copy = returned_fields(execute(executable_schema(), parse(schema_bomb(1))).data)
    assert per_copy > 600
    response, seconds = await served.post(served.world.viewer.token, schema_bomb(100))
    message = refusal(response)
    assert f"cost is {100 * per_copy:,} and the limit is 25,000" in message, message
    assert seconds < 5


async def test_the_scim_alias_bomb_is_refused_before_touching_the_database(served: Served):
    # 39 full pages of both bodies in a 3 KB request: 507 MB and 2 GB of memory before.
    query = scim_bomb(39)
    assert len(query) < 4096
    response, seconds = await served.post(served.world.viewer.token, query, served.org)
    message = refusal(response)
    # 39 * (1 + 100 * (edges + node + 2 * 100 per body)) + organization
    assert "cost is 787,840 and the limit is 25,000" in message, message
    assert seconds < 5


# Polls /healthz every 20 ms until its stdin closes, then prints the latencies as JSON. A
# process of its own: the attackers' work in this one must not delay its measurements.
_PROBE = """
import json, select, sys, time, httpx
latencies = []
with httpx.Client(timeout=30) as client:
    while not select.select([sys.stdin], [], [], 0.02)[0]:
        started = time.monotonic()
        client.get(sys.argv[1] + "/healthz").raise_for_status()
        latencies.append(time.monotonic() - started)
print(json.dumps(latencies))
"""


async def _probe_healthz(url: str, during: Awaitable[Any]) -> list[float]:
    """/healthz latencies, in seconds, measured from another process while ``during`` runs."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE,
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await during
    finally:
        output, _ = await asyncio.wait_for(probe.communicate(b""), timeout=60)
    assert probe.returncode == 0
    latencies: list[float] = json.loads(output)
    return latencies


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def test_healthz_stays_fast_while_clients_keep_sending_attacks(served: Served):
    # What this machine allows with nothing else sent: the bound below is over and above it.
    baseline = await _probe_healthz(served.url, asyncio.sleep(3))

    payloads = [
        {"query": schema_bomb(3000)},
        {"query": schema_bomb(700)},  # just under the token limit: parsed and priced
        {"query": scim_bomb(39), "variables": served.org},
    ]
    codes: list[str] = []
    deadline = time.monotonic() + 15

    async def attacker(index: int) -> None:
        headers = {"Authorization": f"Bearer {served.world.viewer.token}"}
        async with httpx.AsyncClient(timeout=60) as client:
            while len(codes) < 200 and time.monotonic() < deadline:
                payload = payloads[(index + len(codes)) % len(payloads)]
                response = await client.post(f"{served.url}/graphql", json=payload, headers=headers)
                codes.append(response.json()["errors"][0]["extensions"]["code"])

    latencies = await _probe_healthz(served.url, asyncio.gather(*(attacker(i) for i in range(6))))
    # The machine may be busier (or quieter) after than before: the bound is over and above
    # the worse of the two idle measurements, so only the attack's own cost is judged.
    after = await _probe_healthz(served.url, asyncio.sleep(3))
    if _p99(after) > _p99(baseline):
        baseline = after

    print(
        f"{len(codes)} attacks refused; /healthz p99 {_p99(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms (idle p99 {_p99(baseline) * 1000:.0f} ms)"
    )
    assert len(codes) >= 30, f"only {len(codes)} attacks answered in 15 s"
    assert set(codes) == {"QUERY_TOO_COMPLEX"}
    assert len(latencies) >= 30
    assert _p99(latencies) < 0.1 + _p99(baseline), (
        f"/healthz p99 {_p99(latencies) * 1000:.0f} ms under attack "
        f"(idle p99 {_p99(baseline) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms)"
    )


# ---------------------------------------------------------------------------- what still works


async def test_a_full_page_of_large_scim_events_is_served(served: Served):
    response, _ = await served.post(served.world.viewer.token, FULL_PAGE, served.org)
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, str(body)[:500]
    edges = body["data"]["organization"]["scimEvents"]["edges"]
    assert len(edges) == 100
    newest = edges[0]["node"]
    assert newest["path"] == "/Groups/99"
    assert newest["requestBody"] == body_of(99)
    assert newest["responseBody"] == body_of(1099)
    assert 100 * 2 * (BODY_BYTES - 300) < len(response.content) < MAX_RESPONSE_BYTES


async def test_the_standard_introspection_query_is_answered(served: Served):
    response, _ = await served.post(served.world.viewer.token, STANDARD_INTROSPECTION)
    body = response.json()
    assert "errors" not in body, str(body)[:500]
    # What a GraphQL IDE does with it: build the schema and offer its fields.
    schema = build_client_schema(body["data"])
    assert "requestBody" in schema.get_type("ScimEvent").fields  # type: ignore[union-attr]
    assert query_cost(executable_schema(), parse(STANDARD_INTROSPECTION)) < MAX_COST / 5


async def test_an_answer_over_32_mib_is_refused(served: Served):
    # Cost as the page above; every text field of these events is 60 KB of JSON escapes.
    response, _ = await served.post(
        served.world.outsider.token, FULL_PAGE, {"org": str(served.world.other_organization_id)}
    )
    message = refusal(response)
    assert f"larger than {MAX_RESPONSE_BYTES:,} bytes" in message
    # Half the page fits.
    half = FULL_PAGE.replace("first: 100", "first: 50")
    response, _ = await served.post(
        served.world.outsider.token, half, {"org": str(served.world.other_organization_id)}
    )
    assert "errors" not in response.json()
    assert len(response.content) < MAX_RESPONSE_BYTES


# ---------------------------------------------------------------------------- hidden cost

BODIES_PAGE = """query($org: ID!, $n: Int) { organization(id: $org) {
  a: scimEvents(first: $n) { edges { node { ...Bodies } } }
  b: scimEvents(first: $n) { edges { node { ...Bodies } } } } }
fragment Bodies on ScimEvent { requestBody responseBody }"""


FIELD_NAMES = " fragment A on __Schema { types { ...B } } fragment B on __Type { fields { name } }"


@pytest.mark.parametrize(
    ("query", "variables", "cost"),
    [
        # Two pages of both bodies behind a fragment spread, sized by a variable.
        (BODIES_PAGE, {"n": 100}, 40_403),
        # The same page size as a variable's default.
        (BODIES_PAGE.replace("$n: Int", "$n: Int = 100"), {}, 40_403),
        # Three pages of the default size (first omitted: 50).
        (
            "query($org: ID!) { organization(id: $org) { "
            + " ".join(
                f"p{i}: scimEvents {{ edges {{ node {{ ... on ScimEvent {{ requestBody "
                "responseBody } } } }"
                for i in range(3)
            )
            + " } }",
            {},
            30_304,
        ),
        # Aliased introspection of every type's fields, hidden in nested fragments.
        (
            "{ " + " ".join(f"t{i}: __schema {{ ...A }}" for i in range(200)) + " }" + FIELD_NAMES,
            {},
            200
            * returned_fields(
                execute(executable_schema(), parse("{ __schema { ...A } }" + FIELD_NAMES)).data
            ),
        ),
    ],
    ids=["first-variable", "first-variable-default", "first-default", "introspection-fragments"],
)
async def test_cost_hidden_in_fragments_variables_and_aliases_is_counted(
    served: Served, query: str, variables: dict[str, Any], cost: int
):
    response, _ = await served.post(served.world.viewer.token, query, {**served.org, **variables})
    message = refusal(response)
    assert f"cost is {cost:,} and the limit is 25,000" in message, message


async def test_the_same_query_with_smaller_pages_runs(served: Served):
    response, _ = await served.post(served.world.viewer.token, BODIES_PAGE, {**served.org, "n": 50})
    body = response.json()
    assert "errors" not in body, str(body)[:500]
    assert len(body["data"]["organization"]["a"]["edges"]) == 50


# ---------------------------------------------------------------------------- the estimate


def _values(result: Any) -> int:
    if isinstance(result, dict):
        return sum(1 + _values(v) for v in result.values())
    if isinstance(result, list):
        return sum(_values(v) for v in result)
    return 0


@pytest.mark.parametrize(
    "query",
    [
        STANDARD_INTROSPECTION,
        get_introspection_query(),
        "{ __schema { types { name fields { name args { name type { name } } } } } }",
        '{ __type(name: "LogExport") { name fields { name type { kind ofType { name } } } } }',
        "{ a: __schema { ...F } b: __schema { ...F } } " + SCHEMA_FRAGMENT,
        '{ __type(name: "NoSuchType") { name fields { name } } }',
    ],
    ids=["standard", "basic", "types-fields-args", "one-type", "aliases", "missing-type"],
)
def test_introspection_costs_what_it_returns(query: str):
    schema = executable_schema()
    document = parse(query)
    result = execute(schema, document)
    assert not result.errors
    assert query_cost(schema, document) == _values(result.data)


def test_the_budget_fits_one_full_page_and_no_more():
    schema = executable_schema()
    full = query_cost(schema, parse(FULL_PAGE))
    assert full is not None and full <= MAX_COST
    # 100 * (edges, cursor, node, 7 plain fields, errorMessage and userAgent at 10 each,
    # two bodies at 100 each, pageInfo with its 2 fields) + scimEvents + organization
    assert full == 23_302
    # The page and 20 more events with one body each: 23,302 + 1 + 20 * 102
    more = FULL_PAGE.replace(
        "pageInfo { hasNextPage endCursor } }",
        "pageInfo { hasNextPage endCursor } } "
        "more: scimEvents(first: 20) { edges { node { requestBody } } }",
    )
    assert query_cost(schema, parse(more)) == 25_343 > MAX_COST


def test_pricing_stops_early_on_endless_introspection(monkeypatch: pytest.MonkeyPatch):
    # 2,000 distinct selections each walking every type's fields (356,000 in all): priced
    # without walking them all, since each step adds at least one to the cost.
    query = (
        "{ "
        + " ".join(f"a{i}: __schema {{ types {{ fields {{ name }} }} }}" for i in range(2000))
        + " }"
    )
    steps = 0
    step = graphql_limits._CostWalk.field

    def counted(*args: Any) -> int:
        nonlocal steps
        steps += 1
        return step(*args)

    monkeypatch.setattr(graphql_limits._CostWalk, "field", counted)
    assert query_cost(executable_schema(), parse(query)) is None
    assert steps == MAX_COST + 1


def test_unknown_fields_fragments_and_cycles_are_priced_without_failing():
    schema = executable_schema()
    for query in (
        "{ nope { deeper } }",
        "{ ...Missing }",
        "fragment A on Query { ...B } fragment B on Query { ...A } { ...A }",
        '{ organization(id: "x") { scimEvents(first: "ten") { edges { cursor } } } }',
    ):
        cost = query_cost(schema, parse(query))
        assert cost is not None and cost < 1000, query


def _product_queries() -> list[tuple[str, str]]:
    """Every document the client library and the console send, by where it comes from."""
    found = [(f"client.DOCUMENTS[{name!r}]", text) for name, text in client.DOCUMENTS.items()]
    for name in dir(client):
        value = getattr(client, name)
        if isinstance(value, str) and re.search(r"^\s*(query|mutation)\b", value, re.M):
            found.append((f"client.{name}", value))
    for path in sorted((REPO_ROOT / "logexport/web/static/console").glob("*.js")):
        source = path.read_text()
        constants = dict(re.findall(r"const (\w+) = `([^`]*)`", source))
        for match in re.finditer(r"`((?:query|mutation)\b[^`]*)`", source):
            text = re.sub(r"\$\{(\w+)\}", lambda m, c=constants: c.get(m[1], "X"), match[1])
            text = re.sub(r"\$\{[^}]*\}", "X", text)
            with contextlib.suppress(GraphQLSyntaxError):  # a piece of a longer string
                found.append((f"{path.name}:{match[1][:40]}", print_ast(parse(text))))
    return found


def test_every_query_the_product_sends_fits_at_the_largest_page():
    queries = _product_queries()
    sent = " ".join(q for _, q in queries)
    for name in ("query ScimEvents(", "query AuditLogEntries(", "query Exports("):
        assert name in sent
    assert sent.count("requestBody") >= 2
    schema = executable_schema()
    for where, query in queries:
        cost = query_cost(schema, parse(query), variables={"first": 100})
        assert cost is not None and cost <= MAX_COST, (where, cost)
