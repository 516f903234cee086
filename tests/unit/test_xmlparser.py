"""The restricted stream parser and the serializer (RFC 6120 §4, §11)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from server_ext.xmpp.xmlparser import (
    ElementReceived,
    StreamClosed,
    StreamOpened,
    StreamParser,
    StreamXMLError,
    XMLCondition,
)
from server_ext.xmpp.xmlwriter import serialize, stream_error, stream_header

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' xml:lang='de' "
    b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def opened() -> StreamParser:
    parser = StreamParser(max_stanza_bytes=1024)
    (event,) = parser.feed(HEADER)
    assert isinstance(event, StreamOpened)
    return parser


def condition_of(parser: StreamParser, data: bytes) -> XMLCondition:
    with pytest.raises(StreamXMLError) as info:
        parser.feed(data)
    return info.value.condition


def test_header_attributes() -> None:
    parser = StreamParser()
    (event,) = parser.feed(HEADER)
    assert isinstance(event, StreamOpened)
    assert event.attributes["to"] == "example.org"
    assert event.attributes["version"] == "1.0"
    assert event.attributes["xml:lang"] == "de"


def test_stanzas_arrive_whole_with_clark_names() -> None:
    parser = opened()
    events = parser.feed(
        b"<message to='a@b'><body>hi &amp; bye</body><x xmlns='urn:ex'/></message> "
    )
    (event,) = events
    assert isinstance(event, ElementReceived)
    el = event.element
    assert el.tag == "{jabber:client}message"
    assert el.find("{jabber:client}body").text == "hi & bye"  # type: ignore[union-attr]
    assert el.find("{urn:ex}x") is not None


def test_byte_at_a_time_and_utf8_split() -> None:
    parser = opened()
    data = "<message><body>grüß 🙂</body></message></stream:stream>".encode()
    events = []
    for i in range(len(data)):
        events.extend(parser.feed(data[i : i + 1]))
    assert isinstance(events[0], ElementReceived)
    assert events[0].element[0].text == "grüß 🙂"
    assert isinstance(events[1], StreamClosed)


@pytest.mark.parametrize(
    "payload",
    [
        b"<!DOCTYPE stream>",
        b"<!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]>",
        b"<!DOCTYPE x SYSTEM 'file:///etc/passwd'>",
        b"<!DOCTYPE x [<!ENTITY % p SYSTEM 'http://x/'> %p;]>",
    ],
)
def test_dtds_are_restricted_xml_before_any_expansion(payload: bytes) -> None:
    """RFC 6120 §11.1; a billion-laughs or XXE prelude stops at the DOCTYPE."""
    parser = StreamParser()
    assert condition_of(parser, b"<?xml version='1.0'?>" + payload) is XMLCondition.RESTRICTED_XML


@pytest.mark.parametrize(
    "payload",
    [
        b"<!-- hi -->",
        b"<?php x ?>",
        b"<message>&custom;</message>",
        b"<message><!-- c --></message>",
    ],
)
def test_comments_pis_and_entities_in_the_stream(payload: bytes) -> None:
    assert condition_of(opened(), payload) is XMLCondition.RESTRICTED_XML


def test_the_error_sticks() -> None:
    parser = opened()
    condition_of(parser, b"<!-- x -->")
    assert condition_of(parser, b"<message/>") is XMLCondition.RESTRICTED_XML


@pytest.mark.parametrize("payload", [b"<a></b>", b"<message>\xff</message>", b"<a b='1' b='2'/>"])
def test_broken_xml_is_not_well_formed(payload: bytes) -> None:
    assert condition_of(opened(), payload) is XMLCondition.NOT_WELL_FORMED


def test_tls_client_hello_on_the_starttls_port() -> None:
    hello = bytes.fromhex("160301020001000200") + b"\x03\x03" + bytes(32)
    assert condition_of(StreamParser(), hello) is XMLCondition.NOT_WELL_FORMED


def test_wrong_encoding_declaration() -> None:
    parser = StreamParser()
    assert condition_of(parser, b"<?xml version='1.0' encoding='ISO-8859-1'?>") in (
        XMLCondition.UNSUPPORTED_ENCODING,
    )


@pytest.mark.parametrize(
    "header",
    [
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
        b"<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>",
        b"<stream xmlns='jabber:client'>",
    ],
)
def test_wrong_namespaces(header: bytes) -> None:
    """RFC 6120 §4.9.3.10: a c2s stream is jabber:client in the streams namespace."""
    assert condition_of(StreamParser(), header) is XMLCondition.INVALID_NAMESPACE


def test_size_cap_fires_before_the_whole_stanza_is_buffered() -> None:
    parser = opened()
    parser.feed(b"<message><body>")
    fed = 0
    condition = None
    while condition is None and fed < 10_000:
        try:
            parser.feed(b"x" * 100)
        except StreamXMLError as exc:
            condition = exc.condition
        fed += 100
    assert condition is XMLCondition.POLICY_VIOLATION
    assert fed <= 1200  # stopped at the 1024-byte cap, not after buffering everything


def test_size_cap_also_holds_inside_a_start_tag() -> None:
    parser = opened()
    with pytest.raises(StreamXMLError) as info:
        parser.feed(b"<message to='" + b"a" * 5000)
    assert info.value.condition is XMLCondition.POLICY_VIOLATION


def test_many_small_stanzas_never_hit_the_cap() -> None:
    parser = opened()
    events = parser.feed(b"<presence/>" * 1000 + b" " * 3000)
    assert len(events) == 1000


def test_nesting_depth_cap() -> None:
    parser = StreamParser(max_depth=8)
    parser.feed(HEADER)
    with pytest.raises(StreamXMLError) as info:
        parser.feed(b"<a>" * 20)
    assert info.value.condition is XMLCondition.POLICY_VIOLATION


def test_reset_starts_a_new_stream() -> None:
    parser = opened()
    parser.feed(b"<presence/>")
    parser.reset()
    (event,) = parser.feed(HEADER)
    assert isinstance(event, StreamOpened)


def test_serialize_round_trip_and_escaping() -> None:
    el = ET.Element("{jabber:client}message", {"to": "a'b\"<>&@x", "type": "chat"})
    el.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    body = ET.SubElement(el, "{jabber:client}body")
    body.text = "1 < 2 & 3 > 2"
    ET.SubElement(el, "{urn:ex}x").text = "y"
    data = serialize(el)
    assert b"ns0" not in data
    assert data.startswith(
        b"<message to='a&apos;b&quot;&lt;&gt;&amp;@x' type='chat' xml:lang='en'>"
    )
    parser = opened()
    (event,) = parser.feed(data)
    assert isinstance(event, ElementReceived)
    back = event.element
    assert back.get("to") == "a'b\"<>&@x"
    assert back.find("{jabber:client}body").text == "1 < 2 & 3 > 2"  # type: ignore[union-attr]
    assert back.find("{urn:ex}x").text == "y"  # type: ignore[union-attr]


def test_stream_framing() -> None:
    header = stream_header(stream_id="abc", from_domain="example.org", to="a@example.org")
    assert b"from='example.org'" in header and b"to='a@example.org'" in header
    error = stream_error("policy-violation", "too <big>")
    assert error == (
        b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>too &lt;big&gt;</text>"
        b"</stream:error>"
    )
