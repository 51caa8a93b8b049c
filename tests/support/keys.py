"""Manifest signing keys the tests run with.

Fixed seeds, so that the manifests a failing test leaves behind can be checked again by
hand (``logexport keys public`` with the same ``LOGEXPORT_SIGNING_KEY``). Plain constants:
process helpers import this without loading the application.
"""

from __future__ import annotations

import base64


def _seed(first: int) -> str:
    return base64.urlsafe_b64encode(bytes(range(first, first + 32))).rstrip(b"=").decode()


# ``LOGEXPORT_SIGNING_KEY`` of every test worker unless a test rotates it.
TEST_SIGNING_KEY = _seed(0)
# The key a rotation test moves to.
NEXT_SIGNING_KEY = _seed(32)
