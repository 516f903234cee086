"""Finding the server in DNS (RFC 6120 §3.2): SRV records from a real DNS server on loopback,
answered over UDP by tests/support/dnsserver.py, and a real login at the address they name."""

from __future__ import annotations

import pytest

from pairing.errors import ServerIdentityMismatch
from pairing.protocol.address import ServerAddress
from pairing.protocol.srv import ServiceNotOffered
from pairing.xmpp.connection import (
    PairingClient,
    TrustAnchor,
    login_first,
    logout,
    make_client,
    resolve_server,
)
from tests.integration.cli_support import free_port
from tests.integration.conftest import PASSWORD, ServerFactory
from tests.support.dnsserver import dns_server, silent_dns_server

SRV = "_xmpp-client._tcp.example.org."


async def test_srv_records_come_back_in_priority_order() -> None:
    zone = {
        SRV: [
            (20, 0, 5299, "last.example.org."),
            (10, 0, 5223, "second.example.org."),
            (0, 0, 15222, "first.example.org."),
        ]
    }
    with dns_server(zone) as resolver:
        addresses = await resolve_server("example.org", resolver=resolver)
    assert addresses == [
        ServerAddress("first.example.org", 15222),
        ServerAddress("second.example.org", 5223),
        ServerAddress("last.example.org", 5299),
    ]


async def test_a_domain_without_srv_records_falls_back_to_itself_on_5222() -> None:
    with dns_server({SRV: [(0, 0, 5222, "xmpp.example.org.")]}) as resolver:
        addresses = await resolve_server("example.net", resolver=resolver)  # NXDOMAIN
    assert addresses == [ServerAddress("example.net", 5222)]


async def test_a_silent_dns_server_falls_back_to_the_domain() -> None:
    with silent_dns_server() as resolver:
        addresses = await resolve_server("example.org", resolver=resolver, lifetime=0.5)
    assert addresses == [ServerAddress("example.org", 5222)]


async def test_a_dot_target_says_the_domain_has_no_xmpp_service() -> None:
    with (
        dns_server({SRV: [(0, 0, 0, ".")]}) as resolver,
        pytest.raises(ServiceNotOffered) as caught,
    ):
        await resolve_server("example.org", resolver=resolver)
    assert "example.org offers no XMPP client service" in str(caught.value)


@pytest.mark.parametrize("domain", ["localhost", "127.0.0.1", "::1", "box.localhost"])
async def test_addresses_and_localhost_are_not_looked_up(domain: str) -> None:
    with silent_dns_server() as resolver:
        # A lookup would wait for the silent server; these return at once, unchanged.
        addresses = await resolve_server(domain, resolver=resolver, lifetime=30)
    assert addresses == [ServerAddress(domain, 5222)]


async def test_login_goes_to_the_srv_target_and_past_one_that_is_down(
    make_server: ServerFactory,
) -> None:
    """The first target (priority 0) has nothing listening; the client moves on to the next
    (RFC 6120 §3.2.1) and logs in there, checking the server against the pin as always."""
    server = await make_server(domain="example.org")
    server.add_user("alice")
    down = free_port()
    zone = {SRV: [(0, 0, down, "127.0.0.1."), (10, 0, server.port, "127.0.0.1.")]}
    with dns_server(zone) as resolver:
        addresses = await resolve_server("example.org", resolver=resolver)
    assert addresses == [ServerAddress("127.0.0.1", down), ServerAddress("127.0.0.1", server.port)]

    def make(address: ServerAddress) -> PairingClient:
        return make_client(
            "alice@example.org",
            server=address,
            trust=TrustAnchor(fingerprint=server.fingerprint),
            password=PASSWORD,
        )

    client = await login_first(make, addresses)
    try:
        assert client.server_address == ServerAddress("127.0.0.1", server.port)
        assert str(client.boundjid.bare) == "alice@example.org"
    finally:
        await logout(client)


async def test_a_spoofed_srv_target_is_refused_by_the_pin_and_not_skipped(
    make_server: ServerFactory,
) -> None:
    """SRV answers are not authenticated; the pin (or CA) still decides. A target that
    answers with another certificate is a refusal before anything is sent, not a reason to
    try the next target."""
    real = await make_server(domain="example.org")
    real.add_user("alice")
    impostor = await make_server(domain="example.org")
    impostor.add_user("alice")
    zone = {SRV: [(0, 0, impostor.port, "127.0.0.1."), (10, 0, real.port, "127.0.0.1.")]}
    with dns_server(zone) as resolver:
        addresses = await resolve_server("example.org", resolver=resolver)

    def make(address: ServerAddress) -> PairingClient:
        return make_client(
            "alice@example.org",
            server=address,
            trust=TrustAnchor(fingerprint=real.fingerprint),
            password=PASSWORD,
        )

    with pytest.raises(ServerIdentityMismatch, match="not the pinned one; nothing was sent"):
        await login_first(make, addresses)
