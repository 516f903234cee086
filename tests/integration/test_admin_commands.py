"""Device inventory and revocation over XMPP (XEP-0050): users for themselves, admins for all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pairing.errors import RequestFailed
from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from pairing.xmpp.connection import ServerAddress, TrustAnchor, login, logout, make_client
from pairing.xmpp.devices import end_sessions, list_devices, revoke_device
from pairing.xmpp.saslcert import PLUGINS, revoke_certificate
from server_ext.model import CertState
from tests.integration.conftest import PASSWORD, DeviceFactory, RunningServer


def client(server: RunningServer, jid: str, **kw: Any) -> Any:
    return make_client(
        jid,
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        plugins=PLUGINS,
        **({"password": PASSWORD} | kw),
    )


async def online_device(server: RunningServer, make_device: DeviceFactory, jid: str) -> Any:
    device = make_device(jid)
    server.registry.devices.add(
        JID.parse(jid).bare,
        JID.parse(jid).resource,
        PeerCertificate.parse(device.der),
        added_by="t",
        added_via="t",
    )
    bot = make_client(
        jid,
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(cafile=server.cert_path),
        certfile=device.cert_path,
        keyfile=device.key_path,
    )
    await login(bot)
    return bot


async def test_users_see_and_revoke_only_their_own_devices(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    xmpp_server.add_user("bob")
    bot = await online_device(xmpp_server, make_device, "alice@localhost/bot")
    gone = asyncio.Event()
    bot.add_event_handler("disconnected", lambda _: gone.set())
    alice = client(xmpp_server, "alice@localhost/phone")
    bob = client(xmpp_server, "bob@localhost/pc")
    await login(alice)
    await login(bob)

    (device,) = await list_devices(alice)
    assert (device.name, device.jid, device.state, device.online) == (
        "bot",
        "alice@localhost/bot",
        "active",
        True,
    )
    assert await list_devices(bob) == []
    with pytest.raises(RequestFailed, match="forbidden"):
        await list_devices(bob, account="alice@localhost")
    with pytest.raises(RequestFailed, match="forbidden"):
        await list_devices(bob, account="*")
    with pytest.raises(RequestFailed, match="item-not-found"):
        await revoke_device(bob, device.id)
    with pytest.raises(RequestFailed, match="item-not-found"):
        await revoke_certificate(bob, "bot")  # XEP-0257 names are per account
    with pytest.raises(RequestFailed, match="forbidden"):
        await end_sessions(bob, "alice@localhost")
    assert not gone.is_set()
    record = xmpp_server.registry.devices.current_named(JID.parse("alice@localhost"), "bot")
    assert record is not None and record.state is CertState.ACTIVE

    note = await revoke_device(alice, "alice@localhost/bot", reason="sold it")
    assert "closed 1 session" in note
    await asyncio.wait_for(gone.wait(), 2)
    (device,) = await list_devices(alice)
    assert (device.state, device.online) == ("revoked", False)
    await logout(alice)
    await logout(bob)


async def test_admins_list_all_revoke_any_and_end_sessions(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    xmpp_server.add_user("root", admin=True)
    bot = await online_device(xmpp_server, make_device, "alice@localhost/bot")
    alice = client(xmpp_server, "alice@localhost/phone")
    await login(alice)
    ended = asyncio.Event()
    alice.add_event_handler("disconnected", lambda _: ended.set())
    root = client(xmpp_server, "root@localhost/console")
    await login(root)
    everything = await list_devices(root, account="*")
    assert [d.jid for d in everything] == ["alice@localhost/bot"]
    assert [d.name for d in await list_devices(root, account="alice@localhost")] == ["bot"]
    note = await end_sessions(root, "alice@localhost", reason="maintenance")
    assert "Ended 2 session(s)" in note
    await asyncio.wait_for(ended.wait(), 2)
    await revoke_device(root, everything[0].id, reason="policy")
    record = xmpp_server.registry.devices.current_named(JID.parse("alice@localhost"), "bot")
    assert record is not None and record.revoked_reason == "policy"
    del bot
    await logout(root)
