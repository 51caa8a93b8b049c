"""Signed manifests and offline verification, on files the export encoders wrote."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logexport import manifests
from logexport.manifests import VerificationFailed
from tests.support.signed_exports import (
    FROM_TIME,
    ORG,
    OTHER_ORG,
    SignedExport,
    audit_rows,
    resign,
    tamper,
    timestamp,
    write_export,
)

VARIANTS = [
    ("JSONL", "NONE", False),
    ("JSONL", "GZIP", False),
    ("CSV", "NONE", False),
    ("CSV", "GZIP", True),
]
VARIANT_IDS = ["jsonl", "jsonl-gzip", "csv", "csv-gzip-bom"]


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def keys_of(*private: Ed25519PrivateKey) -> dict[str, Any]:
    return manifests.load_jwks(manifests.jwks(k.public_key() for k in private))


def verify(export: SignedExport, *private: Ed25519PrivateKey) -> manifests.FileSummary:
    return manifests.verify_file(export.path, export.envelope(), keys_of(*private))


def failure(export: SignedExport, *private: Ed25519PrivateKey) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as caught:
        verify(export, *private)
    return caught.value


@pytest.fixture(params=VARIANTS, ids=VARIANT_IDS)
def export(request: pytest.FixtureRequest, tmp_path: Path, key: Ed25519PrivateKey) -> SignedExport:
    format, compression, bom = request.param
    return write_export(
        tmp_path, key, audit_rows(40), format=format, compression=compression, bom=bom
    )


# ------------------------------------------------------------------------------ the format


def test_canonical_bytes_are_sorted_compact_utf8() -> None:
    data = manifests.canonical_bytes({"b": 1, "a": {"z": None, "é": "ü"}})
    assert data == '{"a":{"z":null,"é":"ü"},"b":1}'.encode()


def test_manifest_has_exactly_the_documented_fields(export: SignedExport) -> None:
    manifest = export.envelope()["manifest"]
    assert set(manifest) == manifests.MANIFEST_FIELDS | {"export_id"}
    assert manifest["version"] == 1
    assert manifest["organization_id"] == ORG
    assert manifest["from_time"] == "2026-03-01T00:00:00.000000Z"
    assert manifest["first_row"].keys() == {"created_at", "id"}
    assert manifest["previous_manifest_sha256"] is None


def test_stream_manifests_carry_a_stream_id_and_no_export_id() -> None:
    common: dict[str, Any] = {
        "organization_id": ORG, "kind": "AUDIT_LOG", "from_time": FROM_TIME,
        "to_time": FROM_TIME, "filter": None, "format": "JSONL", "compression": "GZIP",
        "file_name": "x.jsonl.gz", "row_count": 0, "byte_size": 20, "sha256": "0" * 64,
        "snapshot_at": FROM_TIME, "first_row": None, "last_row": None, "sequence": 1,
        "previous_manifest_sha256": None, "key_id": "k",
    }  # fmt: skip
    stream = manifests.build_manifest(stream_id="s-1", **common)
    assert stream["stream_id"] == "s-1" and "export_id" not in stream
    with pytest.raises(ValueError):
        manifests.build_manifest(export_id="e", stream_id="s", **common)


def test_signature_is_ed25519_over_the_canonical_bytes(
    export: SignedExport, key: Ed25519PrivateKey
) -> None:
    envelope = export.envelope()
    assert set(envelope) == {"manifest", "key_id", "signature"}
    signature = base64.urlsafe_b64decode(envelope["signature"] + "==")
    key.public_key().verify(signature, manifests.canonical_bytes(envelope["manifest"]))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert envelope["key_id"] == hashlib.sha256(raw).hexdigest()[:16]


def test_signing_key_is_read_from_its_seed_or_a_pkcs8_pem() -> None:
    seed_text = manifests.generate_signing_key()
    from_seed = manifests.parse_signing_key(seed_text)
    pem = from_seed.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    from_pem = manifests.parse_signing_key(pem)
    assert manifests.key_id(from_pem.public_key()) == manifests.key_id(from_seed.public_key())
    assert len(base64.urlsafe_b64decode(seed_text + "=")) == 32


@pytest.mark.parametrize("text", ["", "not base64!", "AAAA", "-----BEGIN PRIVATE KEY-----\nx"])
def test_a_malformed_signing_key_is_refused_without_repeating_it(text: str) -> None:
    with pytest.raises(manifests.KeyFormatError) as caught:
        manifests.parse_signing_key(text)
    assert text.strip() == "" or text not in str(caught.value)


def test_jwks_lists_okp_ed25519_keys_with_their_ids(key: Ed25519PrivateKey) -> None:
    document = manifests.jwks([key.public_key()])
    [jwk] = document["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    assert jwk["kid"] == manifests.key_id(key.public_key())
    assert manifests.load_jwks(json.dumps(document)).keys() == {jwk["kid"]}


def test_a_jwks_key_whose_kid_is_not_its_own_is_refused(key: Ed25519PrivateKey) -> None:
    document = manifests.jwks([key.public_key()])
    document["keys"][0]["kid"] = "0123456789abcdef"
    with pytest.raises(manifests.KeyFormatError, match="kid"):
        manifests.load_jwks(document)


def test_retired_keys_are_read_as_raw_keys_or_a_jwks() -> None:
    a, b = Ed25519PrivateKey.generate().public_key(), Ed25519PrivateKey.generate().public_key()
    raw = ", ".join(manifests.b64url_encode(manifests.raw_public_key(k)) for k in (a, b))
    ids = {manifests.key_id(a), manifests.key_id(b)}
    assert {manifests.key_id(k) for k in manifests.parse_verify_keys(raw)} == ids
    as_jwks = json.dumps(manifests.jwks([a, b]))
    assert {manifests.key_id(k) for k in manifests.parse_verify_keys(as_jwks)} == ids


# ------------------------------------------------------------------------------ a genuine file


def test_a_genuine_file_verifies(export: SignedExport, key: Ed25519PrivateKey) -> None:
    summary = verify(export, key)
    assert summary.row_count == 40
    assert summary.line().startswith(f"OK {export.path.name}: 40 rows of AUDIT_LOG")


def test_an_empty_export_verifies(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    for format in ("JSONL", "CSV"):
        export = write_export(tmp_path, key, [], format=format, compression="GZIP")
        assert verify(export, key).row_count == 0


def test_a_file_signed_by_a_retired_key_verifies_with_both_keys(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    old = write_export(tmp_path, key, audit_rows(5), name="old.jsonl")
    new_key = Ed25519PrivateKey.generate()
    new = write_export(tmp_path, new_key, audit_rows(5), name="new.jsonl", sequence=2)
    assert verify(old, new_key, key).row_count == 5
    assert verify(new, new_key, key).row_count == 5
    assert failure(old, new_key).check == "signature"


# ------------------------------------------------------------------------------ tampering


def test_a_flipped_byte_fails_the_sha256(export: SignedExport, key: Ed25519PrivateKey) -> None:
    data = bytearray(export.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    export.path.write_bytes(bytes(data))
    caught = failure(export, key)
    assert caught.check == "sha256"
    assert caught.message.startswith("sha256: the file's is ")


def test_a_truncated_file_fails_the_size(export: SignedExport, key: Ed25519PrivateKey) -> None:
    data = export.path.read_bytes()
    export.path.write_bytes(data[: len(data) - 7])
    caught = failure(export, key)
    assert caught.check == "size"
    assert caught.message == (
        f"size: the file has {len(data) - 7} bytes, the manifest says {len(data)}"
    )


def test_an_altered_manifest_fails_the_signature(
    export: SignedExport, key: Ed25519PrivateKey
) -> None:
    envelope = export.envelope()
    envelope["manifest"]["row_count"] = 39
    export.manifest_path.write_text(json.dumps(envelope))
    caught = failure(export, key)
    assert caught.check == "signature"
    assert "does not match its signature" in caught.message


def test_a_manifest_re_signed_with_another_key_is_refused(
    export: SignedExport, key: Ed25519PrivateKey
) -> None:
    intruder = Ed25519PrivateKey.generate()
    resign(export, intruder, row_count=39)
    caught = failure(export, key)
    assert caught.check == "signature"
    assert caught.message == (
        f"signature: signed by key {manifests.key_id(intruder.public_key())}, which is not "
        f"among the keys ({manifests.key_id(key.public_key())})"
    )


def test_a_removed_row_fails_the_sha256_and_with_a_re_signed_manifest_the_count(
    export: SignedExport, key: Ed25519PrivateKey
) -> None:
    def remove_row(lines: list[bytes]) -> list[bytes]:
        return lines[:10] + lines[11:]

    tamper(export, remove_row)
    assert failure(export, key).check in {"size", "sha256"}
    tamper(export, remove_row, resign_with=key)
    caught = failure(export, key)
    assert caught.check == "count"
    assert caught.message == "count: the file has 39 rows, the manifest says 40"


def test_two_swapped_rows_are_out_of_order(export: SignedExport, key: Ed25519PrivateKey) -> None:
    def swap(lines: list[bytes]) -> list[bytes]:
        lines[4], lines[5] = lines[5], lines[4]
        return lines

    tamper(export, swap)
    # Gzip compresses the swapped rows to another size, the plain formats to the same one.
    assert failure(export, key).check == ("size" if export.compression == "GZIP" else "sha256")
    tamper(export, swap, resign_with=key)
    caught = failure(export, key)
    assert caught.check == "row"
    assert caught.message.startswith("row 6: out of order: ")


def test_a_row_of_another_organization_is_named(
    export: SignedExport, key: Ed25519PrivateKey
) -> None:
    def move(lines: list[bytes]) -> list[bytes]:
        lines[2] = lines[2].replace(ORG.encode(), OTHER_ORG.encode())
        return lines

    tamper(export, move, resign_with=key)
    caught = failure(export, key)
    assert caught.check == "row"
    assert caught.message == f"row 3: organization '{OTHER_ORG}' is not {ORG}"


@pytest.mark.parametrize(
    ("position", "moment"),
    [(0, "2026-02-28T23:59:59.999999Z"), (-1, "2026-03-02T00:00:00.000000Z")],
)
def test_a_row_outside_the_range_is_named(
    export: SignedExport, key: Ed25519PrivateKey, position: int, moment: str
) -> None:
    row_number = 1 if position == 0 else len(export.lines)
    created = json_or_csv_created_at(export, position)

    def shift(lines: list[bytes]) -> list[bytes]:
        lines[position] = lines[position].replace(created.encode(), moment.encode())
        return lines

    tamper(export, shift, resign_with=key)
    caught = failure(export, key)
    assert caught.check == "row"
    assert caught.message == (
        f"row {row_number}: out of range: created_at {moment} is not in "
        "[2026-03-01T00:00:00.000000Z, 2026-03-02T00:00:00.000000Z)"
    )


def json_or_csv_created_at(export: SignedExport, position: int) -> str:
    return str(export.manifest["first_row" if position == 0 else "last_row"]["created_at"])


def test_a_different_first_row_is_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    rows = audit_rows(6)
    export = write_export(tmp_path, key, rows)
    resign(export, key, first_row={"created_at": rows[1]["created_at"], "id": rows[1]["id"]})
    assert failure(export, key).check == "first_row"
    resign(
        export,
        key,
        first_row={"created_at": rows[0]["created_at"], "id": rows[0]["id"]},
        last_row={"created_at": timestamp(FROM_TIME), "id": rows[0]["id"]},
    )
    caught = failure(export, key)
    assert caught.check == "last_row"
    assert caught.message.startswith("last row: the file's is (")


def test_a_row_that_is_not_json_is_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    export = write_export(tmp_path, key, audit_rows(8))

    def break_row(lines: list[bytes]) -> list[bytes]:
        lines[6] = lines[6][:-3] + b"\n"
        return lines

    tamper(export, break_row, resign_with=key)
    caught = failure(export, key)
    assert (caught.check, caught.message) == ("row", "row 7: not a JSON object")


def test_a_csv_row_with_a_missing_cell_is_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    export = write_export(tmp_path, key, audit_rows(8), format="CSV")

    def drop_cell(lines: list[bytes]) -> list[bytes]:
        lines[3] = lines[3][: lines[3].rindex(b',"{')] + b"\r\n"
        return lines

    tamper(export, drop_cell, resign_with=key)
    caught = failure(export, key)
    assert (caught.check, caught.message) == ("row", "row 4: 12 cells, expected 13")


def test_the_csv_formula_guard_and_bom_are_read(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    export = write_export(tmp_path, key, audit_rows(12), format="CSV", bom=True)
    data = export.path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b'"\'+1"' in data
    assert verify(export, key).row_count == 12


# ------------------------------------------------------------------------------ chains


def build_chain(directory: Path, key: Ed25519PrivateKey, length: int) -> list[SignedExport]:
    chain: list[SignedExport] = []
    previous = None
    for sequence in range(1, length + 1):
        export = write_export(
            directory,
            key,
            audit_rows(3),
            name=f"export-{sequence:02d}.jsonl",
            sequence=sequence,
            previous_manifest_sha256=previous,
        )
        previous = manifests.manifest_sha256(export.manifest)
        chain.append(export)
    return chain


def chain_failure(directory: Path, *private: Ed25519PrivateKey) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as caught:
        manifests.verify_chain(directory, keys_of(*private))
    return caught.value


def test_an_intact_chain_verifies(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    build_chain(tmp_path, key, 4)
    summary = manifests.verify_chain(tmp_path, keys_of(key))
    assert (summary.first_sequence, summary.last_sequence, summary.count) == (1, 4, 4)
    assert "from sequence 1 to 4" in summary.line()


def test_a_chain_starting_later_says_from_where(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    chain = build_chain(tmp_path, key, 4)
    chain[0].manifest_path.unlink()
    summary = manifests.verify_chain(tmp_path, keys_of(key))
    assert "from sequence 2 (sequence 1 not in the folder, not checked)" in summary.line()


def test_a_deleted_manifest_in_a_chain_is_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    chain = build_chain(tmp_path, key, 4)
    chain[1].manifest_path.unlink()
    caught = chain_failure(tmp_path, key)
    assert caught.check == "chain"
    assert caught.message == (
        "chain: sequence 2 missing between export-01.jsonl.manifest.json and "
        "export-03.jsonl.manifest.json (removed manifest)"
    )


def test_reordered_manifests_in_a_chain_are_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    chain = build_chain(tmp_path, key, 4)
    # Renaming files changes nothing: the order is the signed sequence.
    second, third = chain[1].manifest_path, chain[2].manifest_path
    swap = tmp_path / "swap"
    second.rename(swap)
    third.rename(second)
    swap.rename(third)
    assert manifests.verify_chain(tmp_path, keys_of(key)).count == 4
    # Swapping the sequence numbers needs a trusted key, and still breaks the links.
    resign(chain[1], key, sequence=3)
    resign(chain[2], key, sequence=2)
    caught = chain_failure(tmp_path, key)
    assert caught.check == "chain"
    assert "(sequence 2) does not link to export-01.jsonl.manifest.json (sequence 1)" in (
        caught.message
    )


def test_an_altered_manifest_in_a_chain_is_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    chain = build_chain(tmp_path, key, 4)
    envelope = chain[2].envelope()
    envelope["manifest"]["row_count"] = 2
    chain[2].manifest_path.write_text(json.dumps(envelope))
    caught = chain_failure(tmp_path, key)
    assert caught.check == "signature"
    assert caught.message.startswith("export-03.jsonl.manifest.json: signature: ")
    # Re-signed with the trusted key, the next manifest's link names it.
    resign(chain[2], key, row_count=2)
    caught = chain_failure(tmp_path, key)
    assert caught.message == (
        "chain: export-04.jsonl.manifest.json (sequence 4) does not link to "
        "export-03.jsonl.manifest.json (sequence 3): that manifest was altered, replaced "
        "or reordered"
    )


def test_a_chain_re_signed_by_another_key_is_refused(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    chain = build_chain(tmp_path, key, 2)
    resign(chain[1], Ed25519PrivateKey.generate())
    assert chain_failure(tmp_path, key).check == "signature"


def test_a_folder_mixing_organizations_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    build_chain(tmp_path, key, 1)
    write_export(tmp_path, key, audit_rows(1), organization_id=OTHER_ORG, name="other.jsonl")
    assert "mixes 2 chains" in chain_failure(tmp_path, key).message


# ------------------------------------------------------------------------------ in blocks


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few rows, so that every check also runs across block boundaries."""
    monkeypatch.setattr(manifests, "_BLOCK_SIZE", 1500)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("position", range(0, 29))
def test_swapped_rows_are_caught_wherever_the_block_boundaries_fall(
    tmp_path: Path, key: Ed25519PrivateKey, position: int
) -> None:
    export = write_export(tmp_path, key, audit_rows(30), compression="GZIP")

    def swap(lines: list[bytes]) -> list[bytes]:
        lines[position], lines[position + 1] = lines[position + 1], lines[position]
        return lines

    tamper(export, swap, resign_with=key)
    with pytest.raises(VerificationFailed) as caught:
        manifests.verify_file(export.path, export.envelope(), keys_of(key), workers=1)
    assert caught.value.message.startswith(f"row {position + 2}: out of order: ")


@pytest.mark.usefixtures("small_blocks")
def test_worker_processes_find_what_one_process_finds(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    rows = audit_rows(60)
    (tmp_path / "genuine").mkdir()
    genuine = write_export(tmp_path / "genuine", key, rows)
    summary = manifests.verify_file(genuine.path, genuine.envelope(), keys_of(key), workers=2)
    assert summary.row_count == 60

    def duplicate(lines: list[bytes]) -> list[bytes]:
        return [*lines[:33], lines[32], *lines[33:59]]

    def move(lines: list[bytes]) -> list[bytes]:
        lines[41] = lines[41].replace(ORG.encode(), OTHER_ORG.encode())
        return lines

    def break_row(lines: list[bytes]) -> list[bytes]:
        lines[50] = b"{" + lines[50]
        return lines

    expected = {
        "duplicate": (duplicate, "row 34: out of order: "),
        "move": (move, f"row 42: organization '{OTHER_ORG}' is not {ORG}"),
        "break": (break_row, "row 51: not a JSON object"),
    }
    for name, (change, message) in expected.items():
        (tmp_path / name).mkdir()
        export = write_export(tmp_path / name, key, rows)
        tamper(export, change, resign_with=key)
        for workers in (1, 2):
            with pytest.raises(VerificationFailed) as caught:
                manifests.verify_file(export.path, export.envelope(), keys_of(key), workers=workers)
            assert caught.value.message.startswith(message), (name, workers)


def test_messages_read_as_sentences(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    (tmp_path / "one").mkdir()
    one = write_export(tmp_path / "one", key, audit_rows(1))
    summary = manifests.verify_file(
        one.path, json.loads(one.manifest_path.read_text()), keys_of(key)
    )
    assert f"OK {one.path.name}: 1 row of AUDIT_LOG for organization" in summary.line()

    rows = audit_rows(3)
    (tmp_path / "moved").mkdir()
    moved = write_export(tmp_path / "moved", key, rows)
    resign(moved, key, first_row={"created_at": rows[1]["created_at"], "id": rows[1]["id"]})
    assert failure(moved, key).message == (
        f"first row: the file's is ({rows[0]['created_at']}, {rows[0]['id']}), "
        f"the manifest says ({rows[1]['created_at']}, {rows[1]['id']})"
    )

    (tmp_path / "chain").mkdir()
    chain = build_chain(tmp_path / "chain", key, 5)
    for export in chain[:3]:
        export.manifest_path.unlink()
    line = manifests.verify_chain(tmp_path / "chain", keys_of(key)).line()
    assert "from sequence 4 (sequences 1 to 3 not in the folder, not checked) to 5" in line


def test_a_chain_copied_from_hourly_folders_is_read_from_its_subfolders(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    # A stream writes <prefix>/<kind>/YYYY/MM/DD/HH/...; a copy of the prefix keeps the tree.
    chain = build_chain(tmp_path, key, 4)
    for export in chain:
        hour = tmp_path / "2026" / "03" / "01" / f"{(export.manifest['sequence'] - 1) // 2:02d}"
        hour.mkdir(parents=True, exist_ok=True)
        export.manifest_path.rename(hour / export.manifest_path.name)
    summary = manifests.verify_chain(tmp_path, keys_of(key))
    assert (summary.first_sequence, summary.last_sequence, summary.count) == (1, 4, 4)

    (tmp_path / "2026/03/01/01/export-03.jsonl.manifest.json").unlink()
    assert chain_failure(tmp_path, key).message == (
        "chain: sequence 3 missing between 2026/03/01/00/export-02.jsonl.manifest.json and "
        "2026/03/01/01/export-04.jsonl.manifest.json (removed manifest)"
    )


def test_a_mangled_envelope_says_what_is_wrong_with_it(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    export = write_export(tmp_path, key, audit_rows(2))
    genuine = json.loads(export.manifest_path.read_text())
    kid = genuine["key_id"]

    garbled = {**genuine, "signature": "!!!"}
    with pytest.raises(VerificationFailed) as caught:
        manifests.verify_file(export.path, garbled, keys_of(key))
    assert caught.value.message == "signature: the envelope's signature is not base64url"

    other = {**genuine, "manifest": {**genuine["manifest"], "key_id": "0123456789abcdef"}}
    with pytest.raises(VerificationFailed) as caught:
        manifests.verify_file(export.path, other, keys_of(key))
    assert caught.value.message == (
        f"signature: the envelope names key {kid}, the manifest key 0123456789abcdef"
    )
