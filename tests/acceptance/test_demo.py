"""``logexport demo --no-keep-running`` as a person runs it, against the test servers.

Two runs on one database: the first creates and seeds the demo organization, the second
reuses it; both request an export through the API, read the email from the SMTP sink's
folder, download through the emailed link and verify the file: its SHA-256, then offline
against its signed manifest with ``logexport verify``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from devtools import services
from logexport import identity
from logexport.policy import Action, Role, role_of
from tests.support.cli import run_logexport
from tests.support.keys import TEST_SIGNING_KEY

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 180
AUDIT_ENTRIES = 300
SCIM_EVENTS = 30


@dataclass
class Result:
    code: int
    output: str


async def run_demo(env: dict[str, str], *args: str) -> Result:
    result = await run_logexport("demo", *args, env=env, timeout=TIMEOUT, merge_stderr=True)
    return Result(result.code, result.stdout)


def demo_env(database_url: str, s3, smtp_sink, run_dir: Path) -> dict[str, str]:
    assert smtp_sink.directory is not None, "the SMTP sink must save .eml files"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGEXPORT_")}
    env.update(
        {
            "LOGEXPORT_DATABASE_URL": database_url,
            "LOGEXPORT_STORAGE_URL": s3.storage_url,
            "LOGEXPORT_S3_ENDPOINT_URL": s3.endpoint_url,
            "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": s3.region,
            "LOGEXPORT_SMTP_URL": smtp_sink.url,
            "LOGEXPORT_MAIL_FROM": "logexport@example.test",
            "LOGEXPORT_SECRET_KEY": "demo-secret-key-0123456789abcdef-0123456789abcdef",
            "LOGEXPORT_SIGNING_KEY": TEST_SIGNING_KEY,
            "LOGEXPORT_DEV_MAIL_DIR": str(smtp_sink.directory),
            # Downloads and the server log go under the test's own folder.
            "LOGEXPORT_RUN_DIR": str(run_dir),
            "LOGEXPORT_WORKER_POLL_INTERVAL": "0.5s",
            "LOGEXPORT_SHUTDOWN_GRACE": "5s",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


_STEP = re.compile(r"^\[(\d+)/(\d+)\] \S", re.MULTILINE)
_VERIFIED = re.compile(r"SHA-256 verified: ([0-9a-f]{64})")
_SAVED = re.compile(r"saved (\S+) \(([\d,]+) bytes\)")
_TOKEN = re.compile(r"^\s+(lex_\S+)$", re.MULTILINE)
_ROWS = re.compile(r"rows: ([\d,]+) \(matches the API\)")
# The one line of `logexport verify` run offline on the download.
_OFFLINE = re.compile(
    r"^\s+OK (\S+): (\d+) rows of AUDIT_LOG for organization [0-9a-f-]{36} from \S+ to \S+, "
    r"export [0-9a-f-]{36}, sequence (\d+), sha256 ([0-9a-f]{64}), signed by key [0-9a-f]{16}$",
    re.MULTILINE,
)


def shown_first_lines(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "lines, decompressed:" in line)
    return [line.strip() for line in lines[start + 1 : start + 4]]


def check_story(result: Result) -> tuple[Path, str]:
    """The output tells the whole story; returns the saved file and its verified digest."""
    assert result.code == 0, result.output
    output = result.output
    assert "/readyz answered 200" in output, output
    assert "COMPLETED" in output
    assert "Subject: Your audit log export is ready" in output
    assert "To:      Ada Admin <admin@acme.example>" in output
    assert re.search(r"link:\s+http://127\.0\.0\.1:\d+/exports/[0-9a-f-]+/download\?token=", output)
    assert re.search(r"->  200, the page names audit-log-export-\S+\.jsonl\.gz", output), output
    assert re.search(r"->  303 redirect to a presigned URL: http://127\.0\.0\.1:\d+/", output)
    verified = _VERIFIED.search(output)
    saved = _SAVED.search(output)
    rows = _ROWS.search(output)
    assert verified and saved and rows, output
    assert "logexport serve exited with status 0" in output
    # Every step shown is numbered [n/N] in order, N is how many there are, and the
    # closing line counts the same steps.
    steps = [(int(n), int(total)) for n, total in _STEP.findall(output)]
    assert steps, output
    assert [n for n, _ in steps] == list(range(1, len(steps) + 1)), steps
    assert {total for _, total in steps} == {len(steps)}, steps
    assert re.search(rf"^Steps 1 to {len(steps)} took \d+\.\ds\.$", output, re.MULTILINE), output
    # The log stream: one delivery at the demo's endpoint, its HMAC and manifest verified.
    stream = r"sequence \d+: [1-9]\d* rows, HMAC signature verified, manifest signed by key \w{16}"
    assert re.search(stream + " verified", output), output

    path = Path(saved.group(1))
    data = path.read_bytes()
    assert len(data) == int(saved.group(2).replace(",", ""))
    assert hashlib.sha256(data).hexdigest() == verified.group(1)
    file_lines = gzip.decompress(data).decode().splitlines()
    assert len(file_lines) == int(rows.group(1).replace(",", ""))

    # Checked offline against its signed manifest and the keys the server publishes.
    offline = _OFFLINE.search(output)
    assert offline, output
    assert offline.group(1) == path.name
    assert int(offline.group(2)) == len(file_lines)
    assert offline.group(4) == verified.group(1)
    assert path.with_name(path.name + ".manifest.json").is_file()
    assert (path.parent / "logexport-keys.json").is_file()

    first = shown_first_lines(output)
    assert len(first) == 3
    for shown, actual in zip(first, file_lines, strict=False):
        # Long lines are cut for the screen; what is shown is the file's own text.
        assert actual.startswith(shown.rstrip("…"))
        assert shown.startswith('{"id":')
    return path, verified.group(1)


async def test_demo_runs_end_to_end_twice_reusing_the_organization(
    database_url, pool: asyncpg.Pool, s3, smtp_sink, tmp_path
):
    run_dir = tmp_path / "run"
    env = demo_env(database_url, s3, smtp_sink, run_dir)
    args = (
        "--no-keep-running",
        "--audit-entries",
        str(AUDIT_ENTRIES),
        "--scim-events",
        str(SCIM_EVENTS),
        "--port",
        str(services.free_port()),
    )

    first = await run_demo(env, *args)
    path, _ = check_story(first)
    assert f"loaded {AUDIT_ENTRIES} audit log entries and {SCIM_EVENTS} SCIM events" in (
        first.output
    )
    assert path.parent == run_dir / "demo-downloads"
    # Seeded over 90 days, exported for the last 30: roughly a third of the entries.
    rows = int(_ROWS.search(first.output).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 40 <= rows <= 200, rows

    second = await run_demo(env, *args)
    check_story(second)
    # Both runs' exports are in the organization's chain, one after the other.
    sequences = [int(_OFFLINE.search(run.output).group(3)) for run in (first, second)]  # type: ignore[union-attr]
    assert sequences == [1, 2]
    assert 'reusing "Acme Corp"' in second.output
    assert "of an earlier demo run" in second.output  # its stream's endpoint is gone
    assert "SCIM events spread over" not in second.output
    first_token, second_token = _TOKEN.findall(first.output)[0], _TOKEN.findall(second.output)[0]
    assert first_token != second_token

    async with pool.acquire() as conn:
        admin = await identity.get_user_by_email(conn, "admin@acme.example")
        viewer = await identity.get_user_by_email(conn, "viewer@acme.example")
        assert admin is not None and viewer is not None
        orgs = await identity.list_organizations_for(conn, admin.id)
        assert [org.name for org in orgs] == ["Acme Corp"]
        assert await role_of(conn, orgs[0].id, admin.id) is Role.ADMIN
        assert await role_of(conn, orgs[0].id, viewer.id) is Role.VIEWER
        assert len(await identity.list_api_keys(conn, admin.id)) == 2
        # Each run's token works, and each run's download went through the button.
        for token in (first_token, second_token):
            assert await identity.authenticate(conn, token) is not None
        downloads = await conn.fetchval(
            "SELECT count(*) FROM audit_log_entries WHERE organization_id = $1 AND action = $2",
            orgs[0].id,
            Action.LOG_EXPORT_DOWNLOAD.value,
        )
        assert downloads == 2
        exports = await conn.fetch("SELECT status, format, compression FROM log_exports")
        assert [tuple(r) for r in exports] == [("COMPLETED", "JSONL", "GZIP")] * 2


async def test_demo_without_a_mail_folder_says_what_is_missing(
    database_url, s3, smtp_sink, tmp_path
):
    env = demo_env(database_url, s3, smtp_sink, tmp_path / "run")
    del env["LOGEXPORT_DEV_MAIL_DIR"]
    result = await run_demo(env, "--no-keep-running")
    assert result.code == 2
    assert "LOGEXPORT_DEV_MAIL_DIR is not set" in result.output
