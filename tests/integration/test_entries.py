import ipaddress
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from logexport import entries, identity
from logexport.entries import (
    AuditLogEntryInput,
    AuditLogFilter,
    ScimEventFilter,
    ScimEventInput,
)
from logexport.errors import BadUserInput, Forbidden
from logexport.policy import Role
from logexport.redaction import REDACTED
from logexport.web.app import create_app
from tests.support.app import asgi_client, running
from tests.support.world import build_world

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
async def conn(pool):
    async with pool.acquire() as connection:
        yield connection


@pytest.fixture
async def org(conn):
    return await identity.create_organization(conn, "Acme")


async def _principal(conn, org, role=Role.VIEWER, email="vic@example.com"):
    user = await identity.create_user(conn, email, "Vic")
    await identity.add_member(conn, org.id, user.id, role)
    return user.as_principal()


async def test_record_audit_log_entry_stores_every_field(conn, org):
    entry_id = await entries.record_audit_log_entry(
        conn,
        organization_id=org.id,
        action="user.login",
        actor_type="USER",
        actor_id="usr_1",
        actor_email="ada@example.com",
        actor_name="Ada",
        resource_type="User",
        resource_id="usr_1",
        ip_address="2001:db8::1",
        user_agent="curl/8.5.0",
        metadata={"mfa": True, "geo": {"country": "DE"}},
        created_at=T0,
    )
    row = await conn.fetchrow("SELECT * FROM audit_log_entries WHERE id = $1", entry_id)
    assert row["created_at"] == T0
    assert row["ip_address"] == ipaddress.ip_address("2001:db8::1")
    assert row["metadata"] == {"mfa": True, "geo": {"country": "DE"}}
    assert (row["actor_type"], row["actor_email"], row["action"]) == (
        "USER", "ada@example.com", "user.login",
    )  # fmt: skip


async def test_audit_entry_defaults_to_now_and_empty_metadata(conn, org):
    entry_id = await entries.record_audit_log_entry(
        conn, organization_id=org.id, action="system.tick", actor_type="SYSTEM"
    )
    row = await conn.fetchrow(
        "SELECT metadata, now() - created_at < interval '1 minute' AS recent"
        " FROM audit_log_entries WHERE id = $1",
        entry_id,
    )
    assert row["metadata"] == {} and row["recent"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"actor_type": "ROBOT"}, "actor_type"),
        ({"action": ""}, "action"),
        ({"ip_address": "999.1.1.1"}, "ip_address"),
    ],
)
async def test_invalid_audit_entries_are_rejected(conn, org, changes, field):
    values = {"organization_id": org.id, "action": "a", "actor_type": "USER", **changes}
    with pytest.raises(BadUserInput) as info:
        await entries.record_audit_log_entry(conn, **values)
    assert info.value.field == field
    with pytest.raises(BadUserInput):
        await entries.record_audit_log_entries(conn, [AuditLogEntryInput(**values)])
    assert await conn.fetchval("SELECT count(*) FROM audit_log_entries") == 0


async def test_oversized_metadata_is_stored_truncated(conn, org):
    entry_id = await entries.record_audit_log_entry(
        conn, organization_id=org.id, action="a", actor_type="USER", metadata={"x": "y" * 70_000}
    )
    stored = await conn.fetchval("SELECT metadata FROM audit_log_entries WHERE id = $1", entry_id)
    assert stored["_truncated"] is True
    assert stored["_original_size"] > 70_000
    assert len(json.dumps(stored, separators=(",", ":"))) <= 64 * 1024


async def test_record_scim_event_redacts_passwords(conn, org):
    event_id = await entries.record_scim_event(
        conn,
        organization_id=org.id,
        method="PATCH",
        path="/Users/42",
        status_code=200,
        user_name="ada@example.com",
        ip_address="203.0.113.5",
        request_body={"Operations": [{"op": "replace", "path": "password", "value": "s3cret"}]},
        response_body={"id": "42", "password": "s3cret"},
    )
    row = await conn.fetchrow("SELECT * FROM scim_events WHERE id = $1", event_id)
    assert row["request_body"]["Operations"][0]["value"] == REDACTED
    assert row["response_body"] == {"id": "42", "password": REDACTED}
    text = await conn.fetchval("SELECT request_body::text || response_body::text FROM scim_events")
    assert "s3cret" not in text


async def test_scim_event_without_bodies_stores_nulls(conn, org):
    event_id = await entries.record_scim_event(
        conn, organization_id=org.id, method="DELETE", path="/Users/1", status_code=204
    )
    row = await conn.fetchrow("SELECT * FROM scim_events WHERE id = $1", event_id)
    assert row["request_body"] is None and row["response_body"] is None
    with pytest.raises(BadUserInput) as info:
        await entries.record_scim_event(
            conn, organization_id=org.id, method="GET", path="/Users", status_code=42
        )
    assert info.value.field == "status_code"


async def test_batch_copy_of_100k_audit_entries(conn, org):
    rng = random.Random(7)
    actions = ["user.login", "user.logout", "role.assign"]
    inputs = [
        AuditLogEntryInput(
            organization_id=org.id,
            action=actions[i % 3],
            actor_type="USER",
            actor_id=f"usr_{i}",
            actor_name="=cmd" if i == 54_321 else f"User {i}",
            ip_address=f"198.51.100.{i % 250 + 1}",
            metadata={"n": i},
            created_at=T0 + timedelta(microseconds=rng.randrange(10**10)),
        )
        for i in range(100_000)
    ]
    written = await entries.record_audit_log_entries(conn, inputs)
    assert written == 100_000
    assert await conn.fetchval("SELECT count(*) FROM audit_log_entries") == 100_000
    assert await conn.fetchval("SELECT count(DISTINCT id) FROM audit_log_entries") == 100_000
    sample = await conn.fetchrow(
        "SELECT action, actor_name, host(ip_address) AS ip, metadata, created_at"
        " FROM audit_log_entries WHERE actor_id = 'usr_54321'"
    )
    assert sample["action"] == "user.login"
    assert sample["actor_name"] == "=cmd"
    assert sample["ip"] == "198.51.100.72"
    assert sample["metadata"] == {"n": 54_321}
    assert sample["created_at"] == inputs[54_321].created_at


async def test_batch_scim_events_are_redacted_and_default_to_transaction_time(conn, org):
    bulk = {
        "Operations": [
            {"method": "POST", "path": "/Users", "data": {"userName": "b", "password": "pw1"}},
            {"method": "PATCH", "path": "/Users/2",
             "data": {"Operations": [{"op": "replace", "path": "password", "value": "pw2"}]}},
        ]
    }  # fmt: skip
    events = [
        ScimEventInput(org.id, "POST", "/Bulk", 200, request_body=bulk),
        ScimEventInput(org.id, "PUT", "/Users/1", 200, request_body={"Password": "pw3"}),
        ScimEventInput(org.id, "DELETE", "/Users/1", 204),
    ]
    async with conn.transaction():
        assert await entries.record_scim_events(conn, events) == 3
        now = await conn.fetchval("SELECT now()")
    rows = await conn.fetch("SELECT * FROM scim_events ORDER BY path, method")
    text = json.dumps([r["request_body"] for r in rows])
    assert "pw1" not in text and "pw2" not in text and "pw3" not in text
    assert all(r["created_at"] == now for r in rows)
    assert {r["method"]: r["request_body"] for r in rows}["DELETE"] is None


async def _audit_rows(conn, org, count, **overrides):
    inputs = [
        AuditLogEntryInput(
            organization_id=org.id,
            action=overrides.get("action", "user.login"),
            actor_type="USER",
            actor_id=overrides.get("actor_id", f"usr_{i}"),
            resource_type=overrides.get("resource_type", "User"),
            # Pairs of rows share a timestamp so that ids have to break ties.
            created_at=T0 + timedelta(seconds=i // 2),
        )
        for i in range(count)
    ]
    await entries.record_audit_log_entries(conn, inputs)


async def test_listing_is_newest_first_and_pages_without_gaps_or_repeats(conn, org):
    await _audit_rows(conn, org, 7)
    principal = await _principal(conn, org)
    seen, after, pages = [], None, 0
    while True:
        page = await entries.list_audit_log_entries(conn, principal, org.id, first=2, after=after)
        pages += 1
        seen.extend(page.items)
        assert [e.cursor for e in page.edges][-1:] == ([page.end_cursor] if page.edges else [])
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert pages == 4
    assert len({e.id for e in seen}) == 7
    keys = [(e.created_at, e.id) for e in seen]
    assert keys == sorted(keys, reverse=True)


async def test_first_is_bounded(conn, org):
    principal = await _principal(conn, org)
    for first in (0, 101, -1):
        with pytest.raises(BadUserInput) as info:
            await entries.list_audit_log_entries(conn, principal, org.id, first=first)
        assert info.value.field == "first"
    page = await entries.list_audit_log_entries(conn, principal, org.id, first=100)
    assert page.items == [] and page.end_cursor is None and not page.has_next_page


async def test_cursor_is_bound_to_organization_and_filter(conn, org):
    other = await identity.create_organization(conn, "Globex")
    principal = await _principal(conn, org)
    await identity.add_member(conn, other.id, principal.user_id, Role.VIEWER)
    await _audit_rows(conn, org, 3)
    page = await entries.list_audit_log_entries(conn, principal, org.id, first=1)
    cursor = page.end_cursor

    with pytest.raises(BadUserInput) as info:
        await entries.list_audit_log_entries(conn, principal, other.id, first=1, after=cursor)
    assert info.value.field == "after"
    filtered = AuditLogFilter.parse({"actions": ["user.login"]})
    with pytest.raises(BadUserInput):
        await entries.list_audit_log_entries(
            conn, principal, org.id, first=1, after=cursor, filter=filtered
        )
    with pytest.raises(BadUserInput):
        await entries.list_scim_events(conn, principal, org.id, first=1, after=cursor)
    for garbage in ("", "not-base64!", "eyJ9", cursor[:-4]):
        with pytest.raises(BadUserInput):
            await entries.list_audit_log_entries(conn, principal, org.id, after=garbage)
    nxt = await entries.list_audit_log_entries(conn, principal, org.id, first=1, after=cursor)
    assert nxt.items[0].id != page.items[0].id


async def test_audit_filters_or_within_and_across_fields(conn, org):
    principal = await _principal(conn, org)
    await _audit_rows(conn, org, 2, action="user.login", actor_id="a1", resource_type="User")
    await _audit_rows(conn, org, 2, action="role.assign", actor_id="a2", resource_type="Membership")
    await _audit_rows(conn, org, 2, action="apikey.create", actor_id="a1", resource_type="ApiKey")

    async def actions(mapping):
        page = await entries.list_audit_log_entries(
            conn, principal, org.id, filter=AuditLogFilter.parse(mapping)
        )
        return sorted(e.action for e in page.items)

    assert await actions({"actions": ["user.login", "role.assign"]}) == [
        "role.assign", "role.assign", "user.login", "user.login",
    ]  # fmt: skip
    assert await actions({"actorIds": ["a1"], "resourceTypes": ["ApiKey"]}) == ["apikey.create"] * 2
    assert await actions({"actor_ids": ["a2"]}) == ["role.assign"] * 2
    assert await actions({"actions": ["USER.LOGIN"]}) == []
    assert len(await actions(None)) == 6


async def test_scim_filters(conn, org):
    principal = await _principal(conn, org)
    events = [
        ScimEventInput(org.id, "POST", "/Users", 201, user_name="Ada@Example.com", created_at=T0),
        ScimEventInput(org.id, "POST", "/Users", 409, user_name="bob@example.com", created_at=T0),
        ScimEventInput(org.id, "DELETE", "/Users/1", 204, user_name="ada@example.com",
                       created_at=T0),
    ]  # fmt: skip
    await entries.record_scim_events(conn, events)

    async def codes(mapping):
        page = await entries.list_scim_events(
            conn, principal, org.id, filter=ScimEventFilter.parse(mapping)
        )
        return sorted(e.status_code for e in page.items)

    assert await codes({"userName": "ADA@example.com"}) == [201, 204]
    assert await codes({"methods": ["POST"], "statusCodes": [409, 500]}) == [409]
    assert await codes({"methods": ["post"]}) == []
    assert await codes({}) == [201, 204, 409]


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"actions": []}, "filter.actions"),
        ({"actions": [f"a{i}" for i in range(101)]}, "filter.actions"),
        ({"actorIds": "usr_1"}, "filter.actorIds"),
        ({"resource_types": [""]}, "filter.resource_types"),
        ({"colour": ["red"]}, "filter"),
    ],
)
def test_invalid_audit_filters_name_the_field(mapping, field):
    with pytest.raises(BadUserInput) as info:
        AuditLogFilter.parse(mapping)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"methods": []}, "filter.methods"),
        ({"statusCodes": [200] * 101}, "filter.statusCodes"),
        ({"statusCodes": [99]}, "filter.statusCodes"),
        ({"status_codes": [True]}, "filter.status_codes"),
        ({"userName": ""}, "filter.userName"),
    ],
)
def test_invalid_scim_filters_name_the_field(mapping, field):
    with pytest.raises(BadUserInput) as info:
        ScimEventFilter.parse(mapping)
    assert info.value.field == field


def test_filters_have_a_canonical_form():
    a = AuditLogFilter.parse({"actions": ["b", "a", "b"], "actor_ids": ["x"]})
    b = AuditLogFilter.parse({"actorIds": ["x"], "actions": ["a", "b"]})
    assert a == b
    assert a.to_json() == {"actions": ["a", "b"], "actorIds": ["x"]}
    assert AuditLogFilter.parse(a.to_json()) == a
    assert a.sql_args() == (["a", "b"], ["x"], None)
    s = ScimEventFilter.parse({"user_name": "Ada", "statusCodes": [500, 200]})
    assert s.to_json() == {"userName": "Ada", "statusCodes": [200, 500]}
    assert s.sql_args() == (None, "Ada", [200, 500])


async def test_listing_requires_membership(conn, org):
    await _audit_rows(conn, org, 1)
    outsider = (await identity.create_user(conn, "eve@example.com", "Eve")).as_principal()
    with pytest.raises(Forbidden):
        await entries.list_audit_log_entries(conn, outsider, org.id)
    with pytest.raises(Forbidden):
        await entries.list_scim_events(conn, outsider, org.id)


async def test_listing_query_can_seek_with_the_time_index(conn, org):
    await _audit_rows(conn, org, 10)
    # A table this small is cheaper to scan; forbid that to see what the index can do.
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + entries.q("list_audit_log_entries"),
                org.id, T0, entries.UUID(int=0), T0 - timedelta(days=1), T0, None, None,
                None, 51,
            )
        )  # fmt: skip
    assert "Index Scan Backward using audit_log_entries_org_time_idx" in plan
    assert "Sort" not in plan
    index_cond = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "ROW(created_at, id) <" in index_cond
    # The time range bounds the index scan too, rather than filtering the rows it returns.
    assert "created_at >=" in index_cond


async def test_time_range_is_half_open_and_pages_within_it(conn, org):
    principal = await _principal(conn, org)
    await _audit_rows(conn, org, 10)  # created at T0 + 0..4 s, two rows per second
    time_range = entries.TimeRange.parse("2026-03-01T00:00:01Z", "2026-03-01T00:00:03+00:00")
    seen, after = [], None
    while True:
        page = await entries.list_audit_log_entries(
            conn, principal, org.id, first=1, after=after, time_range=time_range
        )
        seen.extend(page.items)
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert sorted({e.created_at for e in seen}) == [
        T0 + timedelta(seconds=1), T0 + timedelta(seconds=2),
    ]  # fmt: skip
    assert len(seen) == 4
    only_start = entries.TimeRange.parse("2026-03-01T00:00:04Z", None)
    page = await entries.list_audit_log_entries(conn, principal, org.id, time_range=only_start)
    assert len(page.items) == 2
    only_end = entries.TimeRange.parse(None, "2026-03-01T00:00:01Z")
    page = await entries.list_audit_log_entries(conn, principal, org.id, time_range=only_end)
    assert len(page.items) == 2


async def test_cursor_is_bound_to_the_time_range(conn, org):
    principal = await _principal(conn, org)
    await _audit_rows(conn, org, 6)
    first_range = entries.TimeRange.parse("2026-03-01T00:00:00Z", None)
    page = await entries.list_audit_log_entries(
        conn, principal, org.id, first=1, time_range=first_range
    )
    other_range = entries.TimeRange.parse("2026-03-01T00:00:01Z", None)
    with pytest.raises(BadUserInput) as info:
        await entries.list_audit_log_entries(
            conn, principal, org.id, first=1, after=page.end_cursor, time_range=other_range
        )
    assert info.value.field == "after"
    with pytest.raises(BadUserInput):
        await entries.list_audit_log_entries(conn, principal, org.id, after=page.end_cursor)


@pytest.mark.parametrize(
    ("from_time", "to_time", "field"),
    [
        ("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z", "fromTime"),
        ("2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z", "fromTime"),
        ("2026-03-01T00:00:00", None, "fromTime"),
        (None, "yesterday", "toTime"),
        (None, "2026-03-01T00:00:00.1234567Z", "toTime"),
    ],
)
def test_bad_time_ranges_name_the_field(from_time, to_time, field):
    with pytest.raises(BadUserInput) as info:
        entries.TimeRange.parse(from_time, to_time)
    assert info.value.field == field
    assert field in str(info.value)


# ---------------------------------------------------------------------------- over GraphQL

ENTRIES_QUERY = """
query Entries($org: ID!, $first: Int, $after: String, $filter: AuditLogFilter,
              $from: DateTime, $to: DateTime) {
  organization(id: $org) {
    auditLogEntries(first: $first, after: $after, filter: $filter, fromTime: $from, toTime: $to) {
      edges { node { action createdAt } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
EVENTS_QUERY = """
query Events($org: ID!, $filter: ScimEventFilter, $from: DateTime, $to: DateTime) {
  organization(id: $org) {
    scimEvents(filter: $filter, fromTime: $from, toTime: $to) {
      edges { node { statusCode createdAt } }
    }
  }
}
"""


@pytest_asyncio.fixture(loop_scope="session")
async def graphql(pool, settings):
    world = await build_world(pool)
    app = create_app(settings, pool=pool, run_worker=False)
    async with running(app), asgi_client(app) as client:

        async def call(query, **variables):
            response = await client.post(
                "/graphql",
                json={
                    "query": query,
                    "variables": {"org": str(world.organization_id), **variables},
                },
                headers={"Authorization": f"Bearer {world.viewer.token}"},
            )
            assert response.status_code == 200, response.text
            return response.json()

        call.world = world
        yield call


async def test_graphql_lists_entries_within_from_and_to_time(graphql, pool):
    org = graphql.world.organization_id
    async with pool.acquire() as conn:
        await entries.record_audit_log_entries(
            conn,
            [
                AuditLogEntryInput(org, "user.login" if i % 2 else "user.logout", "USER",
                                   created_at=T0 + timedelta(hours=i))
                for i in range(10)
            ],
        )  # fmt: skip
    window = {"from": "2026-03-01T02:00:00Z", "to": "2026-03-01T06:00:00+00:00"}
    seen, after = [], None
    while True:
        body = await graphql(ENTRIES_QUERY, first=3, after=after, **window)
        connection = body["data"]["organization"]["auditLogEntries"]
        seen.extend(edge["node"] for edge in connection["edges"])
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert [n["createdAt"] for n in seen] == [
        "2026-03-01T05:00:00.000000Z", "2026-03-01T04:00:00.000000Z",
        "2026-03-01T03:00:00.000000Z", "2026-03-01T02:00:00.000000Z",
    ]  # fmt: skip

    body = await graphql(ENTRIES_QUERY, filter={"actions": ["user.login"]}, **window)
    nodes = [e["node"] for e in body["data"]["organization"]["auditLogEntries"]["edges"]]
    assert [n["createdAt"][11:13] for n in nodes] == ["05", "03"]

    # A cursor from the ranged listing does not resume an unranged one.
    body = await graphql(ENTRIES_QUERY, first=1, **window)
    cursor = body["data"]["organization"]["auditLogEntries"]["pageInfo"]["endCursor"]
    body = await graphql(ENTRIES_QUERY, first=1, after=cursor)
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}


async def test_graphql_lists_scim_events_within_from_time(graphql, pool):
    org = graphql.world.organization_id
    async with pool.acquire() as conn:
        await entries.record_scim_events(
            conn,
            [
                ScimEventInput(org, "POST", "/Users", 201 if i % 2 else 409,
                               created_at=T0 + timedelta(days=i))
                for i in range(4)
            ],
        )  # fmt: skip
    body = await graphql(
        EVENTS_QUERY, filter={"statusCodes": [409]}, **{"from": "2026-03-02T00:00:00Z"}
    )
    nodes = [e["node"] for e in body["data"]["organization"]["scimEvents"]["edges"]]
    assert nodes == [{"statusCode": 409, "createdAt": "2026-03-03T00:00:00.000000Z"}]


@pytest.mark.parametrize(
    ("variables", "field", "message"),
    [
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "fromTime",
         "fromTime must be earlier than toTime"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "fromTime",
         "fromTime must be earlier than toTime"),
        ({"from": "2026-03-01"}, "fromTime", "fromTime"),
        ({"to": "2026-03-01T00:00:00"}, "toTime", "no UTC offset"),
    ],
)  # fmt: skip
async def test_graphql_bad_time_range_names_the_field(graphql, variables, field, message):
    for query in (ENTRIES_QUERY, EVENTS_QUERY):
        body = await graphql(query, **variables)
        assert body["data"] is None
        assert len(body["errors"]) == 1
        error = body["errors"][0]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
        assert message in error["message"]
