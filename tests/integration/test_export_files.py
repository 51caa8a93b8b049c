"""What an export file holds, and how its email link leads to exactly those bytes, through
real Postgres, S3 (moto over HTTP) and SMTP."""

from __future__ import annotations

import asyncio
import csv
import functools
import gzip
import hashlib
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest_asyncio
from starlette.applications import Starlette

from logexport.config import Settings
from logexport.entries import (
    AuditLogEntryInput,
    ScimEventInput,
    record_audit_log_entries,
    record_scim_events,
)
from logexport.exports.models import ExportKind
from logexport.exports.storage import Storage, storage_from_settings
from logexport.exports.worker import Worker
from logexport.kinds import LOG_KINDS
from logexport.web.download import download_routes
from tests.support.exports import request_export
from tests.support.world import World, build_world, eventually, export_status, wait_for_status

AUDIT_LOG_COLUMNS = LOG_KINDS[ExportKind.AUDIT_LOG].columns
SCIM_EVENT_COLUMNS = LOG_KINDS[ExportKind.SCIM_EVENT].columns

START = datetime(2026, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
HOSTILE = [
    '=HYPERLINK("http://x","y")',
    "+1",
    "-1+1",
    "@SUM(A1)",
    "\tTAB first",
    "\rCR first",
    " =1",
    "|cmd",
    "%0A",
]


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool: asyncpg.Pool) -> World:
    return await build_world(pool)


async def export_and_wait(
    pool: asyncpg.Pool,
    settings: Settings,
    world: World,
    kind: ExportKind = ExportKind.AUDIT_LOG,
    **args: Any,
) -> dict[str, Any]:
    """Request one export as the admin, run a worker until it completes, return its row."""
    [row] = await export_many(pool, settings, world, [(kind, args)])
    return row


async def export_many(
    pool: asyncpg.Pool,
    settings: Settings,
    world: World,
    requests: list[tuple[ExportKind, dict[str, Any]]],
    *,
    emailed: bool = False,
) -> list[dict[str, Any]]:
    """Request exports as the admin and run a worker until they complete (and, when
    ``emailed``, until their ready emails went out)."""
    exports = []
    for kind, args in requests:
        full = {"from_time": "2026-01-01T00:00:00Z", "to_time": "2026-02-01T00:00:00Z", **args}
        exports.append(
            await request_export(
                pool,
                settings,
                world.admin.principal,
                kind,
                organization_id=world.organization_id,
                **full,
            )
        )
    busy = settings.derive(max_running_exports_per_org=2)
    rows = []
    async with Worker(busy, retry_base=0.1):
        for export in exports:
            row = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
            assert row["status"] == "COMPLETED", row["error_message"]
            if emailed:
                row = await eventually(
                    functools.partial(emailed_row, pool, export.id), what="the ready email"
                )
            rows.append(row)
    return rows


async def emailed_row(pool: asyncpg.Pool, export_id: UUID) -> dict[str, Any] | None:
    row = await export_status(pool, export_id)
    return row if row["emailed_at"] is not None else None


async def stored_bytes(s3: Any, row: dict[str, Any]) -> bytes:
    """The object as S3 holds it, checked against the recorded size and SHA-256."""
    data: bytes = await asyncio.to_thread(s3.get, f"exports/{row['storage_key']}")
    assert len(data) == row["byte_size"]
    assert hashlib.sha256(data).hexdigest() == row["sha256"]
    return data


def jsonl_rows(data: bytes) -> list[dict[str, Any]]:
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n")
    # LF only: str.splitlines would also split inside values at U+2028 and friends.
    return [json.loads(line) for line in text.split("\n")[:-1]]


def csv_rows(data: bytes, *, bom: bool = False) -> tuple[list[str], list[dict[str, str]]]:
    if bom:
        assert data.startswith(b"\xef\xbb\xbf")
        data = data[3:]
    else:
        assert not data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8")
    # Records end in CRLF; a bare LF may only appear inside a quoted cell.
    assert text.endswith("\r\n")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    return header, [dict(zip(header, record)) for record in reader]


def entry(world: World, at: datetime, **values: Any) -> AuditLogEntryInput:
    values.setdefault("action", "user.login")
    values.setdefault("actor_type", "USER")
    return AuditLogEntryInput(organization_id=world.organization_id, created_at=at, **values)


async def seed(pool: asyncpg.Pool, entries: list[Any]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if entries and isinstance(entries[0], ScimEventInput):
            await record_scim_events(conn, entries)
        else:
            await record_audit_log_entries(conn, entries)


# ------------------------------------------------------------------------------ range


async def test_range_is_half_open_in_utc_whatever_the_offsets(pool, settings, s3, world):
    day = START
    await seed(
        pool,
        [
            entry(world, day - US, actor_id="just-before"),
            entry(world, day, actor_id="at-from"),
            entry(world, day + timedelta(hours=12), actor_id="midday"),
            entry(world, day + timedelta(days=1) - US, actor_id="last-microsecond"),
            entry(world, day + timedelta(days=1), actor_id="at-to"),
        ],
    )
    row = await export_and_wait(
        pool,
        settings,
        world,
        from_time="2026-01-01T05:30:00+05:30",  # 00:00Z
        to_time="2026-01-01T19:00:00-05:00",  # next day 00:00Z
    )
    assert row["from_time"] == day
    assert row["to_time"] == day + timedelta(days=1)
    assert row["file_name"] == "audit-log-export-2026-01-01-to-2026-01-01.jsonl"
    rows = jsonl_rows(await stored_bytes(s3, row))
    assert [r["actor_id"] for r in rows] == ["at-from", "midday", "last-microsecond"]
    assert [r["created_at"] for r in rows] == [
        "2026-01-01T00:00:00.000000Z",
        "2026-01-01T12:00:00.000000Z",
        "2026-01-01T23:59:59.999999Z",
    ]
    assert row["row_count"] == 3
    assert row["snapshot_at"] is not None


# ------------------------------------------------------------------------------ 100k rows

ROWS = 100_000


async def test_100k_rows_are_exported_exactly_and_in_order_as_jsonl_and_csv_gzipped_or_not(
    pool, settings, s3, world
):
    # Pairs of rows share a timestamp, so the order also depends on the id tie-break.
    times = [START + timedelta(milliseconds=(i // 2) * 20) for i in range(ROWS)]
    entries = [
        entry(world, times[i], actor_id=f"u{i % 97}", metadata={"n": i}) for i in range(ROWS)
    ]
    outside = [
        entry(world, START - US, actor_id="before", metadata={"n": -1}),
        entry(world, START + timedelta(days=31), actor_id="after", metadata={"n": -2}),
        AuditLogEntryInput(
            organization_id=world.other_organization_id,
            created_at=START + timedelta(hours=1),
            action="user.login",
            actor_type="USER",
            metadata={"n": -3},
        ),
    ]
    await seed(pool, entries + outside)
    async with pool.acquire() as conn:
        ids = {
            r["n"]: str(r["id"])
            for r in await conn.fetch(
                "SELECT (metadata->>'n')::int AS n, id FROM audit_log_entries "
                "WHERE organization_id = $1",
                world.organization_id,
            )
        }
    expected = sorted(range(ROWS), key=lambda n: (times[n], ids[n]))
    expected_ids = [ids[n] for n in expected]
    expected_times = [times[n].strftime("%Y-%m-%dT%H:%M:%S.%fZ") for n in expected]

    variants = [
        ("JSONL", "NONE", False),
        ("JSONL", "GZIP", False),
        ("CSV", "NONE", False),
        ("CSV", "GZIP", True),
    ]
    rows = await export_many(
        pool,
        settings,
        world,
        [
            (ExportKind.AUDIT_LOG, {"format": f, "compression": c, "csv_bom": bom or None})
            for f, c, bom in variants
        ],
    )
    for (fmt, compression, bom), row in zip(variants, rows):
        data = await stored_bytes(s3, row)
        assert row["row_count"] == ROWS
        assert row["rows_written"] == ROWS
        extension = {"JSONL": ".jsonl", "CSV": ".csv"}[fmt]
        if compression == "GZIP":
            assert data[:2] == b"\x1f\x8b"
            assert row["file_name"].endswith(extension + ".gz")
            assert row["content_type"] == "application/gzip"
            data = gzip.decompress(data)
        else:
            assert row["file_name"].endswith(extension)
        if fmt == "JSONL":
            assert row["content_type"] in ("application/x-ndjson", "application/gzip")
            parsed = jsonl_rows(data)
            assert all(list(r) == list(AUDIT_LOG_COLUMNS) for r in parsed[:10])
            numbers = [r["metadata"]["n"] for r in parsed]
        else:
            header, parsed_csv = csv_rows(data, bom=bom)
            assert header == list(AUDIT_LOG_COLUMNS)
            parsed = parsed_csv
            numbers = [json.loads(r["metadata"])["n"] for r in parsed]
        assert len(parsed) == ROWS, (fmt, compression)
        assert [r["id"] for r in parsed] == expected_ids, (fmt, compression)
        assert [r["created_at"] for r in parsed] == expected_times
        assert numbers == expected
        assert {r["organization_id"] for r in parsed} == {str(world.organization_id)}


# ------------------------------------------------------------------------------ SCIM, filters


def scim(world: World, minute: int, **values: Any) -> ScimEventInput:
    values.setdefault("method", "POST")
    values.setdefault("path", "/Users")
    values.setdefault("status_code", 201)
    return ScimEventInput(
        organization_id=world.organization_id,
        created_at=START + timedelta(minutes=minute),
        **values,
    )


async def test_scim_export_has_the_scim_keys_and_redacted_bodies(pool, settings, s3, world):
    await seed(
        pool,
        [
            scim(
                world,
                1,
                user_name="ada@acme.test",
                ip_address="2001:db8::1",
                request_body={"userName": "ada@acme.test", "password": "hunter2"},
                response_body={"id": "u1"},
            ),
            scim(world, 2, method="DELETE", path="/Users/u1", status_code=204),
        ],
    )
    jsonl, as_csv = await export_many(
        pool,
        settings,
        world,
        [(ExportKind.SCIM_EVENT, {}), (ExportKind.SCIM_EVENT, {"format": "CSV"})],
    )
    assert jsonl["file_name"] == "scim-event-export-2026-01-01-to-2026-01-31.jsonl"
    first, second = jsonl_rows(await stored_bytes(s3, jsonl))
    assert list(first) == list(SCIM_EVENT_COLUMNS)
    assert first["status_code"] == 201
    assert first["ip_address"] == "2001:db8::1"
    assert first["request_body"]["userName"] == "ada@acme.test"
    assert "hunter2" not in json.dumps(first)
    assert first["response_body"] == {"id": "u1"}
    assert second["request_body"] is None
    assert second["user_name"] is None
    assert second["status_code"] == 204

    header, records = csv_rows(await stored_bytes(s3, as_csv))
    assert header == list(SCIM_EVENT_COLUMNS)
    assert [r["method"] for r in records] == ["POST", "DELETE"]
    assert records[1]["request_body"] == ""
    assert "hunter2" not in records[0]["request_body"]


async def test_audit_filters_are_or_within_and_and_across_fields(pool, settings, s3, world):
    await seed(
        pool,
        [
            entry(world, START + timedelta(minutes=i), action=a, actor_id=u, resource_type=r)
            for i, (a, u, r) in enumerate(
                [
                    ("user.login", "u1", "User"),  # match
                    ("user.logout", "u2", "User"),  # match
                    ("user.login", "u3", "User"),  # wrong actor
                    ("user.delete", "u1", "User"),  # wrong action
                    ("user.login", "u1", "Group"),  # wrong resource type
                    ("User.Login", "u1", "User"),  # case-sensitive action
                ]
            )
        ],
    )
    row = await export_and_wait(
        pool,
        settings,
        world,
        filter={
            "actions": ["user.login", "user.logout"],
            "actorIds": ["u1", "u2"],
            "resourceTypes": ["User"],
        },
    )
    found = [(r["action"], r["actor_id"]) for r in jsonl_rows(await stored_bytes(s3, row))]
    assert found == [("user.login", "u1"), ("user.logout", "u2")]


async def test_scim_filters_match_methods_codes_and_user_name_case_insensitively(
    pool, settings, s3, world
):
    await seed(
        pool,
        [
            scim(world, 1, user_name="Ada@Acme.Test", status_code=201),  # match
            scim(world, 2, method="PATCH", user_name="ada@acme.test", status_code=200),  # match
            scim(world, 3, method="DELETE", user_name="ada@acme.test", status_code=204),
            scim(world, 4, user_name="bob@acme.test", status_code=201),
            scim(world, 5, user_name="ada@acme.test", status_code=409),
            scim(world, 6, method="post", user_name="ada@acme.test", status_code=201),
        ],
    )
    row = await export_and_wait(
        pool,
        settings,
        world,
        ExportKind.SCIM_EVENT,
        filter={
            "methods": ["POST", "PATCH"],
            "userName": "ADA@acme.test",
            "statusCodes": [200, 201],
        },
    )
    found = [(r["method"], r["status_code"]) for r in jsonl_rows(await stored_bytes(s3, row))]
    assert found == [("POST", 201), ("PATCH", 200)]


# ------------------------------------------------------------------------------ CSV safety


async def test_csv_guards_formula_cells_and_round_trips_awkward_text(pool, settings, s3, world):
    awkward = 'He said "no", twice,\nthen left\r\n.'
    await seed(
        pool,
        [
            entry(
                world,
                START + timedelta(minutes=i),
                actor_id=value,
                actor_name=value,
                user_agent=value,
                metadata={"note": value},
            )
            for i, value in enumerate(HOSTILE)
        ]
        + [entry(world, START + timedelta(hours=1), actor_name=awkward, actor_id="plain")],
    )
    row = await export_and_wait(pool, settings, world, format="CSV", csv_bom=True)
    assert row["content_type"] == "text/csv; charset=utf-8"
    data = await stored_bytes(s3, row)
    assert data.startswith(b"\xef\xbb\xbf" + ",".join(AUDIT_LOG_COLUMNS).encode() + b"\r\n")
    _, records = csv_rows(data, bom=True)
    assert len(records) == len(HOSTILE) + 1
    for value, record in zip(HOSTILE, records):
        for column in ("actor_id", "actor_name", "user_agent"):
            assert record[column] == "'" + value, (column, value)
        assert json.loads(record["metadata"]) == {"note": value}  # JSON text starts with {
        assert record["action"] == "user.login"
        assert record["resource_id"] == ""
    assert records[-1]["actor_name"] == awkward
    assert records[-1]["actor_id"] == "plain"


# ------------------------------------------------------------------------------ email → bytes


def app_for(settings: Settings, pool: asyncpg.Pool, storage: Storage) -> Starlette:
    app = Starlette(routes=download_routes())
    app.state.settings = settings
    app.state.pool = pool
    app.state.storage = storage
    return app


@pytest_asyncio.fixture(loop_scope="session")
async def browser(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the download routes, as the requester's browser would reach them."""
    async with storage_from_settings(settings) as storage:
        transport = httpx.ASGITransport(
            app=app_for(settings, pool, storage), client=("203.0.113.9", 50000)
        )
        async with httpx.AsyncClient(
            transport=transport, base_url=settings.base_url, headers={"User-Agent": "Mail/1.0"}
        ) as client:
            yield client


def text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content: str = part.get_content()
    return content


async def ready_email(smtp_sink: Any, export_id: UUID) -> EmailMessage:
    message: EmailMessage = await smtp_sink.wait_for(
        lambda m: str(export_id) in text_body(m) and "ready" in str(m["Subject"]), timeout=20
    )
    return message


def link_in(message: EmailMessage, settings: Settings) -> str:
    found = re.search(re.escape(settings.base_url) + r"/exports/[^\s]+", text_body(message))
    assert found is not None, text_body(message)
    return found.group(0)


async def downloads(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT * FROM audit_log_entries WHERE action = 'iam:log-export:download'"
        )


async def completed_with_email(
    pool: asyncpg.Pool, settings: Settings, world: World, smtp_sink: Any
) -> tuple[dict[str, Any], str]:
    await seed(pool, [entry(world, START + timedelta(minutes=i)) for i in range(50)])
    [row] = await export_many(
        pool,
        settings,
        world,
        [(ExportKind.AUDIT_LOG, {"format": "CSV", "compression": "GZIP"})],
        emailed=True,
    )
    message = await ready_email(smtp_sink, row["id"])
    assert message["To"] and "adam.admin@acme.test" in message["To"]
    assert message["Subject"] == "Your audit log export is ready"
    assert row["sha256"] in text_body(message)
    return row, link_in(message, settings)


async def test_email_link_page_then_button_downloads_exactly_the_recorded_bytes(
    pool, settings, s3, smtp_sink, world, browser
):
    row, link = await completed_with_email(pool, settings, world, smtp_sink)
    assert link.startswith(f"{settings.base_url}/exports/{row['id']}/download?token=")

    page = await browser.get(link)
    assert page.status_code == 200
    assert row["file_name"] in page.text
    assert ">Download</button>" in page.text
    # Mail scanners open links: opening it records and downloads nothing.
    assert "location" not in page.headers
    assert await downloads(pool) == []

    token = re.search(r'name="token" value="([^"]+)"', page.text)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert token is not None and action is not None
    pressed = await browser.post(
        action.group(1), data={"token": token.group(1)}, headers={"Origin": settings.base_url}
    )
    assert pressed.status_code == 303
    async with httpx.AsyncClient() as direct:
        fetched = await direct.get(pressed.headers["location"])
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == row["sha256"]
    assert fetched.content == await stored_bytes(s3, row)
    assert len(gzip.decompress(fetched.content).splitlines()) == 51

    [recorded] = await downloads(pool)
    assert recorded["actor_id"] == str(world.admin.user_id)
    assert recorded["resource_id"] == str(row["id"])
    assert recorded["metadata"]["sha256"] == row["sha256"]
    assert str(recorded["ip_address"]) == "203.0.113.9"


async def test_expired_and_tampered_links_download_nothing(
    pool, settings, s3, smtp_sink, world, browser
):
    row, link = await completed_with_email(pool, settings, world, smtp_sink)
    base, token = link.split("?token=")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for response in (
        await browser.get(f"{base}?token={tampered}"),
        await browser.post(base, data={"token": tampered}, headers={"Origin": settings.base_url}),
    ):
        assert response.status_code == 404
        assert "location" not in response.headers

    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE log_exports SET expires_at = now() - interval '1 second' WHERE id = $1",
            row["id"],
        )
    for response in (
        await browser.get(link),
        await browser.post(base, data={"token": token}, headers={"Origin": settings.base_url}),
    ):
        assert response.status_code == 410
        assert "expired" in response.text
    assert await downloads(pool) == []


async def test_requester_who_lost_the_permission_cannot_download(
    pool, settings, s3, smtp_sink, world, browser
):
    _, link = await completed_with_email(pool, settings, world, smtp_sink)
    base, token = link.split("?token=")
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE memberships SET role = 'VIEWER' WHERE user_id = $1", world.admin.user_id
        )
    pressed = await browser.post(base, data={"token": token}, headers={"Origin": settings.base_url})
    assert pressed.status_code == 403
    assert "location" not in pressed.headers
    assert await downloads(pool) == []
