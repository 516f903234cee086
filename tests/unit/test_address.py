"""``ServerAddress``: HOST[:PORT] as users type it, parsed in the protocol core (no I/O)."""

from __future__ import annotations

import pytest

from pairing.errors import InvalidServerAddress, PairingError
from pairing.protocol.address import ServerAddress


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("example.org", "example.org", 5222),
        ("example.org:5223", "example.org", 5223),
        (" 127.0.0.1:15222 ", "127.0.0.1", 15222),
        ("[::1]:5223", "::1", 5223),
        ("[2001:db8::7]", "2001:db8::7", 5222),
        ("::1", "::1", 5222),  # a bare IPv6 literal: every colon is the address's
        ("2001:db8::7", "2001:db8::7", 5222),
    ],
)
def test_addresses_users_type(text: str, host: str, port: int) -> None:
    assert ServerAddress.parse(text) == ServerAddress(host, port)


def test_the_default_port_is_the_callers() -> None:
    assert ServerAddress.parse("example.org", default_port=5223).port == 5223


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":5222",
        "example.org:",
        "example.org:0",
        "example.org:65536",
        "example.org:http",
        "example.org:\uff15\uff12\uff12\uff12",  # fullwidth digits pass str.isdigit
        "example.org:-1",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[example.org]:5222",
        "a:b:c",
    ],
)
def test_anything_else_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(InvalidServerAddress, match="is not a server address") as info:
        ServerAddress.parse(text)
    assert isinstance(info.value, PairingError)  # the CLIs print it as one line


def test_a_value_made_in_code_is_checked_too() -> None:
    with pytest.raises(InvalidServerAddress):
        ServerAddress("example.org", 0)
    with pytest.raises(InvalidServerAddress):
        ServerAddress("", 5222)


def test_it_prints_as_it_is_typed() -> None:
    assert str(ServerAddress("example.org", 5222)) == "example.org:5222"
    assert str(ServerAddress("::1", 5223)) == "[::1]:5223"
