"""Managing log streams over GraphQL, against the application served on a port: owners
create, change, test and delete; admins and viewers only list; other organizations see
nothing; secrets never come back; destinations inside the network are refused."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
import pytest_asyncio

from tests.support.app import running_app
from tests.support.graphql import post_graphql
from tests.support.receiver import receiver
from tests.support.world import World, build_world

SECRET = "hmac-secret-value-0123456789"
S3_SECRET = "aws-secret-access-key-abcdefghij"

STREAM_FIELDS = """id kind state intervalSeconds filter lastError nextRunAt startAt createdAt
    destination { type url bucket prefix }
    deliveries(first: 10) { edges { cursor node { id sequence rowCount byteSize status
        attempts deliveredAt error } } pageInfo { hasNextPage endCursor } }"""
CREATE = (
    "mutation($input: CreateLogStreamInput!) {"
    f" createLogStream(input: $input) {{ logStream {{ {STREAM_FIELDS} }} }} }}"
)
UPDATE = (
    "mutation($input: UpdateLogStreamInput!) {"
    f" updateLogStream(input: $input) {{ logStream {{ {STREAM_FIELDS} }} }} }}"
)
DELETE = (
    "mutation($id: ID!) {"
    f" deleteLogStream(input: {{id: $id}}) {{ logStream {{ {STREAM_FIELDS} }} }} }}"
)
TEST = (
    "mutation($id: ID!) {"
    f" testLogStream(input: {{id: $id}}) {{ logStream {{ {STREAM_FIELDS} }} }} }}"
)
LIST = f"query($org: ID!) {{ organization(id: $org) {{ logStreams {{ {STREAM_FIELDS} }} }} }}"


class Api:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.answers: list[str] = []

    async def call(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = await post_graphql(self.base_url, token, query, variables)
        self.answers.append(response.text)
        body: dict[str, Any] = response.json()
        return body

    async def ok(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = await self.call(token, query, variables)
        assert "errors" not in body, body["errors"]
        result: dict[str, Any] = body["data"]
        return result

    async def error(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = await self.call(token, query, variables)
        assert body.get("errors"), body
        error: dict[str, Any] = body["errors"][0]
        return error


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool) -> World:
    return await build_world(pool)


@pytest_asyncio.fixture(loop_scope="session")
async def api(pool, settings) -> AsyncIterator[Api]:
    async with running_app(settings, pool, run_worker=False) as base_url:
        yield Api(base_url)


@pytest_asyncio.fixture(loop_scope="session")
async def private_api(pool, settings) -> AsyncIterator[Api]:
    chosen = settings.derive(stream_allow_private=True, stream_min_interval=1.0)
    async with running_app(chosen, pool, run_worker=False) as base_url:
        yield Api(base_url)


# A public address written as such: resolving it needs no DNS, and no test sends to it.
PUBLIC_URL = "https://93.184.215.14/ingest"


def https_input(world: World, url: str = PUBLIC_URL, **more: Any) -> dict[str, Any]:
    return {
        "organizationId": str(world.organization_id),
        "kind": "AUDIT_LOG",
        "destination": {"https": {"url": url, "secret": SECRET}},
        **more,
    }


def s3_input(world: World, **s3: Any) -> dict[str, Any]:
    destination = {
        "bucket": "customer-logs",
        "prefix": "acme/",
        "region": "eu-west-1",
        "accessKeyId": "AKIAEXAMPLE123",
        "secretAccessKey": S3_SECRET,
        **s3,
    }
    return {
        "organizationId": str(world.organization_id),
        "kind": "SCIM_EVENT",
        "intervalSeconds": 600,
        "destination": {"s3": destination},
    }


async def audit_rows(pool, organization_id: UUID) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT action, actor_id, resource_type, resource_id, metadata"
            " FROM audit_log_entries WHERE organization_id = $1 AND action LIKE 'iam:log-stream:%'"
            " ORDER BY created_at, id",
            organization_id,
        )
    return [dict(row) for row in rows]


async def test_owner_creates_pauses_resumes_changes_and_deletes_a_stream(api, pool, world):
    owner = world.owner.token
    created = (
        await api.ok(
            owner,
            CREATE,
            {"input": https_input(world, filter={"actions": ["user.login", "user.login"]})},
        )
    )["createLogStream"]["logStream"]
    stream_id = created["id"]
    assert created["kind"] == "AUDIT_LOG"
    assert created["state"] == "ACTIVE"
    assert created["intervalSeconds"] == 300
    assert created["filter"] == {"actions": ["user.login"]}
    assert created["destination"] == {
        "type": "HTTPS",
        "url": PUBLIC_URL,
        "bucket": None,
        "prefix": None,
    }
    assert created["deliveries"]["edges"] == []

    paused = (await api.ok(owner, UPDATE, {"input": {"id": stream_id, "state": "PAUSED"}}))[
        "updateLogStream"
    ]["logStream"]
    assert paused["state"] == "PAUSED"
    assert paused["nextRunAt"] is None
    resumed = (await api.ok(owner, UPDATE, {"input": {"id": stream_id, "state": "ACTIVE"}}))[
        "updateLogStream"
    ]["logStream"]
    assert resumed["state"] == "ACTIVE"
    assert resumed["nextRunAt"] is not None
    changed = (
        await api.ok(
            owner,
            UPDATE,
            {"input": {"id": stream_id, "intervalSeconds": 3600, "filter": None}},
        )
    )["updateLogStream"]["logStream"]
    assert (changed["intervalSeconds"], changed["filter"]) == (3600, None)

    listed = (await api.ok(owner, LIST, {"org": str(world.organization_id)}))["organization"]
    assert [s["id"] for s in listed["logStreams"]] == [stream_id]

    deleted = (await api.ok(owner, DELETE, {"id": stream_id}))["deleteLogStream"]["logStream"]
    assert deleted["id"] == stream_id
    listed = (await api.ok(owner, LIST, {"org": str(world.organization_id)}))["organization"]
    assert listed["logStreams"] == []
    error = await api.error(owner, UPDATE, {"input": {"id": stream_id, "state": "PAUSED"}})
    assert error["extensions"]["code"] == "NOT_FOUND"

    audit = await audit_rows(pool, world.organization_id)
    assert [row["action"] for row in audit] == [
        "iam:log-stream:create",
        "iam:log-stream:update",
        "iam:log-stream:update",
        "iam:log-stream:update",
        "iam:log-stream:delete",
    ]
    assert {row["resource_id"] for row in audit} == {stream_id}
    assert {row["resource_type"] for row in audit} == {"LogStream"}
    assert {row["actor_id"] for row in audit} == {str(world.owner.user_id)}
    assert audit[1]["metadata"]["changes"] == {"state": {"from": "ACTIVE", "to": "PAUSED"}}
    assert audit[3]["metadata"]["changes"]["interval_seconds"] == {"from": 300, "to": 3600}
    assert audit[0]["metadata"]["api_key_id"] == str(world.owner.principal.api_key_id)
    assert all(SECRET not in json.dumps(row["metadata"]) for row in audit)
    assert all(SECRET not in answer for answer in api.answers)


async def test_secrets_are_stored_sealed_and_never_answered(api, pool, world, settings):
    owner = world.owner.token
    https = (await api.ok(owner, CREATE, {"input": https_input(world)}))["createLogStream"]
    s3 = (await api.ok(owner, CREATE, {"input": s3_input(world)}))["createLogStream"]
    assert s3["logStream"]["destination"] == {
        "type": "S3",
        "url": None,
        "bucket": "customer-logs",
        "prefix": "acme",
    }
    for token in (owner, world.admin.token, world.viewer.token):
        await api.ok(token, LIST, {"org": str(world.organization_id)})
    for answer in api.answers:
        assert SECRET not in answer and S3_SECRET not in answer
        assert "secretAccessKey" not in answer and '"secret"' not in answer

    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, destination, secret FROM log_streams WHERE organization_id = $1",
            world.organization_id,
        )
    by_id = {str(row["id"]): row for row in rows}
    from logexport.streams.secrets import unseal

    https_row = by_id[https["logStream"]["id"]]
    s3_row = by_id[s3["logStream"]["id"]]
    for row, secret in ((https_row, SECRET), (s3_row, S3_SECRET)):
        assert secret.encode() not in row["secret"]
        assert secret not in json.dumps(row["destination"])
    assert unseal(settings.secret_key, https_row["id"], https_row["secret"]) == {"secret": SECRET}
    assert unseal(settings.secret_key, s3_row["id"], s3_row["secret"]) == {
        "secret_access_key": S3_SECRET
    }
    assert s3_row["destination"]["access_key_id"] == "AKIAEXAMPLE123"


@pytest.mark.parametrize("member", ["admin", "viewer"])
async def test_admins_and_viewers_list_streams_but_cannot_manage_them(api, world, member):
    token = getattr(world, member).token
    created = (await api.ok(world.owner.token, CREATE, {"input": https_input(world)}))[
        "createLogStream"
    ]["logStream"]
    listed = (await api.ok(token, LIST, {"org": str(world.organization_id)}))["organization"]
    assert [s["id"] for s in listed["logStreams"]] == [created["id"]]
    assert listed["logStreams"][0]["destination"]["url"] == PUBLIC_URL

    attempts = [
        (CREATE, {"input": https_input(world)}),
        (UPDATE, {"input": {"id": created["id"], "state": "PAUSED"}}),
        (DELETE, {"id": created["id"]}),
        (TEST, {"id": created["id"]}),
    ]
    for query, variables in attempts:
        error = await api.error(token, query, variables)
        assert error["extensions"]["code"] == "FORBIDDEN", error
        assert "iam:log-stream:manage" in error["message"]
    listed = (await api.ok(token, LIST, {"org": str(world.organization_id)}))["organization"]
    assert [(s["id"], s["state"]) for s in listed["logStreams"]] == [(created["id"], "ACTIVE")]


async def test_another_organizations_stream_is_not_found(api, world):
    created = (await api.ok(world.owner.token, CREATE, {"input": https_input(world)}))[
        "createLogStream"
    ]["logStream"]
    outsider = world.outsider.token
    for query, variables in [
        (UPDATE, {"input": {"id": created["id"], "state": "PAUSED"}}),
        (DELETE, {"id": created["id"]}),
        (TEST, {"id": created["id"]}),
        (UPDATE, {"input": {"id": "not-an-id", "state": "PAUSED"}}),
        (DELETE, {"id": "00000000-0000-0000-0000-000000000000"}),
    ]:
        error = await api.error(outsider, query, variables)
        assert error["extensions"]["code"] == "NOT_FOUND", error
    error = await api.error(outsider, LIST, {"org": str(world.organization_id)})
    assert error["extensions"]["code"] == "FORBIDDEN"
    error = await api.error(
        outsider,
        CREATE,
        {"input": https_input(world)},
    )
    assert error["extensions"]["code"] == "FORBIDDEN"
    own = await api.ok(outsider, LIST, {"org": str(world.other_organization_id)})
    assert own["organization"]["logStreams"] == []
    listed = await api.ok(world.owner.token, LIST, {"org": str(world.organization_id)})
    assert listed["organization"]["logStreams"][0]["state"] == "ACTIVE"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1:8443/ingest", "loopback"),
        ("https://localhost/ingest", "loopback"),
        ("https://10.1.2.3/ingest", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://[::ffff:169.254.169.254]/", "metadata"),
        ("http://logs.example.com/ingest", "https"),
    ],
)
async def test_internal_destinations_are_refused_naming_the_field(api, pool, world, url, reason):
    error = await api.error(world.owner.token, CREATE, {"input": https_input(world, url)})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "destination.https.url"
    assert reason in error["message"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM log_streams") == 0


async def test_an_s3_endpoint_inside_the_network_is_refused(api, world):
    error = await api.error(
        world.owner.token,
        CREATE,
        {"input": s3_input(world, endpointUrl="http://10.0.0.5:9000")},
    )
    assert error["extensions"]["field"] == "destination.s3.endpointUrl"
    error = await api.error(
        world.owner.token,
        CREATE,
        {"input": s3_input(world, endpointUrl="https://169.254.169.254")},
    )
    assert error["extensions"]["field"] == "destination.s3.endpointUrl"
    assert "metadata" in error["message"]


@pytest.mark.parametrize(
    ("destination", "field"),
    [
        ({"https": {"url": "93.184.215.14/ingest", "secret": SECRET}}, "destination.https.url"),
        (
            {"https": {"url": "logs.example.com:8443/ingest", "secret": SECRET}},
            "destination.https.url",
        ),
        (
            {
                "s3": {
                    "bucket": "customer-logs",
                    "endpointUrl": "93.184.215.14:9000",
                    "accessKeyId": "AKIAEXAMPLE123",
                    "secretAccessKey": S3_SECRET,
                }
            },
            "destination.s3.endpointUrl",
        ),
    ],
)
async def test_a_url_without_its_scheme_is_refused(api, pool, world, destination, field):
    # Stored as typed, such a URL could never be connected to: every delivery would fail.
    error = await api.error(
        world.owner.token, CREATE, {"input": https_input(world, destination=destination)}
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["field"] == field, error
    assert "must start with https://" in error["message"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM log_streams") == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"intervalSeconds": 59}, "intervalSeconds"),
        ({"intervalSeconds": 86401}, "intervalSeconds"),
        ({"filter": {"actions": []}}, "filter.actions"),
        ({"filter": {"methods": ["GET"]}}, "filter"),
        ({"startAt": "2026-01-01T00:00:00"}, "startAt"),
        ({"destination": {}}, "destination"),
        (
            {
                "destination": {
                    "https": {"url": "https://93.184.215.14/", "secret": SECRET},
                    "s3": {"bucket": "customer-logs", "roleArn": "x"},
                }
            },
            "destination",
        ),
        (
            {"destination": {"https": {"url": "https://93.184.215.14/", "secret": "short"}}},
            "destination.https.secret",
        ),
        (
            {"destination": {"https": {"url": "not a url", "secret": SECRET}}},
            "destination.https.url",
        ),
        ({"destination": {"s3": {"bucket": "Bad_Bucket"}}}, "destination.s3.bucket"),
        ({"destination": {"s3": {"bucket": "customer-logs"}}}, "destination.s3.accessKeyId"),
        (
            {"destination": {"s3": {"bucket": "customer-logs", "accessKeyId": "AKIAEXAMPLE1"}}},
            "destination.s3.secretAccessKey",
        ),
        (
            {
                "destination": {
                    "s3": {
                        "bucket": "customer-logs",
                        "roleArn": "arn:aws:iam::123456789012:role/logexport",
                    }
                }
            },
            "destination.s3.externalId",
        ),
    ],
)
async def test_bad_input_is_refused_naming_the_field(api, pool, world, change, field):
    error = await api.error(world.owner.token, CREATE, {"input": {**https_input(world), **change}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["field"] == field, error
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM log_streams") == 0
        assert await conn.fetchval("SELECT count(*) FROM audit_log_entries") == 0


async def test_update_refuses_bad_values_naming_the_field(api, world):
    created = (await api.ok(world.owner.token, CREATE, {"input": https_input(world)}))[
        "createLogStream"
    ]["logStream"]
    for change, field in [
        ({"state": "FAILING"}, "state"),
        ({"intervalSeconds": 5}, "intervalSeconds"),
        ({"filter": {"statusCodes": [200]}}, "filter"),
    ]:
        error = await api.error(
            world.owner.token, UPDATE, {"input": {"id": created["id"], **change}}
        )
        assert error["extensions"]["field"] == field, error


async def test_a_test_delivery_reaches_the_receiver_and_is_recorded(
    private_api, pool, world, caplog
):
    caplog.set_level(logging.DEBUG)
    owner = world.owner.token
    with receiver(SECRET) as http:
        created = (
            await private_api.ok(
                owner, CREATE, {"input": https_input(world, http.url(), intervalSeconds=1)}
            )
        )["createLogStream"]["logStream"]
        tested = (await private_api.ok(owner, TEST, {"id": created["id"]}))["testLogStream"][
            "logStream"
        ]
        received = http.received()
        http.status = 500
        failed = (await private_api.ok(owner, TEST, {"id": created["id"]}))["testLogStream"][
            "logStream"
        ]

    assert len(received) == 1
    headers, body = received[0].headers, received[0].body
    assert headers["x-logexport-sequence"] == "test"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-logexport-signature"] == expected
    assert gzip.decompress(body) == b""
    first = tested["deliveries"]["edges"][0]["node"]
    assert headers["x-logexport-delivery"] == first["id"]
    assert first["sequence"] is None
    assert first["status"] == "DELIVERED"
    assert first["rowCount"] == "0"
    assert first["deliveredAt"] is not None
    assert tested["lastError"] is None

    newest = failed["deliveries"]["edges"][0]["node"]
    assert newest["status"] == "FAILED"
    assert "500" in newest["error"]
    assert failed["lastError"].startswith("Test delivery failed")
    assert [edge["node"]["status"] for edge in failed["deliveries"]["edges"]] == [
        "FAILED",
        "DELIVERED",
    ]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT test, sequence FROM log_stream_deliveries WHERE stream_id = $1",
            UUID(created["id"]),
        )
    assert {(row["test"], row["sequence"]) for row in rows} == {(True, None)}
    assert "log stream test delivery" in caplog.text
    assert SECRET not in caplog.text


async def test_a_test_delivery_keeps_a_failing_streams_own_error_and_retries_it_when_passed(
    private_api, pool, world
):
    owner = world.owner.token
    real_error = "the endpoint answered HTTP 503"
    with receiver(SECRET) as http:
        created = (await private_api.ok(owner, CREATE, {"input": https_input(world, http.url())}))[
            "createLogStream"
        ]["logStream"]
        stream_id = UUID(created["id"])
        async with pool.acquire() as conn:
            # As a run leaves a stream whose destination failed: FAILING, retried later.
            await conn.execute(
                "UPDATE log_streams SET state = 'FAILING', last_error = $2, failures = 3,"
                " next_run_at = now() + interval '5 minutes' WHERE id = $1",
                stream_id,
                real_error,
            )
        http.status = 500
        failed = (await private_api.ok(owner, TEST, {"id": created["id"]}))["testLogStream"][
            "logStream"
        ]
        http.status = 200
        passed = (await private_api.ok(owner, TEST, {"id": created["id"]}))["testLogStream"][
            "logStream"
        ]
        async with pool.acquire() as conn:
            due = await conn.fetchval(
                "SELECT next_run_at <= now() FROM log_streams WHERE id = $1", stream_id
            )

    assert failed["state"] == "FAILING"
    assert failed["lastError"] == real_error
    assert failed["deliveries"]["edges"][0]["node"]["status"] == "FAILED"
    assert passed["state"] == "FAILING"
    assert passed["lastError"] == real_error
    assert passed["deliveries"]["edges"][0]["node"]["status"] == "DELIVERED"
    # The destination works again: the failing deliveries need not wait out the backoff.
    assert due is True


async def test_deliveries_page_with_cursors_bound_to_the_stream(private_api, world):
    owner = world.owner.token
    page_query = (
        "query($org: ID!, $after: String) { organization(id: $org) { logStreams {"
        " id deliveries(first: 2, after: $after) { edges { cursor node { id } }"
        " pageInfo { hasNextPage endCursor } } } } }"
    )
    variables: dict[str, Any] = {"org": str(world.organization_id), "after": None}
    with receiver(SECRET) as http:
        created = (await private_api.ok(owner, CREATE, {"input": https_input(world, http.url())}))[
            "createLogStream"
        ]["logStream"]
        tested = [
            (await private_api.ok(owner, TEST, {"id": created["id"]}))["testLogStream"]
            for _ in range(3)
        ]
        newest_first = [t["logStream"]["deliveries"]["edges"][0]["node"]["id"] for t in tested][
            ::-1
        ]
        (stream,) = (await private_api.ok(owner, page_query, variables))["organization"][
            "logStreams"
        ]
        assert [e["node"]["id"] for e in stream["deliveries"]["edges"]] == newest_first[:2]
        assert stream["deliveries"]["pageInfo"]["hasNextPage"] is True
        variables["after"] = stream["deliveries"]["pageInfo"]["endCursor"]
        (stream,) = (await private_api.ok(owner, page_query, variables))["organization"][
            "logStreams"
        ]
        assert [e["node"]["id"] for e in stream["deliveries"]["edges"]] == newest_first[2:]
        assert stream["deliveries"]["pageInfo"]["hasNextPage"] is False

        # The cursor belongs to its stream: another stream refuses it.
        await private_api.ok(owner, CREATE, {"input": https_input(world, http.url())})
    body = await private_api.call(owner, page_query, variables)
    assert body["errors"][0]["extensions"]["field"] == "after"


async def test_two_s3_streams_of_one_kind_may_not_share_object_names(api, pool, world):
    owner = world.owner.token
    first = (await api.ok(owner, CREATE, {"input": s3_input(world)}))["createLogStream"][
        "logStream"
    ]
    # Objects are named <prefix>/<kind>/<hour>/<organization>-<sequence>: a second stream's
    # sequence 1 would overwrite the first one's.
    filtered = {**s3_input(world), "filter": {"methods": ["DELETE"]}}
    error = await api.error(owner, CREATE, {"input": filtered})
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["field"] == "destination.s3.prefix", error
    assert error["message"].startswith(
        f"destination.s3.prefix is taken: log stream {first['id']} of this organization"
    )
    assert "s3://customer-logs/acme" in error["message"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM log_streams") == 1

    elsewhere = s3_input(world)
    elsewhere["destination"]["s3"]["prefix"] = "acme/deletes"
    await api.ok(owner, CREATE, {"input": elsewhere})
    other_kind = {**s3_input(world), "kind": "AUDIT_LOG"}
    await api.ok(owner, CREATE, {"input": other_kind})

    # Deleted, its objects of this hour still hold the names a new stream would start with.
    await api.ok(owner, DELETE, {"id": first["id"]})
    error = await api.error(owner, CREATE, {"input": s3_input(world)})
    assert error["extensions"]["field"] == "destination.s3.prefix", error
