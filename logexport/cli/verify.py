"""``logexport verify``: an exported file or a chain of manifests, checked offline.

Needs no setting, no database and no storage: the file, its manifest and the public keys
(a JWKS file, or a URL fetched only when given). Imports neither the server, the database
driver nor the HTTP client.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from logexport.cli.common import EXIT_USAGE, fail

if TYPE_CHECKING:
    from http.client import HTTPMessage

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_MAX_KEYS_DOCUMENT = 1 << 20
_FETCH_TIMEOUT = 30


def _plain_http_refusal(url: str) -> str | None:
    """Why ``url`` may not carry the keys, or None. The keys are what every check trusts:
    over plain http anyone on the way could hand over their own, and a forged file signed
    with them would pass. Only this machine's own loopback is exempt (a local service)."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme.lower() == "https":
        return None
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme.lower() == "http" and loopback:
        return None
    return "keys are fetched over https:// only (or saved as a file and passed as such)"


def _read_keys_source(source: str) -> bytes:
    if source.startswith(("https://", "http://")):
        import urllib.error
        import urllib.request

        refusal = _plain_http_refusal(source)
        if refusal is not None:
            fail(f"--keys: {source}: {refusal}", EXIT_USAGE)

        class NoDowngrade(urllib.request.HTTPRedirectHandler):
            def redirect_request(
                self,
                req: urllib.request.Request,
                fp: IO[bytes],
                code: int,
                msg: str,
                headers: HTTPMessage,
                newurl: str,
            ) -> urllib.request.Request | None:
                refused = _plain_http_refusal(newurl)
                if refused is not None:
                    raise urllib.error.URLError(f"redirected to {newurl}: {refused}")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        opener = urllib.request.build_opener(NoDowngrade)
        # Only http(s) gets here: the scheme was checked above.
        request = urllib.request.Request(source, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with opener.open(request, timeout=_FETCH_TIMEOUT) as response:
                data: bytes = response.read(_MAX_KEYS_DOCUMENT + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            fail(f"--keys: cannot fetch {source}: {reason}", EXIT_USAGE)
    else:
        try:
            with open(source, "rb") as file:
                data = file.read(_MAX_KEYS_DOCUMENT + 1)
        except OSError as exc:
            fail(f"--keys: cannot read {source}: {exc.strerror}", EXIT_USAGE)
    if len(data) > _MAX_KEYS_DOCUMENT:
        fail(f"--keys: {source} is larger than a keys document can be", EXIT_USAGE)
    return data


def load_keys(source: str | None) -> dict[str, Ed25519PublicKey]:
    """The public keys by id: from ``--keys``, else from the signing and retired keys
    of the environment; without either the command cannot verify anything."""
    from logexport import manifests

    if source is not None:
        try:
            return manifests.load_jwks(_read_keys_source(source))
        except manifests.KeyFormatError as exc:
            fail(f"--keys: {exc}", EXIT_USAGE)
    from logexport.cli.keys import environment_public_keys

    keys = environment_public_keys()
    if not keys:
        fail(
            "no public keys: pass --keys with the JWKS file or URL the service publishes",
            EXIT_USAGE,
        )
    return {manifests.key_id(key): key for key in keys}


@click.command("verify")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="MANIFEST",
    help="The file's signed manifest (default: FILE.manifest.json beside FILE).",
)
@click.option(
    "--chain",
    "chain",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Check the chain of manifests in this folder (and its subfolders) instead of a file.",
)
@click.option(
    "--keys",
    "keys_source",
    metavar="JWKS_FILE_OR_URL",
    help="The public keys (JWKS), as a file or an https URL.",
)
def verify(
    file: Path | None, manifest_path: Path | None, chain: Path | None, keys_source: str | None
) -> None:
    """Check an exported file, or a chain of manifests, against the signed manifests, offline.

    FILE is checked against its manifest: signature, size, SHA-256, then every row (its
    organization, its time inside the range, the order, the count, the first and last
    rows). Without --manifest, the manifest is FILE.manifest.json beside FILE. When it is
    missing, nothing is checked and verify exits with 2: pass --manifest with its path
    (export download -o PATH saves it as PATH.manifest.json).

    With --chain DIR, every manifest in DIR and its subfolders (a copy of a stream's bucket
    prefix, say) must be signed, numbered without a gap and linked to the one before; a
    folder holding no manifest is a usage error.

    Exit 0 with one summary line; exit 1 naming the first failed check; exit 2 on a usage
    error (a missing file, manifest or key, or nothing to check).
    """
    from logexport import manifests

    if chain is not None:
        if file is not None or manifest_path is not None:
            raise click.UsageError("--chain DIR takes no FILE or --manifest")
        if not chain.is_dir():
            fail(f"--chain: {chain} is not a folder", EXIT_USAGE)
        if next(manifests.manifest_files(chain), None) is None:
            fail(
                f"--chain: no manifests in {chain} (no *{manifests.MANIFEST_SUFFIX} file, "
                "subfolders included)",
                EXIT_USAGE,
            )
        keys = load_keys(keys_source)
        try:
            summary = manifests.verify_chain(chain, keys)
        except manifests.VerificationFailed as exc:
            fail(f"{chain}: {exc.message}")
        click.echo(summary.line())
        return
    if file is None:
        raise click.UsageError("give a FILE to check, or --chain DIR")
    if not file.is_file():
        fail(f"{file}: no such file", EXIT_USAGE)
    manifest_path = manifest_path or file.with_name(file.name + manifests.MANIFEST_SUFFIX)
    if not manifest_path.is_file():
        fail(f"--manifest: {manifest_path}: no such file", EXIT_USAGE)
    keys = load_keys(keys_source)
    try:
        envelope = manifests.read_envelope(manifest_path)
        file_summary = manifests.verify_file(file, envelope, keys)
    except manifests.VerificationFailed as exc:
        fail(f"{file.name}: {exc.message}")
    click.echo(file_summary.line())
