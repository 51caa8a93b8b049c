"""The console in headless Chromium against a real server, database, bucket and SMTP sink."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import expect

from logexport import identity
from logexport.entries import (
    AuditLogEntryInput,
    ScimEventInput,
    record_audit_log_entries,
    record_scim_events,
)
from logexport.policy import Role
from logexport.web.console import CONSOLE_CSP
from tests.support.world import World, build_world

pytestmark = pytest.mark.browser

START = datetime(2026, 1, 1, tzinfo=UTC)
ACTIONS = ["user.login", "user.logout", "role.changed", "api_key.created"]
# Long enough to need wrapping on a phone, which must never split it mid-word.
LONG_EMAIL = "maximilian.hohenzollern-sigmaringen@provisioning.acme-holdings.test"
METADATA = {"mfa": True, "geo": {"country": "DE", "city": "Berlin"}, "scopes": ["read", "write"]}
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"


async def seed(pool: Any, world: World) -> None:
    """120 audit entries over Jan 1-5 2026 and 12 SCIM events (every third one failed)."""
    entries = [
        AuditLogEntryInput(
            organization_id=world.organization_id,
            action=ACTIONS[i % len(ACTIONS)],
            actor_type="USER" if i % 5 else "API_KEY",
            actor_id=f"u{i % 7}",
            actor_email=LONG_EMAIL if i % 7 == 6 else f"member{i % 7}@acme.test",
            actor_name=f"Member {i % 7}" if i % 2 else None,
            resource_type="User",
            resource_id=f"usr_{i:04d}",
            ip_address="203.0.113.7",
            user_agent=USER_AGENT,
            metadata={**METADATA, "n": i},
            created_at=START + timedelta(hours=i),
        )
        for i in range(120)
    ]
    statuses = [201, 200, 409]
    events = [
        ScimEventInput(
            organization_id=world.organization_id,
            method="POST" if i % 2 else "PATCH",
            path=f"/scim/v2/Users/{i}",
            status_code=statuses[i % 3] if i != 4 else 500,
            user_name=LONG_EMAIL if i == 11 else f"person{i}@acme.test",
            error_message="uniqueness: userName already exists" if i % 3 == 2 else None,
            request_body={"userName": f"person{i}@acme.test", "password": "hunter2"},
            response_body={"id": str(i)},
            ip_address="198.51.100.4",
            created_at=START + timedelta(hours=3 * i),
        )
        for i in range(12)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)
        await record_scim_events(conn, events)


async def settled(page: Any) -> None:
    """Every request the page made has answered: <main> is no longer aria-busy."""
    await expect(page.locator("#main")).not_to_have_attribute("aria-busy", "true")


async def sign_in(page: Any, token: str) -> None:
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))
    await page.get_by_label("API key").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/console/orgs/[0-9a-f-]+/audit-log$"))
    await settled(page)


async def api(live_server: Any, token: str, query: str, **variables: Any) -> dict[str, Any]:
    """GraphQL over HTTP with an API key, as a script would call it."""
    async with httpx.AsyncClient(base_url=live_server.base_url) as client:
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def url_query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def assert_pretty_json(text: str | None, expected: Any) -> None:
    """``text`` is ``expected`` as JSON, indented two spaces (in the stored key order)."""
    assert text is not None
    assert json.loads(text) == expected
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    assert "\n  " in text


ENTRY_ROWS = "#entries tbody tr.item"
EVENT_ROWS = "#events tbody tr.item"


def graphql_variables(request: Any, operation: str) -> dict[str, Any] | None:
    if not request.url.endswith("/graphql") or request.method != "POST":
        return None
    body = json.loads(request.post_data or "{}")
    if operation not in body.get("query", ""):
        return None
    variables: dict[str, Any] = body["variables"]
    return variables


async def test_admin_requests_an_export_and_it_completes(
    page, pool, live_server, smtp_sink, artifacts_dir
):
    world = await build_world(pool)
    await seed(pool, world)
    smtp_sink.clear()

    await page.goto("/console/sign-in")
    await page.screenshot(path=artifacts_dir / "sign-in.png", full_page=True)
    await sign_in(page, world.admin.token)

    rows = page.locator(ENTRY_ROWS)
    await expect(rows).to_have_count(50)
    await expect(page.locator("#count")).to_have_text("Showing 50 entries; more are available.")
    # Newest first: entry 119 was written last.
    await expect(rows.first).to_contain_text("2026-01-05 23:00:00")
    await expect(rows.first).to_contain_text("Member 0")
    await page.get_by_role("button", name="Show more").click()
    await expect(rows).to_have_count(100)
    await expect(page.locator("#count")).to_have_text("Showing 100 entries; more are available.")
    await page.get_by_label("Action", exact=True).fill("role.changed")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.locator("#count")).to_have_text("Showing 30 entries.")
    await expect(rows.filter(has_not_text="role.changed")).to_have_count(0)
    await page.screenshot(path=artifacts_dir / "audit-log.png", full_page=True)
    await page.get_by_role("button", name="Clear all").click()
    await expect(page.locator("#count")).to_have_text("Showing 50 entries; more are available.")
    assert url_query(page) == {}

    requests: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: requests.append(v) if (v := graphql_variables(r, "RequestExport")) else None,
    )
    export_button = page.get_by_role("button", name="Export", exact=True)
    await export_button.click()
    dialog = page.get_by_role("dialog", name="Export audit log entries")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("From")).to_be_focused()
    await expect(dialog.locator("#export-filters")).to_have_text("None: every entry in the range.")
    await dialog.get_by_label("From").fill("2026-01-02")
    await dialog.get_by_label("To (inclusive)").fill("2026-01-03")
    bom = page.get_by_label("Start the CSV file with a byte order mark (for Excel)")
    await expect(bom).to_be_disabled()
    await dialog.get_by_label("CSV (spreadsheet)").check()
    await expect(bom).to_be_enabled()
    await bom.check()
    await page.get_by_label("Compress with gzip").check()
    await expect(page.locator("#export-reason")).to_have_text(
        "2 days: from 2026-01-02 00:00 UTC up to 2026-01-04 00:00 UTC."
    )
    await page.screenshot(path=artifacts_dir / "export-dialog.png")
    await page.get_by_role("button", name="Request export").dblclick()
    await expect(dialog.get_by_role("status")).to_have_text(
        "Export requested — an email with a download link is on its way to adam.admin@acme.test."
    )
    await expect(dialog.locator("#export-confirmation")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(export_button).to_be_focused()

    assert len(requests) >= 1
    sent = requests[0]["input"]
    assert sent["organizationId"] == str(world.organization_id)
    assert (sent["fromTime"], sent["toTime"]) == ("2026-01-02T00:00:00Z", "2026-01-04T00:00:00Z")
    assert (sent["format"], sent["compression"], sent["csvBom"]) == ("CSV", "GZIP", True)
    assert sent["filter"] is None
    assert all(r["input"]["idempotencyKey"] == sent["idempotencyKey"] for r in requests)
    async with pool.acquire() as conn:
        exports = await conn.fetch("SELECT id, row_count FROM log_exports")
    assert len(exports) == 1, "a double click must not export twice"

    await page.get_by_role("link", name="Exports").click()
    history = page.locator("#exports tbody tr")
    await expect(history).to_have_count(1)
    await expect(history.first).to_contain_text("Audit log")
    await expect(history.first).to_contain_text("2026-01-02 to 2026-01-03")
    await expect(history.first).to_contain_text("CSV + gzip + BOM")
    # The page refreshes itself while the export runs; no reload here.
    await expect(history.first.locator("td.status")).to_have_text("Completed", timeout=30_000)
    await expect(history.first).to_contain_text("48")
    message = await smtp_sink.wait_for(
        lambda m: "adam.admin@acme.test" in (m["To"] or ""), timeout=20
    )
    assert message["Subject"] == "Your audit log export is ready"
    await page.screenshot(path=artifacts_dir / "exports.png", full_page=True)

    async with page.expect_download() as download_info:
        await history.first.get_by_role("button", name=re.compile("^Download")).click()
    download = await download_info.value
    assert download.suggested_filename.endswith(".csv.gz")
    page.problems.assert_none()


async def test_viewer_sees_entries_and_events_but_no_export_button(
    page, pool, live_server, artifacts_dir
):
    world = await build_world(pool)
    await seed(pool, world)
    await sign_in(page, world.viewer.token)
    await expect(page.locator(ENTRY_ROWS)).to_have_count(50)
    await expect(page.get_by_role("button", name="Export", exact=True)).to_be_hidden()
    await expect(page.locator("#export-button")).to_have_attribute("hidden", "")

    await page.get_by_role("link", name="SCIM Events").click()
    rows = page.locator(EVENT_ROWS)
    await expect(rows).to_have_count(12)
    await expect(page.locator("#count")).to_have_text("Showing 12 events.")
    failed = page.locator("#events tbody tr.failed")
    await expect(failed).to_have_count(5)
    # Failures are marked in text, not colour alone.
    await expect(rows.first).to_contain_text("409 Client error")
    await expect(page.locator(EVENT_ROWS, has_text="500 Server error")).to_have_count(1)
    await expect(rows.first).to_contain_text("uniqueness: userName already exists")
    await rows.first.get_by_role("button", name=re.compile("show all fields")).click()
    detail = page.locator("#events tbody tr.detail")
    await expect(detail.locator("pre.json").first).to_contain_text('"userName"')
    # Passwords in SCIM bodies are redacted before they are stored.
    await expect(detail).not_to_contain_text("hunter2")
    await expect(page.get_by_role("button", name="Export", exact=True)).to_be_hidden()
    await page.screenshot(path=artifacts_dir / "scim-events.png", full_page=True)

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_role("link", name="Audit Log").click()
    await expect(page.locator(ENTRY_ROWS)).to_have_count(50)
    await page.screenshot(path=artifacts_dir / "audit-log-narrow.png")
    page.problems.assert_none()


async def test_dialog_blocks_reversed_and_overlong_ranges_and_sends_utc_days(
    new_page, pool, live_server, artifacts_dir
):
    world = await build_world(pool)
    # A browser far from UTC must still ask for UTC days.
    page = await new_page(timezone_id="Pacific/Kiritimati")
    await sign_in(page, world.owner.token)
    await page.get_by_role("button", name="Export", exact=True).click()
    submit = page.get_by_role("button", name="Request export")
    reason = page.locator("#export-reason")

    await page.get_by_role("dialog").get_by_label("From").fill("2026-03-10")
    await page.get_by_role("dialog").get_by_label("To (inclusive)").fill("2026-03-09")
    await expect(submit).to_be_disabled()
    await expect(reason).to_have_text("From must be on or before To.")

    max_days = live_server.settings.max_range_days
    await page.get_by_role("dialog").get_by_label("From").fill("2025-01-01")
    too_late = datetime(2025, 1, 1) + timedelta(days=max_days)
    await (
        page.get_by_role("dialog")
        .get_by_label("To (inclusive)")
        .fill(too_late.strftime("%Y-%m-%d"))
    )
    await expect(submit).to_be_disabled()
    await expect(reason).to_have_text(
        f"The range spans {max_days + 1} days; at most {max_days} days can be exported at once."
    )
    await page.screenshot(path=artifacts_dir / "export-dialog-blocked.png")
    last_allowed = too_late - timedelta(days=1)
    await (
        page.get_by_role("dialog")
        .get_by_label("To (inclusive)")
        .fill(last_allowed.strftime("%Y-%m-%d"))
    )
    await expect(submit).to_be_enabled()

    await page.get_by_role("dialog").get_by_label("From").fill("2028-02-28")
    await page.get_by_role("dialog").get_by_label("To (inclusive)").fill("2028-02-29")
    async with page.expect_request(lambda r: graphql_variables(r, "RequestExport")) as sent:
        await submit.click()
    variables = graphql_variables(await sent.value, "RequestExport")
    assert variables is not None
    assert variables["input"]["fromTime"] == "2028-02-28T00:00:00Z"
    assert variables["input"]["toTime"] == "2028-03-01T00:00:00Z"
    assert variables["input"]["format"] == "JSONL"
    assert variables["input"]["compression"] == "NONE"
    assert variables["input"]["csvBom"] is False
    await expect(page.locator("#export-confirmation")).to_contain_text("olivia.owner@acme.test")
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT from_time, to_time FROM log_exports")
    assert row["from_time"] == datetime(2028, 2, 28, tzinfo=UTC)
    assert row["to_time"] == datetime(2028, 3, 1, tzinfo=UTC)


async def test_server_errors_appear_in_the_dialog_naming_the_field(page, pool, live_server):
    world = await build_world(pool)
    await sign_in(page, world.admin.token)

    async def empty_range(route: Any) -> None:
        body = json.loads(route.request.post_data)
        if "RequestExport" in body["query"]:
            body["variables"]["input"]["toTime"] = body["variables"]["input"]["fromTime"]
        await route.continue_(post_data=json.dumps(body))

    await page.route("**/graphql", empty_range)
    await page.get_by_role("button", name="Export", exact=True).click()
    await page.get_by_role("button", name="Request export").click()
    error = page.locator("#export-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text(re.compile(r"^To: .*toTime"))
    await expect(page.get_by_role("dialog").get_by_label("To (inclusive)")).to_have_attribute(
        "aria-invalid", "true"
    )
    await expect(page.get_by_role("dialog")).to_be_visible()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM log_exports") == 0


async def test_sign_out_ends_the_session(page, pool, live_server):
    world = await build_world(pool)
    await sign_in(page, world.admin.token)
    audit_url = page.url
    response = await page.request.get(audit_url)
    assert response.headers["content-security-policy"] == CONSOLE_CSP
    session = [c for c in await page.context.cookies() if c["name"] == "logexport_session"]
    assert len(session) == 1
    assert session[0]["httpOnly"] is True
    assert session[0]["sameSite"] == "Strict"

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    assert not [c for c in await page.context.cookies() if c["name"] == "logexport_session"]
    await page.goto(audit_url)
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    await expect(page.get_by_label("API key")).to_be_visible()


async def test_cookie_writes_need_the_csrf_token(page, pool, live_server):
    world = await build_world(pool)
    await sign_in(page, world.admin.token)
    mutation = {
        "query": "mutation($input: RequestAuditLogExportInput!) "
        "{ requestAuditLogExport(input: $input) { logExport { id } } }",
        "variables": {
            "input": {
                "organizationId": str(world.organization_id),
                "fromTime": "2026-01-01T00:00:00Z",
                "toTime": "2026-01-02T00:00:00Z",
            }
        },
    }
    forged = await page.request.post("/graphql", data=mutation)
    assert forged.status == 403
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM log_exports") == 0


async def test_revoking_the_key_ends_the_session(page, pool, live_server):
    world = await build_world(pool)
    await seed(pool, world)
    await sign_in(page, world.admin.token)
    await expect(page.locator(ENTRY_ROWS)).to_have_count(50)
    # Every request of the page has answered (the entries and the Export permission), so
    # none of them can meet the revoked key and leave for sign-in before the click.
    await settled(page)
    await expect(page.get_by_role("button", name="Export", exact=True)).to_be_visible()
    await expect(page.get_by_role("button", name="Show more")).to_be_enabled()
    async with pool.acquire() as conn:
        assert world.admin.principal.api_key_id is not None
        await identity.revoke_api_key(conn, world.admin.principal.api_key_id)

    # The open page's next API call fails and sends the user to sign in.
    await page.get_by_role("button", name="Show more").click()
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    # And the pages themselves no longer render for the cookie.
    response = await page.request.get(f"/console/orgs/{world.organization_id}/exports")
    assert response.url.split("?")[0].endswith("/console/sign-in")
    await page.get_by_label("API key").fill(world.admin.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid")


async def test_scim_event_export_from_the_scim_page(page, pool, live_server):
    world = await build_world(pool)
    await seed(pool, world)
    await sign_in(page, world.owner.token)
    await page.get_by_role("link", name="SCIM Events").click()
    await expect(page.locator(EVENT_ROWS)).to_have_count(12)
    await page.get_by_role("button", name="Export", exact=True).click()
    await expect(page.get_by_role("dialog", name="Export SCIM events")).to_be_visible()
    await page.get_by_role("dialog").get_by_label("From").fill("2026-01-01")
    await page.get_by_role("dialog").get_by_label("To (inclusive)").fill("2026-01-01")
    await page.get_by_role("button", name="Request export").click()
    await expect(page.locator("#export-confirmation")).to_contain_text("olivia.owner@acme.test")
    await page.get_by_role("button", name="Close").click()
    await expect(page.get_by_role("button", name="Export", exact=True)).to_be_focused()
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT kind, from_time, to_time FROM log_exports")
    assert row["kind"] == "SCIM_EVENT"
    assert (row["from_time"], row["to_time"]) == (START, START + timedelta(days=1))


async def test_a_tampered_session_cookie_is_refused(page, pool, live_server):
    world = await build_world(pool)
    await sign_in(page, world.admin.token)
    cookies = await page.context.cookies()
    session = next(c for c in cookies if c["name"] == "logexport_session")
    value = session["value"]
    forged = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    await page.context.add_cookies([{**session, "value": forged}])
    await page.goto(f"/console/orgs/{world.organization_id}/audit-log")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))


async def test_non_members_get_no_organization_page(page, pool, live_server):
    world = await build_world(pool)
    await sign_in(page, world.admin.token)
    response = await page.goto(f"/console/orgs/{world.other_organization_id}/audit-log")
    assert response is not None and response.status == 404
    await expect(page.get_by_role("heading", level=1)).to_have_text("Organization not available")


EXPORT_QUERY = """query Export($id: ID!) {
  logExport(id: $id) { id status filter fromTime toTime rowCount expiresAt downloadUrl }
}"""
REQUEST_QUERY = """mutation Request($input: RequestAuditLogExportInput!) {
  requestAuditLogExport(input: $input) { logExport { id status } }
}"""


async def test_filtered_audit_log_exports_only_what_the_page_shows(
    page, pool, live_server, artifacts_dir
):
    world = await build_world(pool)
    await seed(pool, world)
    await sign_in(page, world.admin.token)
    rows = page.locator(ENTRY_ROWS)
    await expect(rows).to_have_count(50)

    filters = page.get_by_role("search", name="Filter entries")
    await filters.get_by_label("From (UTC day)").fill("2026-01-02")
    await filters.get_by_label("To (inclusive)").fill("2026-01-03")
    await filters.get_by_label("Action", exact=True).fill("role.changed")
    await filters.get_by_role("button", name="Apply").click()
    await expect(page.locator("#count")).to_have_text("Showing 12 entries.")
    await expect(rows.filter(has_not_text="role.changed")).to_have_count(0)
    assert url_query(page) == {
        "from": ["2026-01-02"], "to": ["2026-01-03"], "action": ["role.changed"],
    }  # fmt: skip

    # A reload (or the same link in another tab) shows the same rows.
    await page.reload()
    await expect(page.locator("#count")).to_have_text("Showing 12 entries.")
    await expect(rows.filter(has_not_text="role.changed")).to_have_count(0)
    await expect(page.get_by_role("list", name="Active filters")).to_have_text(
        re.compile(r"From 2026-01-02.*To 2026-01-03 \(inclusive\).*Action: role\.changed")
    )
    await expect(filters.get_by_label("From (UTC day)")).to_have_value("2026-01-02")

    await page.get_by_role("button", name="Export", exact=True).click()
    dialog = page.get_by_role("dialog", name="Export audit log entries")
    await expect(dialog.get_by_label("From")).to_have_value("2026-01-02")
    await expect(dialog.get_by_label("To (inclusive)")).to_have_value("2026-01-03")
    await expect(dialog.locator("#export-filters")).to_have_text("Action: role.changed")
    await page.screenshot(path=artifacts_dir / "export-dialog-filtered.png")
    async with page.expect_request(lambda r: graphql_variables(r, "RequestExport")) as sent:
        await dialog.get_by_role("button", name="Request export").click()
    sent_input = (graphql_variables(await sent.value, "RequestExport") or {})["input"]
    assert sent_input["filter"] == {"actions": ["role.changed"]}
    await expect(dialog.locator("#export-confirmation")).to_contain_text("adam.admin@acme.test")
    await dialog.get_by_role("button", name="Close").click()

    await page.get_by_role("link", name="Exports").click()
    history = page.locator("#exports tbody tr")
    await expect(history).to_have_count(1)
    await expect(history.first.locator("td").nth(2)).to_have_text("Action: role.changed")
    await expect(history.first).to_contain_text("Adam Admin")
    await expect(history.first.locator("td.status")).to_have_text("Completed", timeout=30_000)

    async with pool.acquire() as conn:
        export_id = await conn.fetchval("SELECT id FROM log_exports")
    data = await api(live_server, world.admin.token, EXPORT_QUERY, id=str(export_id))
    export = data["logExport"]
    assert export["filter"] == {"actions": ["role.changed"]}
    assert (export["fromTime"], export["toTime"]) == (
        "2026-01-02T00:00:00.000000Z", "2026-01-04T00:00:00.000000Z",
    )  # fmt: skip
    assert export["rowCount"] == "12"
    async with httpx.AsyncClient(follow_redirects=True) as client:
        response = await client.get(export["downloadUrl"])
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 12
    assert {line["action"] for line in lines} == {"role.changed"}
    page.problems.assert_none()


async def test_scim_page_filters_by_status_code_and_user_name(page, pool, live_server):
    world = await build_world(pool)
    await seed(pool, world)
    await sign_in(page, world.viewer.token)
    await page.get_by_role("link", name="SCIM Events").click()
    rows = page.locator(EVENT_ROWS)
    await expect(rows).to_have_count(12)
    filters = page.get_by_role("search", name="Filter events")
    status_code = filters.get_by_label("Status code")
    count = page.locator("#count")

    await status_code.fill("409")
    await status_code.press("Enter")
    await expect(count).to_have_text("Showing 4 events.")
    await expect(rows.filter(has_not_text="409 Client error")).to_have_count(0)
    # A second value widens the filter (either code matches).
    await status_code.fill("201")
    await filters.get_by_role("button", name="Apply").click()
    await expect(count).to_have_text("Showing 8 events.")
    assert url_query(page) == {"statusCode": ["409", "201"]}

    # User names match whatever their case.
    await filters.get_by_label("User name").fill("PERSON5@acme.test")
    await filters.get_by_role("button", name="Apply").click()
    await expect(count).to_have_text("Showing 1 event.")
    await expect(rows.first).to_contain_text("person5@acme.test")
    assert url_query(page)["userName"] == ["PERSON5@acme.test"]
    await page.reload()
    await expect(count).to_have_text("Showing 1 event.")

    await page.get_by_role("button", name="Remove filter Status code: 409").click()
    await expect(count).to_have_text("No events to show.")
    assert url_query(page) == {"statusCode": ["201"], "userName": ["PERSON5@acme.test"]}
    # Back to the previous filters, as the browser's history has them.
    await page.go_back()
    await expect(count).to_have_text("Showing 1 event.")

    await status_code.fill("teapot")
    await filters.get_by_role("button", name="Apply").click()
    await expect(page.locator("#filter-error")).to_have_text(
        "Status code must be a number from 100 to 599, e.g. 409."
    )
    await expect(status_code).to_have_attribute("aria-invalid", "true")
    await expect(count).to_have_text("Showing 1 event.")
    page.problems.assert_none()


async def test_a_row_opens_to_show_every_field_pretty_printed(page, pool, live_server):
    world = await build_world(pool)
    await seed(pool, world)
    await sign_in(page, world.viewer.token)
    row = page.locator(ENTRY_ROWS).first
    toggle = row.get_by_role("button", name="2026-01-05 23:00:00 (show all fields)")
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    detail = page.locator("#entries tbody tr.detail")
    await expect(detail).to_have_count(1)
    await expect(detail.locator("pre.json")).to_contain_text('"n": 119')
    assert_pretty_json(await detail.locator("pre.json").text_content(), {**METADATA, "n": 119})
    for text in (USER_AGENT, "203.0.113.7", "usr_0119", "api_key.created", "member0@acme.test"):
        await expect(detail).to_contain_text(text)
    async with pool.acquire() as conn:
        entry_id = await conn.fetchval(
            "SELECT id FROM audit_log_entries ORDER BY created_at DESC LIMIT 1"
        )
    await expect(detail).to_contain_text(str(entry_id))
    await toggle.click()
    await expect(detail).to_have_count(0)

    await page.get_by_role("link", name="SCIM Events").click()
    # A click anywhere on the row opens it too.
    await page.locator(EVENT_ROWS).first.locator("td").nth(2).click()
    detail = page.locator("#events tbody tr.detail")
    bodies = detail.locator("pre.json")
    await expect(bodies).to_have_count(2)
    assert_pretty_json(
        await bodies.first.text_content(),
        {"userName": "person11@acme.test", "password": "[REDACTED]"},
    )
    assert_pretty_json(await bodies.nth(1).text_content(), {"id": "11"})
    await expect(detail).to_contain_text("198.51.100.4")
    await expect(detail).not_to_contain_text("hunter2")
    page.problems.assert_none()


@pytest.mark.parametrize("run_worker", [False])
async def test_cancel_on_the_exports_page_is_confirmed_and_ends_a_pending_export(
    page, pool, live_server, run_worker
):
    world = await build_world(pool)
    data = await api(
        live_server,
        world.admin.token,
        REQUEST_QUERY,
        input={
            "organizationId": str(world.organization_id),
            "fromTime": "2026-01-01T00:00:00Z",
            "toTime": "2026-01-02T00:00:00Z",
            "filter": {"actions": ["user.login", "user.logout"], "actorIds": ["u1"]},
        },
    )
    export_id = data["requestAuditLogExport"]["logExport"]["id"]
    await sign_in(page, world.owner.token)
    await page.get_by_role("link", name="Exports").click()
    row = page.locator("#exports tbody tr.item")
    await expect(row).to_have_count(1)
    await expect(row.locator("td.status")).to_have_text("Pending")
    await expect(row.locator("td").nth(2)).to_have_text(
        "Action: user.login or user.logoutActor ID: u1"
    )
    await expect(row).to_contain_text("adam.admin@acme.test")

    cancel = row.get_by_role("button", name=re.compile("^Cancel Audit log export"))
    dialog = page.get_by_role("dialog", name="Cancel this export?")
    await cancel.click()
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("Audit log export 2026-01-01 (Pending)")
    # Not confirmed: nothing changes.
    await dialog.get_by_role("button", name="Keep export").click()
    await expect(dialog).to_be_hidden()
    await settled(page)
    status = await api(live_server, world.owner.token, EXPORT_QUERY, id=export_id)
    assert status["logExport"]["status"] == "PENDING"

    await cancel.click()
    async with page.expect_response(
        lambda r: r.url.endswith("/graphql") and "CancelExport" in (r.request.post_data or "")
    ):
        await dialog.get_by_role("button", name="Cancel export").click()
    await expect(dialog).to_be_hidden()
    await expect(row.locator("td.status")).to_have_text("Canceled")
    await expect(row.locator("td.expires")).to_have_text("")
    await expect(row.get_by_role("button")).to_have_count(0)
    status = await api(live_server, world.owner.token, EXPORT_QUERY, id=export_id)
    assert status["logExport"]["status"] == "CANCELED"
    page.problems.assert_none()


async def test_a_canceled_completed_export_shows_no_expiry(page, pool, live_server):
    world = await build_world(pool)
    await seed(pool, world)
    data = await api(
        live_server,
        world.owner.token,
        REQUEST_QUERY,
        input={
            "organizationId": str(world.organization_id),
            "fromTime": "2026-01-01T00:00:00Z",
            "toTime": "2026-01-02T00:00:00Z",
        },
    )
    export_id = data["requestAuditLogExport"]["logExport"]["id"]
    await sign_in(page, world.owner.token)
    await page.get_by_role("link", name="Exports").click()
    row = page.locator("#exports tbody tr.item")
    await expect(row.locator("td.status")).to_have_text("Completed", timeout=30_000)
    await expect(row.locator("td.expires")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:"))
    await row.get_by_role("button", name=re.compile("^Cancel")).click()
    await page.get_by_role("dialog").get_by_role("button", name="Cancel export").click()
    await expect(row.locator("td.status")).to_have_text("Canceled")
    await expect(row.locator("td.expires")).to_have_text("")
    await expect(row.get_by_role("button", name=re.compile("^Download"))).to_have_count(0)
    # The API still knows when the file would have expired; the page does not offer it.
    status = await api(live_server, world.owner.token, EXPORT_QUERY, id=export_id)
    assert status["logExport"]["status"] == "CANCELED"
    assert status["logExport"]["expiresAt"] is not None
    page.problems.assert_none()


async def test_root_redirects_to_the_console(page, live_server):
    response = await page.request.get("/", max_redirects=0)
    assert response.status == 302
    assert response.headers["location"] == "/console"
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))


# Run in the page: off-screen elements and e-mail addresses split mid-word.
LAYOUT_PROBLEMS = (Path(__file__).parent / "layout_problems.js").read_text()


async def screenshots(page: Any, stem: Path) -> None:
    """The whole page, and its first 1400 px on their own (a long page shrinks to a blur)."""
    await page.screenshot(path=stem.with_suffix(".png"), full_page=True)
    size = page.viewport_size
    clip = {"x": 0, "y": 0, "width": size["width"], "height": 1400}
    await page.screenshot(path=f"{stem}-top.png", full_page=True, clip=clip)


async def assert_fits(page: Any, what: str) -> None:
    problems = await page.evaluate(LAYOUT_PROBLEMS)
    assert problems == [], f"{what}: {problems}"


@pytest.mark.parametrize(("width", "height"), [(1366, 900), (390, 844)], ids=["1366px", "390px"])
async def test_pages_fit_the_screen_without_splitting_addresses(
    new_page, pool, live_server, artifacts_dir, width, height
):
    world = await build_world(pool)
    await seed(pool, world)
    async with pool.acquire() as conn:
        user = await identity.create_user(conn, LONG_EMAIL, "Maximilian Hohenzollern")
        await identity.add_member(conn, world.organization_id, user.id, Role.ADMIN)
        _key, token = await identity.create_api_key(conn, user.id, "layout", None)
    await api(
        live_server,
        token,
        REQUEST_QUERY,
        input={
            "organizationId": str(world.organization_id),
            "fromTime": "2026-01-02T00:00:00Z",
            "toTime": "2026-01-04T00:00:00Z",
            "filter": {"actions": ["role.changed", "user.login"], "actorIds": ["u6"]},
        },
    )
    page = await new_page(viewport={"width": width, "height": height})
    await sign_in(page, token)
    org = world.organization_id

    await page.goto(
        f"/console/orgs/{org}/audit-log?from=2026-01-01&to=2026-01-05&action=role.changed"
        f"&actorId=u6&resourceType=User"
    )
    rows = page.locator(ENTRY_ROWS)
    await expect(page.locator("#count")).to_have_text("Showing 5 entries.")
    await rows.first.get_by_role("button", name=re.compile("show all fields")).click()
    await expect(page.locator("#entries tr.detail")).to_contain_text(LONG_EMAIL)
    await settled(page)
    await screenshots(page, artifacts_dir / f"audit-log-{width}")
    await assert_fits(page, "Audit Log")

    await page.get_by_role("button", name="Export", exact=True).click()
    dialog = page.get_by_role("dialog", name="Export audit log entries")
    await expect(dialog.locator("#export-filters li")).to_have_count(3)
    await page.screenshot(path=artifacts_dir / f"export-dialog-{width}.png")
    await assert_fits(page, "Export dialog")
    await dialog.get_by_role("button", name="Cancel").click()

    await page.goto(f"/console/orgs/{org}/scim-events?statusCode=409&statusCode=201")
    await expect(page.locator("#count")).to_have_text("Showing 8 events.")
    await page.locator(EVENT_ROWS).first.get_by_role("button").click()
    await expect(page.locator("#events tr.detail")).to_contain_text(LONG_EMAIL)
    await settled(page)
    await screenshots(page, artifacts_dir / f"scim-events-{width}")
    await assert_fits(page, "SCIM Events")

    await page.get_by_role("link", name="Exports").click()
    await expect(page.locator("#exports tbody tr.item")).to_have_count(1)
    await expect(page.locator("#exports tbody tr.item")).to_contain_text(LONG_EMAIL)
    await settled(page)
    await screenshots(page, artifacts_dir / f"exports-{width}")
    await assert_fits(page, "Exports")
    page.problems.assert_none()
