"""XEP-0198 resumption on loopback with real TLS: a device whose link is cut comes back to
its session, with what was sent meanwhile, once; and nobody else can take that session."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from device_agent.enrollment import enroll
from device_agent.keystore import KeyStore
from device_agent.runtime import run
from pairing.protocol.jid import JID
from server_ext.admin.token_issuer import issue_token
from server_ext.net.c2s_connection import C2SConnection
from server_ext.policy.tokens import TokenRules
from server_ext.session.sm import ACK_WINDOW
from tests.integration.conftest import DeviceFactory, RunningServer, ServerFactory
from tests.integration.test_device_revocation import cli
from tests.integration.test_device_runtime import wait_for_line
from tests.integration.test_external_login import register
from tests.support.rawclient import RawClient

SM = "urn:xmpp:sm:3"
BOT = "alice@localhost/bot"


async def device_login(server: RunningServer, device: object, *, bind: bool = True) -> RawClient:
    """TLS with the device's certificate, SASL EXTERNAL, and a bind unless told otherwise."""
    client = await server.raw_tls(device)  # type: ignore[arg-type]
    assert b"<success" in await client.auth("EXTERNAL", b"")
    if bind:
        assert b"<jid>" in await client.bind()
    return client


async def enable(client: RawClient) -> str:
    await client.send(f"<enable xmlns='{SM}' resume='true'/>")
    enabled = await client.read_until(b"/>")
    match = re.search(rb"id='([^']+)'", enabled)
    assert match is not None and b"resume='true'" in enabled, enabled
    return match.group(1).decode()


async def cut(server: RunningServer, client: RawClient) -> None:
    """Kill the socket (no closing tag, no TLS close) and wait until the server has noticed."""
    client.writer.transport.abort()
    for _ in range(500):
        if len(server.server.detached):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never noticed the cut link")


async def resume(server: RunningServer, device: object, previd: str, h: int) -> RawClient:
    client = await device_login(server, device, bind=False)
    features = await client.open_stream()
    assert f"<sm xmlns='{SM}'/>".encode() in features  # XEP-0198 §2
    await client.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
    return client


async def message(sender: RawClient, body: str) -> None:
    await sender.send(f"<message to='{BOT}' type='chat'><body>{body}</body></message>")


async def test_a_cut_link_resumes_with_what_was_sent_meanwhile_once(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    bot_device, cam_device = make_device(BOT), make_device("alice@localhost/cam")
    register(xmpp_server, bot_device, "bot")
    register(xmpp_server, cam_device, "cam")
    bot = await device_login(xmpp_server, bot_device)
    previd = await enable(bot)
    cam = await device_login(xmpp_server, cam_device)
    await message(cam, "m1")
    await message(cam, "m2")
    await bot.read_until(b"m2</body></message>")
    # The device acknowledged m1 only (<a h='1'/>), then its link died.
    await bot.send(f"<a xmlns='{SM}' h='1'/>")
    await bot.send(f"<r xmlns='{SM}'/>")
    await bot.read_until(b"h='0'/>")
    await cut(xmpp_server, bot)
    assert xmpp_server.server.sessions.get(bot_device.jids[0]) is not None  # still routed
    await message(cam, "m3")
    await message(cam, "m4")
    await cam.send(f"<iq type='get' id='sync' to='{BOT}'><ping xmlns='urn:xmpp:ping'/></iq>")
    back = await resume(xmpp_server, bot_device, previd, 1)
    # §5: <resumed/> with the server's count of what it handled, then everything unacked.
    await back.read_until(f"<resumed xmlns='{SM}' previd='{previd}' h='0'/>".encode())
    await back.send(f"<r xmlns='{SM}'/>")  # a marker: all retransmissions come before it
    received = await back.read_until(f"<a xmlns='{SM}' h='0'/>".encode())
    for body in (b"m2", b"m3", b"m4"):
        assert received.count(b">" + body + b"</body>") == 1, received
    assert b"m1</body>" not in received and b"id='sync'" in received
    # The session goes on: new stanzas arrive on the new link.
    await message(cam, "m5")
    await back.read_until(b"m5</body></message>")
    assert len(xmpp_server.server.detached) == 0
    await back.close()
    await cam.close()


async def test_resumption_is_refused_after_the_timeout(
    make_server: ServerFactory, make_device: DeviceFactory
) -> None:
    server = await make_server(resume_timeout=2.0)
    server.add_user("alice")
    device = make_device(BOT)
    register(server, device)
    cam_device = make_device("alice@localhost/cam")
    register(server, cam_device, "cam")
    cam = await device_login(server, cam_device)
    bot = await device_login(server, device)
    previd = await enable(bot)
    await cut(server, bot)
    await cam.send(
        "<iq type='get' id='q1' to='alice@localhost/bot'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    await message(cam, "lost")
    for _ in range(1000):  # the loop-wide timer drops it after 'max' seconds
        if not len(server.server.detached):
            break
        await asyncio.sleep(0.01)
    assert server.server.sessions.get(device.jids[0]) is None
    # What was sent to the device and never acknowledged is answered now: the request gets
    # an error, the message a bounce (every request gets an answer).
    assert b"type='error'" in await cam.read_iq("q1", timeout=10)
    bounce = await cam.read_until(b"</message>")
    assert b"recipient-unavailable" in bounce and b"lost" in bounce
    late = await resume(server, device, previd, 0)
    assert b"<item-not-found" in await late.read_until(b"</failed>")
    # §5: after a refused resumption the client binds a new session on the same stream.
    await late.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert b"<jid>alice@localhost/bot</jid>" in await late.read_iq("b2")
    await late.close()
    await cam.close()


async def test_a_revoked_device_loses_its_detached_session_and_cannot_resume(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device(BOT)
    register(xmpp_server, device)
    bot = await device_login(xmpp_server, device)
    previd = await enable(bot)
    await cut(xmpp_server, bot)
    code, out, err = await cli(
        "server-ext", "--data-dir", str(xmpp_server.config.data_dir), "devices", "revoke", BOT
    )
    assert code == 0, err
    assert "closed 1 live session(s)" in out, out
    # Dropped at once, not at the end of 'max'.
    assert len(xmpp_server.server.detached) == 0
    assert xmpp_server.server.sessions.get(device.jids[0]) is None
    # Resumption needs SASL EXTERNAL first, and the revoked certificate no longer passes it.
    client = await xmpp_server.raw_tls(device)
    reply = await client.auth("EXTERNAL", b"")
    assert b"<not-authorized" in reply and b"revoked" in reply
    del previd
    await client.close()


async def test_another_device_cannot_resume_a_session_and_a_new_login_replaces_it(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    xmpp_server.add_user("bob")
    bot_device = make_device(BOT)
    sibling = make_device("alice@localhost/cam")
    stranger = make_device("bob@localhost/bot")
    register(xmpp_server, bot_device, "bot")
    register(xmpp_server, sibling, "cam")
    register(xmpp_server, stranger, "bot")
    bot = await device_login(xmpp_server, bot_device)
    previd = await enable(bot)
    await cut(xmpp_server, bot)
    for other in (sibling, stranger):
        thief = await resume(xmpp_server, other, previd, 0)
        assert b"<item-not-found" in await thief.read_until(b"</failed>")
        await thief.close()
    assert len(xmpp_server.server.detached) == 1  # still waiting for its own device
    # RFC 6120 §7.7.2.2: a new login of the same full JID takes the resource over, and the
    # detached session is gone with its resume id.
    fresh = await device_login(xmpp_server, bot_device)
    assert len(xmpp_server.server.detached) == 0
    late = await resume(xmpp_server, bot_device, previd, 0)
    assert b"<item-not-found" in await late.read_until(b"</failed>")
    await late.close()
    await fresh.close()


async def test_device_agent_run_resumes_after_its_link_is_cut(
    make_server: ServerFactory, make_device: DeviceFactory, tmp_path: Path
) -> None:
    # A small queue: the device (slixmpp, which acknowledges only when asked) must be asked
    # often enough to stay under it.
    xmpp_server = await make_server(max_unacked_stanzas=20)
    xmpp_server.add_user("alice")
    issued = issue_token(
        xmpp_server.registry,
        TokenRules(),
        account=JID.parse("alice@localhost"),
        resource="sensor",
        name=None,
        ttl=None,
        created_by="test",
    )
    uri = issued.uri(
        host=xmpp_server.host, port=xmpp_server.port, fingerprint=xmpp_server.fingerprint
    )
    store = KeyStore(tmp_path / "sensor")
    await enroll(store, uri)
    sensor = JID.parse("alice@localhost/sensor")
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run(store.state_dir, report=lines.append, min_delay=0.1, stop=stop))
    first = await wait_for_line(lines, "online as alice@localhost/sensor")
    conn = xmpp_server.server.sessions.get(sensor)
    assert isinstance(conn, C2SConnection) and conn.session is not None
    management = conn.session.sm
    assert management is not None and management.resume_id is not None
    # The link dies under the device (the server's side of the socket is killed); a message
    # for the device arrives while it is away.
    assert conn.transport is not None
    conn.transport.abort()
    cam_device = make_device("alice@localhost/cam")
    register(xmpp_server, cam_device, "cam")
    cam = await device_login(xmpp_server, cam_device)
    await cam.send("<message to='alice@localhost/sensor'><body>while away</body></message>")
    await wait_for_line(lines, "online as alice@localhost/sensor (session resumed)", first)
    resumed = xmpp_server.server.sessions.get(sensor)
    assert isinstance(resumed, C2SConnection) and resumed is not conn
    assert resumed.session is not None and resumed.session.sm is management
    # The device acknowledges what it got, the message sent while it was away included.
    resumed.deliver(ET.Element("{jabber:client}message", {"to": str(sensor)}))
    resumed.request_ack()
    for _ in range(500):
        if management.unacked == 0 and management.acked >= 2:
            break
        await asyncio.sleep(0.01)
    assert management.unacked == 0 and management.acked >= 2, (management.acked, lines)
    assert not any("connection lost" in line for line in lines[first + 2 :])
    # Many more stanzas than the queue holds, in bursts smaller than it: the server asks for
    # acks (the device's client acknowledges only when asked) and the queue drains each time.
    for burst in range(6):
        for n in range(10):
            await cam.send(f"<message to='{sensor}'><body>{burst}.{n}</body></message>")
        for _ in range(1000):
            if management.sent >= 2 + 10 * (burst + 1) and management.unacked < ACK_WINDOW:
                break
            await asyncio.sleep(0.01)
        assert management.unacked < ACK_WINDOW, (burst, management.unacked)
    # The device itself answers a last request (its client offers no such query: an error).
    await cam.send("<iq type='get' id='last' to='alice@localhost/sensor'><query xmlns='x'/></iq>")
    assert b"from='alice@localhost/sensor'" in await cam.read_iq("last", timeout=10)
    assert xmpp_server.server.sessions.get(sensor) is resumed and not resumed.session.closed
    assert not any("connection lost" in line for line in lines[first + 2 :])
    stop.set()
    await asyncio.wait_for(task, 10)
    await cam.close()
