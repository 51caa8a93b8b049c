"""Stream destinations must be public https hosts unless private ones are allowed."""

from __future__ import annotations

import pytest

from logexport.streams.ssrf import (
    DestinationRefused,
    DestinationUnresolved,
    check_destination,
    checked_addresses,
)


def answering(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def failing(host: str, port: int) -> list[str]:
    raise OSError("Name or service not known")


PUBLIC = "93.184.215.14"


async def test_a_public_https_host_is_allowed() -> None:
    addresses = await checked_addresses(
        "https://logs.example.com/ingest", allow_private=False, resolver=answering(PUBLIC)
    )
    assert [str(a) for a in addresses] == [PUBLIC]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("fc00::5", "private"),
        ("fd12:3456::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("2002:7f00:1::1", "loopback"),
        ("198.18.0.1", "private"),
    ],
)
async def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    with pytest.raises(DestinationRefused) as refused:
        await check_destination(
            "https://logs.example.com/", allow_private=False, resolver=answering(address)
        )
    assert reason in refused.value.message


async def test_one_internal_address_among_public_ones_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        await check_destination(
            "https://logs.example.com/",
            allow_private=False,
            resolver=answering(PUBLIC, "127.0.0.1"),
        )


async def test_plain_http_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="https"):
        await check_destination(
            "http://logs.example.com/", allow_private=False, resolver=answering(PUBLIC)
        )


@pytest.mark.parametrize("url", ["ftp://logs.example.com/", "file:///etc/passwd", "gopher://x/"])
async def test_other_schemes_are_refused_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(DestinationRefused, match="https"):
        await check_destination(url, allow_private=True, resolver=answering(PUBLIC))


async def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(DestinationRefused, match="password"):
        await check_destination(
            "https://user:pw@logs.example.com/",
            allow_private=False,
            resolver=answering(PUBLIC),
        )


async def test_a_url_without_host_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="host"):
        await check_destination("https:///path", allow_private=False)


async def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(DestinationUnresolved, match="does not resolve"):
        await check_destination(
            "https://nowhere.example.com/", allow_private=False, resolver=failing
        )


async def test_a_bare_host_is_checked_like_an_https_url() -> None:
    with pytest.raises(DestinationRefused, match="private"):
        await check_destination(
            "s3.internal.example.com", allow_private=False, resolver=answering("10.0.0.8")
        )


async def test_the_resolver_is_asked_for_the_url_port() -> None:
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [PUBLIC]

    await check_destination(
        "https://Logs.Example.com:8443/x", allow_private=False, resolver=resolve
    )
    await check_destination("https://[2001:db8::1]/x", allow_private=True, resolver=resolve)
    assert asked == [("logs.example.com", 8443), ("2001:db8::1", 443)]


async def test_private_addresses_and_http_are_allowed_with_the_opt_in() -> None:
    await check_destination(
        "http://127.0.0.1:9000/", allow_private=True, resolver=answering("127.0.0.1")
    )
    await check_destination(
        "https://metadata.local/", allow_private=True, resolver=answering("169.254.169.254")
    )


async def test_localhost_resolved_by_the_system_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        await check_destination("https://localhost:8443/hook", allow_private=False)


async def test_localhost_resolved_by_the_system_is_allowed_with_the_opt_in() -> None:
    addresses = await checked_addresses("https://localhost:8443/hook", allow_private=True)
    assert addresses and all(a.is_loopback for a in addresses)


async def test_numeric_host_forms_are_checked_after_resolution() -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        await check_destination("https://2130706433/", allow_private=False)
