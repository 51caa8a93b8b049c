"""Web origins, compared one way by every surface that checks a request's ``Origin``.

Browsers send ``Origin`` as ``scheme://host[:port]``, leaving the port out when it is the
scheme's default; ``LOGEXPORT_BASE_URL`` may spell the same origin with a default port, in
capitals or with a path. Both are normalized here before they are compared, so the console,
``/mcp`` and the download page accept and refuse the same headers. Whether an absent header
or ``null`` is acceptable is each surface's own policy; ``null`` never equals an origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``url``'s origin as ``scheme://host[:port]``: lower case, a default port left out.

    ``None`` for anything that has no web origin: ``null``, another scheme, no host, a
    port that is not a number.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def same_origin(origin: str, base_url: str) -> bool:
    """Whether the ``Origin`` header ``origin`` names the origin of ``base_url``."""
    own = origin_of(base_url)
    return own is not None and origin_of(origin) == own
