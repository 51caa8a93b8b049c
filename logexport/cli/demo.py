"""``logexport demo``: the whole story against local servers, step by step.

1. ensure the demo organization "Acme Corp" (an admin and a viewer, synthetic data loaded
   the first time only) and create a fresh API key for the admin: the demo token;
2. start ``logexport serve`` as a child process and wait for ``/readyz``;
3. request an audit log export of the last 30 days through the GraphQL API and follow it;
4. read the "export ready" email the SMTP sink saved in ``LOGEXPORT_DEV_MAIL_DIR``;
5. open its link like a person: the page, then its Download button, which redirects to a
   presigned S3 URL; save the file, verify its SHA-256 and show its first lines; save its
   signed manifest and the published keys, and check the file offline with
   ``logexport verify``;
6. stream new audit log entries to an HTTPS endpoint the demo serves on 127.0.0.1 (the
   server runs with ``LOGEXPORT_STREAM_ALLOW_PRIVATE=1`` for it) and verify the first
   delivery's HMAC signature and signed manifest (``demo_stream``).

Afterwards (not a numbered step) the server keeps running in the foreground until Ctrl-C,
unless ``--no-keep-running``.

``scripts/demo`` starts the servers and exports their settings before running this.
"""

from __future__ import annotations

import asyncio
import ctypes
import email
import email.policy
import gzip
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO, cast
from urllib.parse import urljoin, urlsplit
from uuid import UUID

import click
import httpx

from logexport.actions import Role
from logexport.cli import browser_headers
from logexport.cli.client import wait_for_export
from logexport.cli.common import EXIT_USAGE, fail, load_settings, run
from logexport.cli.progress import ProgressReporter
from logexport.client import LogExportClient
from logexport.manifests import KEYS_PATH, manifest_name

if TYPE_CHECKING:
    import asyncpg

    from logexport import identity

ORGANIZATION_NAME = "Acme Corp"
ADMIN_EMAIL = "admin@acme.example"
ADMIN_NAME = "Ada Admin"
VIEWER_EMAIL = "viewer@acme.example"
VIEWER_NAME = "Victor Viewer"
TOKEN_LIFETIME = timedelta(days=7)
EXPORT_DAYS = 30
MAIL_DIR_VARIABLE = "LOGEXPORT_DEV_MAIL_DIR"

READY_TIMEOUT = 60.0
EXPORT_TIMEOUT = 900.0
MAIL_TIMEOUT = 60.0
POLL_INTERVAL = 0.5
PREVIEW_LINES = 3
PREVIEW_WIDTH = 200
# The numbered, timed steps; keeping the server running afterwards is not one of them, so
# a run with --no-keep-running shows the same count.
TOTAL_STEPS = 6


def _say(text: str = "") -> None:
    click.echo(text)


def _detail(text: str) -> None:
    click.echo(f"      {text}")


@contextmanager
def _step(number: int, title: str) -> Iterator[None]:
    _say()
    _say(click.style(f"[{number}/{TOTAL_STEPS}] {title}", bold=True))
    started = time.monotonic()
    yield
    _detail(f"done in {time.monotonic() - started:.1f}s")


class _Indented(io.TextIOBase):
    """Writes to ``target`` with every line indented like the step details."""

    def __init__(self, target: TextIO, indent: str = "      ") -> None:
        super().__init__()
        self._target = target
        self._indent = indent
        self._line_start = True

    def isatty(self) -> bool:
        return self._target.isatty()

    def write(self, text: str) -> int:
        out = []
        for char in text:
            if self._line_start and char not in "\r\n":
                out.append(self._indent)
                self._line_start = False
            out.append(char)
            if char in "\r\n":
                self._line_start = True
        self._target.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self._target.flush()


# ---------------------------------------------------------------------------- 1. organization


@dataclass(frozen=True)
class DemoOrganization:
    id: UUID
    created: bool
    audit_entries: int
    scim_events: int
    token: str
    api_key_id: UUID


async def _ensure_user(conn: asyncpg.Connection, email_address: str, name: str) -> identity.User:
    # The database layer is imported here, not with the module, so `demo --help` needs no
    # database driver.
    from logexport import identity

    user = await identity.get_user_by_email(conn, email_address)
    return user if user is not None else await identity.create_user(conn, email_address, name)


async def _ensure_role(
    conn: asyncpg.Connection, organization_id: UUID, user: identity.User, role: Role
) -> None:
    from logexport import identity
    from logexport.policy import role_of

    current = await role_of(conn, organization_id, user.id)
    if current is None:
        await identity.add_member(conn, organization_id, user.id, role)
    elif current is not role:
        await identity.set_role(conn, organization_id, user.id, role)


async def ensure_demo_organization(
    database_url: str, *, audit_entries: int, scim_events: int, days: int
) -> DemoOrganization:
    """The demo organization, created and seeded in one transaction the first time.

    Because the organization and its rows commit together, finding the organization means
    it was seeded: an interrupted first run leaves nothing behind and the next one seeds.
    """
    from logexport import db, identity
    from logexport.seed import seed

    conn = await db.connect(database_url)
    try:
        async with conn.transaction():
            admin = await _ensure_user(conn, ADMIN_EMAIL, ADMIN_NAME)
            viewer = await _ensure_user(conn, VIEWER_EMAIL, VIEWER_NAME)
            existing = [
                org
                for org in await identity.list_organizations_for(conn, admin.id)
                if org.name == ORGANIZATION_NAME
            ]
            created = not existing
            seeded = (0, 0)
            if existing:
                organization = existing[0]
            else:
                organization = await identity.create_organization(conn, ORGANIZATION_NAME)
                end = datetime.now(UTC)
                seeded = await seed(
                    conn,
                    organization.id,
                    audit_entries=audit_entries,
                    scim_events=scim_events,
                    start=end - timedelta(days=days),
                    end=end,
                )
            await _ensure_role(conn, organization.id, admin, Role.ADMIN)
            await _ensure_role(conn, organization.id, viewer, Role.VIEWER)
            key, token = await identity.create_api_key(
                conn, admin.id, f"demo {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z", TOKEN_LIFETIME
            )
    finally:
        await conn.close()
    return DemoOrganization(organization.id, created, seeded[0], seeded[1], token, key.id)


# ---------------------------------------------------------------------------- 2. server


def _stop_with_parent() -> None:
    """Runs in the child before exec: the server must not outlive a killed demo."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _logexport_command() -> list[str]:
    script = Path(sys.executable).with_name("logexport")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from logexport.cli import main; main()"]


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, for copy and paste."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class DemoServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log_file: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 45.0) -> int:
        """Ask the server to stop, wait for it, and kill it only if it hangs."""
        if self.running():
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def start_server(port: int, log_file: Path) -> DemoServer:
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # Links in emails and the console must name the address this server listens on.
        "LOGEXPORT_BASE_URL": base_url,
        "LOGEXPORT_API_URL": base_url,
        "PYTHONUNBUFFERED": "1",
        # The demo's stream endpoint is plain http on 127.0.0.1, and delivers every few seconds.
        "LOGEXPORT_STREAM_ALLOW_PRIVATE": "1",
        "LOGEXPORT_STREAM_MIN_INTERVAL": "2s",
    }
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [*_logexport_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_stop_with_parent,
        )
    return DemoServer(process, base_url, log_file)


def wait_until_ready(server: DemoServer, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2, trust_env=False) as http:
        while True:
            if not server.running():
                fail(f"logexport serve exited early:\n{_log_tail(server.log_file)}")
            try:
                response = http.get(f"{server.base_url}/readyz")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                fail(f"logexport serve was not ready within {timeout:.0f}s ({last})")
            time.sleep(0.1)


# ---------------------------------------------------------------------------- 3. export


async def request_and_wait(
    base_url: str, token: str, organization_id: UUID
) -> Mapping[str, object]:
    to_time = datetime.now(UTC).replace(microsecond=0)
    from_time = to_time - timedelta(days=EXPORT_DAYS)
    async with LogExportClient(base_url, token) as client:
        export: Mapping[str, object] = await client.request_export(
            "AUDIT_LOG",
            organization_id,
            from_time,
            to_time,
            format="JSONL",
            compression="GZIP",
            idempotency_key=str(uuid.uuid4()),
        )
        _detail(
            f"{from_time:%Y-%m-%dT%H:%M:%SZ} (inclusive) to {to_time:%Y-%m-%dT%H:%M:%SZ} "
            "(exclusive), JSONL, gzip"
        )
        _detail(f"export {export['id']} requested as {ADMIN_EMAIL}: status {export['status']}")
        stream = _Indented(sys.stdout)
        reporter = ProgressReporter(cast(TextIO, stream), interactive=stream.isatty())
        async with asyncio.timeout(EXPORT_TIMEOUT):
            export = await wait_for_export(client, export, reporter, POLL_INTERVAL)
    return export


# ---------------------------------------------------------------------------- 4. email


@dataclass(frozen=True)
class ReceivedEmail:
    path: Path
    subject: str
    to: str
    link: str


def _plain_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    return "" if body is None else str(body.get_content())


def find_ready_email(mail_dir: Path, export_id: str) -> ReceivedEmail | None:
    """The newest saved email about ``export_id`` that carries its download link."""
    link_pattern = re.compile(
        r"https?://\S+/exports/" + re.escape(export_id) + r"/download\?token=\S+"
    )
    paths = sorted(mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in paths:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        text = _plain_text(message)
        if f"Export ID: {export_id}" not in text:
            continue
        match = link_pattern.search(text)
        if match:
            return ReceivedEmail(path, str(message["Subject"]), str(message["To"]), match.group())
    return None


async def wait_for_email(mail_dir: Path, export_id: str, timeout: float) -> ReceivedEmail:
    deadline = time.monotonic() + timeout
    while True:
        found = find_ready_email(mail_dir, export_id)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            fail(f"no email about export {export_id} reached {mail_dir} within {timeout:.0f}s")
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------- 5. download


class _FormParser(HTMLParser):
    """The first form of a page: its action and its fields; and the page's referrer policy."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}
        self.referrer_policy: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "meta" and values.get("name", "").lower() == "referrer":
            self.referrer_policy = values.get("content")
        elif tag == "form" and self.action is None:
            self.action = values.get("action", "")
            self.method = values.get("method", "get").lower()
            self._in_form = True
        elif tag == "input" and self._in_form and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    landed_on: str
    redirect_status: int | None


async def download_like_a_person(
    link: str, base_url: str, file_name: str, target_dir: Path
) -> Downloaded:
    """Open the link, then press the page's Download button, sending what a browser would.

    The POST's ``Origin``, ``Referer`` and ``Sec-Fetch-*`` follow the page's referrer policy
    (see ``browser_headers``), so this passes only where a browser's click would; the
    redirect to the bucket is followed the same way, so the link's token goes nowhere else.
    """
    async with httpx.AsyncClient(
        timeout=60, trust_env=False, headers={"User-Agent": "logexport-demo"}
    ) as http:
        page = await http.get(link)
        if page.status_code != 200:
            fail(f"the download page answered HTTP {page.status_code}")
        if file_name not in page.text:
            fail(f"the download page does not name the file {file_name}")
        _detail(f"GET  {_without_query(link)}  ->  {page.status_code}, the page names {file_name}")
        form = _FormParser()
        form.feed(page.text)
        if form.action is None or form.method != "post":
            fail("the download page has no Download form")
        action = urljoin(link, form.action)
        if browser_headers.origin_of(action) != browser_headers.origin_of(base_url):
            fail(f"the Download form posts to another origin: {_without_query(action)}")
        policy = browser_headers.page_policy(
            page.headers.get("referrer-policy"), form.referrer_policy
        )
        headers = browser_headers.form_post_headers(link, policy, action)
        sent = ", ".join(
            f"{name}: {headers[name]}" for name in ("Origin", "Sec-Fetch-Site") if name in headers
        )
        _detail(f"the page's referrer policy is {policy}, so the button's POST carries {sent}")
        target = target_dir / file_name
        redirect: int | None = None
        async with http.stream("POST", action, data=form.fields, headers=headers) as response:
            if response.is_redirect:
                redirect = response.status_code
                landed_on = urljoin(action, response.headers["location"])
                hop = browser_headers.redirect_headers(
                    link, policy, response.headers.get("referrer-policy"), landed_on
                )
            else:
                landed_on = action
                size, digest = await _save(response, target, "the Download button")
        if redirect is not None:
            async with http.stream("GET", landed_on, headers=hop) as response:
                size, digest = await _save(response, target, "the presigned URL")
    _detail(
        f"POST {_without_query(action)}  ->  "
        + (
            f"{redirect} redirect to a presigned URL: {_without_query(landed_on)}"
            if redirect
            else "200"
        )
    )
    return Downloaded(target, size, digest, _without_query(landed_on), redirect)


async def _save(response: httpx.Response, target: Path, what: str) -> tuple[int, str]:
    if response.status_code != 200:
        fail(f"{what} led to HTTP {response.status_code}")
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as out:
        async for chunk in response.aiter_bytes(64 * 1024):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verify_offline(base_url: str, export: Mapping[str, object], path: Path) -> None:
    """Check the downloaded file as an auditor would, with nothing but the file, its signed
    manifest and the public keys: ``logexport verify`` in a process without any setting."""
    manifest_text = export.get("manifest")
    if not isinstance(manifest_text, str):
        fail(f"export {export['id']} has no signed manifest")
    manifest_path = path.with_name(manifest_name(path.name))
    manifest_path.write_bytes(manifest_text.encode())
    _detail(f"saved its signed manifest (LogExport.manifest) as {manifest_path.name}")
    keys_url = base_url.rstrip("/") + KEYS_PATH
    response = httpx.get(keys_url, timeout=30, trust_env=False)
    if response.status_code != 200:
        fail(f"{keys_url} answered HTTP {response.status_code}")
    keys_path = path.parent / "logexport-keys.json"
    keys_path.write_bytes(response.content)
    _detail(f"GET  {keys_url}  ->  200, saved as {keys_path.name}")
    command = [*_logexport_command(), "verify", str(path), "--keys", str(keys_path)]
    env = {name: value for name, value in os.environ.items() if not name.startswith("LOGEXPORT_")}
    _detail(f"logexport verify {path.name} --keys {keys_path.name}  (offline, no LOGEXPORT_* set):")
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=EXPORT_TIMEOUT, check=False
    )
    if result.returncode != 0:
        fail(f"logexport verify failed: {result.stderr.strip()}")
    _detail(f"  {result.stdout.strip()}")


def _preview(line: bytes) -> str:
    text = line.decode("utf-8", errors="replace").rstrip("\n")
    return text if len(text) <= PREVIEW_WIDTH else text[: PREVIEW_WIDTH - 1] + "…"


def read_lines(path: Path) -> tuple[int, list[str]]:
    """Row count and the first lines of a gzip-compressed JSONL file."""
    count = 0
    first: list[str] = []
    with gzip.open(path, "rb") as lines:
        for line in lines:
            if count < PREVIEW_LINES:
                first.append(_preview(line))
            count += 1
    return count, first


# ---------------------------------------------------------------------------- 6. foreground


class _Terminated(Exception):
    pass


def _raise_terminated(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminated


def run_in_foreground(server: DemoServer) -> int:
    """Wait for the server; Ctrl-C or SIGTERM stop it gracefully."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        try:
            return server.process.wait()
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the server too; send it again in case it came
            # from elsewhere (kill -INT), then give it its shutdown grace.
            _say()
            _say("Stopping the server…")
            return server.stop(signal.SIGINT)
        except _Terminated:
            _say("Stopping the server…")
            return server.stop(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_next_steps(base_url: str, token: str, organization_id: UUID) -> None:
    today = datetime.now(UTC).date()
    start = today - timedelta(days=EXPORT_DAYS)
    exe = _logexport_command()
    logexport = _shown_path(Path(exe[0])) if len(exe) == 1 else "logexport"
    env = f"LOGEXPORT_API_URL={base_url} LOGEXPORT_TOKEN={token}"
    _detail(f"Console:  {base_url}/console  (sign in with the demo token)")
    _detail(f"Token:    {token}")
    _detail(f"Org ID:   {organization_id}")
    _detail("CLI:")
    _detail(
        f"  {env} {logexport} audit-log export --org {organization_id} "
        f"--from {start} --to {today} --wait --download out.jsonl"
    )
    _detail("MCP:")
    _detail(f"  stdio:  {env} {logexport} mcp")
    _detail(f"  HTTP:   {base_url}/mcp  with the header 'Authorization: Bearer <demo token>'")


# ---------------------------------------------------------------------------- command


def _mail_dir() -> Path:
    value = os.environ.get(MAIL_DIR_VARIABLE)
    if not value:
        fail(
            f"{MAIL_DIR_VARIABLE} is not set: the demo reads the email from the folder the "
            "local SMTP sink writes to (scripts/demo sets it up)",
            EXIT_USAGE,
        )
    return Path(value)


@click.command("demo")
@click.option("--audit-entries", type=click.IntRange(min=0), default=200_000, show_default=True,
              help="Audit log entries loaded when the demo organization is created.")  # fmt: skip
@click.option("--scim-events", type=click.IntRange(min=0), default=20_000, show_default=True,
              help="SCIM events loaded when the demo organization is created.")  # fmt: skip
@click.option("--days", type=click.IntRange(min=1, max=3650), default=90, show_default=True,
              help="Spread the loaded rows over this many days up to now.")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="Port for the server; a free one is used when it is taken.")  # fmt: skip
@click.option("--keep-running/--no-keep-running", default=True, show_default=True,
              help="Keep the server in the foreground afterwards (Ctrl-C stops it).")  # fmt: skip
def demo(audit_entries: int, scim_events: int, days: int, port: int, keep_running: bool) -> None:
    """Run an audit log export end to end against local servers: request, email, download."""
    try:
        # The development servers ship with the repository, not with the package.
        from devtools import services
    except ImportError:
        fail(
            "logexport demo runs from a source checkout of logexport (scripts/demo there); "
            "this installation has no devtools package",
            EXIT_USAGE,
        )
    settings = load_settings("database_url", "storage_url", "smtp_url", "mail_from", "secret_key")
    mail_dir = _mail_dir()
    run_dir = services.run_dir()
    (run_dir / "demo-downloads").mkdir(exist_ok=True)
    started = time.monotonic()
    _say("logexport demo: an audit log export from request to downloaded file")

    with _step(1, f'Demo organization "{ORGANIZATION_NAME}"'):
        org = run(
            ensure_demo_organization(
                settings.require("database_url"),
                audit_entries=audit_entries,
                scim_events=scim_events,
                days=days,
            )
        )
        if org.created:
            _detail(f'created "{ORGANIZATION_NAME}" ({org.id})')
            _detail(
                f"loaded {org.audit_entries:,} audit log entries and {org.scim_events:,} SCIM "
                f"events spread over the last {days} days"
            )
        else:
            _detail(f'reusing "{ORGANIZATION_NAME}" ({org.id}) and its data from an earlier run')
        _detail(f"admin:  {ADMIN_NAME} <{ADMIN_EMAIL}>")
        _detail(f"viewer: {VIEWER_NAME} <{VIEWER_EMAIL}>")
        _detail(
            f"new API key for {ADMIN_EMAIL}, valid {TOKEN_LIFETIME.days} days (the demo token):"
        )
        _detail(f"  {org.token}")

    with _step(2, "Start the server (logexport serve: API, console, worker)"):
        if not services.port_is_free(port):
            port = services.free_port()
        server = start_server(port, run_dir / "demo-serve.log")
        _detail(f"{server.base_url}  (pid {server.process.pid}, log {server.log_file})")
        try:
            wait_until_ready(server)
        except BaseException:
            server.stop()
            raise
        _detail("/readyz answered 200: database, migrations and the worker are ready")

    try:
        _story(server, org, mail_dir, run_dir / "demo-downloads")
        _stream_step(server, settings.require("database_url"), org)
    except BaseException:
        server.stop()
        raise
    _say()
    _say(f"Steps 1 to {TOTAL_STEPS} took {time.monotonic() - started:.1f}s.")

    if not keep_running:
        _say()
        _say("Stopping the server (--no-keep-running).")
        _detail(f"logexport serve exited with status {server.stop()}")
        _services_note()
        return

    _say()
    _say(click.style("The server keeps running: try it yourself", bold=True))
    _print_next_steps(server.base_url, org.token, org.id)
    _detail("Press Ctrl-C to stop the server.")
    code = run_in_foreground(server)
    _say(f"Server stopped (exit status {code}).")
    _services_note()


def _stream_step(server: DemoServer, database_url: str, org: DemoOrganization) -> None:
    from logexport.cli.demo_stream import StreamDemoFailed, show_stream_delivery

    with _step(6, "Stream new audit log entries to an HTTPS endpoint (a log stream)"):
        try:
            run(show_stream_delivery(server.base_url, database_url, org.id, _detail))
        except StreamDemoFailed as exc:
            fail(f"log stream: {exc}")


def _services_note() -> None:
    python = _shown_path(Path(sys.executable))
    _say(f"The local servers stay up; stop them with: {python} -m devtools.services down")


def _story(server: DemoServer, org: DemoOrganization, mail_dir: Path, downloads: Path) -> None:
    with _step(3, f"Request an audit log export of the last {EXPORT_DAYS} days (GraphQL API)"):
        export = run(request_and_wait(server.base_url, org.token, org.id))
        export_id = str(export["id"])
        if export["status"] != "COMPLETED":
            error = export.get("error")
            reason = error.get("message", "") if isinstance(error, dict) else ""
            fail(f"export {export_id} ended {export['status']}: {reason}")
        # The counts are BigInts, which travel as decimal strings.
        row_count, byte_size = int(str(export["rowCount"])), int(str(export["byteSize"]))
        file_name = str(export["fileName"])
        _detail(f"COMPLETED: {row_count:,} rows, {byte_size:,} bytes, {file_name}")

    with _step(4, "The email"):
        received = run(wait_for_email(mail_dir, export_id, MAIL_TIMEOUT))
        _detail(f"file:    {received.path}")
        _detail(f"To:      {received.to}")
        _detail(f"Subject: {received.subject}")
        _detail(f"link:    {received.link}")

    with _step(5, "Open the link and download the file like a person"):
        downloaded = run(
            download_like_a_person(received.link, server.base_url, file_name, downloads)
        )
        _detail(f"saved {downloaded.path} ({downloaded.size:,} bytes)")
        expected = str(export["sha256"]).lower()
        if downloaded.sha256 != expected:
            fail(f"SHA-256 mismatch: the file has {downloaded.sha256}, the API says {expected}")
        _detail(f"SHA-256 verified: {downloaded.sha256} (matches the API)")
        rows, first = read_lines(downloaded.path)
        if rows != row_count:
            fail(f"the file has {rows:,} lines, the API says {row_count} rows")
        _detail(f"rows: {rows:,} (matches the API); the first {len(first)} lines, decompressed:")
        for line in first:
            _detail(f"  {line}")
        verify_offline(server.base_url, export, downloaded.path)
