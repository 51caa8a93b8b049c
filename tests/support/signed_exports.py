"""Exported files with signed manifests, built with the export pipeline's own encoders, and
the ways someone could tamper with them.

``write_export`` encodes rows exactly as the pipeline does (``JsonlEncoder`` or
``CsvEncoder``, optionally gzip), writes the file and its signed manifest beside it.
``tamper`` rewrites the rows of a file (decompressing and recompressing a gzip one); with
``resign_with`` it also signs a manifest matching the new bytes, as someone holding a
trusted key would, so that the content checks (not only the SHA-256) are what catch it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logexport import manifests
from logexport.exports.encoders import FIELD_SEPARATOR, CsvEncoder, Gzip, JsonlEncoder
from logexport.kinds import LOG_KINDS, ExportKind

ORG = "0b7d4c1e-2f3a-4b5c-8d6e-7f8091a2b3c4"
OTHER_ORG = "9e8d7c6b-5a49-4838-a726-150493827160"
FROM_TIME = datetime(2026, 3, 1, tzinfo=UTC)
TO_TIME = datetime(2026, 3, 2, tzinfo=UTC)

# Cells a spreadsheet would run: the CSV encoder prefixes them with ``'``.
HOSTILE = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", " |pipe", "%0A"]


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_rows(
    count: int, *, start: datetime = FROM_TIME, step: timedelta | None = None
) -> list[dict[str, Any]]:
    """``count`` audit log rows in export order; every third pair shares a timestamp, so the
    id breaks the tie."""
    step = step or timedelta(seconds=1)
    rows = []
    for index in range(count):
        moment = start + step * (index - index % 2 if index % 3 == 0 else index)
        rows.append(
            {
                "id": str(uuid.UUID(int=(index + 1) * 7919)),
                "created_at": timestamp(moment),
                "actor_type": "USER",
                "actor_id": f"usr_{index}",
                "actor_email": f"user{index}@example.com",
                "actor_name": HOSTILE[index % len(HOSTILE)] if index % 4 == 1 else f"User {index}",
                "action": "user.login",
                "resource_type": None if index % 5 == 0 else "User",
                "resource_id": None if index % 5 == 0 else f"usr_{index}",
                "ip_address": "203.0.113.5",
                "user_agent": 'Mozilla/5.0, "quoted"',
                "metadata": json.dumps({"n": index, "note": "a, b"}),
            }
        )
    rows.sort(key=lambda r: (r["created_at"], r["id"]))
    return rows


def _packed(row: dict[str, Any]) -> tuple[Any, ...]:
    kind = LOG_KINDS[ExportKind.AUDIT_LOG]
    nullable = kind.nullable_fields
    mask = sum(1 << nullable.index(f) for f in kind.packed_fields if row[f] is None)
    packed = FIELD_SEPARATOR.join((row[f] or "").encode() for f in kind.packed_fields)
    return (packed, row["metadata"].encode(), mask)


def encode_rows(
    rows: list[dict[str, Any]], *, format: str, organization_id: str = ORG, bom: bool = False
) -> tuple[bytes, list[bytes]]:
    """The header and one encoded line per row, as the pipeline writes them."""
    encoder: JsonlEncoder | CsvEncoder
    if format == "CSV":
        encoder = CsvEncoder(ExportKind.AUDIT_LOG, organization_id, bom=bom)
    else:
        encoder = JsonlEncoder(ExportKind.AUDIT_LOG, organization_id)
    return encoder.header(), [encoder.encode([_packed(row)]) for row in rows]


def compress(data: bytes) -> bytes:
    gzip = Gzip()
    return gzip.compress(data) + gzip.flush()


@dataclass
class SignedExport:
    path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    header: bytes
    lines: list[bytes]
    compression: str
    extra: dict[str, Any] = field(default_factory=dict)

    def envelope(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_bytes())


def _sign_and_write(
    path: Path, manifest: dict[str, Any], key: Ed25519PrivateKey, manifest_path: Path
) -> dict[str, Any]:
    manifest = dict(manifest, key_id=manifests.key_id(key.public_key()))
    envelope = manifests.sign_manifest(manifest, key)
    manifest_path.write_bytes(manifests.envelope_bytes(envelope))
    return manifest


def write_export(
    directory: Path,
    key: Ed25519PrivateKey,
    rows: list[dict[str, Any]],
    *,
    format: str = "JSONL",
    compression: str = "NONE",
    bom: bool = False,
    organization_id: str = ORG,
    sequence: int = 1,
    previous_manifest_sha256: str | None = None,
    name: str | None = None,
    export_id: str | None = None,
) -> SignedExport:
    header, lines = encode_rows(rows, format=format, organization_id=organization_id, bom=bom)
    data = header + b"".join(lines)
    if compression == "GZIP":
        data = compress(data)
    extension = {"JSONL": "jsonl", "CSV": "csv"}[format] + (".gz" if compression == "GZIP" else "")
    file_name = name or f"audit-log-export-2026-03-01-to-2026-03-01.{extension}"
    path = directory / file_name
    path.write_bytes(data)
    first = manifests.RowMark(rows[0]["created_at"], rows[0]["id"]) if rows else None
    last = manifests.RowMark(rows[-1]["created_at"], rows[-1]["id"]) if rows else None
    manifest = manifests.build_manifest(
        export_id=export_id or str(uuid.uuid4()),
        organization_id=organization_id,
        kind="AUDIT_LOG",
        from_time=FROM_TIME,
        to_time=TO_TIME,
        filter={"actions": ["user.login"]},
        format=format,
        compression=compression,
        file_name=file_name,
        row_count=len(rows),
        byte_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        snapshot_at=TO_TIME + timedelta(minutes=5),
        first_row=first,
        last_row=last,
        sequence=sequence,
        previous_manifest_sha256=previous_manifest_sha256,
        key_id="",
    )
    manifest_path = directory / manifests.manifest_name(file_name)
    manifest = _sign_and_write(path, manifest, key, manifest_path)
    return SignedExport(path, manifest_path, manifest, header, lines, compression)


def resign(export: SignedExport, key: Ed25519PrivateKey, **changes: Any) -> dict[str, Any]:
    """Sign the export's manifest again with ``key``, with ``changes`` applied."""
    manifest = dict(export.manifest, **changes)
    export.manifest = _sign_and_write(export.path, manifest, key, export.manifest_path)
    return export.manifest


def tamper(
    export: SignedExport,
    change: Callable[[list[bytes]], list[bytes]],
    *,
    resign_with: Ed25519PrivateKey | None = None,
) -> None:
    """Rewrite the file with ``change`` applied to its encoded rows; with ``resign_with``,
    a manifest stating the new size and SHA-256 (and nothing else new) is signed too."""
    data = export.header + b"".join(change(list(export.lines)))
    if export.compression == "GZIP":
        data = compress(data)
    export.path.write_bytes(data)
    if resign_with is not None:
        resign(
            export,
            resign_with,
            byte_size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
