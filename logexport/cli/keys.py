"""``logexport keys``: make a manifest signing key, and publish the public keys.

``LOGEXPORT_SIGNING_KEY`` is the Ed25519 private key that signs manifests;
``LOGEXPORT_VERIFY_KEYS`` holds retired public keys, so files signed before a rotation
still verify. Neither command needs the database or any other setting.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import click

from logexport.cli.common import EXIT_USAGE, fail

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNING_KEY = "LOGEXPORT_SIGNING_KEY"
VERIFY_KEYS = "LOGEXPORT_VERIFY_KEYS"


def environment_public_keys() -> list[Ed25519PublicKey]:
    """The current signing key's public half, then the retired keys; a malformed
    setting ends the command naming the variable, never repeating its value."""
    from logexport import manifests

    keys = []
    signing = os.environ.get(SIGNING_KEY, "").strip()
    if signing:
        try:
            keys.append(manifests.parse_signing_key(signing).public_key())
        except manifests.KeyFormatError as exc:
            fail(f"{SIGNING_KEY}: {exc}", EXIT_USAGE)
    retired = os.environ.get(VERIFY_KEYS, "").strip()
    if retired:
        try:
            keys.extend(manifests.parse_verify_keys(retired))
        except manifests.KeyFormatError as exc:
            fail(f"{VERIFY_KEYS}: {exc}", EXIT_USAGE)
    return keys


@click.group("keys")
def keys_group() -> None:
    """Make a manifest signing key; print the public keys that verify manifests."""


@keys_group.command("generate")
def generate() -> None:
    """Print a new Ed25519 signing key once, as LOGEXPORT_SIGNING_KEY takes it.

    The one line is the base64url of the 32-byte seed: keep it secret, and publish its
    public half with 'logexport keys public'.
    """
    from logexport import manifests

    click.echo(manifests.generate_signing_key())


@keys_group.command("public")
def public() -> None:
    """Print the JWKS of LOGEXPORT_SIGNING_KEY and LOGEXPORT_VERIFY_KEYS.

    This is the keys file an auditor passes to 'logexport verify --keys'.

    When rotating, keep the old key's public half in LOGEXPORT_VERIFY_KEYS, as this command
    prints it: LOGEXPORT_VERIFY_KEYS="$(LOGEXPORT_SIGNING_KEY=OLD logexport keys public)".
    Never the old private key itself: it looks the same, and would be published.
    """
    from logexport import manifests

    keys = environment_public_keys()
    if not keys:
        fail(f"{SIGNING_KEY} is not set (nor {VERIFY_KEYS}): no public key to print", EXIT_USAGE)
    click.echo(json.dumps(manifests.jwks(keys), indent=2))
