"""``logexport verify`` mistakes an auditor can make, as subprocesses: a chain folder that
holds no manifest is a usage error, and the help says what a missing manifest means."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.acceptance.test_verify_cli import keys_file, logexport, one_line


def test_a_chain_folder_without_manifests_is_a_usage_error(tmp_path: Path) -> None:
    keys = keys_file(tmp_path, Ed25519PrivateKey.generate())
    empty = tmp_path / "empty"
    (empty / "2026" / "01").mkdir(parents=True)
    (empty / "2026" / "01" / "e1.jsonl.gz").write_bytes(b"not a manifest")

    result = logexport("verify", "--chain", str(empty), "--keys", str(keys))

    assert result.returncode == 2, result
    assert result.stdout == ""
    assert one_line(result.stderr).startswith(f"error: --chain: no manifests in {empty}")


def test_verify_help_says_what_happens_without_the_manifest_beside_the_file() -> None:
    result = logexport("verify", "--help", COLUMNS="200")

    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "FILE.manifest.json" in text
    assert "When it is missing, nothing is checked and verify exits with 2" in text
    assert "exit 2 on a usage error" in text
