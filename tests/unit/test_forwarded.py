"""Which address is recorded for a request: ``X-Forwarded-For`` is believed only from
``LOGEXPORT_TRUSTED_PROXIES``, read right to left."""

from __future__ import annotations

import pytest

from logexport.config import ConfigError, Settings
from logexport.web.forwarded import client_ip, parse_address


def trusted(text: str) -> tuple:
    return Settings.from_env(env={"LOGEXPORT_TRUSTED_PROXIES": text}).trusted_proxies


PROXIES = trusted("10.0.0.0/8, 192.168.0.0/16, fd00::/8")


def test_no_setting_trusts_no_proxy() -> None:
    assert Settings.from_env(env={}).trusted_proxies == ()
    assert client_ip("10.0.0.2", ["198.51.100.23"], ()) == "10.0.0.2"


def test_setting_parses_cidrs_and_bare_addresses() -> None:
    parsed = trusted(" 10.0.0.0/8 ,2001:db8::/32,, 192.0.2.7 ")
    assert [str(n) for n in parsed] == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]


@pytest.mark.parametrize(
    ("value", "entry"),
    [
        ("10.0.0.0/33", "entry 1 of 1"),
        ("10.0.0.0/8, 10.0.0.1/8", "entry 2 of 2"),  # host bits set: a typo or a misunderstanding
        ("10.0.0.0/8; 172.16.0.0/12", "entry 1 of 1"),
        ("localhost", "entry 1 of 1"),
        ("10.0.0.0/8,2001:db8::/129,fd00::/8", "entry 2 of 3"),
    ],
)
def test_malformed_cidr_names_the_variable_and_the_entry(value: str, entry: str) -> None:
    with pytest.raises(ConfigError) as raised:
        trusted(value)
    message = str(raised.value)
    assert message.startswith("LOGEXPORT_TRUSTED_PROXIES is malformed: ")
    assert entry in message
    assert "CIDR" in message


def test_peer_that_is_not_a_trusted_proxy_is_the_client() -> None:
    assert client_ip("203.0.113.9", ["198.51.100.23"], PROXIES) == "203.0.113.9"


def test_trusted_proxy_is_believed_about_its_client() -> None:
    assert client_ip("10.0.0.2", ["198.51.100.23"], PROXIES) == "198.51.100.23"


def test_rightmost_untrusted_address_wins_over_what_the_client_wrote() -> None:
    # The client sent "6.6.6.6"; the edge proxy appended the client's real address, and
    # an inner proxy appended the edge proxy's.
    forwarded = ["6.6.6.6, 198.51.100.23, 192.168.1.1"]
    assert client_ip("10.0.0.2", forwarded, PROXIES) == "198.51.100.23"


def test_several_headers_read_as_one_list() -> None:
    forwarded = ["6.6.6.6, 198.51.100.23", "192.168.1.1"]
    assert client_ip("10.0.0.2", forwarded, PROXIES) == "198.51.100.23"


def test_trusted_proxy_without_header_is_itself_the_client() -> None:
    assert client_ip("10.0.0.2", [], PROXIES) == "10.0.0.2"
    assert client_ip("10.0.0.2", [" , "], PROXIES) == "10.0.0.2"


def test_chain_of_trusted_proxies_only_yields_the_leftmost() -> None:
    assert client_ip("10.0.0.2", ["192.168.1.1, 10.9.9.9"], PROXIES) == "192.168.1.1"


def test_garbage_hop_stops_the_walk_at_the_last_address_believed() -> None:
    assert client_ip("10.0.0.2", ["198.51.100.23, unknown"], PROXIES) == "10.0.0.2"
    assert client_ip("10.0.0.2", ["unknown, 192.168.1.1"], PROXIES) == "192.168.1.1"


def test_ipv6_and_mapped_addresses() -> None:
    assert client_ip("fd00::1", ["2001:db8::7"], PROXIES) == "2001:db8::7"
    # A dual-stack socket reports an IPv4 proxy as ::ffff:10.0.0.2.
    assert client_ip("::ffff:10.0.0.2", ["198.51.100.23"], PROXIES) == "198.51.100.23"
    assert client_ip("2001:db8::9", ["198.51.100.23"], PROXIES) == "2001:db8::9"


def test_unknown_peer_records_no_address() -> None:
    assert client_ip(None, ["198.51.100.23"], PROXIES) is None
    assert client_ip("testclient", ["198.51.100.23"], PROXIES) is None


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("198.51.100.23", "198.51.100.23"),
        (" 198.51.100.23:4711 ", "198.51.100.23"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("unknown", None),
        ("_hidden", None),
        ("[2001:db8::7", None),
        ("", None),
    ],
)
def test_addresses_as_proxies_write_them(text: str, address: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == address
