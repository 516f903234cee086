"""A parked parser (no expat state between stanzas of an idle stream) reads what follows
exactly as an unparked one would: the same events, the same limits, the same refusals."""

from __future__ import annotations

import tracemalloc
import xml.etree.ElementTree as ET

import pytest

from server_ext.wire.xml_events import ElementReceived, StreamClosed, StreamXMLError, XMLCondition
from server_ext.wire.xmlparser import StreamParser

HEADER = (
    b"<?xml version='1.0'?><s:stream to='im.example.com' version='1.0' xml:lang='en' "
    b"xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams' "
    b"xmlns:x='urn:example:x&amp;y'>"
)
STANZA = b"<message id='m1'><body>a &amp; b</body><x:thing x:attr='1'/></message>"


def opened(**options: int) -> StreamParser:
    parser = StreamParser(**options)
    parser.feed(HEADER)
    return parser


def elements(events: list[object]) -> list[bytes]:
    return [ET.tostring(e.element) for e in events if isinstance(e, ElementReceived)]


def test_a_parked_stream_reads_on_with_the_header_namespaces_and_its_prefix() -> None:
    plain, parked = opened(), opened()
    assert parked.park()
    for data in (STANZA, b" ", b"<presence/>", STANZA[:20]):
        assert elements(parked.feed(data)) == elements(plain.feed(data))
        parked.park()
    # Mid-stanza nothing is dropped: the rest of the message completes it.
    assert not parked.park()
    assert elements(parked.feed(STANZA[20:])) == elements(plain.feed(STANZA[20:]))
    assert elements(parked.feed(STANZA))[0].startswith(b"<ns0:message")
    # The prefix declared on the header (urn:example:x&y, escaped when replayed) still works,
    # and the end tag must match the header's own prefix, as before.
    (event,) = parked.feed(b"<iq><x:q/></iq>")
    assert isinstance(event, ElementReceived) and event.element[0].tag == "{urn:example:x&y}q"
    assert parked.park()
    assert parked.feed(b"</s:stream>") == [StreamClosed()]


def test_a_parked_stream_still_refuses_restricted_xml_and_counts_stanza_sizes() -> None:
    parser = opened(max_stanza_bytes=200)
    parser.feed(STANZA)
    assert parser.park()
    with pytest.raises(StreamXMLError) as refused:
        parser.feed(b"<!-- a comment -->")
    assert refused.value.condition is XMLCondition.RESTRICTED_XML

    parser = opened(max_stanza_bytes=200)
    assert parser.park()
    with pytest.raises(StreamXMLError) as refused:
        parser.feed(b"<message><body>" + b"a" * 300 + b"</body></message>")
    assert refused.value.condition is XMLCondition.POLICY_VIOLATION

    parser = opened()
    assert parser.park()
    with pytest.raises(StreamXMLError) as refused:
        parser.feed(b"</stream:stream>")  # not the prefix the header used
    assert refused.value.condition is XMLCondition.NOT_WELL_FORMED


def test_a_stanza_cannot_change_the_namespaces_a_parked_stream_replays() -> None:
    parser = opened()
    parser.feed(b"<message xmlns:s='urn:other' xmlns='urn:evil'><s:b/></message>")
    assert parser.park()
    (event,) = parser.feed(b"<presence/>")
    assert isinstance(event, ElementReceived) and event.element.tag == "{jabber:client}presence"
    assert parser.feed(b"</s:stream>") == [StreamClosed()]


def test_nothing_is_parked_before_the_header_or_after_an_error() -> None:
    parser = StreamParser()
    assert not parser.park()
    parser.feed(HEADER[:30])
    assert not parser.park()
    parser = opened()
    with pytest.raises(StreamXMLError):
        parser.feed(b"<a></b>")
    assert not parser.park()


def test_a_parked_parser_holds_almost_no_memory() -> None:
    """About 21 KB of expat state per stream before parking (docs/performance.md)."""
    count = 200
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        parsers = [opened() for _ in range(count)]
        for parser in parsers:
            parser.feed(STANZA)
            assert parser.park()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per_parser = sum(d.size_diff for d in after.compare_to(before, "filename")) / count
    assert per_parser < 4000, f"{per_parser:.0f} bytes per parked parser"


def test_whitespace_keepalives_leave_a_parked_stream_parked() -> None:
    """RFC 6120 §4.6.1: a device's keepalive every few minutes must not rebuild the parser."""
    parser = opened()
    assert parser.park()
    assert parser.feed(b" ") == [] and parser.feed(b"\r\n\t ") == []
    assert not parser.park()  # still parked: nothing to drop
    assert elements(parser.feed(b" <presence/> ")) == [
        b'<ns0:presence xmlns:ns0="jabber:client" />'
    ]
    assert parser.park()
    assert parser.feed(b"\n</s:stream>") == [StreamClosed()]
