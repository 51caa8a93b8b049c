"""An auditor's commands as subprocesses against a running ``logexport serve``: the keys
fetched over HTTP, ``export download`` writing the file and its manifest after checking
one against the other, ``logexport verify`` on what was saved — across a key rotation, and
refusing a file that is not the one signed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from logexport import manifests
from logexport.config import Settings
from tests.support.cli import Api, Result, api, run_logexport, serving
from tests.support.world import export_status

COMMAND_TIMEOUT = 90
OLD_KEY = manifests.generate_signing_key()
NEW_KEY = manifests.generate_signing_key()


def kid(seed: str) -> str:
    return manifests.key_id(manifests.parse_signing_key(seed).public_key())


def public_key(seed: str) -> Ed25519PublicKey:
    return manifests.parse_signing_key(seed).public_key()


def public_half(seed: str) -> str:
    key = manifests.parse_signing_key(seed).public_key()
    return manifests.b64url_encode(manifests.raw_public_key(key))


async def cli(*args: str, env: dict[str, str]) -> Result:
    return await run_logexport(*args, env=env, timeout=COMMAND_TIMEOUT)


def error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


async def export_and_download(server: Api, env: dict[str, str], day: str, target: Path) -> str:
    """``audit-log export --download`` of one UTC day; the export's id."""
    org = str(server.world.organization_id)
    done = await cli(
        "audit-log", "export", "--org", org, "--from", day, "--to", day,
        "--download", str(target), env=env,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    # The summary line of the check made against the signed manifest.
    assert f"OK {target.name}: " in done.stdout, done.stdout
    assert target.with_name(target.name + ".manifest.json").is_file()
    envelope = json.loads(target.with_name(target.name + ".manifest.json").read_text())
    return str(envelope["manifest"]["export_id"])


async def test_files_signed_before_a_rotation_verify_with_the_published_keys(
    pool, settings: Settings, s3, tmp_path: Path
):
    before = settings.derive(signing_key=OLD_KEY, verify_keys=None)
    after = settings.derive(signing_key=NEW_KEY, verify_keys=public_half(OLD_KEY))
    files = tmp_path / "files"
    files.mkdir()
    old_file, new_file = files / "jan-1.jsonl", files / "jan-2.jsonl"
    (tmp_path / "before").mkdir()

    async with api(pool, before, tmp_path / "before") as server:
        env = server.env()
        await export_and_download(server, env, "2026-01-01", old_file)
        async with httpx.AsyncClient() as http:
            published = (await http.get(server.url + manifests.KEYS_PATH)).json()
        assert [key["kid"] for key in published["keys"]] == [kid(OLD_KEY)]

    # The key is rotated; the old one is kept among the published keys only.
    (tmp_path / "after").mkdir()
    async with serving(after, tmp_path / "after") as url:
        rotated = Api(url, server.world, server.home)
        env = rotated.env()
        await export_and_download(rotated, env, "2026-01-02", new_file)
        keys_url = url + manifests.KEYS_PATH
        async with httpx.AsyncClient() as http:
            response = await http.get(keys_url)
        assert [key["kid"] for key in response.json()["keys"]] == [kid(NEW_KEY), kid(OLD_KEY)]

        old = await cli("verify", str(old_file), "--keys", keys_url, env=env)
        new = await cli("verify", str(new_file), "--keys", keys_url, env=env)
        chain = tmp_path / "chain"
        chain.mkdir()
        for path in (old_file, new_file):
            manifest = path.with_name(path.name + ".manifest.json")
            shutil.copy(manifest, chain / manifest.name)
        chained = await cli("verify", "--chain", str(chain), "--keys", keys_url, env=env)

    assert old.code == 0, old.stderr
    assert old.stdout.startswith(f"OK {old_file.name}: ")
    assert f"signed by key {kid(OLD_KEY)}" in old.stdout
    assert new.code == 0, new.stderr
    assert f"signed by key {kid(NEW_KEY)}" in new.stdout
    assert chained.code == 0, chained.stderr
    assert "2 manifests from sequence 1 to 2" in chained.stdout

    # Without the retired key among the published ones, the old file would not verify.
    only_new = tmp_path / "only-new.json"
    only_new.write_text(json.dumps(manifests.jwks([public_key(NEW_KEY)])))
    refused = await cli("verify", str(old_file), "--keys", str(only_new), env=env)
    assert refused.code == 1
    assert "signature" in error_line(refused)


async def test_export_download_keeps_nothing_when_the_file_or_manifest_was_tampered_with(
    pool, settings: Settings, s3, tmp_path: Path
):
    signed = settings.derive(signing_key=OLD_KEY, verify_keys=None)
    async with api(pool, signed, tmp_path) as server:
        env = server.env()
        first = tmp_path / "first.jsonl"
        export_id = await export_and_download(server, env, "2026-01-01", first)
        row = await export_status(pool, export_id)
        key = f"exports/{row['storage_key']}"
        genuine = s3.get(key)
        assert first.read_bytes() == genuine

        again = tmp_path / "again.jsonl"
        downloaded = await cli("export", "download", export_id, "-o", str(again), env=env)
        assert downloaded.code == 0, downloaded.stderr
        assert again.read_bytes() == genuine
        manifest_text = again.with_name("again.jsonl.manifest.json").read_text()
        assert manifest_text == row["manifest"]
        assert f"sequence {row['manifest_sequence']}" in downloaded.stdout
        shown = await cli("export", "show", export_id, env=env)
        assert shown.code == 0, shown.stderr
        assert f"manifest   sequence 1, signed by key {kid(OLD_KEY)}" in shown.stdout

        # The stored object is replaced by one of the same size with one byte changed.
        flipped = bytearray(genuine)
        flipped[len(flipped) // 2] ^= 0x01
        s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(flipped))
        tampered = tmp_path / "tampered.jsonl"
        mismatch = await cli("export", "download", export_id, "-o", str(tampered), env=env)
        assert mismatch.code == 1
        line = error_line(mismatch)
        assert "signed manifest: sha256: the file's is " in line, line
        assert not tampered.exists()
        assert not tampered.with_name("tampered.jsonl.manifest.json").exists()
        assert leftovers(tmp_path) == []

        # The file is genuine again; the manifest in the database is re-signed by a key
        # the server does not publish.
        s3.client().put_object(Bucket=s3.bucket, Key=key, Body=genuine)
        envelope = json.loads(row["manifest"])
        forged = dict(envelope["manifest"], key_id=kid(NEW_KEY))
        resigned = manifests.sign_manifest(forged, manifests.parse_signing_key(NEW_KEY))
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE log_exports SET manifest = $2 WHERE id = $1::uuid",
                export_id,
                json.dumps(resigned),
            )
        resigned_target = tmp_path / "resigned.jsonl"
        refused = await cli("export", "download", export_id, "-o", str(resigned_target), env=env)
        assert refused.code == 1
        assert f"signature: signed by key {kid(NEW_KEY)}, which is not among" in error_line(refused)
        assert not resigned_target.exists()
        assert leftovers(tmp_path) == []

        # An auditor who trusts that key (wrongly) gets the file: --keys is what decides.
        trusting = tmp_path / "trusting.json"
        trusting.write_text(json.dumps(manifests.jwks([public_key(NEW_KEY)])))
        pinned = tmp_path / "pinned.jsonl"
        accepted = await cli(
            "export", "download", export_id, "-o", str(pinned), "--keys", str(trusting), env=env
        )
        assert accepted.code == 0, accepted.stderr
        assert pinned.read_bytes() == genuine

        # An export with no manifest (completed before manifests were signed): checked
        # against the API's SHA-256 alone, and said so.
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE log_exports SET manifest = NULL WHERE id = $1::uuid", export_id
            )
        unsigned = tmp_path / "unsigned.jsonl"
        plain = await cli("export", "download", export_id, "-o", str(unsigned), env=env)
        assert plain.code == 0, plain.stderr
        assert "SHA-256 verified; the export has no signed manifest" in plain.stdout
        assert unsigned.read_bytes() == genuine
        assert not unsigned.with_name("unsigned.jsonl.manifest.json").exists()
