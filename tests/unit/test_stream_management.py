"""XEP-0198 stream management without sockets: the counters, acks and resumption."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pairing.protocol.identity import PeerCertificate
from server_ext.session.actions import Bound, ResumeRequested, SMEnabled
from server_ext.session.c2s import C2SSession
from server_ext.session.sm import (
    ACK_WINDOW,
    SEQUENCE_MODULUS,
    HandledCountTooHigh,
    StreamManagement,
    parse_h,
)
from server_ext.session.stream_management import REQUEST_ACK
from tests.unit.test_c2s_session import ALICE, BOT, HEADER, Owner, World, auth, device, secured

SM = "urn:xmpp:sm:3"
BIND = b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"


def bound(world: World, cert: PeerCertificate) -> tuple[C2SSession, Owner]:
    """A device session logged in with ``cert`` (EXTERNAL) and bound."""
    session, owner = authenticated(world, cert)
    assert session.receive_data(BIND) == [Bound()]
    session.data_to_send()
    return session, owner


def authenticated(world: World, cert: PeerCertificate) -> tuple[C2SSession, Owner]:
    session, owner = secured(world, cert)
    session.data_to_send()
    auth(session, "EXTERNAL")
    session.receive_data(HEADER)
    features = session.data_to_send()
    assert f"<sm xmlns='{SM}'/>".encode() in features  # §2: offered after authentication
    return session, owner


def enable(session: C2SSession) -> str:
    actions = session.receive_data(f"<enable xmlns='{SM}' resume='true' max='60'/>".encode())
    enabled = ET.fromstring(session.data_to_send())
    assert enabled.tag == f"{{{SM}}}enabled" and enabled.get("resume") == "true"
    assert enabled.get("max") == "60"  # the client's wish, under the server's 300 s
    resume_id = enabled.get("id")
    assert resume_id and actions == [SMEnabled(resume_id)]
    return resume_id


def message(body: str) -> ET.Element:
    element = ET.Element("{jabber:client}message", {"to": str(BOT), "from": str(ALICE)})
    ET.SubElement(element, "{jabber:client}body").text = body
    return element


def test_the_counters_wrap_at_two_to_the_32(tmp_path: Path) -> None:
    management = StreamManagement("id", timeout=60, max_unacked=10)
    management.handled = SEQUENCE_MODULUS - 1
    management.stanza_received()
    assert management.handled == 0  # §4: h is mod 2^32
    management.sent = management.acked = SEQUENCE_MODULUS - 2
    for n in range(4):
        management.stanza_sent(f"<m n='{n}'/>".encode())
    assert management.sent == 2 and management.unacked == 4
    management.ack(SEQUENCE_MODULUS - 1)  # one acknowledged before the wrap
    assert management.unacked == 3
    assert management.resume(1) == [b"<m n='3'/>"]  # two more across it
    with pytest.raises(HandledCountTooHigh):
        management.ack(3)  # one more than was ever sent
    # The queue is bounded in bytes too, whatever the count.
    small = StreamManagement("id", timeout=60, max_unacked=10, max_bytes=100)
    small.stanza_sent(b"x" * 60)
    assert not small.overflowed
    small.ack(1)
    small.stanza_sent(b"x" * 60)
    assert not small.overflowed  # acknowledged bytes are released
    small.stanza_sent(b"x" * 60)
    assert small.overflowed
    assert parse_h("4294967295") == SEQUENCE_MODULUS - 1
    assert parse_h("4294967296") is None and parse_h("-1") is None and parse_h("½") is None


def test_acks_count_every_stanza_both_ways(tmp_path: Path) -> None:
    world = World(tmp_path)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    session, _ = bound(world, cert)
    # §3: <enable/> is refused before bind and a second time after.
    enable(session)
    session.receive_data(f"<enable xmlns='{SM}'/>".encode())
    assert b"<unexpected-request" in session.data_to_send()
    # Two stanzas in, one of them answered by the stream itself (a ping to the server).
    session.receive_data(b"<presence/><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    session.data_to_send()
    session.receive_data(f"<r xmlns='{SM}'/>".encode())
    assert session.data_to_send() == f"<a xmlns='{SM}' h='2'/>".encode()
    session.deliver(message("one"))
    assert session.sm is not None and session.sm.unacked == 2  # the ping's result, the message
    session.receive_data(f"<a xmlns='{SM}' h='2'/>".encode())
    assert session.sm.unacked == 0
    # §4: acknowledging more than was sent ends the stream with handled-count-too-high.
    session.receive_data(f"<a xmlns='{SM}' h='3'/>".encode())
    out = session.data_to_send()
    assert b"<undefined-condition" in out and b"handled-count-too-high" in out
    assert session.closed and not session.resumable


def test_resumption_retransmits_what_was_not_acknowledged(tmp_path: Path) -> None:
    world = World(tmp_path)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    old, _ = bound(world, cert)
    resume_id = enable(old)
    old.receive_data(b"<presence/>")
    old.deliver(message("seen"))
    old.deliver(message("lost"))
    old.data_to_send()
    assert old.resumable
    old.detach()
    old.deliver(message("while away"))  # queued, not written to the dead stream
    assert old.data_to_send() == b""
    new, _ = authenticated(world, cert)
    actions = new.receive_data(f"<resume xmlns='{SM}' previd='{resume_id}' h='1'/>".encode())
    assert actions == [ResumeRequested(resume_id, 1)]
    assert new.resume(old, resume_id, 1) == [Bound()]
    out = new.data_to_send().decode()
    assert out.startswith(f"<resumed xmlns='{SM}' previd='{resume_id}' h='1'/>")
    assert "seen" not in out and out.index("lost") < out.index("while away")
    assert new.jid == BOT and old.sm is None
    # The session goes on: the counters continue where they were.
    new.receive_data(f"<r xmlns='{SM}'/>".encode())
    assert new.data_to_send() == f"<a xmlns='{SM}' h='1'/>".encode()


def test_another_device_or_account_cannot_resume(tmp_path: Path) -> None:
    world = World(tmp_path)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    sibling = device(ALICE.with_resource("cam"))
    world.registry.devices.add(ALICE, "cam", sibling, added_by="t", added_via="t")
    old, _ = bound(world, cert)
    resume_id = enable(old)
    old.detach()
    # A sibling device of the same account knows the id (say it sniffed it): refused, as if
    # the id did not exist, and the session stays resumable for its own device.
    thief, _ = authenticated(world, sibling)
    assert thief.resume(old, resume_id, 0) == []
    assert b"<item-not-found" in thief.data_to_send() and thief.jid is None
    assert old.sm is not None and old.resumable
    # A wrong id for the right session is refused too.
    owner_again, _ = authenticated(world, cert)
    assert owner_again.resume(old, "not-the-id", 0) == []
    assert b"<item-not-found" in owner_again.data_to_send()


def test_over_quota_closes_an_attached_session(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.services = dataclasses.replace(world.services, max_unacked=3)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    session, _ = bound(world, cert)
    enable(session)
    for n in range(4):
        session.deliver(message(str(n)))
    out = session.data_to_send()
    assert b"<resource-constraint" in out and session.closed and not session.resumable


def test_a_zero_timeout_turns_resumption_off(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.services = dataclasses.replace(world.services, resume_timeout=0)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    session, _ = bound(world, cert)
    actions = session.receive_data(f"<enable xmlns='{SM}' resume='true' max='60'/>".encode())
    assert actions == [] and session.data_to_send() == f"<enabled xmlns='{SM}'/>".encode()
    assert not session.resumable


def detached_and_back(tmp_path: Path) -> tuple[C2SSession, str, C2SSession]:
    """A device's session left detached with resumption on, and the same device's new
    stream, authenticated: (old session, its resume id, new session)."""
    world = World(tmp_path)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    old, _ = bound(world, cert)
    resume_id = enable(old)
    old.detach()
    new, _ = authenticated(world, cert)
    return old, resume_id, new


def test_a_stream_that_ends_in_the_same_chunk_does_not_take_the_session(tmp_path: Path) -> None:
    old, resume_id, new = detached_and_back(tmp_path)
    actions = new.receive_data(
        f"<resume xmlns='{SM}' previd='{resume_id}' h='0'/></stream:stream>".encode()
    )
    assert actions == [] and new.closed  # nothing is acted on for a stream that is over
    assert new.resume(old, resume_id, 0) == []  # nor if an adapter asked anyway
    assert old.sm is not None and old.detached and new.jid is None


def test_the_server_asks_for_acks_so_a_client_that_only_answers_stays(tmp_path: Path) -> None:
    """slixmpp acknowledges only when asked: without <r/> its queue would fill and close."""
    world = World(tmp_path)
    world.services = dataclasses.replace(world.services, max_unacked=20)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    session, _ = bound(world, cert)
    enable(session)
    received = requests = 0
    for n in range(200):
        session.deliver(message(str(n)))
        out = session.data_to_send()
        received += out.count(b"<message")
        if f"<r xmlns='{SM}'/>".encode() in out:
            requests += 1
            session.receive_data(f"<a xmlns='{SM}' h='{received}'/>".encode())
    assert not session.closed and requests >= 200 // ACK_WINDOW - 1
    assert session.sm is not None and session.sm.unacked < ACK_WINDOW


def test_a_resume_and_a_bind_in_one_chunk_keep_the_bind(tmp_path: Path) -> None:
    """§5: resumption is instead of a bind. A client that sends both at once gets the bind
    (answered first) and <unexpected-request/> for the resume; the old session stays
    detached and resumable, and nothing raises."""
    old, resume_id, new = detached_and_back(tmp_path)
    actions = new.receive_data(f"<resume xmlns='{SM}' previd='{resume_id}' h='0'/>".encode() + BIND)
    assert actions == [ResumeRequested(resume_id, 0), Bound()]
    assert new.resume(old, resume_id, 0) == []
    assert b"<unexpected-request" in new.data_to_send()
    assert new.jid == BOT and old.sm is not None and old.resumable


def test_request_ack_is_the_bytes_it_always_was() -> None:
    assert REQUEST_ACK == b"<r xmlns='urn:xmpp:sm:3'/>"
