"""Signed manifests of exported files, and their verification without the service.

A manifest states what one exported file is (its organization, kind, range, filter,
format, size, SHA-256, row count, first and last row) and where it sits in its chain: one
organization's exports of one kind, or one log stream, numbered 1, 2, 3, … in commit order,
each manifest carrying the SHA-256 of the previous one. It is signed with Ed25519 over its
canonical JSON bytes and stored beside the file as ``<file name>.manifest.json``, in an
envelope ``{"manifest": …, "key_id": …, "signature": <base64url>}``.

Verification needs only the file, its manifest and the public keys (a JWKS document), so
this module imports neither the database nor storage nor any server stack: an auditor runs
it from a fresh virtualenv. A file is checked in one streaming pass with bounded memory;
the first failing check is reported, in this order: signature, size, SHA-256, then the
content (decompressed, every row parsed, the count, each row's organization and time
inside the range, ``(created_at, id)`` order, the first and last rows).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from logexport.kinds import LOG_KINDS, ExportKind

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
# Where a server publishes its public keys (a JWKS document), relative to its base URL.
KEYS_PATH = "/.well-known/logexport-keys.json"

FORMATS = ("JSONL", "CSV")
COMPRESSIONS = ("NONE", "GZIP")

# What a manifest holds besides ``export_id`` (or, for a log stream, ``stream_id``).
MANIFEST_FIELDS = frozenset(
    {
        "version", "organization_id", "kind", "from_time", "to_time", "filter", "format",
        "compression", "file_name", "row_count", "byte_size", "sha256", "snapshot_at",
        "first_row", "last_row", "sequence", "previous_manifest_sha256", "key_id",
    }
)  # fmt: skip

# Timestamps in files and manifests always have six fractional digits and a ``Z``, so
# comparing them as text compares the instants.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", re.ASCII)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*=*", re.ASCII)
_READ_SIZE = 1 << 20
_BLOCK_SIZE = 4 << 20
_CSV_FIELD_LIMIT = 16 << 20
_PARALLEL_ROWS = 200_000


class VerificationFailed(Exception):
    """A check failed: ``check`` names it (``signature``, ``size``, ``sha256``, ``row``, …);
    the message says what was found, starting with the check or the row."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message

    def __reduce__(self) -> tuple[type[VerificationFailed], tuple[str, str]]:
        # Raised in worker processes too, and pickled back.
        return (VerificationFailed, (self.check, self.message))


class KeyFormatError(ValueError):
    """A key or keys document that cannot be read; the message never repeats the key."""


# ------------------------------------------------------------------------------ manifests


@dataclass(frozen=True)
class RowMark:
    """A row's place in an export's order."""

    created_at: str
    id: str

    def as_json(self) -> dict[str, str]:
        return {"created_at": self.created_at, "id": self.id}


def _timestamp(moment: datetime | str) -> str:
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        raise ValueError("naive datetimes have no defined instant")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_manifest(
    *,
    organization_id: str,
    kind: str,
    from_time: datetime | str,
    to_time: datetime | str,
    filter: Mapping[str, Any] | None,
    format: str,
    compression: str,
    file_name: str,
    row_count: int,
    byte_size: int,
    sha256: str,
    snapshot_at: datetime | str,
    first_row: RowMark | None,
    last_row: RowMark | None,
    sequence: int,
    previous_manifest_sha256: str | None,
    key_id: str,
    export_id: str | None = None,
    stream_id: str | None = None,
) -> dict[str, Any]:
    """A manifest as a plain JSON object: of an export (``export_id``) or of a stream
    delivery (``stream_id``), never both."""
    if (export_id is None) == (stream_id is None):
        raise ValueError("a manifest names either an export_id or a stream_id")
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "organization_id": str(organization_id),
        "kind": str(kind),
        "from_time": _timestamp(from_time),
        "to_time": _timestamp(to_time),
        "filter": dict(filter) if filter is not None else None,
        "format": str(format),
        "compression": str(compression),
        "file_name": file_name,
        "row_count": row_count,
        "byte_size": byte_size,
        "sha256": sha256,
        "snapshot_at": _timestamp(snapshot_at),
        "first_row": first_row.as_json() if first_row is not None else None,
        "last_row": last_row.as_json() if last_row is not None else None,
        "sequence": sequence,
        "previous_manifest_sha256": previous_manifest_sha256,
        "key_id": key_id,
    }
    if export_id is not None:
        manifest["export_id"] = str(export_id)
    else:
        manifest["stream_id"] = str(stream_id)
    return manifest


def canonical_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The bytes that are signed, and hashed for the next manifest's chain link."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_sha256(manifest: Mapping[str, Any]) -> str:
    """What the next manifest of the chain stores as ``previous_manifest_sha256``."""
    return hashlib.sha256(canonical_bytes(manifest)).hexdigest()


def manifest_name(file_name: str) -> str:
    return file_name + MANIFEST_SUFFIX


# ------------------------------------------------------------------------------ keys


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    text = text.strip()
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def generate_signing_key() -> str:
    """A new private key as ``LOGEXPORT_SIGNING_KEY`` takes it: base64url of the seed."""
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return b64url_encode(seed)


def parse_signing_key(text: str) -> Ed25519PrivateKey:
    """``LOGEXPORT_SIGNING_KEY``: base64url of the 32-byte Ed25519 seed, or a PKCS#8 PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise KeyFormatError("not a readable unencrypted PKCS#8 PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFormatError("the PEM key is not an Ed25519 key")
        return key
    try:
        seed = b64url_decode(text)
    except ValueError:
        raise KeyFormatError(
            "expected the base64url of a 32-byte Ed25519 seed or a PKCS#8 PEM"
        ) from None
    if len(seed) != 32:
        raise KeyFormatError(f"the seed has {len(seed)} bytes, an Ed25519 seed has 32")
    return Ed25519PrivateKey.from_private_bytes(seed)


def parse_public_key(text: str) -> Ed25519PublicKey:
    """One public key: base64url of the raw 32 bytes, or a SubjectPublicKeyInfo PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError):
            raise KeyFormatError("not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError("the PEM key is not an Ed25519 key")
        return key
    try:
        raw = b64url_decode(text)
    except ValueError:
        raise KeyFormatError("expected the base64url of a 32-byte Ed25519 public key") from None
    if len(raw) != 32:
        raise KeyFormatError(f"the public key has {len(raw)} bytes, an Ed25519 key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def parse_verify_keys(text: str) -> list[Ed25519PublicKey]:
    """``LOGEXPORT_VERIFY_KEYS``: retired public keys, as a JWKS document or as base64url
    raw keys separated by commas or whitespace."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("{"):
        return list(load_jwks(text).values())
    return [parse_public_key(part) for part in re.split(r"[,\s]+", text) if part]


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(raw_public_key(key)),
        "kid": key_id(key),
        "alg": "EdDSA",
        "use": "sig",
    }


def jwks(keys: Iterable[Ed25519PublicKey]) -> dict[str, list[dict[str, str]]]:
    """The JWKS document of ``keys``, each once, in the order given."""
    seen: dict[str, dict[str, str]] = {}
    for key in keys:
        jwk = public_jwk(key)
        seen.setdefault(jwk["kid"], jwk)
    return {"keys": list(seen.values())}


def load_jwks(document: str | bytes | Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document by key id. Other key types are skipped; a key
    whose ``kid`` is not the id of its ``x`` is refused."""
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except (ValueError, UnicodeDecodeError):
            raise KeyFormatError("the keys document is not JSON") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeyFormatError('the keys document has no "keys" list (expected a JWKS)')
    keys: dict[str, Ed25519PublicKey] = {}
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, Mapping):
            raise KeyFormatError(f"keys[{index}] is not an object")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        x = jwk.get("x")
        if not isinstance(x, str):
            raise KeyFormatError(f'keys[{index}] has no "x"')
        key = parse_public_key(x)
        kid = key_id(key)
        if jwk.get("kid") is not None and jwk.get("kid") != kid:
            raise KeyFormatError(f"keys[{index}]: kid {jwk.get('kid')!r} is not the id of its key")
        keys[kid] = key
    if not keys:
        raise KeyFormatError("the keys document holds no Ed25519 key")
    return keys


# ------------------------------------------------------------------------------ signing


def sign_manifest(manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The envelope of ``manifest``, signed by ``key``, whose id the manifest must carry."""
    kid = key_id(key.public_key())
    if manifest.get("key_id") != kid:
        raise ValueError(f"the manifest names key {manifest.get('key_id')!r}, not {kid}")
    signature = key.sign(canonical_bytes(manifest))
    return {"manifest": dict(manifest), "key_id": kid, "signature": b64url_encode(signature)}


def envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    """The ``.manifest.json`` file: readable JSON; the signature covers the canonical
    bytes of the manifest, not this layout."""
    return (json.dumps(envelope, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def read_envelope(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationFailed(
            "manifest", f"manifest: cannot read {path}: {exc.strerror}"
        ) from None
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise VerificationFailed("manifest", f"manifest: {path.name} is not JSON") from None
    if not isinstance(envelope, dict):
        raise VerificationFailed("manifest", f"manifest: {path.name} is not a JSON object")
    return envelope


def verify_envelope(
    envelope: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]
) -> dict[str, Any]:
    """The manifest of a correctly signed envelope, its fields checked; else
    ``VerificationFailed("signature" | "manifest", …)``."""
    manifest = envelope.get("manifest")
    signature = envelope.get("signature")
    kid = envelope.get("key_id")
    if not isinstance(manifest, dict) or not isinstance(signature, str) or not isinstance(kid, str):
        raise VerificationFailed(
            "manifest", 'manifest: expected {"manifest": {…}, "key_id": "…", "signature": "…"}'
        )
    if manifest.get("key_id") != kid:
        raise VerificationFailed(
            "signature",
            f"signature: the envelope names key {kid}, the manifest key {manifest.get('key_id')}",
        )
    key = keys.get(kid)
    if key is None:
        known = ", ".join(sorted(keys)) or "none"
        raise VerificationFailed(
            "signature", f"signature: signed by key {kid}, which is not among the keys ({known})"
        )
    try:
        raw_signature = b64url_decode(signature)
    except ValueError:
        raise VerificationFailed(
            "signature", "signature: the envelope's signature is not base64url"
        ) from None
    try:
        key.verify(raw_signature, canonical_bytes(manifest))
    except (InvalidSignature, ValueError):
        raise VerificationFailed(
            "signature", f"signature: the manifest does not match its signature by key {kid}"
        ) from None
    _check_manifest_fields(manifest)
    return manifest


def _check_manifest_fields(manifest: Mapping[str, Any]) -> None:
    def bad(message: str) -> VerificationFailed:
        return VerificationFailed("manifest", f"manifest: {message}")

    if manifest.get("version") != MANIFEST_VERSION:
        raise bad(f"version {manifest.get('version')!r} is not {MANIFEST_VERSION}")
    missing = sorted(MANIFEST_FIELDS - manifest.keys())
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    if ("export_id" in manifest) == ("stream_id" in manifest):
        raise bad("expected exactly one of export_id and stream_id")
    if manifest["kind"] not in {k.value for k in LOG_KINDS}:
        raise bad(f"unknown kind {manifest['kind']!r}")
    if manifest["format"] not in FORMATS:
        raise bad(f"unknown format {manifest['format']!r}")
    if manifest["compression"] not in COMPRESSIONS:
        raise bad(f"unknown compression {manifest['compression']!r}")
    for name in ("from_time", "to_time", "snapshot_at"):
        if not isinstance(manifest[name], str) or not _TIMESTAMP.fullmatch(manifest[name]):
            raise bad(f"{name} is not a UTC timestamp with six fractional digits")
    for name in ("row_count", "byte_size", "sequence"):
        value = manifest[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(f"{name} is not a non-negative integer")
    if manifest["sequence"] < 1:
        raise bad("sequence starts at 1")
    if not isinstance(manifest["sha256"], str) or not _SHA256_HEX.fullmatch(manifest["sha256"]):
        raise bad("sha256 is not 64 lower-case hex digits")
    previous = manifest["previous_manifest_sha256"]
    if previous is not None and not (isinstance(previous, str) and _SHA256_HEX.fullmatch(previous)):
        raise bad("previous_manifest_sha256 is neither null nor 64 lower-case hex digits")
    for name in ("first_row", "last_row"):
        mark = manifest[name]
        if mark is not None and not (
            isinstance(mark, dict)
            and isinstance(mark.get("created_at"), str)
            and isinstance(mark.get("id"), str)
        ):
            raise bad(f'{name} is neither null nor {{"created_at": …, "id": …}}')
    if (manifest["first_row"] is None) != (manifest["row_count"] == 0):
        raise bad("first_row and row_count disagree")


# ------------------------------------------------------------------------------ files


@dataclass(frozen=True)
class FileSummary:
    """What a verified file is, as the one-line summary states it."""

    file_name: str
    manifest: dict[str, Any]

    @property
    def row_count(self) -> int:
        return int(self.manifest["row_count"])

    def line(self) -> str:
        m = self.manifest
        owner = f"export {m['export_id']}" if "export_id" in m else f"stream {m['stream_id']}"
        rows = "1 row" if m["row_count"] == 1 else f"{m['row_count']} rows"
        return (
            f"OK {self.file_name}: {rows} of {m['kind']} for organization "
            f"{m['organization_id']} from {m['from_time']} to {m['to_time']}, {owner}, "
            f"sequence {m['sequence']}, sha256 {m['sha256']}, signed by key {m['key_id']}"
        )


class _HashingReader(io.RawIOBase):
    """A file read once: every byte that passes through is counted and hashed."""

    def __init__(self, file: io.BufferedReader) -> None:
        self._file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._file.readinto(buffer)
        if count:
            view = memoryview(buffer)[:count]
            self.sha256.update(view)
            self.size += count
        return count or 0


class _RowChecker:
    """Each row's organization, time in ``[from_time, to_time)`` and strict
    ``(created_at, id)`` order, counting rows from ``before``; keeps the first and last."""

    def __init__(self, organization_id: str, start: str, end: str, before: int = 0) -> None:
        self.organization_id = organization_id
        self.start = start
        self.end = end
        self.count = before
        self.first: tuple[str, str] | None = None
        self.last: tuple[str, str] = ("", "")

    def check(self, rows: list[tuple[Any, Any, Any]]) -> None:
        """``rows`` as ``(id, organization_id, created_at)``."""
        organization_id, start, end, match = (
            self.organization_id,
            self.start,
            self.end,
            _TIMESTAMP.fullmatch,
        )
        count, last = self.count, self.last
        try:
            for row_id, org, created in rows:
                count += 1
                if org != organization_id:
                    raise VerificationFailed(
                        "row", f"row {count}: organization {org!r} is not {organization_id}"
                    )
                if created.__class__ is not str or not match(created):
                    raise VerificationFailed(
                        "row", f"row {count}: created_at {created!r} is not a UTC timestamp"
                    )
                if not start <= created < end:
                    raise VerificationFailed(
                        "row",
                        f"row {count}: out of range: created_at {created} is not in "
                        f"[{start}, {end})",
                    )
                if row_id.__class__ is not str:
                    raise VerificationFailed("row", f"row {count}: id is not a string")
                mark = (created, row_id)
                if mark <= last:
                    raise _out_of_order(count, mark, last)
                last = mark
        finally:
            self.count, self.last = count, last
        if self.first is None and rows:
            self.first = (rows[0][2], rows[0][0])


def _out_of_order(row: int, mark: tuple[str, str], last: tuple[str, str]) -> VerificationFailed:
    return VerificationFailed(
        "row",
        f"row {row}: out of order: ({mark[0]}, {mark[1]}) does not follow ({last[0]}, {last[1]})",
    )


# What checking one block of JSONL rows found: its row count, first and last rows, and the
# first failure in it.
_BlockResult = tuple[int, tuple[str, str] | None, tuple[str, str] | None, VerificationFailed | None]


def _check_jsonl_block(
    block: bytes, before: int, columns: frozenset[str], bounds: tuple[str, str, str]
) -> _BlockResult:
    """Parse and check whole lines of JSONL; ``before`` rows precede them in the file.
    A plain function of plain values, so a worker process can run it."""
    lines = block.split(b"\n")
    lines.pop()  # after the last newline
    checker = _RowChecker(*bounds, before=before)
    first = None
    try:
        objects = _parse_jsonl_block(lines, before)
        for index, row in enumerate(objects):
            if row.__class__ is not dict or row.keys() != columns:
                raise VerificationFailed(
                    "row", f"row {before + index + 1}: not an object with the columns of this kind"
                )
        rows = [(o["id"], o["organization_id"], o["created_at"]) for o in objects]
        if rows and isinstance(rows[0][0], str) and isinstance(rows[0][2], str):
            first = (rows[0][2], rows[0][0])
        checker.check(rows)
    except VerificationFailed as failure:
        return len(lines), first, None, failure
    return len(lines), checker.first, checker.last if lines else None, None


def _jsonl_blocks(stream: io.BufferedIOBase | io.RawIOBase) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines, each with the number of lines before it."""
    remainder = b""
    before = 0
    while True:
        block = stream.read(_BLOCK_SIZE)
        if not block:
            break
        block = remainder + block
        cut = block.rfind(b"\n") + 1
        remainder = block[cut:]
        if cut:
            yield block[:cut], before
            before += block.count(b"\n", 0, cut)
    if remainder:
        raise VerificationFailed(
            "content", f"row {before + 1}: the last line has no line break (truncated?)"
        )


def _jsonl_rows(
    stream: io.BufferedIOBase | io.RawIOBase,
    columns: frozenset[str],
    checker: _RowChecker,
    workers: int,
) -> None:
    """Check every JSONL row; with several ``workers``, blocks are parsed in parallel by
    worker processes (parsing JSON is most of the cost), a bounded number in flight, and
    their results merged in file order."""
    bounds = (checker.organization_id, checker.start, checker.end)

    def merge(result: _BlockResult, before: int) -> None:
        count, first, last, failure = result
        if first is not None and checker.count and first <= checker.last:
            raise _out_of_order(before + 1, first, checker.last)
        if failure is not None:
            raise failure
        if first is not None and checker.first is None:
            checker.first = first
        checker.count += count
        if last is not None:
            checker.last = last

    if workers <= 1:
        for block, before in _jsonl_blocks(stream):
            merge(_check_jsonl_block(block, before, columns, bounds), before)
        return
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[Future[_BlockResult], int]] = deque()
        try:
            for block, before in _jsonl_blocks(stream):
                pending.append(
                    (pool.submit(_check_jsonl_block, block, before, columns, bounds), before)
                )
                if len(pending) > 2 * workers:
                    future, at = pending.popleft()
                    merge(future.result(), at)
            while pending:
                future, at = pending.popleft()
                merge(future.result(), at)
        finally:
            for future, _ in pending:
                future.cancel()


def _parse_jsonl_block(lines: list[bytes], before: int) -> list[Any]:
    # One json.loads over the whole block is several times faster than one per line; a
    # block that does not parse as exactly one value per line is read line by line to
    # name the first bad row.
    try:
        objects = json.loads(b"[" + b",".join(lines) + b"]")
        if isinstance(objects, list) and len(objects) == len(lines):
            return objects
    except (ValueError, UnicodeDecodeError):
        pass
    parsed = []
    for index, line in enumerate(lines):
        try:
            parsed.append(json.loads(line))
        except (ValueError, UnicodeDecodeError):
            raise VerificationFailed(
                "row", f"row {before + index + 1}: not a JSON object"
            ) from None
    # Every line parsed alone: a line held two values joined by a comma.
    raise VerificationFailed("row", "not one JSON object per line")


def _unguard(cell: str) -> str:
    """A CSV cell without the ``'`` the encoder prefixes to would-be formulas."""
    return cell[1:] if cell[:1] == "'" else cell


def _csv_rows(
    stream: io.BufferedIOBase | io.RawIOBase, columns: tuple[str, ...], checker: _RowChecker
) -> None:
    # utf-8-sig drops the optional byte order mark.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")  # type: ignore[type-var]
    reader = csv.reader(text, strict=True)
    # JSON cells (SCIM bodies) may outgrow the csv module's default 128 KiB per field once
    # their quotes are doubled; the limit is the module's, so it is put back afterwards.
    field_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        header = next(reader, None)
        if header is None or tuple(header) != columns:
            raise VerificationFailed("content", "header: not the columns of this kind")
        width = len(columns)
        index_of = {name: i for i, name in enumerate(columns)}
        i_id, i_org, i_created = index_of["id"], index_of["organization_id"], index_of["created_at"]
        batch: list[tuple[str, str, str]] = []
        for row in reader:
            if len(row) != width:
                checker.check(batch)
                raise VerificationFailed(
                    "row", f"row {checker.count + 1}: {len(row)} cells, expected {width}"
                )
            batch.append((_unguard(row[i_id]), row[i_org], row[i_created]))
            if len(batch) >= 10_000:
                checker.check(batch)
                batch = []
        checker.check(batch)
    except UnicodeDecodeError:
        raise VerificationFailed("row", f"row {checker.count + 1}: not UTF-8 text") from None
    except csv.Error as exc:
        raise VerificationFailed("row", f"row {checker.count + 1}: not CSV ({exc})") from None
    finally:
        csv.field_size_limit(field_limit)
        text.detach()


def _check_content(
    stream: io.BufferedIOBase | io.RawIOBase, manifest: Mapping[str, Any], workers: int
) -> None:
    kind = LOG_KINDS[ExportKind(manifest["kind"])]
    checker = _RowChecker(manifest["organization_id"], manifest["from_time"], manifest["to_time"])
    if manifest["format"] == "CSV":
        _csv_rows(stream, kind.columns, checker)
    else:
        _jsonl_rows(stream, frozenset(kind.columns), checker, workers)
    if checker.count != manifest["row_count"]:
        raise VerificationFailed(
            "count",
            f"count: the file has {checker.count} rows, the manifest says {manifest['row_count']}",
        )
    for name, found in (("first_row", checker.first), ("last_row", checker.last)):
        stated = manifest[name]
        expected = (stated["created_at"], stated["id"]) if stated is not None else None
        if checker.count == 0:
            found = None
        if found != expected:
            label = name.replace("_", " ")
            raise VerificationFailed(
                name,
                f"{label}: the file's is {_mark_text(found)}, the manifest says "
                f"{_mark_text(expected)}",
            )


def _mark_text(mark: tuple[str, str] | None) -> str:
    """A row's place as the order states it: ``(created_at, id)``."""
    return "none (no rows)" if mark is None else f"({mark[0]}, {mark[1]})"


def _default_workers(manifest: Mapping[str, Any]) -> int:
    """Worker processes for a large JSONL file (one per CPU this process may use, up to
    four); a small file is quicker to check than a process is to start."""
    if manifest["format"] != "JSONL" or manifest["row_count"] < _PARALLEL_ROWS:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, 4)


def verify_file(
    path: Path,
    envelope: Mapping[str, Any],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    workers: int | None = None,
) -> FileSummary:
    """Check ``path`` against its signed manifest; ``VerificationFailed`` names the first
    failing check. The file is read once, whatever its size, in bounded memory; JSONL rows
    are parsed by ``workers`` processes (by default, several for a large file)."""
    manifest = verify_envelope(envelope, keys)
    if workers is None:
        workers = _default_workers(manifest)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VerificationFailed("file", f"file: cannot read {path}: {exc.strerror}") from None
    if size != manifest["byte_size"]:
        raise VerificationFailed(
            "size", f"size: the file has {size} bytes, the manifest says {manifest['byte_size']}"
        )
    content_failure: VerificationFailed | None = None
    with path.open("rb") as file:
        reader = _HashingReader(file)
        raw = io.BufferedReader(reader, _READ_SIZE)
        try:
            if manifest["compression"] == "GZIP":
                import gzip

                with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                    _check_content(unzipped, manifest, workers)
                    if unzipped.read(1):
                        raise VerificationFailed("content", "content: data after the last row")
            else:
                _check_content(raw, manifest, workers)
        except VerificationFailed as failure:
            content_failure = failure
        except (OSError, EOFError, zlib.error) as exc:
            content_failure = VerificationFailed("content", f"content: not valid gzip ({exc})")
        # The SHA-256 is checked before the content: a file that is not the one signed
        # is reported as such, whatever its rows say.
        while raw.read(_READ_SIZE):
            pass
    digest = reader.sha256.hexdigest()
    if digest != manifest["sha256"]:
        raise VerificationFailed(
            "sha256", f"sha256: the file's is {digest}, the manifest says {manifest['sha256']}"
        )
    if content_failure is not None:
        raise content_failure
    return FileSummary(path.name, manifest)


# ------------------------------------------------------------------------------ chains


@dataclass(frozen=True)
class ChainSummary:
    organization_id: str
    kind: str
    stream_id: str | None
    first_sequence: int
    last_sequence: int
    count: int

    def line(self) -> str:
        chain = f"stream {self.stream_id}" if self.stream_id else f"{self.kind} exports"
        absent = (
            "sequence 1"
            if self.first_sequence == 2
            else f"sequences 1 to {self.first_sequence - 1}"
        )
        start = (
            "from sequence 1"
            if self.first_sequence == 1
            else f"from sequence {self.first_sequence} ({absent} not in the folder, not checked)"
        )
        return (
            f"OK chain of {chain} of organization {self.organization_id}: {self.count} "
            f"manifests {start} to {self.last_sequence}, contiguous, every link intact"
        )


def manifest_files(directory: Path) -> Iterator[Path]:
    # Subfolders too: a stream's objects sit in one folder per hour in the bucket, and a
    # copy of it keeps that layout.
    return iter(sorted(directory.rglob("*" + MANIFEST_SUFFIX)))


def verify_chain(directory: Path, keys: Mapping[str, Ed25519PublicKey]) -> ChainSummary:
    """All manifests in ``directory`` and its subfolders, of one chain: each signature, a
    contiguous sequence from the lowest present, and each ``previous_manifest_sha256`` link.
    A removed, reordered or altered manifest is named by its path inside ``directory``."""
    entries: list[tuple[int, str, dict[str, Any]]] = []
    chains: set[tuple[str, str, str | None]] = set()
    for path in manifest_files(directory):
        name = path.relative_to(directory).as_posix()
        try:
            manifest = verify_envelope(read_envelope(path), keys)
        except VerificationFailed as failure:
            raise VerificationFailed(failure.check, f"{name}: {failure.message}") from None
        entries.append((manifest["sequence"], name, manifest))
        chains.add((manifest["organization_id"], manifest["kind"], manifest.get("stream_id")))
    if not entries:
        raise VerificationFailed("chain", f"chain: no *{MANIFEST_SUFFIX} in {directory}")
    if len(chains) > 1:
        listed = "; ".join(
            f"organization {o}, {k}" + (f", stream {s}" if s else "")
            for o, k, s in sorted(chains, key=str)
        )
        raise VerificationFailed(
            "chain", f"chain: the folder mixes {len(chains)} chains ({listed}); keep one per folder"
        )
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    previous: tuple[int, str, dict[str, Any]] | None = None
    for entry in entries:
        sequence, name, manifest = entry
        link = manifest["previous_manifest_sha256"]
        if previous is None:
            if sequence == 1 and link is not None:
                raise VerificationFailed(
                    "chain", f"chain: {name} is sequence 1 but links to a previous manifest"
                )
        else:
            before, before_name, before_manifest = previous
            if sequence == before:
                raise VerificationFailed(
                    "chain", f"chain: sequence {sequence} appears twice ({before_name}, {name})"
                )
            if sequence != before + 1:
                missing = (
                    f"sequence {before + 1}"
                    if sequence == before + 2
                    else f"sequences {before + 1} to {sequence - 1}"
                )
                raise VerificationFailed(
                    "chain",
                    f"chain: {missing} missing between {before_name} and {name} (removed manifest)",
                )
            if link != manifest_sha256(before_manifest):
                raise VerificationFailed(
                    "chain",
                    f"chain: {name} (sequence {sequence}) does not link to {before_name} "
                    f"(sequence {before}): that manifest was altered, replaced or reordered",
                )
        previous = entry
    organization_id, kind, stream_id = next(iter(chains))
    return ChainSummary(
        organization_id=organization_id,
        kind=kind,
        stream_id=stream_id,
        first_sequence=entries[0][0],
        last_sequence=entries[-1][0],
        count=len(entries),
    )
