"""The client address of a request, believing ``X-Forwarded-For`` only from trusted proxies.

Any client can send ``X-Forwarded-For``; only a proxy listed in ``LOGEXPORT_TRUSTED_PROXIES``
is believed when it says whom it forwarded for. Each proxy appends the address it received
the request from, so the header is read from the right: the first address that is not
itself a trusted proxy is the client. Everything to its left was written by that client
and proves nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

from logexport.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def request_client_ip(request: Request, trusted: Sequence[IPNetwork]) -> str | None:
    """The address to record for ``request``: its peer, or whom a trusted proxy names."""
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.getlist("x-forwarded-for"), trusted)


def client_ip(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> str | None:
    """The client's address, given the direct peer and every ``X-Forwarded-For`` header.

    With no trusted proxy in front (the peer is not in ``trusted``) the peer is the client.
    Otherwise the hops are read right to left, skipping trusted proxies. A hop that is not
    an address ends the walk: the last address believed so far is the best answer, and
    when every hop is a trusted proxy, the leftmost one is.
    """
    address = parse_address(peer) if peer else None
    if address is None:
        return None
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _is_trusted(address, trusted):
            break
        forwarded = parse_address(hop)
        if forwarded is None:
            break
        address = forwarded
    return str(address)


def parse_address(text: str) -> IPAddress | None:
    """An IP address as proxies write it: bare, ``v4:port`` or ``[v6]:port``.

    IPv4 addresses mapped into IPv6 (``::ffff:10.0.0.1``, what a dual-stack socket reports)
    come back as IPv4, so they match IPv4 networks.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)
