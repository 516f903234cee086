"""Serializing stanzas and stream framing (RFC 6120 §4), checked by reading back with the parser."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from server_ext.wire.xml_events import ElementReceived, StreamClosed, StreamOpened
from server_ext.wire.xmlparser import StreamParser
from server_ext.wire.xmlwriter import (
    STREAM_CLOSE,
    XMLWriteError,
    serialize,
    stream_error,
    stream_header,
)

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CLIENT_HEADER = (
    b"<stream:stream to='im.example.com' version='1.0' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)


def parse(data: bytes) -> ET.Element:
    """Read one top-level element back the way a peer's stream would carry it."""
    parser = StreamParser()
    parser.feed(CLIENT_HEADER)
    (event,) = parser.feed(data)
    assert isinstance(event, ElementReceived)
    return event.element


def same_tree(a: ET.Element, b: ET.Element) -> bool:
    return (
        a.tag == b.tag
        and a.attrib == b.attrib
        and (a.text or "") == (b.text or "")
        and (a.tail or "") == (b.tail or "")
        and len(a) == len(b)
        and all(same_tree(x, y) for x, y in zip(a, b, strict=True))
    )


# --- serialize --------------------------------------------------------------------------------


def test_a_message_with_namespaced_children_is_written_with_default_namespaces() -> None:
    """RFC 6120 §4.8.3/§4.8.4: payload namespaces are declared where they start, no prefixes."""
    message = ET.Element("{jabber:client}message", {"to": "romeo@example.net", "type": "chat"})
    ET.SubElement(message, "{jabber:client}body").text = "Wherefore art thou?"
    ET.SubElement(message, "{http://jabber.org/protocol/chatstates}active")
    data = serialize(message)
    assert data == (
        b"<message to='romeo@example.net' type='chat'><body>Wherefore art thou?</body>"
        b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )


def test_namespaces_are_declared_only_where_they_change() -> None:
    """XEP-0071's XHTML-IM nests three namespaces; each is declared once, back included."""
    message = ET.Element("{jabber:client}message")
    html = ET.SubElement(message, "{http://jabber.org/protocol/xhtml-im}html")
    body = ET.SubElement(html, "{http://www.w3.org/1999/xhtml}body")
    ET.SubElement(body, "{http://www.w3.org/1999/xhtml}p").text = "hi"
    ET.SubElement(body, "{jabber:client}x")
    assert serialize(message) == (
        b"<message><html xmlns='http://jabber.org/protocol/xhtml-im'>"
        b"<body xmlns='http://www.w3.org/1999/xhtml'><p>hi</p><x xmlns='jabber:client'/></body>"
        b"</html></message>"
    )


def test_the_top_level_element_is_written_relative_to_the_stream_namespace() -> None:
    """RFC 6120 §4.8.2: only a change from the stream's content namespace needs xmlns."""
    starttls = ET.Element("{urn:ietf:params:xml:ns:xmpp-tls}proceed")
    assert serialize(starttls) == b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    message = ET.Element("{jabber:client}message")
    assert serialize(message, default_namespace="jabber:server") == (
        b"<message xmlns='jabber:client'/>"
    )


def test_no_generated_prefixes_for_elements() -> None:
    """RFC 6120 §4.8.5: no 'ns0:'-style prefixes as ElementTree's own writer would make."""
    iq = ET.Element("{jabber:client}iq", {"type": "result", "id": "1"})
    query = ET.SubElement(iq, "{urn:xmpp:saslcert:1}items")
    ET.SubElement(ET.SubElement(query, "{urn:xmpp:saslcert:1}item"), "{urn:xmpp:saslcert:1}name")
    data = serialize(iq)
    assert b"ns0" not in data and b":items" not in data
    assert data.count(b"xmlns=") == 1


def test_xml_lang_is_written_with_its_reserved_prefix() -> None:
    """RFC 6120 §8.1.5 and XML 1.0 §2.12: xml:lang needs no declaration."""
    message = ET.Element("{jabber:client}message", {XML_LANG: "de"})
    data = serialize(message)
    assert data == b"<message xml:lang='de'/>"
    assert parse(data).get(XML_LANG) == "de"


def test_text_and_attributes_are_escaped() -> None:
    """XML 1.0 §2.4 and §3.3.3: markup characters and whitespace survive the trip."""
    message = ET.Element("{jabber:client}message", {"id": "a'b\"c<d>e&f", "x": "1\n2\t3\r4"})
    ET.SubElement(message, "{jabber:client}body").text = "1 < 2 && 3 > 2 ]]> \r\n"
    data = serialize(message)
    assert b"id='a&apos;b&quot;c&lt;d&gt;e&amp;f'" in data
    assert b"x='1&#10;2&#9;3&#13;4'" in data
    assert b"<body>1 &lt; 2 &amp;&amp; 3 &gt; 2 ]]&gt; &#13;\n</body>" in data
    back = parse(data)
    assert back.get("id") == "a'b\"c<d>e&f"
    assert back.get("x") == "1\n2\t3\r4"
    assert back[0].text == "1 < 2 && 3 > 2 ]]> \r\n"


def test_elements_without_content_are_self_closed() -> None:
    """An empty string of text counts as no content."""
    presence = ET.Element("{jabber:client}presence")
    presence.text = ""
    assert serialize(presence) == b"<presence/>"


def test_non_ascii_text_is_utf8() -> None:
    """RFC 6120 §11.6."""
    body = ET.Element("{jabber:client}body")
    body.text = "grüß 🙂"
    assert serialize(body) == "<body>grüß 🙂</body>".encode()


def test_an_element_in_no_namespace_inside_a_namespaced_one_keeps_no_namespace() -> None:
    """Namespaces in XML §6.2: xmlns='' undoes the inherited default namespace."""
    message = ET.Element("{jabber:client}message")
    ET.SubElement(message, "plain")
    data = serialize(message)
    assert data == b"<message><plain xmlns=''/></message>"
    assert parse(data)[0].tag == "plain"


def test_namespaced_attributes_get_a_declared_prefix() -> None:
    """Namespaces in XML §6.2: a default namespace never applies to attributes."""
    item = ET.Element("{jabber:client}iq", {"{urn:example:a}flag": "on", "{urn:example:b}x": "1"})
    data = serialize(item)
    assert parse(data).attrib == {"{urn:example:a}flag": "on", "{urn:example:b}x": "1"}


def test_parse_then_serialize_round_trips() -> None:
    """What a client sent is what another client receives (RFC 6120 §8.1 routing)."""
    original = (
        b"<message from='juliet@im.example.com/balcony' to='romeo@example.net' type='chat' "
        b"xml:lang='en'><body>Art thou not Romeo, &amp; a Montague?</body>"
        b"<html xmlns='http://jabber.org/protocol/xhtml-im'>"
        b"<body xmlns='http://www.w3.org/1999/xhtml'>Art <em>thou</em> not</body></html>"
        b"<x xmlns='jabber:x:oob' a:b='c' xmlns:a='urn:example:a'><url>https://x/?a=1&amp;b=2"
        b"</url></x></message>"
    )
    first = parse(original)
    data = serialize(first)
    second = parse(data)
    assert same_tree(first, second)
    assert serialize(second) == data


@pytest.mark.parametrize("text", ["\x00", "a\x1bb", "\x0c", "\ud800", "\ufffe", "\uffff"], ids=repr)
def test_characters_xml_cannot_carry_are_refused(text: str) -> None:
    """XML 1.0 §2.2: writing them would make the peer end the stream with not-well-formed."""
    body = ET.Element("{jabber:client}body")
    body.text = text
    with pytest.raises(XMLWriteError):
        serialize(body)
    with pytest.raises(XMLWriteError):
        serialize(ET.Element("{jabber:client}message", {"id": text}))
    tailed = ET.Element("{jabber:client}message")
    ET.SubElement(tailed, "{jabber:client}body").tail = text
    with pytest.raises(XMLWriteError):
        serialize(tailed)


def test_allowed_unusual_characters_are_written() -> None:
    """XML 1.0 §2.2 allows tabs, newlines, U+0085 and astral characters."""
    body = ET.Element("{jabber:client}body")
    body.text = "\t\n\x85\u00a0\U0001f600"
    assert parse(serialize(body)).text == "\t\n\x85\u00a0\U0001f600"


@pytest.mark.parametrize(
    "tag", ["{jabber:client}a b", "{jabber:client}a>", "{jabber:client}", "{jabber:client}p:x"]
)
def test_names_that_would_break_the_markup_are_refused(tag: str) -> None:
    with pytest.raises(XMLWriteError):
        serialize(ET.Element(tag))
    with pytest.raises(XMLWriteError):
        serialize(ET.Element("{jabber:client}message", {tag.removeprefix("{jabber:client}"): ""}))


def test_comments_and_processing_instructions_are_never_written() -> None:
    """RFC 6120 §11.1: an entity MUST NOT send comments or processing instructions."""
    message = ET.Element("{jabber:client}message")
    message.append(ET.Comment("hi"))
    with pytest.raises(XMLWriteError):
        serialize(message)
    with pytest.raises(XMLWriteError):
        serialize(ET.ProcessingInstruction("php", "x"))  # type: ignore[arg-type]


# --- stream framing ---------------------------------------------------------------------------


def test_stream_header() -> None:
    """RFC 6120 §4.7, with the values of the response header in §9.1.1, step 2."""
    header = stream_header(
        stream_id="t7AMCin9zjMNwQKDnplntZPIDEI=",
        from_domain="im.example.com",
        to="juliet@im.example.com",
    )
    assert header == (
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams' id='t7AMCin9zjMNwQKDnplntZPIDEI=' "
        b"from='im.example.com' to='juliet@im.example.com' version='1.0' xml:lang='en'>"
    )


def test_stream_header_leaves_out_a_missing_to_and_escapes_values() -> None:
    """RFC 6120 §4.7.2: 'to' is absent when the initiating entity gave no usable 'from'."""
    header = stream_header(stream_id="a'b", from_domain="x&y", lang="de<")
    assert b" to=" not in header
    assert b"id='a&apos;b'" in header and b"from='x&amp;y'" in header
    assert b"xml:lang='de&lt;'" in header


def test_our_header_and_close_read_back_as_a_stream() -> None:
    """Our own framing passes our own parser: a peer following RFC 6120 can read it."""
    header = stream_header(stream_id="abc", from_domain="im.example.com", lang="fr")
    events = StreamParser().feed(header + STREAM_CLOSE)
    assert isinstance(events[0], StreamOpened)
    assert dict(events[0].attributes) == {
        "id": "abc",
        "from": "im.example.com",
        "version": "1.0",
        "xml:lang": "fr",
    }
    assert events[1] == StreamClosed()
    assert STREAM_CLOSE == b"</stream:stream>"


def test_stream_error_with_text() -> None:
    """RFC 6120 §4.9.2: a defined condition and a text, both in the xmpp-streams namespace."""
    assert stream_error("policy-violation", "too <big>") == (
        b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>too &lt;big&gt;</text>"
        b"</stream:error>"
    )


def test_stream_error_without_text() -> None:
    """RFC 6120 §4.9.2: the text element is optional."""
    assert stream_error("not-well-formed") == (
        b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"</stream:error>"
    )


def test_stream_error_reads_back() -> None:
    """RFC 6120 §4.9.1: <stream:error/> is a top-level child in the streams namespace."""
    header = stream_header(stream_id="abc", from_domain="im.example.com")
    events = StreamParser().feed(header + stream_error("host-unknown", "no such host"))
    error = events[1]
    assert isinstance(error, ElementReceived)
    assert error.element.tag == "{http://etherx.jabber.org/streams}error"
    assert [child.tag for child in error.element] == [
        "{urn:ietf:params:xml:ns:xmpp-streams}host-unknown",
        "{urn:ietf:params:xml:ns:xmpp-streams}text",
    ]
    assert error.element[1].text == "no such host"


@pytest.mark.parametrize("condition", ["", "Bad", "x y", "a/><evil", "-x"])
def test_stream_error_refuses_conditions_that_are_not_names(condition: str) -> None:
    """RFC 6120 §4.9.3 conditions are lower-case words joined by hyphens."""
    with pytest.raises(XMLWriteError):
        stream_error(condition)


def test_stream_error_text_with_forbidden_characters_is_refused() -> None:
    with pytest.raises(XMLWriteError):
        stream_error("conflict", "a\x00b")
