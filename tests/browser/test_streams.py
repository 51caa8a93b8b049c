"""The console's Streams page in headless Chromium against a real server and database, with
a real HTTP receiver on 127.0.0.1 as the stream's endpoint."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import expect

from devtools.customer_aws import CustomerAccount, customer_account
from logexport.config import Settings
from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from tests.support.graphql import graphql_data
from tests.support.receiver import Receiver
from tests.support.receiver import receiver as running_receiver
from tests.support.world import Person, World, build_world, eventually

pytestmark = pytest.mark.browser

SECRET = "hmac-secret-never-shown-8c1f"
STREAM_ROWS = "#streams tbody tr.item"
LAYOUT_PROBLEMS = (Path(__file__).parent / "layout_problems.js").read_text()

CREATE_QUERY = """mutation Create($input: CreateLogStreamInput!) {
  createLogStream(input: $input) { logStream { id state } }
}"""
UPDATE_QUERY = """mutation Update($input: UpdateLogStreamInput!) {
  updateLogStream(input: $input) { logStream { id state } }
}"""
LIST_QUERY = """query Streams($org: ID!) {
  organization(id: $org) { logStreams { id state lastError } }
}"""


@pytest.fixture
def allow_private() -> bool:
    """The receiver listens on 127.0.0.1 over plain HTTP: allowed only with the opt-in."""
    return True


@pytest.fixture
def settings(settings: Settings, allow_private: bool) -> Settings:
    return settings.derive(stream_allow_private=allow_private, stream_min_interval=2.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(default_secret=SECRET) as running:
        yield running


async def settled(page: Any) -> None:
    """Every request the page made has answered: <main> is no longer aria-busy."""
    await expect(page.locator("#main")).not_to_have_attribute("aria-busy", "true")


async def sign_in(page: Any, person: Person) -> None:
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))
    await page.get_by_label("API key").fill(person.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/console/orgs/[0-9a-f-]+/audit-log$"))


async def new_stream_form(page: Any) -> Any:
    """The create form, opened with the page's New stream button."""
    await page.get_by_role("button", name="New stream").click()
    return page.locator("#create-form")


async def open_streams(page: Any, person: Person) -> None:
    await sign_in(page, person)
    await (
        page.get_by_role("navigation", name="Organization pages")
        .get_by_role("link", name="Streams")
        .click()
    )
    await expect(page).to_have_url(re.compile(r"/streams$"))
    await expect(page.locator("#count")).not_to_be_empty()
    await settled(page)


async def create_stream(
    live_server: Any,
    world: World,
    url: str,
    *,
    interval: int = 2,
    kind: str = "AUDIT_LOG",
    filter: dict[str, Any] | None = None,
) -> str:
    data = await graphql_data(
        live_server.base_url,
        world.owner.token,
        CREATE_QUERY,
        {
            "input": {
                "organizationId": str(world.organization_id),
                "kind": kind,
                "intervalSeconds": interval,
                "filter": filter,
                "destination": {"https": {"url": url, "secret": SECRET}},
            }
        },
    )
    stream_id: str = data["createLogStream"]["logStream"]["id"]
    return stream_id


async def streams_of(live_server: Any, world: World) -> list[dict[str, Any]]:
    data = await graphql_data(
        live_server.base_url, world.owner.token, LIST_QUERY, {"org": str(world.organization_id)}
    )
    streams: list[dict[str, Any]] = data["organization"]["logStreams"]
    return streams


async def record_entries(pool: Any, world: World, count: int) -> None:
    now = datetime.now(UTC)
    entries = [
        AuditLogEntryInput(
            organization_id=world.organization_id,
            action="user.login",
            actor_type="USER",
            actor_id=f"u{i}",
            actor_email=f"member{i}@acme.test",
            resource_type="User",
            resource_id=f"usr_{i}",
            created_at=now,
        )
        for i in range(count)
    ]
    # One transaction: the rows are delivered together, in one delivery.
    async with pool.acquire() as conn, conn.transaction():
        await record_audit_log_entries(conn, entries)


async def screenshots(page: Any, stem: Path) -> None:
    """The whole page, and its first 1400 px on their own (a long page shrinks to a blur)."""
    await page.screenshot(path=stem.with_suffix(".png"), full_page=True)
    size = page.viewport_size
    clip = {"x": 0, "y": 0, "width": size["width"], "height": 1400}
    await page.screenshot(path=f"{stem}-top.png", full_page=True, clip=clip)


async def assert_fits(page: Any, what: str) -> None:
    problems = await page.evaluate(LAYOUT_PROBLEMS)
    assert problems == [], f"{what}: {problems}"


async def test_owner_creates_a_stream_sees_its_test_delivery_then_pauses_resumes_and_deletes_it(
    page, pool, live_server, receiver: Receiver, artifacts_dir
):
    world = await build_world(pool)
    await open_streams(page, world.owner)
    await expect(page.locator("#count")).to_have_text(re.compile("No streams yet"))

    form = await new_stream_form(page)
    await form.get_by_label("Audit log").check()
    await form.get_by_label("HTTPS endpoint").check()
    await form.get_by_label("Endpoint URL", exact=True).fill(receiver.url())
    await form.get_by_label("Signing secret").fill(SECRET)
    await form.get_by_label("Deliver every").fill("2")
    await form.get_by_label("Interval unit").select_option(label="seconds")
    await form.get_by_label("Actions").fill("user.login, user.logout")
    await page.screenshot(path=artifacts_dir / "create-form.png", full_page=True)
    await form.get_by_role("button", name="Create and send a test delivery").click()

    result = page.locator("#create-result")
    await expect(result).to_contain_text("Stream created.")
    await expect(result).to_contain_text("Test delivery delivered at")
    await expect(result).to_be_focused()
    # The test delivery reached the receiver, signed with the secret typed in the form.
    [test_delivery] = receiver.received()
    assert test_delivery.headers.get("x-logexport-delivery")
    assert test_delivery.rows() == []
    assert test_delivery.signature_ok

    [stream] = await streams_of(live_server, world)
    row = page.locator(STREAM_ROWS)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("Audit log")
    await expect(row).to_contain_text(receiver.url())
    await expect(row).to_contain_text("Action: user.login or user.logout")
    await expect(row.locator("td.state")).to_contain_text("Active")
    await expect(row).to_contain_text("2 s")
    # Its deliveries are open, the test delivery first; the URL keeps the open stream.
    deliveries = page.locator(f"#deliveries-{stream['id']} tr.delivery")
    await expect(deliveries.first).to_contain_text("Test")
    await expect(deliveries.first).to_contain_text("Delivered")
    assert parse_qs(urlsplit(page.url).query) == {"open": [stream["id"]]}
    # The secret is nowhere on the page, nor left in the form.
    assert SECRET not in await page.content()
    await expect(page.locator("#create-secret")).to_have_value("")
    await settled(page)
    await page.screenshot(path=artifacts_dir / "created.png", full_page=True)

    await row.get_by_role("button", name=re.compile("^Pause ")).click()
    await expect(row.locator("td.state")).to_contain_text("Paused")
    await expect(row.get_by_role("button", name=re.compile("^Resume "))).to_be_focused()
    assert (await streams_of(live_server, world))[0]["state"] == "PAUSED"
    await row.get_by_role("button", name=re.compile("^Resume ")).click()
    await expect(row.locator("td.state")).to_contain_text("Active")
    assert (await streams_of(live_server, world))[0]["state"] == "ACTIVE"

    # Send test sends another test delivery and shows its result with the deliveries.
    await row.get_by_role("button", name=re.compile("^Send a test delivery")).click()
    await expect(deliveries.filter(has_text="Test")).to_have_count(2)
    await expect(page.locator(f"#deliveries-{stream['id']} .test-result")).to_contain_text(
        "Test delivery delivered at"
    )
    assert len(receiver.accepted()) == 2

    # New entries are delivered by the worker; the open stream shows the delivery.
    await record_entries(pool, world, 3)
    await eventually(
        lambda: _rows_received(receiver), timeout=30, what="a delivery with rows at the receiver"
    )
    delivered = [r for r in receiver.accepted() if r.headers["x-logexport-sequence"].isdigit()]
    assert [r.sequence for r in delivered] == [1]
    assert [row["action"] for row in delivered[0].rows()] == ["user.login"] * 3
    first = deliveries.filter(has_not_text="Test").first
    await expect(first.locator("td").nth(0)).to_have_text("1", timeout=15_000)
    await expect(first.locator("td").nth(1)).to_have_text("3")
    await expect(first.locator("td.status")).to_have_text("Delivered")
    await settled(page)
    await page.screenshot(path=artifacts_dir / "delivered.png", full_page=True)

    # Delete asks first; keeping the stream changes nothing.
    await row.get_by_role("button", name=re.compile("^Delete ")).click()
    dialog = page.get_by_role("dialog", name="Delete this stream?")
    await expect(dialog).to_contain_text(receiver.url())
    await dialog.get_by_role("button", name="Keep stream").click()
    await expect(dialog).to_be_hidden()
    await expect(row).to_have_count(1)
    await row.get_by_role("button", name=re.compile("^Delete ")).click()
    await dialog.get_by_role("button", name="Delete stream").click()
    await expect(page.locator(STREAM_ROWS)).to_have_count(0)
    await expect(page.locator("#count")).to_have_text(re.compile("No streams yet"))
    assert await streams_of(live_server, world) == []
    page.problems.assert_none()


async def _rows_received(receiver: Receiver) -> bool:
    return any(r.headers.get("x-logexport-sequence", "").isdigit() for r in receiver.accepted())


@pytest.fixture
def customer() -> Iterator[CustomerAccount]:
    with customer_account() as account:
        yield account


async def test_owner_creates_an_s3_stream_with_an_access_key_pair(
    page, pool, live_server, customer: CustomerAccount, artifacts_dir
):
    world = await build_world(pool)
    await open_streams(page, world.owner)
    form = await new_stream_form(page)
    await form.get_by_label("SCIM events").check()
    await form.get_by_label("S3 bucket").check()
    await expect(form.get_by_label("Endpoint URL", exact=True)).to_be_hidden()
    await form.get_by_label("Bucket", exact=True).fill(customer.bucket)
    await form.get_by_label("Prefix").fill("acme/logs")
    await form.get_by_label("Region").fill(customer.region)
    await form.get_by_label("Endpoint URL (optional)").fill(customer.endpoint_url)
    await form.get_by_label("Access key ID").fill(customer.writer.access_key_id)
    await form.get_by_label("Secret access key").fill(customer.writer.secret_access_key)
    await form.get_by_label("Status codes").fill("409, 500")
    # A start in the past streams what was written since then; the time typed is UTC.
    await form.get_by_label("Start at").fill("2026-01-01T00:00")
    await form.get_by_role("button", name="Create and send a test delivery").click()

    result = page.locator("#create-result")
    await expect(result).to_contain_text("Test delivery delivered at")
    await expect(result).to_contain_text(f"s3://{customer.bucket}/acme/logs")
    # The test delivery left its marker in the customer's bucket, under the prefix.
    markers = customer.keys("acme/logs/logexport-test/")
    assert len(markers) == 1, customer.keys()
    row = page.locator(STREAM_ROWS)
    await expect(row).to_contain_text("SCIM events")
    await expect(row).to_contain_text("Status code: 409 or 500")
    await expect(row).to_contain_text("Streams from 2026-01-01 00:00:00")
    await expect(row.locator(".badge")).to_have_text("S3")
    await expect(form.get_by_label("Secret access key")).to_have_value("")
    await settled(page)
    await page.screenshot(path=artifacts_dir / "s3-created.png", full_page=True)
    assert customer.writer.secret_access_key not in await page.content()
    page.problems.assert_none()


@pytest.mark.parametrize("role", ["viewer", "admin"])
async def test_members_who_are_not_owners_see_streams_without_controls_or_secrets(
    page, pool, live_server, receiver: Receiver, role: str
):
    world = await build_world(pool)
    await create_stream(live_server, world, receiver.url())
    await open_streams(page, getattr(world, role))

    row = page.locator(STREAM_ROWS)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(receiver.url())
    await expect(row.locator("td.state")).to_contain_text("Active")
    for name in ["New stream", "Pause", "Resume", "Send test", "Delete"]:
        await expect(page.get_by_role("button", name=re.compile(f"^{name}"))).to_have_count(0)
    await expect(page.locator("#create-form")).to_have_count(0)
    await expect(page.locator("main")).to_contain_text("Only owners can create")
    # Opening the stream shows its deliveries, still without any secret.
    await row.get_by_role("button", name=re.compile("^Audit log")).click()
    await expect(page.locator("tr.detail")).to_be_visible()
    await settled(page)
    assert SECRET not in await page.content()
    page.problems.assert_none()


async def test_an_interval_below_the_minimum_is_shown_next_to_the_interval(
    page, pool, live_server, receiver: Receiver
):
    world = await build_world(pool)
    await open_streams(page, world.owner)
    form = await new_stream_form(page)
    await form.get_by_label("Endpoint URL", exact=True).fill(receiver.url())
    await form.get_by_label("Signing secret").fill(SECRET)
    await form.get_by_label("Deliver every").fill("1")
    await form.get_by_label("Interval unit").select_option(label="seconds")
    await form.get_by_role("button", name="Create and send a test delivery").click()

    error = page.locator("#create-interval-error")
    await expect(error).to_be_visible()
    await expect(error).to_have_text(re.compile(r"^The interval must be between 2 and "))
    await expect(form.get_by_label("Deliver every")).to_have_attribute("aria-invalid", "true")
    await expect(form.get_by_label("Deliver every")).to_be_focused()
    await expect(page.locator("#create-url-error")).to_be_hidden()
    assert await streams_of(live_server, world) == []
    assert receiver.received() == []


@pytest.mark.parametrize("allow_private", [False])
async def test_a_plain_http_url_without_the_opt_in_is_shown_next_to_the_url(
    page, pool, live_server, receiver: Receiver, artifacts_dir
):
    world = await build_world(pool)
    await open_streams(page, world.owner)
    form = await new_stream_form(page)
    await form.get_by_label("Endpoint URL", exact=True).fill(receiver.url())
    await form.get_by_label("Signing secret").fill(SECRET)
    await form.get_by_role("button", name="Create and send a test delivery").click()

    error = page.locator("#create-url-error")
    await expect(error).to_have_text(re.compile(r"^The URL must use https://"))
    await expect(form.get_by_label("Endpoint URL", exact=True)).to_have_attribute(
        "aria-invalid", "true"
    )
    await expect(page.locator("#create-interval-error")).to_be_hidden()
    await settled(page)
    await page.screenshot(path=artifacts_dir / "url-error.png", full_page=True)
    # The secret typed stays in its field for another try, but never in the page's text.
    assert SECRET not in (await page.locator("main").inner_text())
    assert await streams_of(live_server, world) == []
    assert receiver.received() == []


@pytest.mark.parametrize(("width", "height"), [(1366, 900), (390, 844)], ids=["1366px", "390px"])
async def test_streams_page_fits_the_screen(
    new_page, pool, live_server, receiver: Receiver, artifacts_dir, width, height
):
    """Three streams, one in each state, all opened: a long endpoint URL, a filter, a last
    error and deliveries, at a laptop's and a phone's width."""
    world = await build_world(pool)
    long_url = receiver.url("/ingest/" + "very-long-path-segment-" * 4 + "?tenant=acme-emea")
    healthy = await create_stream(live_server, world, long_url)
    # Nothing listens on a port just released: every delivery there is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused_port = probe.getsockname()[1]
    failing = await create_stream(live_server, world, f"http://127.0.0.1:{refused_port}/ingest")
    paused = await create_stream(
        live_server,
        world,
        receiver.url("/scim"),
        kind="SCIM_EVENT",
        filter={"methods": ["POST"], "statusCodes": [409, 500]},
    )
    await graphql_data(
        live_server.base_url,
        world.owner.token,
        UPDATE_QUERY,
        {"input": {"id": paused, "state": "PAUSED"}},
    )

    async def settled_states() -> bool:
        states = {s["id"]: s["state"] for s in await streams_of(live_server, world)}
        return states[failing] == "FAILING" and any(
            r.headers.get("x-logexport-sequence", "").isdigit() for r in receiver.accepted()
        )

    # The streams' own creation is audited: those entries are what they deliver.
    await eventually(settled_states, timeout=30, what="one stream failing, one delivering")
    page = await new_page(viewport={"width": width, "height": height})
    await open_streams(page, world.owner)
    await page.goto(f"{page.url}?open={healthy}&open={failing}&open={paused}")
    await expect(page.locator(STREAM_ROWS)).to_have_count(3)
    await expect(page.locator("tr.detail")).to_have_count(3)
    await expect(page.locator(f"#deliveries-{healthy} tr.delivery-delivered")).not_to_have_count(0)
    await expect(page.locator(f"#deliveries-{failing} tr.delivery").first).to_contain_text(
        re.compile("Failed|Pending")
    )
    await expect(page.locator(STREAM_ROWS, has_text="Failing")).to_contain_text("Last error")
    await expect(page.locator(STREAM_ROWS, has_text="Paused")).to_contain_text(
        "Status code: 409 or 500"
    )
    await settled(page)
    await screenshots(page, artifacts_dir / f"streams-{width}")
    await assert_fits(page, "Streams")

    # The list's filter lives in the URL.
    await page.get_by_label("State", exact=True).select_option(label="Failing")
    await expect(page.locator(STREAM_ROWS)).to_have_count(1)
    assert parse_qs(urlsplit(page.url).query)["state"] == ["FAILING"]
    await page.reload()
    await expect(page.locator(STREAM_ROWS)).to_have_count(1)
    await expect(page.locator(STREAM_ROWS)).to_contain_text(f"127.0.0.1:{refused_port}")
    await expect(page.get_by_label("State", exact=True)).to_have_value("FAILING")
    await page.go_back()
    await expect(page.locator(STREAM_ROWS)).to_have_count(3)

    form = await new_stream_form(page)
    await form.get_by_label("S3 bucket").check()
    await form.get_by_role("button", name="Create and send a test delivery").click()
    await expect(page.locator("#create-bucket-error")).to_be_visible()
    await settled(page)
    await screenshots(page, artifacts_dir / f"create-form-{width}")
    await assert_fits(page, "Create form")
    page.problems.assert_none()
