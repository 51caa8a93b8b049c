"""An auditor's commands: ``logexport keys`` and ``logexport verify`` as subprocesses, in an
environment with no ``LOGEXPORT_*`` setting, on files the export encoders wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logexport import manifests
from tests.support.signed_exports import (
    ORG,
    OTHER_ORG,
    SignedExport,
    audit_rows,
    resign,
    tamper,
    write_export,
)

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60
# Imported by none of these commands: the server, the database driver, HTTP, S3 and mail.
HEAVY = {"aioboto3", "aiobotocore", "aiosmtplib", "ariadne", "asyncpg", "botocore", "httpx",
         "jinja2", "mcp", "starlette", "uvicorn"}  # fmt: skip


def clean_environment(**extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    env.update(extra)
    return env


def logexport(*args: str, importtime: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.prefix) / "bin" / "logexport"
    command = (
        [sys.executable, str(script)]
        if script.is_file()
        else [sys.executable, "-c", "import sys; from logexport.cli import main; sys.exit(main())"]
    )
    if importtime:
        command.insert(1, "-X")
        command.insert(2, "importtime")
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=clean_environment(**env),
        cwd=REPO,
        timeout=TIMEOUT,
        check=False,
    )


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def keys_file(directory: Path, *private: Ed25519PrivateKey) -> Path:
    path = directory / "logexport-keys.json"
    path.write_text(json.dumps(manifests.jwks(k.public_key() for k in private)))
    return path


def verify_fails(export: SignedExport, keys: Path) -> str:
    result = logexport("verify", str(export.path), "--keys", str(keys))
    assert result.returncode == 1, result
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith(f"error: {export.path.name}: "), line
    return line.removeprefix(f"error: {export.path.name}: ")


@pytest.mark.parametrize(
    ("format", "compression", "bom"),
    [
        ("JSONL", "GZIP", False),
        ("JSONL", "NONE", False),
        ("CSV", "GZIP", True),
        ("CSV", "NONE", False),
    ],
)
def test_an_auditor_verifies_a_genuine_export_offline(
    tmp_path: Path, key: Ed25519PrivateKey, format: str, compression: str, bom: bool
) -> None:
    export = write_export(
        tmp_path, key, audit_rows(50), format=format, compression=compression, bom=bom
    )
    keys = keys_file(tmp_path, key)
    result = logexport("verify", str(export.path), "--keys", str(keys), importtime=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = one_line(result.stdout)
    assert summary.startswith(f"OK {export.path.name}: 50 rows of AUDIT_LOG for organization {ORG}")
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert not imported & HEAVY, sorted(imported & HEAVY)


def test_the_manifest_can_be_named_and_a_missing_one_is_a_usage_error(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    export = write_export(tmp_path, key, audit_rows(5))
    keys = keys_file(tmp_path, key)
    moved = tmp_path / "elsewhere.json"
    export.manifest_path.rename(moved)
    missing = logexport("verify", str(export.path), "--keys", str(keys))
    assert missing.returncode == 2
    assert one_line(missing.stderr).startswith("error: --manifest: ")
    named = logexport("verify", str(export.path), "--manifest", str(moved), "--keys", str(keys))
    assert named.returncode == 0, named.stderr
    assert one_line(named.stdout).startswith("OK ")


def test_verify_without_keys_or_arguments_is_a_usage_error(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    export = write_export(tmp_path, key, audit_rows(2))
    no_keys = logexport("verify", str(export.path))
    assert no_keys.returncode == 2
    assert one_line(no_keys.stderr).startswith("error: no public keys: pass --keys")
    nothing = logexport("verify")
    assert nothing.returncode == 2
    assert one_line(nothing.stderr).startswith("error: give a FILE to check, or --chain DIR")


@pytest.mark.parametrize("variant", ["JSONL-GZIP", "CSV"])
def test_each_tampering_is_caught_with_its_own_message(
    tmp_path: Path, key: Ed25519PrivateKey, variant: str
) -> None:
    format, _, compression = variant.partition("-")
    keys = keys_file(tmp_path, key)

    def fresh(name: str) -> SignedExport:
        folder = tmp_path / name
        folder.mkdir()
        return write_export(folder, key, audit_rows(30), format=format,
                            compression=compression or "NONE")  # fmt: skip

    flipped = fresh("flipped")
    data = bytearray(flipped.path.read_bytes())
    data[len(data) // 3] ^= 0x20
    flipped.path.write_bytes(bytes(data))
    assert verify_fails(flipped, keys).startswith("sha256: the file's is ")

    truncated = fresh("truncated")
    truncated.path.write_bytes(truncated.path.read_bytes()[:-10])
    assert verify_fails(truncated, keys).startswith("size: the file has ")

    removed = fresh("removed")
    tamper(removed, lambda lines: lines[:7] + lines[8:], resign_with=key)
    assert verify_fails(removed, keys) == "count: the file has 29 rows, the manifest says 30"

    def swap(lines: list[bytes]) -> list[bytes]:
        lines[11], lines[12] = lines[12], lines[11]
        return lines

    swapped = fresh("swapped")
    tamper(swapped, swap, resign_with=key)
    assert verify_fails(swapped, keys).startswith("row 13: out of order: ")

    def move(lines: list[bytes]) -> list[bytes]:
        lines[4] = lines[4].replace(ORG.encode(), OTHER_ORG.encode())
        return lines

    foreign = fresh("foreign")
    tamper(foreign, move, resign_with=key)
    assert verify_fails(foreign, keys) == f"row 5: organization '{OTHER_ORG}' is not {ORG}"

    late = fresh("late")
    last = late.manifest["last_row"]["created_at"]

    def shift(lines: list[bytes]) -> list[bytes]:
        lines[-1] = lines[-1].replace(last.encode(), b"2026-03-05T00:00:00.000000Z")
        return lines

    tamper(late, shift, resign_with=key)
    assert verify_fails(late, keys).startswith(
        "row 30: out of range: created_at 2026-03-05T00:00:00.000000Z is not in "
    )

    intruder = fresh("intruder")
    resign(intruder, Ed25519PrivateKey.generate(), row_count=31)
    assert verify_fails(intruder, keys).startswith("signature: signed by key ")


def test_keys_generate_and_public_give_the_jwks_that_verifies_across_a_rotation(
    tmp_path: Path,
) -> None:
    generated = [logexport("keys", "generate") for _ in range(2)]
    for result in generated:
        assert result.returncode == 0, result.stderr
    old_seed, new_seed = (one_line(result.stdout) for result in generated)
    assert old_seed != new_seed
    old_key = manifests.parse_signing_key(old_seed)
    new_key = manifests.parse_signing_key(new_seed)
    old_public = manifests.b64url_encode(manifests.raw_public_key(old_key.public_key()))

    before = write_export(tmp_path, old_key, audit_rows(4), name="before.jsonl")
    after = write_export(tmp_path, new_key, audit_rows(4), name="after.jsonl", sequence=2)

    published = logexport(
        "keys", "public", LOGEXPORT_SIGNING_KEY=new_seed, LOGEXPORT_VERIFY_KEYS=old_public
    )
    assert published.returncode == 0, published.stderr
    document = json.loads(published.stdout)
    assert [k["kid"] for k in document["keys"]] == [
        manifests.key_id(new_key.public_key()),
        manifests.key_id(old_key.public_key()),
    ]
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" for k in document["keys"])
    assert new_seed not in published.stdout
    keys = tmp_path / "published.json"
    keys.write_text(published.stdout)
    for export in (before, after):
        result = logexport("verify", str(export.path), "--keys", str(keys))
        assert result.returncode == 0, result.stderr
        assert one_line(result.stdout).startswith(f"OK {export.path.name}: 4 rows")

    only_new = logexport("keys", "public", LOGEXPORT_SIGNING_KEY=new_seed)
    (tmp_path / "only-new.json").write_text(only_new.stdout)
    assert verify_fails(before, tmp_path / "only-new.json").startswith("signature: signed by key ")


def test_keys_public_without_a_key_or_with_a_bad_one_is_a_configuration_error() -> None:
    unset = logexport("keys", "public")
    assert unset.returncode == 2
    assert "LOGEXPORT_SIGNING_KEY is not set" in one_line(unset.stderr)
    bad = logexport("keys", "public", LOGEXPORT_SIGNING_KEY="c2VjcmV0LXZhbHVl")
    assert bad.returncode == 2
    line = one_line(bad.stderr)
    assert line.startswith("error: LOGEXPORT_SIGNING_KEY: ") and "c2VjcmV0LXZhbHVl" not in line


def write_chain(directory: Path, key: Ed25519PrivateKey, length: int) -> list[SignedExport]:
    chain, previous = [], None
    for sequence in range(1, length + 1):
        export = write_export(directory, key, audit_rows(2), name=f"e{sequence}.jsonl.gz",
                              compression="GZIP", sequence=sequence,
                              previous_manifest_sha256=previous)  # fmt: skip
        previous = manifests.manifest_sha256(export.manifest)
        chain.append(export)
    return chain


def test_an_auditor_checks_a_chain_and_sees_a_deleted_or_reordered_manifest(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    keys = keys_file(tmp_path, key)
    intact, deleted, reordered = (tmp_path / n for n in ("intact", "deleted", "reordered"))
    for folder in (intact, deleted, reordered):
        folder.mkdir()
    write_chain(intact, key, 5)
    ok = logexport("verify", "--chain", str(intact), "--keys", str(keys))
    assert ok.returncode == 0, ok.stderr
    assert one_line(ok.stdout) == (
        f"OK chain of AUDIT_LOG exports of organization {ORG}: 5 manifests from sequence 1 "
        "to 5, contiguous, every link intact"
    )

    write_chain(deleted, key, 5)[2].manifest_path.unlink()
    gap = logexport("verify", "--chain", str(deleted), "--keys", str(keys))
    assert gap.returncode == 1
    assert one_line(gap.stderr) == (
        f"error: {deleted}: chain: sequence 3 missing between e2.jsonl.gz.manifest.json and "
        "e4.jsonl.gz.manifest.json (removed manifest)"
    )

    chain = write_chain(reordered, key, 5)
    resign(chain[3], key, sequence=5)
    resign(chain[4], key, sequence=4)
    swapped = logexport("verify", "--chain", str(reordered), "--keys", str(keys))
    assert swapped.returncode == 1
    assert one_line(swapped.stderr) == (
        f"error: {reordered}: chain: e5.jsonl.gz.manifest.json (sequence 4) does not link to "
        "e3.jsonl.gz.manifest.json (sequence 3): that manifest was altered, replaced or "
        "reordered"
    )


def test_keys_can_come_from_a_url(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    import functools
    import http.server
    import threading

    export = write_export(tmp_path, key, audit_rows(3))
    keys = keys_file(tmp_path, key)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        fetched = logexport("verify", str(export.path), "--keys", f"{url}/{keys.name}")
        assert fetched.returncode == 0, fetched.stderr
        assert one_line(fetched.stdout).startswith(f"OK {export.path.name}: 3 rows")
        missing = logexport("verify", str(export.path), "--keys", f"{url}/nothing.json")
        assert missing.returncode == 2
        assert one_line(missing.stderr).startswith(
            f"error: --keys: cannot fetch {url}/nothing.json"
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_keys_are_not_taken_over_plain_http_from_another_host(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    import http.server
    import threading

    export = write_export(tmp_path, key, audit_rows(3))
    # On the way from another host, plain http keys could be swapped for the forger's own.
    direct = logexport(
        "verify", str(export.path), "--keys", "http://keys.example.test/logexport-keys.json"
    )
    assert direct.returncode == 2
    assert one_line(direct.stderr) == (
        "error: --keys: http://keys.example.test/logexport-keys.json: keys are fetched over "
        "https:// only (or saved as a file and passed as such)"
    )

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://keys.example.test/logexport-keys.json")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/logexport-keys.json"
        redirected = logexport("verify", str(export.path), "--keys", url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert redirected.returncode == 2
    assert one_line(redirected.stderr) == (
        f"error: --keys: cannot fetch {url}: redirected to "
        "http://keys.example.test/logexport-keys.json: keys are fetched over https:// only "
        "(or saved as a file and passed as such)"
    )


def test_keys_public_help_shows_how_to_keep_a_retired_key() -> None:
    # A private seed and a public key are both 43 base64url characters: an operator who
    # put the old private key in LOGEXPORT_VERIFY_KEYS would publish it.
    shown = logexport("keys", "public", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert 'LOGEXPORT_VERIFY_KEYS="$(LOGEXPORT_SIGNING_KEY=OLD logexport keys public)"' in text
    assert "Never the old private key itself" in text
