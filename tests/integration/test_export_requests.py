"""Requesting and canceling exports on a real Postgres: validation, authorization, the
active-export cap, idempotency and the self-audit entry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
import pytest_asyncio

from devtools import services
from logexport import db
from logexport.config import Settings
from logexport.entries import ScimEventFilter
from logexport.errors import BadUserInput, Forbidden, LogExportError, NotFound, RateLimited
from logexport.exports import requests as export_requests
from logexport.exports.models import Compression, ExportFormat, ExportKind, ExportStatus
from logexport.exports.requests import ExportInput, cancel_export, get_export
from logexport.identity import Principal
from logexport.kinds import LOG_KINDS
from tests.support.exports import request_export
from tests.support.world import World, build_world

FROM = "2026-01-01T00:00:00Z"
TO = "2026-02-01T00:00:00Z"


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Requests need only the database; leaving S3 and SMTP out keeps these tests quick."""
    return Settings.from_env(env={"LOGEXPORT_DATABASE_URL": database_url})


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool: asyncpg.Pool) -> World:
    return await build_world(pool)


@dataclass
class ReadOnlyEnv:
    """One database shared by the tests that must not write anything (rejections)."""

    pool: asyncpg.Pool
    settings: Settings
    world: World
    notifications: Notifications


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rejections(pg_admin_url: str, template_database: str) -> AsyncIterator[ReadOnlyEnv]:
    name = f"rejections_{uuid4().hex[:12]}"
    await services.create_database(pg_admin_url, name, template=template_database)
    url = services.with_database(pg_admin_url, name)
    pool = await db.create_pool(url)
    listener = await asyncpg.connect(url)
    seen = Notifications()
    await listener.add_listener("logexport_jobs", seen)
    try:
        yield ReadOnlyEnv(
            pool,
            Settings.from_env(env={"LOGEXPORT_DATABASE_URL": url}),
            await build_world(pool),
            seen,
        )
    finally:
        await listener.close()
        await pool.close()
        await services.drop_database(pg_admin_url, name)


async def assert_nothing_written(env: ReadOnlyEnv) -> None:
    assert await fetchval(env.pool, "SELECT count(*) FROM log_exports") == 0
    assert await fetchval(env.pool, "SELECT count(*) FROM audit_log_entries") == 0
    assert await env.notifications.settled(env.pool) == []


class Notifications:
    """Payloads seen on the job channel, with a sentinel to know the queue is drained."""

    def __init__(self) -> None:
        self.payloads: list[str] = []

    def __call__(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)

    async def settled(self, pool: asyncpg.Pool) -> list[str]:
        """Everything notified by transactions committed before this call.

        Postgres delivers notifications in commit order, so once our own sentinel arrives,
        anything an earlier request sent has arrived too.
        """
        sentinel = f"sentinel-{uuid4()}"
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_notify('logexport_jobs', $1)", sentinel)
        for _ in range(400):
            if sentinel in self.payloads:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the sentinel notification never arrived")
        return [p for p in self.payloads if not p.startswith("sentinel-")]


@pytest_asyncio.fixture(loop_scope="session")
async def notifications(database_url: str) -> AsyncIterator[Notifications]:
    seen = Notifications()
    conn = await asyncpg.connect(database_url)
    await conn.add_listener("logexport_jobs", seen)
    try:
        yield seen
    finally:
        await conn.close()


async def request(
    pool: asyncpg.Pool,
    settings: Settings,
    principal: Principal,
    org: UUID,
    kind: ExportKind = ExportKind.AUDIT_LOG,
    **overrides: Any,
) -> Any:
    args: dict[str, Any] = {"organization_id": org, "from_time": FROM, "to_time": TO}
    args.update(overrides)
    return await request_export(pool, settings, principal, kind, **args)


async def fetchval(pool: asyncpg.Pool, query: str, *args: Any) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval(query, *args)


async def audit_entries(pool: asyncpg.Pool, action: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT * FROM audit_log_entries WHERE action = $1 ORDER BY created_at", action
        )


# ------------------------------------------------------------------------------ times


async def test_offsets_other_than_z_are_honored_and_stored_in_utc(pool, settings, world):
    export = await request(
        pool,
        settings,
        world.admin.principal,
        world.organization_id,
        from_time="2026-01-01T05:30:00+05:30",
        to_time="2026-01-01T19:00:00-05:00",
    )
    assert export.from_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert export.to_time == datetime(2026, 1, 2, tzinfo=UTC)
    stored = await fetchval(
        pool, "SELECT to_char(from_time, 'YYYY-MM-DD HH24:MI:SS') FROM log_exports"
    )
    assert stored == "2026-01-01 00:00:00"


async def test_to_time_in_the_future_is_accepted(pool, settings, world):
    export = await request(
        pool,
        settings,
        world.admin.principal,
        world.organization_id,
        from_time="2099-01-01T00:00:00Z",
        to_time="2099-06-01T00:00:00Z",
    )
    assert export.status is ExportStatus.PENDING


# ------------------------------------------------------------------------------ validation

INVALID = [
    pytest.param({"to_time": FROM}, "toTime", id="from_equals_to"),
    pytest.param(
        {"from_time": "2026-02-01T00:00:00Z", "to_time": "2026-01-01T00:00:00Z"},
        "toTime",
        id="from_after_to",
    ),
    pytest.param(
        {"from_time": "2025-01-01T00:00:00Z", "to_time": "2026-01-02T00:00:00.000001Z"},
        "toTime",
        id="range_over_max_days",
    ),
    pytest.param({"from_time": "2026-01-01T00:00:00"}, "fromTime", id="from_without_offset"),
    pytest.param({"to_time": "2026-02-01 00:00:00"}, "toTime", id="to_without_offset"),
    pytest.param(
        {"from_time": "2026-01-01T00:00:00.1234567Z"}, "fromTime", id="seven_fraction_digits"
    ),
    pytest.param({"from_time": "yesterday"}, "fromTime", id="not_a_timestamp"),
    pytest.param({"format": "XLSX"}, "format", id="bad_format"),
    pytest.param({"compression": "ZSTD"}, "compression", id="bad_compression"),
    pytest.param({"csv_bom": True}, "csvBom", id="csv_bom_with_jsonl"),
    pytest.param({"filter": {"actions": []}}, "filter.actions", id="empty_filter_list"),
    pytest.param(
        {"filter": {"actorIds": [f"u{i}" for i in range(101)]}},
        "filter.actorIds",
        id="over_100_filter_values",
    ),
    pytest.param({"idempotency_key": ""}, "idempotencyKey", id="empty_idempotency_key"),
    pytest.param({"idempotency_key": "k" * 201}, "idempotencyKey", id="long_idempotency_key"),
    pytest.param({"idempotency_key": "caf\u00e9"}, "idempotencyKey", id="non_ascii_key"),
    pytest.param({"idempotency_key": "a\nb"}, "idempotencyKey", id="control_char_key"),
]


@pytest.mark.parametrize(("overrides", "field"), INVALID)
async def test_invalid_request_is_rejected_naming_its_field(
    rejections: ReadOnlyEnv, overrides: dict[str, Any], field: str
) -> None:
    env = rejections
    with pytest.raises(BadUserInput) as caught:
        await request(
            env.pool,
            env.settings,
            env.world.admin.principal,
            env.world.organization_id,
            **overrides,
        )
    assert caught.value.code == "BAD_USER_INPUT"
    assert caught.value.field == field
    assert field.split(".")[0] in caught.value.message
    await assert_nothing_written(env)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"methods": []}, "filter.methods"),
        ({"statusCodes": [200] * 50 + list(range(300, 351))}, "filter.statusCodes"),
        ({"statusCodes": [42]}, "filter.statusCodes"),
        ({"userName": ""}, "filter.userName"),
        ({"actions": ["a"]}, "filter"),
    ],
    ids=[
        "empty_methods",
        "over_100_codes",
        "not_a_status_code",
        "empty_user_name",
        "audit_filter_on_scim",
    ],
)
async def test_scim_filters_are_validated_with_their_own_field_names(
    rejections: ReadOnlyEnv, raw: dict[str, Any], field: str
) -> None:
    env = rejections
    with pytest.raises(BadUserInput) as caught:
        await request(
            env.pool,
            env.settings,
            env.world.admin.principal,
            env.world.organization_id,
            ExportKind.SCIM_EVENT,
            filter=raw,
        )
    assert caught.value.field == field
    await assert_nothing_written(env)


async def test_range_of_exactly_max_days_is_accepted(pool, settings, world):
    narrow = settings.derive(max_range_days=31)
    export = await request(pool, narrow, world.admin.principal, world.organization_id)
    assert export.to_time - export.from_time == datetime(2026, 2, 1) - datetime(2026, 1, 1)
    with pytest.raises(BadUserInput) as caught:
        await request(
            pool,
            narrow,
            world.admin.principal,
            world.organization_id,
            to_time="2026-02-01T00:00:00.000001Z",
        )
    assert caught.value.field == "toTime"
    assert "31 days" in caught.value.message


# ------------------------------------------------------------------------------ typed input


async def test_typed_input_is_the_same_request_as_the_surface_text(pool, settings, world):
    """A request built in code and one parsed from a surface's text store the same row."""
    typed = ExportInput(
        organization_id=world.organization_id,
        kind=ExportKind.SCIM_EVENT,
        from_time=datetime(2026, 1, 1, tzinfo=UTC),
        to_time=datetime(2026, 2, 1, tzinfo=UTC),
        format=ExportFormat.CSV,
        compression=Compression.GZIP,
        csv_bom=True,
        filter=ScimEventFilter(methods=("POST",)),
        idempotency_key="typed-1",
    )
    parsed = export_requests.parse_export_input(
        settings,
        "SCIM_EVENT",
        organization_id=str(world.organization_id),
        from_time=FROM,
        to_time=TO,
        format="csv",
        compression="gzip",
        csv_bom=True,
        filter={"methods": ["POST"]},
        idempotency_key="typed-1",
    )
    assert parsed == typed
    export = await export_requests.request_export(pool, settings, world.admin.principal, typed)
    assert (export.kind, export.format, export.compression) == (
        ExportKind.SCIM_EVENT,
        ExportFormat.CSV,
        Compression.GZIP,
    )
    assert export.filter == {"methods": ["POST"]}
    assert export.request_hash == parsed.fingerprint()
    again = await request(
        pool,
        settings,
        world.admin.principal,
        world.organization_id,
        ExportKind.SCIM_EVENT,
        format="CSV",
        compression="GZIP",
        csv_bom=True,
        filter={"methods": ["POST"]},
        idempotency_key="typed-1",
    )
    assert again.id == export.id


BROKEN_TYPED = [
    pytest.param({"to_time": datetime(2026, 1, 1, tzinfo=UTC)}, "toTime", id="empty_range"),
    pytest.param({"to_time": datetime(2026, 3, 1, tzinfo=UTC)}, "toTime", id="over_max_days"),
    pytest.param({"from_time": datetime(2026, 1, 1)}, "fromTime", id="naive_from"),
    pytest.param({"csv_bom": True}, "csvBom", id="bom_with_jsonl"),
    pytest.param({"filter": ScimEventFilter()}, "filter", id="filter_of_the_other_kind"),
    pytest.param({"idempotency_key": ""}, "idempotencyKey", id="empty_key"),
]


@pytest.mark.parametrize(("overrides", "field"), BROKEN_TYPED)
async def test_typed_input_breaking_a_rule_is_refused_naming_its_field(
    rejections: ReadOnlyEnv, overrides: dict[str, Any], field: str
) -> None:
    env = rejections
    narrow = env.settings.derive(max_range_days=31)
    values: dict[str, Any] = {
        "organization_id": env.world.organization_id,
        "kind": ExportKind.AUDIT_LOG,
        "from_time": datetime(2026, 1, 1, tzinfo=UTC),
        "to_time": datetime(2026, 2, 1, tzinfo=UTC),
        **overrides,
    }
    with pytest.raises(BadUserInput) as caught:
        await export_requests.request_export(
            env.pool, narrow, env.world.admin.principal, ExportInput(**values)
        )
    assert caught.value.field == field
    await assert_nothing_written(env)


async def test_typed_input_is_authorized_before_its_rules_are_checked(
    rejections: ReadOnlyEnv,
) -> None:
    env = rejections
    broken = ExportInput(
        organization_id=env.world.organization_id,
        kind=ExportKind.AUDIT_LOG,
        from_time=datetime(2026, 2, 1, tzinfo=UTC),
        to_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(Forbidden):
        await export_requests.request_export(
            env.pool, env.settings, env.world.outsider.principal, broken
        )
    await assert_nothing_written(env)


def test_every_kind_parses_its_own_filter(settings) -> None:
    for kind, row in LOG_KINDS.items():
        parsed = export_requests.parse_export_input(
            settings, kind, organization_id=uuid4(), from_time=FROM, to_time=TO
        )
        assert isinstance(parsed.filter, row.filter_type)


# ------------------------------------------------------------------------------ authorization


async def test_viewer_cannot_request_an_export(rejections: ReadOnlyEnv) -> None:
    env = rejections
    for kind in ExportKind:
        with pytest.raises(Forbidden) as caught:
            await request(
                env.pool,
                env.settings,
                env.world.viewer.principal,
                env.world.organization_id,
                kind,
            )
        assert caught.value.code == "FORBIDDEN"
    await assert_nothing_written(env)


async def test_non_member_is_refused_alike_for_an_existing_and_a_missing_organization(
    rejections: ReadOnlyEnv,
) -> None:
    env = rejections
    outsider = env.world.outsider.principal
    with pytest.raises(Forbidden) as existing:
        await request(env.pool, env.settings, outsider, env.world.organization_id)
    with pytest.raises(Forbidden) as missing:
        await request(env.pool, env.settings, outsider, uuid4())
    assert existing.value.code == missing.value.code == "FORBIDDEN"
    assert existing.value.message == missing.value.message
    await assert_nothing_written(env)


async def test_authorization_comes_before_validation(rejections: ReadOnlyEnv) -> None:
    env = rejections
    with pytest.raises(Forbidden):
        await request(
            env.pool,
            env.settings,
            env.world.outsider.principal,
            env.world.organization_id,
            format="XLSX",
        )
    await assert_nothing_written(env)


async def test_export_is_not_found_alike_when_missing_or_hidden(pool, settings, world):
    export = await request(pool, settings, world.admin.principal, world.organization_id)
    assert (await get_export(pool, world.owner.principal, export.id)).id == export.id
    messages = []
    for principal, export_id in [
        (world.outsider.principal, export.id),
        (world.viewer.principal, export.id),
        (world.admin.principal, uuid4()),
        (world.admin.principal, "not-an-id"),
    ]:
        with pytest.raises(NotFound) as caught:
            await get_export(pool, principal, export_id)
        messages.append(caught.value.message)
    assert len(set(messages)) == 1


# ------------------------------------------------------------------------------ active cap


async def fill_to_cap(pool, settings, world) -> list[Any]:
    """Five active exports: both kinds, two requesters."""
    made = []
    for i in range(settings.max_active_exports_per_org):
        person = world.owner if i % 2 else world.admin
        kind = ExportKind.SCIM_EVENT if i % 3 == 0 else ExportKind.AUDIT_LOG
        made.append(
            await request(
                pool,
                settings,
                person.principal,
                world.organization_id,
                kind,
                idempotency_key=f"fill-{i}",
            )
        )
    return made


async def test_active_export_cap_counts_both_kinds_and_all_requesters(pool, settings, world):
    await fill_to_cap(pool, settings, world)
    for person, kind in [
        (world.admin, ExportKind.AUDIT_LOG),
        (world.owner, ExportKind.SCIM_EVENT),
    ]:
        with pytest.raises(RateLimited) as caught:
            await request(pool, settings, person.principal, world.organization_id, kind)
        assert caught.value.code == "RATE_LIMITED"
    # Another organization is not affected.
    other = await request(pool, settings, world.outsider.principal, world.other_organization_id)
    assert other.status is ExportStatus.PENDING
    assert (
        await fetchval(
            pool,
            "SELECT count(*) FROM log_exports WHERE organization_id = $1",
            world.organization_id,
        )
        == settings.max_active_exports_per_org
    )


async def test_finished_exports_free_a_slot(pool, settings, world):
    made = await fill_to_cap(pool, settings, world)
    with pytest.raises(RateLimited):
        await request(pool, settings, world.admin.principal, world.organization_id)
    await cancel_export(pool, world.admin.principal, made[0].id)
    again = await request(pool, settings, world.admin.principal, world.organization_id)
    assert again.status is ExportStatus.PENDING


async def test_replay_with_the_same_key_succeeds_at_the_cap(pool, settings, world, notifications):
    made = await fill_to_cap(pool, settings, world)
    before = await notifications.settled(pool)
    replay = await request(
        pool,
        settings,
        world.admin.principal,
        world.organization_id,
        ExportKind.SCIM_EVENT,
        idempotency_key="fill-0",
    )
    assert replay.id == made[0].id
    assert await notifications.settled(pool) == before


async def test_cap_is_checked_after_authorization(pool, settings, world):
    await fill_to_cap(pool, settings, world)
    with pytest.raises(Forbidden):
        await request(pool, settings, world.viewer.principal, world.organization_id)
    with pytest.raises(Forbidden):
        await request(pool, settings, world.outsider.principal, world.organization_id)


async def test_reused_key_with_different_input_is_rejected_even_at_the_cap(pool, settings, world):
    await fill_to_cap(pool, settings, world)
    with pytest.raises(BadUserInput) as caught:
        await request(
            pool,
            settings,
            world.admin.principal,
            world.organization_id,
            idempotency_key="fill-0",
            format="CSV",
        )
    assert caught.value.field == "idempotencyKey"


# ------------------------------------------------------------------------------ idempotency


async def test_same_key_and_input_returns_the_original_export_without_audit_or_notify(
    pool, settings, world, notifications
):
    args = {
        "idempotency_key": "nightly-2026-01",
        "format": "csv",
        "csv_bom": True,
        "filter": {"actions": ["b", "a", "a"]},
    }
    first = await request(pool, settings, world.admin.principal, world.organization_id, **args)
    assert await notifications.settled(pool) == [str(first.id)]
    # The same request in another spelling: other offset, other order, other case.
    again = await request(
        pool,
        settings,
        world.admin.principal,
        world.organization_id,
        idempotency_key="nightly-2026-01",
        format="CSV",
        csv_bom=True,
        filter={"actions": ["a", "b"]},
        from_time="2026-01-01T01:00:00+01:00",
    )
    assert again.id == first.id
    assert again.filter == {"actions": ["a", "b"]}
    assert len(await audit_entries(pool, "iam:audit-log:export")) == 1
    assert await fetchval(pool, "SELECT count(*) FROM log_exports") == 1
    assert await notifications.settled(pool) == [str(first.id)]


async def test_replay_returns_the_export_whatever_its_status(pool, settings, world):
    first = await request(
        pool, settings, world.admin.principal, world.organization_id, idempotency_key="k1"
    )
    await cancel_export(pool, world.admin.principal, first.id)
    again = await request(
        pool, settings, world.admin.principal, world.organization_id, idempotency_key="k1"
    )
    assert again.id == first.id
    assert again.status is ExportStatus.CANCELED


@pytest.mark.parametrize(
    "change",
    [
        {"to_time": "2026-01-31T00:00:00Z"},
        {"format": "CSV"},
        {"compression": "GZIP"},
        {"filter": {"actions": ["user.login"]}},
        {"kind": ExportKind.SCIM_EVENT},
    ],
    ids=["range", "format", "compression", "filter", "kind"],
)
async def test_same_key_with_different_input_is_rejected_on_idempotency_key(
    pool, settings, world, change
):
    await request(pool, settings, world.admin.principal, world.organization_id, idempotency_key="k")
    with pytest.raises(BadUserInput) as caught:
        await request(
            pool,
            settings,
            world.admin.principal,
            world.organization_id,
            idempotency_key="k",
            **change,
        )
    assert caught.value.field == "idempotencyKey"
    assert await fetchval(pool, "SELECT count(*) FROM log_exports") == 1


async def test_idempotency_key_is_scoped_to_the_requester(pool, settings, world):
    mine = await request(
        pool, settings, world.admin.principal, world.organization_id, idempotency_key="k"
    )
    theirs = await request(
        pool, settings, world.owner.principal, world.organization_id, idempotency_key="k"
    )
    assert mine.id != theirs.id


async def test_key_older_than_a_day_starts_a_new_export(pool, settings, world):
    first = await request(
        pool, settings, world.admin.principal, world.organization_id, idempotency_key="k"
    )
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE log_exports SET created_at = now() - interval '25 hours' WHERE id = $1",
            first.id,
        )
    second = await request(
        pool,
        settings,
        world.admin.principal,
        world.organization_id,
        idempotency_key="k",
        format="CSV",
    )
    assert second.id != first.id


async def test_concurrent_same_key_requests_create_one_export(pool, settings, world, notifications):
    results = await asyncio.gather(
        *[
            request(
                pool,
                settings,
                world.admin.principal,
                world.organization_id,
                idempotency_key="retry-storm",
            )
            for _ in range(6)
        ],
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert len({r.id for r in results}) == 1
    assert await fetchval(pool, "SELECT count(*) FROM log_exports") == 1
    assert len(await audit_entries(pool, "iam:audit-log:export")) == 1
    assert await notifications.settled(pool) == [str(results[0].id)]


# ------------------------------------------------------------------------------ self-audit


async def test_job_row_and_self_audit_entry_are_committed_together(
    pool, settings, world, notifications
):
    export = await request(
        pool,
        settings,
        world.admin.principal,
        world.organization_id,
        filter={"actions": ["user.login"]},
        ip_address="198.51.100.7",
        user_agent="cli/1.0",
    )
    [entry] = await audit_entries(pool, "iam:audit-log:export")
    assert entry["organization_id"] == world.organization_id
    assert entry["actor_type"] == "USER"
    assert entry["actor_id"] == str(world.admin.user_id)
    assert entry["actor_email"] == "adam.admin@acme.test"
    assert entry["resource_type"] == "LogExport"
    assert entry["resource_id"] == str(export.id)
    assert str(entry["ip_address"]) == "198.51.100.7"
    assert entry["user_agent"] == "cli/1.0"
    metadata = entry["metadata"]
    assert metadata["api_key_id"] == str(world.admin.principal.api_key_id)
    assert metadata["kind"] == "AUDIT_LOG"
    assert metadata["from_time"] == "2026-01-01T00:00:00.000000Z"
    assert metadata["to_time"] == "2026-02-01T00:00:00.000000Z"
    assert metadata["format"] == "JSONL"
    assert metadata["filter"] == {"actions": ["user.login"]}
    row = await fetchval(pool, "SELECT row_to_json(e)::text FROM log_exports e")
    assert str(export.id) in row
    # One transaction: the entry carries the same transaction time as the job row.
    assert entry["created_at"] == export.created_at
    assert await notifications.settled(pool) == [str(export.id)]

    scim = await request(
        pool, settings, world.owner.principal, world.organization_id, ExportKind.SCIM_EVENT
    )
    [scim_entry] = await audit_entries(pool, "iam:scim-event:export")
    assert scim_entry["resource_id"] == str(scim.id)


async def test_no_job_row_and_no_notify_when_the_self_audit_fails(
    pool, settings, world, notifications, monkeypatch
):
    async def broken(*_args: Any, **_kwargs: Any) -> UUID:
        raise asyncpg.PostgresError("audit insert failed")

    monkeypatch.setattr(export_requests, "record_export_event", broken)
    with pytest.raises(asyncpg.PostgresError):
        await request(pool, settings, world.admin.principal, world.organization_id)
    assert await fetchval(pool, "SELECT count(*) FROM log_exports") == 0
    assert await notifications.settled(pool) == []


async def test_user_without_an_api_key_is_audited_without_one(pool, settings, world):
    principal = Principal(world.admin.user_id, "adam.admin@acme.test", "Adam Admin", None)
    await request(pool, settings, principal, world.organization_id)
    [entry] = await audit_entries(pool, "iam:audit-log:export")
    assert "api_key_id" not in entry["metadata"]


# ------------------------------------------------------------------------------ cancel


async def test_pending_export_cancels_at_once_and_is_audited(pool, settings, world):
    export = await request(pool, settings, world.admin.principal, world.organization_id)
    canceled = await cancel_export(pool, world.owner.principal, export.id)
    assert canceled.status is ExportStatus.CANCELED
    assert canceled.finished_at is not None
    [entry] = await audit_entries(pool, "iam:log-export:cancel")
    assert entry["actor_id"] == str(world.owner.user_id)
    assert entry["resource_id"] == str(export.id)
    assert entry["metadata"]["previous_status"] == "PENDING"


async def test_canceling_twice_is_a_no_op(pool, settings, world):
    export = await request(pool, settings, world.admin.principal, world.organization_id)
    first = await cancel_export(pool, world.admin.principal, export.id)
    second = await cancel_export(pool, world.admin.principal, export.id)
    assert second.status is ExportStatus.CANCELED
    assert second.updated_at == first.updated_at
    assert len(await audit_entries(pool, "iam:log-export:cancel")) == 1


@pytest.mark.parametrize("status", ["FAILED", "EXPIRED"])
async def test_failed_or_expired_export_cannot_be_canceled(pool, settings, world, status):
    export = await request(pool, settings, world.admin.principal, world.organization_id)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE log_exports SET status = $2 WHERE id = $1", export.id, status)
    with pytest.raises(BadUserInput) as caught:
        await cancel_export(pool, world.admin.principal, export.id)
    assert caught.value.field == "id"
    assert await audit_entries(pool, "iam:log-export:cancel") == []


async def test_viewer_and_outsider_cannot_cancel(pool, settings, world):
    export = await request(pool, settings, world.admin.principal, world.organization_id)
    for person in (world.viewer, world.outsider):
        with pytest.raises(LogExportError) as caught:
            await cancel_export(pool, person.principal, export.id)
        assert caught.value.code == "NOT_FOUND"
    assert (await get_export(pool, world.admin.principal, export.id)).status is (
        ExportStatus.PENDING
    )
