"""``/.well-known/logexport-keys.json``: the public keys that verify export manifests.

A JWKS document of the current signing key's public half and the retired keys of
``LOGEXPORT_VERIFY_KEYS``, so that files signed before a rotation still verify. It is
public (no authentication) and cacheable for a short while only: after a rotation,
verifiers should see the new key within minutes.

App state used: ``settings``.
"""

from __future__ import annotations

import functools
import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from logexport import manifests
from logexport.config import Settings
from logexport.signing import published_keys

KEYS_PATH = manifests.KEYS_PATH
KEYS_MEDIA_TYPE = "application/jwk-set+json"
_HEADERS = {
    "Cache-Control": "public, max-age=300",
    # Public keys, readable by an auditor's page on any origin.
    "Access-Control-Allow-Origin": "*",
}


async def keys_document(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    body = _document(settings.signing_key, settings.verify_keys)
    return Response(body, media_type=KEYS_MEDIA_TYPE, headers=_HEADERS)


@functools.lru_cache(maxsize=4)
def _document(signing_key: str | None, verify_keys: str | None) -> str:
    """The JWKS text of these settings, made once: the endpoint needs no authentication, so
    a request should cost no key parsing."""
    keys = published_keys(Settings(signing_key=signing_key, verify_keys=verify_keys))
    return json.dumps(manifests.jwks(keys), indent=2) + "\n"


def keys_routes() -> list[Route]:
    return [Route(KEYS_PATH, keys_document, methods=["GET"])]
