"""``logexport.LogExportClient`` as a library user runs it: over HTTP, against a running
``logexport serve``."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

import logexport
from logexport import client as client_module
from tests.support.cli import api
from tests.support.world import build_world, wait_for_status

MISSING = "00000000-0000-0000-0000-000000000000"


async def export_count(pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM log_exports"))


async def test_each_error_code_raises_its_own_exported_class(pool, settings, s3, tmp_path):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        world = server.world
        org = world.organization_id
        async with logexport.LogExportClient(server.url, world.admin.token) as client:
            with pytest.raises(logexport.NotFound) as missing:
                await client.get_export(MISSING)
            with pytest.raises(logexport.Forbidden) as foreign:
                await client.request_export(
                    "AUDIT_LOG", world.other_organization_id, "2026-01-01", "2026-01-02"
                )
            with pytest.raises(logexport.BadUserInput) as backwards:
                await client.request_export("AUDIT_LOG", org, "2026-02-01", "2026-01-01")
            with pytest.raises(logexport.BadUserInput) as bad_filter:
                await client.request_export(
                    "AUDIT_LOG", org, "2026-01-01", "2026-01-02", filter={"actions": []}
                )
            # Five active exports is the cap (no worker runs here): the sixth is refused.
            for day in range(1, 6):
                await client.request_export("AUDIT_LOG", org, f"2026-01-0{day}", "2026-01-09")
            with pytest.raises(logexport.RateLimited) as limited:
                await client.request_export("AUDIT_LOG", org, "2026-01-06", "2026-01-09")
            # Few fields, but each page of SCIM bodies weighs a lot.
            page = "scimEvents(first: 100) { edges { node { requestBody responseBody } } }"
            aliases = " ".join(f"a{i}: {page}" for i in range(3))
            with pytest.raises(logexport.QueryTooComplex) as too_complex:
                await client.execute(f'query {{ organization(id: "{org}") {{ {aliases} }} }}')
        async with logexport.LogExportClient(server.url, "lex_" + "A" * 43) as stranger:
            with pytest.raises(logexport.Unauthenticated) as unauthenticated:
                await stranger.viewer()

    cases = [
        (missing, "NOT_FOUND", client_module.NotFound),
        (foreign, "FORBIDDEN", client_module.Forbidden),
        (backwards, "BAD_USER_INPUT", client_module.BadUserInput),
        (bad_filter, "BAD_USER_INPUT", client_module.BadUserInput),
        (limited, "RATE_LIMITED", client_module.RateLimited),
        (too_complex, "QUERY_TOO_COMPLEX", client_module.QueryTooComplex),
        (unauthenticated, "UNAUTHENTICATED", client_module.Unauthenticated),
    ]
    for info, code, cls in cases:
        error = info.value
        assert type(error) is cls, (code, type(error))
        assert isinstance(error, logexport.ApiError)
        assert error.code == code
        assert world.admin.token not in str(error)
    assert backwards.value.field == "toTime"
    assert bad_filter.value.field == "filter.actions"
    assert "filter.actions" in str(bad_filter.value)
    assert foreign.value.field is None


async def test_in_process_and_remote_errors_share_the_exported_classes(pool, settings):
    world = await build_world(pool)
    with pytest.raises(logexport.NotFound) as in_process:
        await logexport.get_export(pool, world.admin.principal, MISSING)
    assert not isinstance(in_process.value, logexport.ApiError)
    assert issubclass(client_module.NotFound, logexport.NotFound)
    assert issubclass(logexport.QueryTooComplex, logexport.ApiError)
    assert issubclass(logexport.InternalError, logexport.ApiError)
    for code, cls in client_module.ERROR_CLASSES.items():
        error = client_module.api_error(code, "message", "field")
        assert type(error) is cls and error.code == code and error.field == "field"
    unknown = client_module.api_error("SOMETHING_NEW", "message")
    assert type(unknown) is logexport.ApiError and unknown.code == "SOMETHING_NEW"


async def test_range_bounds_take_the_same_forms_as_the_cli(pool, settings, s3, tmp_path):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        org = server.world.organization_id
        async with logexport.LogExportClient(server.url, server.world.admin.token) as client:
            forms: list[tuple[Any, Any, str, str]] = [
                # A day: from its midnight; as the end, the whole day is included.
                (
                    "2026-01-31",
                    "2026-01-31",
                    "2026-01-31T00:00:00.000000Z",
                    "2026-02-01T00:00:00.000000Z",
                ),
                (
                    date(2026, 1, 1),
                    date(2026, 1, 2),
                    "2026-01-01T00:00:00.000000Z",
                    "2026-01-03T00:00:00.000000Z",
                ),
                # Instants are exact at both ends.
                (
                    datetime(2026, 1, 1, 12, tzinfo=UTC),
                    datetime(2026, 1, 2, 1, 30, tzinfo=timezone(timedelta(hours=2))),
                    "2026-01-01T12:00:00.000000Z",
                    "2026-01-01T23:30:00.000000Z",
                ),
                (
                    "2026-01-01T00:00:00+02:00",
                    "2026-01-02T00:00:00.5Z",
                    "2025-12-31T22:00:00.000000Z",
                    "2026-01-02T00:00:00.500000Z",
                ),
            ]
            for from_time, to_time, expected_from, expected_to in forms:
                export = await client.request_export("AUDIT_LOG", org, from_time, to_time)
                assert (export["fromTime"], export["toTime"]) == (expected_from, expected_to)
            before = await export_count(pool)
            refused = [
                ("fromTime", datetime(2026, 1, 1), "2026-01-02"),  # naive: which instant?
                ("fromTime", "2026-01-01T00:00:00", "2026-01-02"),
                ("toTime", "2026-01-01", "2026-02-30"),
                ("toTime", "2026-01-01", 20260102),
            ]
            for field, from_time, to_time in refused:
                with pytest.raises(logexport.BadUserInput) as info:
                    await client.request_export("AUDIT_LOG", org, from_time, to_time)
                assert isinstance(info.value, logexport.ApiError)
                assert info.value.field == field
            # Refused before anything was sent.
            assert await export_count(pool) == before


async def test_wait_for_export_reports_progress_and_returns_the_final_export(
    pool, settings, s3, tmp_path
):
    async with api(pool, settings, tmp_path) as server:
        org = server.world.organization_id
        seen: list[tuple[str, int]] = []

        async def on_progress(export: dict[str, Any]) -> None:
            seen.append((export["status"], int(export["rowsWritten"])))

        async with logexport.LogExportClient(server.url, server.world.admin.token) as client:
            # The whole of 2026-01-01: 48 entries, one every 30 minutes.
            export = await client.request_export("AUDIT_LOG", org, "2026-01-01", "2026-01-01")
            done = await client.wait_for_export(
                export["id"], timeout=120, on_progress=on_progress, interval=0.1
            )
            assert done["status"] == "COMPLETED"
            assert done["rowCount"] == "48"
            target = tmp_path / "day.jsonl"
            await client.download_export(done["id"], target)
            assert hashlib.sha256(target.read_bytes()).hexdigest() == done["sha256"]

            # A plain function works too, and a finished export is reported once, at once.
            again: list[dict[str, Any]] = []
            final = await client.wait_for_export(done["id"], timeout=5, on_progress=again.append)
            assert [e["status"] for e in again] == ["COMPLETED"]
            assert final["id"] == done["id"]

    assert seen[-1] == ("COMPLETED", 48)
    # Called only when something changed: no two reports in a row are alike.
    assert all(a != b for a, b in itertools.pairwise(seen)), seen
    assert [rows for _, rows in seen] == sorted(rows for _, rows in seen)


async def test_wait_for_export_times_out_and_returns_a_canceled_export(
    pool, settings, s3, tmp_path
):
    async with api(pool, settings, tmp_path, "--no-worker") as server:
        org = server.world.organization_id
        async with logexport.LogExportClient(server.url, server.world.admin.token) as client:
            export = await client.request_export("AUDIT_LOG", org, "2026-01-01", "2026-01-02")
            reports: list[str] = []
            with pytest.raises(TimeoutError, match="still PENDING"):
                await client.wait_for_export(
                    export["id"], timeout=1.5, on_progress=lambda e: reports.append(e["status"])
                )
            assert reports == ["PENDING"]
            # The export carries on: a timeout never cancels it.
            row = await wait_for_status(pool, export["id"], "PENDING", timeout=5)
            assert row["status"] == "PENDING"

            await client.cancel_export(export["id"])
            canceled = await client.wait_for_export(export["id"], timeout=10)
            assert canceled["status"] == "CANCELED"
            with pytest.raises(logexport.NotFound):
                await client.wait_for_export(MISSING, timeout=10)
