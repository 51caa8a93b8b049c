"""How fast ``logexport verify`` checks a large export, offline.

Writes an audit log export of ``--rows`` rows (default 1,000,000) with the pipeline's own
JSONL or CSV encoder, optionally gzip, signs its manifest with a fresh key, then times
``manifests.verify_file`` over it and reports rows per second and peak memory.

    .venv/bin/python scripts/bench_verify.py [--rows N] [--format jsonl|csv] [--gzip]
        [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logexport import manifests
from logexport.exports.encoders import FIELD_SEPARATOR, CsvEncoder, Gzip, JsonlEncoder
from logexport.kinds import ExportKind

ORG = "0b7d4c1e-2f3a-4b5c-8d6e-7f8091a2b3c4"
START = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 10_000


def packed_rows(start: int, count: int) -> list[tuple[bytes, bytes, int]]:
    rows = []
    for index in range(start, start + count):
        moment = START + timedelta(microseconds=index * 2_000_000)
        fields = [
            str(uuid.UUID(int=index)),
            moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "USER",
            f"usr_{index % 5000}",
            f"user{index % 5000}@example.com",
            f"User {index % 5000}",
            "user.login",
            "User",
            f"usr_{index % 777}",
            "203.0.113.5",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ]
        metadata = b'{"session": "s_%d", "mfa": true}' % index
        rows.append((FIELD_SEPARATOR.join(f.encode() for f in fields), metadata, 0))
    return rows


def write_file(path: Path, rows: int, csv: bool, gzip: bool) -> tuple[int, str, str]:
    encoder = (
        CsvEncoder(ExportKind.AUDIT_LOG, ORG) if csv else JsonlEncoder(ExportKind.AUDIT_LOG, ORG)
    )
    compressor = Gzip() if gzip else None
    digest, size = hashlib.sha256(), 0
    last = ""
    with path.open("wb") as file:

        def put(data: bytes) -> None:
            nonlocal size
            if compressor is not None:
                data = compressor.compress(data)
            digest.update(data)
            size += len(data)
            file.write(data)

        put(encoder.header())
        for start in range(0, rows, BATCH):
            batch = packed_rows(start, min(BATCH, rows - start))
            put(encoder.encode(batch))
        if compressor is not None:
            tail = compressor.flush()
            digest.update(tail)
            size += len(tail)
            file.write(tail)
        last = str(rows - 1)
    return size, digest.hexdigest(), last


def _cpu_seconds() -> float:
    """User and system time of this process and of its ended children (the workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument(
        "--workers", type=int, default=None, help="JSONL parsing processes (default: automatic)"
    )
    args = parser.parse_args()

    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as directory:
        extension = args.format + (".gz" if args.gzip else "")
        path = Path(directory) / f"audit-log-export-2026-01-01-to-2026-12-31.{extension}"
        began = time.perf_counter()
        size, sha256, _ = write_file(path, args.rows, args.format == "csv", args.gzip)
        written = time.perf_counter() - began

        def mark(index: int) -> manifests.RowMark:
            moment = START + timedelta(microseconds=index * 2_000_000)
            return manifests.RowMark(
                moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), str(uuid.UUID(int=index))
            )

        manifest = manifests.build_manifest(
            export_id=str(uuid.uuid4()),
            organization_id=ORG,
            kind="AUDIT_LOG",
            from_time=START,
            to_time=START + timedelta(days=365),
            filter=None,
            format=args.format.upper(),
            compression="GZIP" if args.gzip else "NONE",
            file_name=path.name,
            row_count=args.rows,
            byte_size=size,
            sha256=sha256,
            snapshot_at=START + timedelta(days=366),
            first_row=mark(0) if args.rows else None,
            last_row=mark(args.rows - 1) if args.rows else None,
            sequence=1,
            previous_manifest_sha256=None,
            key_id=manifests.key_id(key.public_key()),
        )
        envelope = manifests.sign_manifest(manifest, key)
        keys = {manifests.key_id(key.public_key()): key.public_key()}

        load = os.getloadavg()
        cpu_before = _cpu_seconds()
        began = time.perf_counter()
        summary = manifests.verify_file(path, envelope, keys, workers=args.workers)
        elapsed = time.perf_counter() - began
        cpu = _cpu_seconds() - cpu_before
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(summary.line())
    print(
        f"{args.rows:,} rows, {size / 1e6:,.1f} MB {extension} (written in {written:.1f} s): "
        f"verified in {elapsed:.2f} s = {args.rows / elapsed:,.0f} rows/s; "
        f"peak RSS {peak_mib:,.0f} MiB (this process); load average before "
        f"{load[0]:.2f}"
    )
    # On a shared machine the wall clock depends on the other load; CPU time does not.
    print(
        f"CPU time {cpu:.2f} s (with worker processes) = {args.rows / cpu:,.0f} rows per CPU-second"
    )


if __name__ == "__main__":
    main()
