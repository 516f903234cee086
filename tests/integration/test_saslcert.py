"""XEP-0257 on the server, spoken byte for byte, where Prosody's module goes wrong."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt

from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from tests.integration.conftest import PASSWORD, Device, DeviceFactory, RunningServer
from tests.support.rawclient import RawClient

NS = "urn:xmpp:saslcert:1"


async def password_session(server: RunningServer, user: str = "alice") -> RawClient:
    client = await server.raw_tls()
    assert b"<success" in await client.auth("PLAIN", f"\0{user}\0{PASSWORD}".encode())
    assert b"<jid>" in await client.bind("laptop")
    return client


async def device_session(server: RunningServer, device: Device) -> RawClient:
    client = await server.raw_tls(device)
    assert b"<success" in await client.auth("EXTERNAL", b"")
    assert b"<jid>" in await client.bind()
    return client


async def iq(client: RawClient, body: str, iq_type: str = "set", iq_id: str = "x") -> bytes:
    await client.send(f"<iq type='{iq_type}' id='{iq_id}'>{body}</iq>")
    return await client.read_iq(iq_id)


def append(name: str, der: bytes, *, no_management: bool = False) -> str:
    flag = "<no-cert-management/>" if no_management else ""
    return (
        f"<append xmlns='{NS}'><name>{name}</name>"
        f"<x509cert>{base64.b64encode(der).decode()}</x509cert>{flag}</append>"
    )


async def test_disco_advertises_saslcert(xmpp_server: RunningServer) -> None:
    xmpp_server.add_user("alice")
    client = await password_session(xmpp_server)
    reply = await iq(client, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "get")
    assert f"var='{NS}'".encode() in reply or f'var="{NS}"'.encode() in reply


async def test_append_then_items_then_external_login(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    owner = await password_session(xmpp_server)
    assert b"type='result'" in await iq(owner, append("Weather bot", device.der))
    items = await iq(owner, f"<items xmlns='{NS}'/>", "get")
    assert b"<name>Weather bot</name>" in items
    assert base64.b64encode(device.der) in items
    assert b"<users>" not in items  # nobody is logged in with it yet
    bot = await device_session(xmpp_server, device)
    items = await iq(owner, f"<items xmlns='{NS}'/>", "get", "y")
    # XEP-0257 §3.2: <users/> lists the resources online with this certificate.
    assert b"<users><resource>bot</resource></users>" in items
    await bot.close()
    await owner.close()


async def test_duplicate_name_is_a_conflict(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """Prosody silently overwrites; XEP-0257 §3.1 says a duplicate MUST get an error."""
    xmpp_server.add_user("alice")
    first, second = make_device("alice@localhost/a"), make_device("alice@localhost/b")
    owner = await password_session(xmpp_server)
    assert b"type='result'" in await iq(owner, append("bot", first.der))
    reply = await iq(owner, append("bot", second.der), iq_id="dup")
    assert b"<conflict" in reply
    record = xmpp_server.registry.devices.current_named(JID.parse("alice@localhost"), "bot")
    assert record is not None and record.der == first.der


async def test_bad_certificates_are_refused_with_reasons(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    owner = await password_session(xmpp_server)
    garbage = await iq(
        owner, f"<append xmlns='{NS}'><name>g</name><x509cert>@@@</x509cert></append>", iq_id="g"
    )
    assert b"<bad-request" in garbage and b"base64" in garbage
    not_a_cert = await iq(owner, append("n", b"hello world"), iq_id="n")
    assert b"<bad-request" in not_a_cert and b"cannot be parsed" in not_a_cert
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = make_device("alice@localhost/old", valid_for=dt.timedelta(days=1), now=past)
    reply = await iq(owner, append("old", expired.der), iq_id="e")
    assert b"<not-acceptable" in reply and b"expired" in reply
    foreign = make_device("bob@localhost/bot")
    reply = await iq(owner, append("f", foreign.der), iq_id="f")
    assert b"<not-acceptable" in reply and b"bob@localhost/bot" in reply
    missing = await iq(owner, f"<append xmlns='{NS}'><x509cert>AA==</x509cert></append>", iq_id="m")
    assert b"<bad-request" in missing and b"name" in missing
    assert xmpp_server.registry.devices.certificates(JID.parse("alice@localhost")) == []


async def test_unknown_name_on_disable_or_revoke_is_item_not_found(
    xmpp_server: RunningServer,
) -> None:
    xmpp_server.add_user("alice")
    owner = await password_session(xmpp_server)
    for action in ("disable", "revoke"):
        reply = await iq(
            owner, f"<{action} xmlns='{NS}'><name>nope</name></{action}>", iq_id=action
        )
        assert b"<item-not-found" in reply


async def test_revoke_closes_the_live_session_at_once(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    owner = await password_session(xmpp_server)
    assert b"type='result'" in await iq(owner, append("bot", device.der))
    bot = await device_session(xmpp_server, device)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert b"type='result'" in await iq(
        owner, f"<revoke xmlns='{NS}'><name>bot</name></revoke>", iq_id="r"
    )
    closed = await bot.read_all(timeout=2)
    elapsed = loop.time() - started
    assert b"<reset xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in closed
    assert b"revoked" in closed
    assert elapsed < 0.5, f"revocation took {elapsed:.3f} s"
    again = await xmpp_server.raw_tls(device)
    reply = await again.auth("EXTERNAL", b"")
    assert b"<not-authorized/>" in reply and b"revoked" in reply


async def test_disable_blocks_new_logins_but_keeps_live_sessions(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    owner = await password_session(xmpp_server)
    await iq(owner, append("bot", device.der))
    bot = await device_session(xmpp_server, device)
    assert b"type='result'" in await iq(
        owner, f"<disable xmlns='{NS}'><name>bot</name></disable>", iq_id="d"
    )
    await bot.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"type='result'" in await bot.read_iq("p")
    again = await xmpp_server.raw_tls(device)
    assert b"<not-authorized/>" in await again.auth("EXTERNAL", b"")


async def test_no_cert_management_is_enforced(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    other = make_device("alice@localhost/other")
    owner = await password_session(xmpp_server)
    await iq(owner, append("bot", device.der, no_management=True))
    bot = await device_session(xmpp_server, device)
    reply = await iq(bot, append("sneaky", other.der), iq_id="s")
    assert b"<forbidden" in reply
    reply = await iq(bot, f"<revoke xmlns='{NS}'><name>bot</name></revoke>", iq_id="t")
    assert b"<forbidden" in reply


async def test_external_session_may_not_change_the_password(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    xmpp_server.registry.devices.add(
        JID.parse("alice@localhost"),
        "bot",
        PeerCertificate.parse(device.der),
        added_by="t",
        added_via="t",
    )
    bot = await device_session(xmpp_server, device)
    reply = await iq(
        bot,
        "<query xmlns='jabber:iq:register'><username>alice</username>"
        "<password>stolen</password></query>",
        iq_id="pw",
    )
    assert b"<not-authorized" in reply
    owner = await password_session(xmpp_server)
    reply = await iq(
        owner,
        "<query xmlns='jabber:iq:register'><username>alice</username>"
        "<password>a new one</password></query>",
        iq_id="pw2",
    )
    assert b"type='result'" in reply
    fresh = await xmpp_server.raw_tls()
    assert b"<success" in await fresh.auth("PLAIN", b"\0alice\0a new one")


async def test_every_unknown_request_gets_an_answer(xmpp_server: RunningServer) -> None:
    """Prosody crashes silently on some requests; here each one is answered."""
    xmpp_server.add_user("alice")
    owner = await password_session(xmpp_server)
    for n, body in enumerate(
        [
            "<query xmlns='urn:example:unknown'/>",
            f"<items xmlns='{NS}'/>",  # items as a set
            f"<frobnicate xmlns='{NS}'/>",
        ]
    ):
        reply = await iq(owner, body, "set", f"u{n}")
        assert b"type='error'" in reply
