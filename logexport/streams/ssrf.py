"""Refusing stream destinations that point inside the network logexport runs in.

A log stream is the one place a user hands logexport a URL to connect to. Without a check,
an owner could aim deliveries at the database, a cloud metadata service or anything else
reachable from the worker. Every address a destination's host resolves to must be public,
and the scheme must be ``https``; the check runs when a stream is saved and again before
each delivery (DNS answers can change in between). ``LOGEXPORT_STREAM_ALLOW_PRIVATE=1``
lifts both rules for tests and demos.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class DestinationRefused(Exception):
    """The destination may not be used; ``message`` says why, safe to show the owner."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DestinationUnresolved(DestinationRefused):
    """The host has no address right now (a delivery may retry later)."""


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or None when it is."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return refusal_reason(embedded)
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared (carrier-grade NAT) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:
        return "a private address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, NAT64, compatible), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _host_and_port(url_or_host: str, *, allow_private: bool) -> tuple[str, int]:
    text = url_or_host.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise DestinationRefused("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme == "http":
        if not allow_private:
            raise DestinationRefused("must use https:// (plain http:// is refused)")
    elif scheme != "https":
        raise DestinationRefused("must use https://")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("must not carry a user name or password")
    if not parts.hostname:
        raise DestinationRefused("has no host")
    return parts.hostname, port or (443 if scheme == "https" else 80)


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def checked_addresses(
    url_or_host: str, *, allow_private: bool, resolver: Resolver | None = None
) -> list[IPAddress]:
    """Resolve the destination's host and return its addresses once all are allowed.

    Connecting to one of the returned addresses (rather than resolving again) keeps a
    DNS answer that changes between the check and the connection from slipping through.
    """
    host, port = _host_and_port(url_or_host, allow_private=allow_private)
    try:
        answers = await (resolver or _system_resolver)(host, port)
    except (OSError, UnicodeError):
        raise DestinationUnresolved(f"host {host} does not resolve") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        address = ipaddress.ip_address(answer.split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationUnresolved(f"host {host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refusal_reason(address)
            if reason is not None:
                raise DestinationRefused(f"host {host} resolves to {reason} ({address})")
    return addresses


async def check_destination(
    url_or_host: str, *, allow_private: bool, resolver: Resolver | None = None
) -> None:
    """Raise :class:`DestinationRefused` unless the destination is a public https host."""
    await checked_addresses(url_or_host, allow_private=allow_private, resolver=resolver)
