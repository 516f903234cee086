"""Hostile and broken input on loopback: each gets its stream error, others keep working."""

from __future__ import annotations

import asyncio
import base64

from tests.integration.conftest import PASSWORD, RunningServer, ServerFactory
from tests.support.rawclient import RawClient

PING = "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"


async def logged_in(srv: RawClient | None, server: RunningServer, user: str) -> RawClient:
    client = await server.raw_tls()
    reply = await client.auth("PLAIN", f"\0{user}\0{PASSWORD}".encode())
    assert b"<success" in reply
    assert b"<jid>" in await client.bind("bystander")
    return client


async def assert_still_served(client: RawClient) -> None:
    await client.send(PING)
    reply = await client.read_iq("p1")
    assert b"type='result'" in reply and b"id='p1'" in reply


async def test_malformed_xml_gets_not_well_formed_and_others_stay_up(
    xmpp_server: RunningServer,
) -> None:
    xmpp_server.add_user("alice")
    bystander = await logged_in(None, xmpp_server, "alice")
    attacker = await xmpp_server.raw()
    await attacker.open_stream()
    await attacker.send("<message><body>unclosed</message>")
    out = await attacker.read_all()
    assert b"<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert out.endswith(b"</stream:stream>")
    await assert_still_served(bystander)
    await bystander.close()


async def test_invalid_utf8_gets_not_well_formed(xmpp_server: RunningServer) -> None:
    attacker = await xmpp_server.raw()
    await attacker.open_stream()
    await attacker.send(b"<message><body>\xff\xfe</body></message>")
    assert b"<not-well-formed" in await attacker.read_all()


async def test_doctype_gets_restricted_xml(xmpp_server: RunningServer) -> None:
    """RFC 6120 §11.1: a DTD (here a billion-laughs prelude) is refused outright."""
    xmpp_server.add_user("alice")
    bystander = await logged_in(None, xmpp_server, "alice")
    attacker = await xmpp_server.raw()
    await attacker.send(
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>"
    )
    out = await attacker.read_all()
    assert b"<restricted-xml xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    await assert_still_served(bystander)
    await bystander.close()


async def test_comment_and_processing_instruction_get_restricted_xml(
    xmpp_server: RunningServer,
) -> None:
    for payload in ("<!-- hello -->", "<?php echo 1; ?>"):
        client = await xmpp_server.raw()
        await client.open_stream()
        await client.send(payload)
        assert b"<restricted-xml" in await client.read_all()


async def test_oversized_stanza_gets_policy_violation(make_server: ServerFactory) -> None:
    server = await make_server(max_stanza_bytes=4096)
    server.add_user("alice")
    server.add_user("bob")
    bystander = await logged_in(None, server, "bob")
    attacker = await logged_in(None, server, "alice")
    await attacker.send("<message to='bob@localhost'><body>" + "x" * 10_000)
    out = await attacker.read_all()
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    await assert_still_served(bystander)
    await bystander.close()


async def test_idle_unauthenticated_connection_is_closed(make_server: ServerFactory) -> None:
    server = await make_server(auth_timeout=0.5)
    idle = await server.raw()
    await idle.open_stream()
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = await idle.read_all(timeout=5)
    assert b"<connection-timeout" in out
    assert loop.time() - started < 3


async def test_unauthenticated_connections_are_capped_per_address(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_unauthenticated_per_address=3)
    held = [await server.raw() for _ in range(3)]
    for client in held:
        await client.open_stream()
    refused = await server.raw()
    out = await refused.read_all()
    assert b"<policy-violation" in out
    # Freeing a slot lets a new connection in.
    await held[0].close()
    await asyncio.sleep(0.1)
    again = await server.raw()
    assert b"<starttls" in await again.open_stream()


async def test_failed_password_logins_are_throttled(make_server: ServerFactory) -> None:
    server = await make_server(failed_logins_per_account_and_address=3)
    server.add_user("alice")
    for _ in range(3):
        client = await server.raw_tls()
        reply = await client.auth("PLAIN", b"\0alice\0wrong")
        assert b"<not-authorized/>" in reply
        await client.close()
    client = await server.raw_tls()
    # Even the right password is refused while the account is throttled: no oracle.
    reply = await client.auth("PLAIN", f"\0alice\0{PASSWORD}".encode())
    assert b"<temporary-auth-failure/>" in reply
    assert b"retry in" in reply


async def test_plaintext_auth_is_refused(xmpp_server: RunningServer) -> None:
    client = await xmpp_server.raw()
    await client.open_stream()
    payload = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    await client.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
    )
    out = await client.read_all()
    assert b"<policy-violation" in out
    assert b"<success" not in out
