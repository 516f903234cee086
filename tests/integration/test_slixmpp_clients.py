"""Real slixmpp clients against the embedded server: the whole manual XEP-0257 flow."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pairing.errors import AuthenticationFailed, ServerIdentityMismatch
from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from pairing.xmpp.connection import ServerAddress, TrustAnchor, login, logout, make_client
from pairing.xmpp.saslcert import (
    PLUGINS,
    add_certificate,
    disable_certificate,
    list_certificates,
    revoke_certificate,
)
from tests.integration.conftest import PASSWORD, Device, DeviceFactory, RunningServer


def owner_client(server: RunningServer, user: str = "alice", **kw: Any) -> Any:
    return make_client(
        f"{user}@localhost/laptop",
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        password=kw.pop("password", PASSWORD),
        plugins=PLUGINS,
        **kw,
    )


def device_client(server: RunningServer, device: Device, *, direct_tls: bool = False) -> Any:
    port = server.direct_tls_port if direct_tls else server.port
    return make_client(
        str(device.jids[0]),
        server=ServerAddress(server.host, port, direct_tls=direct_tls),
        trust=TrustAnchor(cafile=server.cert_path),
        certfile=device.cert_path,
        keyfile=device.key_path,
        plugins=PLUGINS,
    )


async def test_password_login(xmpp_server: RunningServer) -> None:
    xmpp_server.add_user("alice")
    client = owner_client(xmpp_server)
    assert await login(client) == JID.parse("alice@localhost/laptop")
    await logout(client)


async def test_wrong_password_is_reported(xmpp_server: RunningServer) -> None:
    xmpp_server.add_user("alice")
    client = owner_client(xmpp_server, password="nope")
    with pytest.raises(AuthenticationFailed) as info:
        await login(client)
    assert info.value.condition == "not-authorized"


async def test_wrong_pin_sends_nothing(xmpp_server: RunningServer) -> None:
    xmpp_server.add_user("alice")
    client = make_client(
        "alice@localhost",
        server=ServerAddress(xmpp_server.host, xmpp_server.port),
        trust=TrustAnchor(fingerprint="00" * 32),
        password=PASSWORD,
    )
    with pytest.raises(ServerIdentityMismatch):
        await login(client)
    assert "login.failed" not in [e.event for e in xmpp_server.registry.audit.events()]


async def test_owner_registers_a_bot_which_logs_in_and_chats(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """The manual flow: append over XEP-0257, then the bot logs in with EXTERNAL and talks."""
    xmpp_server.add_user("alice")
    owner = owner_client(xmpp_server)
    await login(owner)
    device = make_device("alice@localhost/weatherbot")
    await add_certificate(owner, "Weather bot", device.der)
    items = await list_certificates(owner)
    (item,) = items
    assert (item.name, item.users) == ("Weather bot", ())
    assert item.certificate is not None and item.certificate.der == device.der
    assert item.certificate.jids == (JID.parse("alice@localhost/weatherbot"),)

    bot = device_client(xmpp_server, device)
    assert await login(bot) == JID.parse("alice@localhost/weatherbot")
    received: asyncio.Queue[Any] = asyncio.Queue()
    owner.add_event_handler("message", received.put_nowait)
    bot.send_message(mto="alice@localhost/laptop", mbody="21°C and sunny", mtype="chat")
    message = await asyncio.wait_for(received.get(), 5)
    assert message["body"] == "21°C and sunny"
    assert str(message["from"]) == "alice@localhost/weatherbot"
    items = await list_certificates(owner)
    assert items[0].users == ("weatherbot",)
    await logout(bot)
    await logout(owner)


async def test_direct_tls_login(xmpp_server: RunningServer, make_device: DeviceFactory) -> None:
    """XEP-0368: the same EXTERNAL login over the direct TLS port."""
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    xmpp_server.registry.devices.add(
        JID.parse("alice@localhost"),
        "bot",
        PeerCertificate.parse(device.der),
        added_by="t",
        added_via="t",
    )
    bot = device_client(xmpp_server, device, direct_tls=True)
    assert await login(bot) == JID.parse("alice@localhost/bot")
    await logout(bot)


async def test_unregistered_device_is_refused(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    bot = device_client(xmpp_server, make_device("alice@localhost/bot"))
    with pytest.raises(AuthenticationFailed) as info:
        await login(bot)
    assert info.value.condition == "not-authorized"
    assert "not registered" in info.value.text


async def test_revoke_disconnects_the_bot_quickly_and_for_good(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    owner = owner_client(xmpp_server)
    await login(owner)
    device = make_device("alice@localhost/bot")
    await add_certificate(owner, "bot", device.der)
    bot = device_client(xmpp_server, device)
    await login(bot)
    gone = asyncio.Event()
    bot.add_event_handler("disconnected", lambda _: gone.set())
    started = time.monotonic()
    await revoke_certificate(owner, "bot")
    await asyncio.wait_for(gone.wait(), 2)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"the revoked session lived {elapsed:.3f} s"
    again = device_client(xmpp_server, device)
    with pytest.raises(AuthenticationFailed) as info:
        await login(again)
    assert "revoked" in info.value.text
    await logout(owner)


async def test_disable_keeps_the_session_but_blocks_the_next_login(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    owner = owner_client(xmpp_server)
    await login(owner)
    device = make_device("alice@localhost/bot")
    await add_certificate(owner, "bot", device.der)
    bot = device_client(xmpp_server, device)
    await login(bot)
    await disable_certificate(owner, "bot")
    bot.register_plugin("xep_0199")
    rtt = await bot.plugin["xep_0199"].ping("localhost", timeout=5)
    assert rtt >= 0  # still served after disable
    items = await list_certificates(owner)
    assert items[0].users == ("bot",)
    again = device_client(xmpp_server, device)
    with pytest.raises(AuthenticationFailed):
        await login(again)
    await logout(bot)
    await logout(owner)


async def test_a_newer_session_replaces_the_older_on_the_same_resource(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """RFC 6120 §7.7.2.2: the old session is closed with <conflict/>."""
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    xmpp_server.registry.devices.add(
        JID.parse("alice@localhost"),
        "bot",
        PeerCertificate.parse(device.der),
        added_by="t",
        added_via="t",
    )
    first = device_client(xmpp_server, device)
    await login(first)
    errors: asyncio.Queue[Any] = asyncio.Queue()
    first.add_event_handler("stream_error", errors.put_nowait)
    second = device_client(xmpp_server, device)
    await login(second)
    error = await asyncio.wait_for(errors.get(), 5)
    assert error["condition"] == "conflict"
    await logout(second)


async def test_slixmpp_over_tls12_binds_its_password_login_to_the_channel(
    xmpp_server: RunningServer,
) -> None:
    """Over TLS 1.2 slixmpp picks SCRAM-SHA-256-PLUS with tls-unique; it must log in."""
    import ssl

    xmpp_server.add_user("alice")
    client = owner_client(xmpp_server)
    client.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await login(client) == JID.parse("alice@localhost/laptop")
    (session,) = xmpp_server.server.sessions.resources(JID.parse("alice@localhost"))
    assert session.auth_method == "SCRAM-SHA-256-PLUS"
    await logout(client)
