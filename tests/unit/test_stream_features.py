"""Stream features are serialized once per distinct content, and are what they always were."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pairing.protocol.jid import JID
from server_ext.wire import features as features_module
from server_ext.wire.stream import C2SStream

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' "
    b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def features_of(stream: C2SStream) -> bytes:
    out = stream.data_to_send()
    return out[out.index(b"<stream:features") :]


def through_every_phase(
    extra: ET.Element | None = None, session: tuple[ET.Element, ...] = ()
) -> list[bytes]:
    stream = C2SStream("example.org", session_features=session)
    stream.receive_data(HEADER)
    seen = [features_of(stream)]
    stream.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    stream.data_to_send()
    stream.tls_established(
        mechanisms=("EXTERNAL", "PLAIN"), extra_features=(extra,) if extra is not None else ()
    )
    stream.receive_data(HEADER)
    seen.append(features_of(stream))
    stream.receive_data(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGE=</auth>".encode())
    stream.auth_succeeded(JID.parse("alice@example.org"))
    stream.data_to_send()
    stream.receive_data(HEADER)
    seen.append(features_of(stream))
    return seen


def test_features_are_serialized_once_per_content(monkeypatch: pytest.MonkeyPatch) -> None:
    getattr(features_module, "_FEATURES", {}).clear()  # a fresh cache
    first = through_every_phase()
    calls: list[str] = []
    real = features_module.serialize

    def counting(element: ET.Element) -> bytes:
        calls.append(element.tag)
        return real(element)

    monkeypatch.setattr(features_module, "serialize", counting)
    assert through_every_phase() == first
    assert "{http://etherx.jabber.org/streams}features" not in calls
    # Other extra features are other content: serialized, and not confused with the first.
    offer = ET.Element("{urn:example:offer}offer", {"kind": "a"})
    with_offer = through_every_phase(offer)
    assert b"urn:example:offer" in with_offer[1] and with_offer[1] != first[1]
    other = through_every_phase(ET.Element("{urn:example:offer}offer", {"kind": "b"}))
    assert other[1] != with_offer[1] and other[0] == first[0]


def test_cached_features_equal_freshly_built_ones() -> None:
    getattr(features_module, "_FEATURES", {}).clear()  # a fresh cache
    fresh = through_every_phase()
    assert through_every_phase() == fresh
    assert b"<starttls" in fresh[0] and b"<mechanism>EXTERNAL</mechanism>" in fresh[1]
    assert b"urn:ietf:params:xml:ns:xmpp-bind" in fresh[2]


def test_features_after_sasl_follow_the_session_features() -> None:
    """XEP-0198's <sm/> is offered after SASL only where configured: never from the cache of
    a stream without it, nor the reverse."""
    getattr(features_module, "_FEATURES", {}).clear()
    plain = through_every_phase()
    with_sm = through_every_phase(session=(ET.Element("{urn:xmpp:sm:3}sm"),))
    assert b"urn:xmpp:sm:3" in with_sm[2] and b"urn:xmpp:sm:3" not in plain[2]
    assert through_every_phase()[2] == plain[2]
