"""An incremental XML parser for c2s streams that refuses what RFC 6120 §11 forbids.

expat does the parsing; this module turns its callbacks into ElementTree elements with Clark
names (``{jabber:client}message``), one event per top-level child of the stream, and ends the
stream on DTDs, comments, processing instructions, entity references, bad UTF-8, oversized
stanzas and wrong namespaces. It does no I/O: the caller feeds the bytes it read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import MappingProxyType
from typing import Final, NoReturn
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from server_ext.wire.xml_events import (
    ElementReceived,
    ParserEvent,
    StreamClosed,
    StreamOpened,
    StreamXMLError,
    XMLCondition,
)

__all__ = ["CLIENT_NS", "MAX_ATTRIBUTES", "MAX_TAG_BYTES", "STREAMS_NS", "StreamParser"]

STREAMS_NS: Final = "http://etherx.jabber.org/streams"
CLIENT_NS: Final = "jabber:client"
XML_NS: Final = "http://www.w3.org/XML/1998/namespace"

# The most attributes one element may carry; real stanzas use a handful.
MAX_ATTRIBUTES: Final = 64
# The longest single tag (or other markup token) accepted. expat rescans an unfinished token on
# every feed, so a huge tag trickled in byte by byte would cost quadratic time; a stanza whose
# 'to' and 'from' are both maximal JIDs (3071 bytes each, RFC 7622 §3.1) still fits.
MAX_TAG_BYTES: Final = 16 * 1024

# expat joins a namespace and a local name with this separator, so "{" + name is the Clark name
# (the trick ElementTree's own XMLParser uses).
_SEPARATOR: Final = "}"
_STREAM_NAME: Final = STREAMS_NS + _SEPARATOR + "stream"
_XML_LANG_NAME: Final = XML_NS + _SEPARATOR + "lang"
# expat is fed at most this much at a time, so the size caps are checked while a huge write is
# being parsed rather than after all of it has been buffered.
_SLICE: Final = 16 * 1024
# Once an unfinished token is this long, new input without a ">" is held back instead of being
# handed to expat: no element can complete without one, and it spares expat the rescans.
_HOLD_BYTES: Final = 1024
# pyexpat keeps every distinct element and attribute name it has seen; a long-lived stream full
# of made-up names would grow that table without end, so it is emptied past this size.
_INTERN_LIMIT: Final = 4096
# XML's whitespace (XML 1.0 §2.3, production S).
_WHITESPACE: Final = b" \t\r\n"
# The first two bytes of UTF-16, with and without a byte order mark (XML 1.0 Appendix F.1).
_UTF16_STARTS: Final = frozenset((b"\xfe\xff", b"\xff\xfe", b"\x00<", b"<\x00"))
_UTF16_FIRST_BYTES: Final = frozenset(start[:1] for start in _UTF16_STARTS)


def _error_codes(*names: str) -> frozenset[int]:
    return frozenset(expat.errors.codes[getattr(expat.errors, name)] for name in names)


# RFC 6120 §11.1: entity references other than the five predefined ones are restricted XML.
# Without a DTD only the first is reachable; the others are listed so that no entity problem
# can ever come out as plain not-well-formed.
_ENTITY_ERRORS: Final = _error_codes(
    "XML_ERROR_UNDEFINED_ENTITY",
    "XML_ERROR_RECURSIVE_ENTITY_REF",
    "XML_ERROR_BINARY_ENTITY_REF",
    "XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF",
    "XML_ERROR_EXTERNAL_ENTITY_HANDLING",
    "XML_ERROR_ENTITY_DECLARED_IN_PE",
    "XML_ERROR_PARAM_ENTITY_REF",
    "XML_ERROR_AMPLIFICATION_LIMIT_BREACH",
)
_ENCODING_ERRORS: Final = _error_codes("XML_ERROR_UNKNOWN_ENCODING", "XML_ERROR_INCORRECT_ENCODING")
_TOKEN_ERRORS: Final = _error_codes("XML_ERROR_SYNTAX", "XML_ERROR_INVALID_TOKEN")


class StreamParser:
    """Feed bytes, get stream events; one instance per connection, reset at each stream restart.

    ``max_stanza_bytes`` caps the raw size of one top-level element, counted from its ``<``.
    ``max_depth`` caps nesting, counting a top-level element as depth 1.
    """

    # Per-stream state, set by _start_stream.
    _parser: expat.XMLParserType | None  # None while parked (see park)
    _intern: dict[str, str]
    _events: list[ParserEvent]
    _stack: list[ET.Element]
    _text_pieces: list[str]  # character data not yet stored in the tree
    _depth: int  # 1 inside the stream element, 2 inside a top-level element
    _content_namespace: str | None
    _fed: int  # bytes handed to expat
    _consumed: int  # bytes expat has fully processed
    _mark: int  # where the current top-level element (or the gap before it) began
    _held: bytearray  # input held back from expat while a long token is unfinished
    _head: bytes  # the stream's first two bytes, to recognise UTF-16
    _tail: bytes  # the last bytes handed to expat, to look around an error position
    _declarations: dict[str | None, str]  # the namespaces the stream header declared
    _offset: int  # stream position of the current expat parser's byte 0 (see park)
    _priming: bool  # a parser being brought back is reading the replayed stream header

    def __init__(self, *, max_stanza_bytes: int = 262144, max_depth: int = 32) -> None:
        if max_stanza_bytes < 1 or max_depth < 1:
            raise ValueError("max_stanza_bytes and max_depth must be positive")
        self._max_stanza_bytes = max_stanza_bytes
        self._max_tag_bytes = min(MAX_TAG_BYTES, max_stanza_bytes)
        # Depth counts the stream element too, so a top-level element sits at depth 2.
        self._max_depth = max_depth + 1
        self._error: StreamXMLError | None = None
        self._start_stream()

    def reset(self) -> None:
        """Start over for the new stream after STARTTLS or SASL (RFC 6120 §5.4.3.3, §6.4.6).

        A parser that has failed stays failed: the stream it belonged to is over.
        """
        if self._error is not None:
            raise self._error
        self._start_stream()

    def park(self) -> bool:
        """Drop the expat parser between two top-level elements; True if it was dropped.

        An idle stream then holds no parser state at all (about 21 KB of expat tables and
        buffers per connection, docs/performance.md); the next :meth:`feed` builds a new
        parser and replays the stream header's namespace declarations into it without
        reporting them, so what follows is read exactly as before. Nothing is dropped
        mid-token, inside a stanza, or when the header is not one that can be replayed.
        """
        if (
            self._parser is None
            or self._error is not None
            or self._depth != 1
            or self._held
            or self._fed != self._consumed
            or self._events
            or self._root_prefix() is None
        ):
            return False
        self._parser = None
        self._intern = {}
        return True

    def _root_prefix(self) -> str | None:
        # The prefix the stream element was opened with: expat compares the end tag's raw
        # name with the start tag's, so the replayed header must use the same one. Only a
        # header with exactly one prefix bound to the streams namespace tells it for sure.
        prefixes = [p for p, uri in self._declarations.items() if uri == STREAMS_NS and p]
        return prefixes[0] if len(prefixes) == 1 else None

    def _unpark(self) -> expat.XMLParserType:
        prefix = self._root_prefix()
        assert prefix is not None
        parser = self._new_expat()
        header = f"<{prefix}:stream" + "".join(
            f" xmlns={quoteattr(uri)}" if p is None else f" xmlns:{p}={quoteattr(uri)}"
            for p, uri in self._declarations.items()
        )
        replay = (header + ">").encode()
        self._priming = True
        self._depth = 0
        try:
            parser.Parse(replay, False)
        finally:
            self._priming = False
        parser.StartNamespaceDeclHandler = None  # as _open_stream leaves it
        # Stream positions go on from where the dropped parser stopped.
        self._offset = self._fed - len(replay)
        self._parser = parser
        return parser

    def _position(self, parser: expat.XMLParserType) -> int:
        return parser.CurrentByteIndex + self._offset

    def feed(self, data: bytes) -> list[ParserEvent]:
        """Parse ``data``; returns the events it completes, in order.

        Raises :class:`StreamXMLError`; events completed earlier in the same ``data`` are then
        dropped, and every later call raises the same error.
        """
        if self._error is not None:
            raise self._error
        try:
            self._feed(data)
        except StreamXMLError as exc:
            self._error = exc
            self._events.clear()
            raise
        events = self._events
        if events:
            self._events = []
        return events

    # --- feeding and limits ---------------------------------------------------------------

    def _start_stream(self) -> None:
        self._declarations = {}
        self._offset = 0
        self._priming = False
        self._parser = self._new_expat()
        self._events = []
        self._stack = []
        self._text_pieces = []
        self._depth = 0
        self._content_namespace = None
        self._fed = 0
        self._consumed = 0
        self._mark = 0
        self._held = bytearray()
        self._head = b""
        self._tail = b""

    def _new_expat(self) -> expat.XMLParserType:
        parser = expat.ParserCreate("UTF-8", _SEPARATOR)
        # expat 2.6 and later defer reparsing an unfinished token until "enough" new input
        # arrives, which on a stream can hold a complete stanza back until the peer sends
        # something else. The hold-back in _feed gives the same protection without the delay.
        disable_deferral = getattr(parser, "SetReparseDeferralEnabled", None)
        if disable_deferral is not None:
            disable_deferral(False)
        # RFC 6120 §11.1: no external or parameter entities, ever (the DOCTYPE that could
        # declare them is refused as soon as it starts, below).
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        # Text is joined in _store_text anyway; a small buffer only saves handler calls, and
        # the default 8 KB one would stay allocated for the whole life of the stream.
        parser.buffer_size = 512
        parser.buffer_text = True
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.StartNamespaceDeclHandler = self._namespace_declared
        parser.XmlDeclHandler = self._xml_declaration
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._entity_declared
        parser.ExternalEntityRefHandler = self._external_entity
        parser.SkippedEntityHandler = self._skipped_entity
        parser.CommentHandler = self._comment
        parser.ProcessingInstructionHandler = self._processing_instruction
        self._intern = parser.intern
        return parser

    def _feed(self, data: bytes) -> None:
        if self._parser is None and not data.strip(_WHITESPACE):
            # A whitespace keepalive (RFC 6120 §4.6.1) on a parked stream: character data
            # between stanzas means nothing, so the parser stays parked.
            self._fed += len(data)
            self._consumed = self._mark = self._fed
            self._tail = (self._tail + data)[-2:]
            return
        if len(self._head) < 2:
            self._check_encoding(data)
            if len(self._head) < 2 and self._head in _UTF16_FIRST_BYTES:
                # One byte is not enough to tell UTF-16 from UTF-8; wait for the next.
                self._held += data
                return
        if self._fed - self._consumed >= _HOLD_BYTES and b">" not in data:
            self._held += data
            self._check_limits(self._fed + len(self._held))
            return
        if self._held:
            self._held += data
            data = bytes(self._held)
            self._held.clear()
        if len(data) <= _SLICE:
            self._parse(data)
            return
        view = memoryview(data)
        for offset in range(0, len(view), _SLICE):
            self._parse(view[offset : offset + _SLICE])

    def _parse(self, chunk: bytes | memoryview) -> None:
        base = self._fed
        parser = self._parser if self._parser is not None else self._unpark()
        try:
            parser.Parse(chunk, False)
        except expat.ExpatError as exc:
            raise self._translate(exc.code, base, chunk) from None
        end = base + len(chunk)
        self._fed = end
        self._tail = bytes(chunk[-2:])
        consumed = self._position(parser)
        self._consumed = consumed
        if self._depth <= 1:
            # Between top-level elements everything up to here has been dealt with (whitespace
            # keepalives, RFC 6120 §11.7), so only an unfinished token still counts.
            self._mark = consumed
        self._check_limits(end)

    def _check_encoding(self, data: bytes) -> None:
        # expat detects UTF-16 by its first bytes even when told the input is UTF-8, and would
        # then parse it; RFC 6120 §11.6 allows only UTF-8.
        self._head += data[: 2 - len(self._head)]
        if self._head in _UTF16_STARTS:
            raise StreamXMLError(
                XMLCondition.UNSUPPORTED_ENCODING, "streams must be UTF-8 (RFC 6120 §11.6)"
            )

    def _check_limits(self, end: int) -> None:
        if end - self._mark > self._max_stanza_bytes:
            self._too_big()
        if end - self._consumed > self._max_tag_bytes:
            raise StreamXMLError(
                XMLCondition.POLICY_VIOLATION, f"a tag is longer than {self._max_tag_bytes} bytes"
            )

    def _too_big(self) -> NoReturn:
        raise StreamXMLError(
            XMLCondition.POLICY_VIOLATION,
            f"a stanza is larger than {self._max_stanza_bytes} bytes",
        )

    def _translate(self, code: int, base: int, chunk: bytes | memoryview) -> StreamXMLError:
        if code in _ENTITY_ERRORS:
            return StreamXMLError(
                XMLCondition.RESTRICTED_XML, "entity references are not allowed (RFC 6120 §11.1)"
            )
        if code in _ENCODING_ERRORS:
            return StreamXMLError(
                XMLCondition.UNSUPPORTED_ENCODING, "streams must be UTF-8 (RFC 6120 §11.6)"
            )
        assert self._parser is not None
        if code in _TOKEN_ERRORS and self._markup_declaration_at(
            self._parser.ErrorByteIndex + self._offset - base, chunk
        ):
            # "<!ENTITY", "<!ELEMENT" or "<!DOCTYPE" where expat expects no DTD (inside the
            # stream, or before the root without a DOCTYPE around it): a DTD all the same.
            return StreamXMLError(
                XMLCondition.RESTRICTED_XML, "DTD declarations are not allowed (RFC 6120 §11.1)"
            )
        return StreamXMLError(
            XMLCondition.NOT_WELL_FORMED, f"not well-formed XML: {expat.ErrorString(code)}"
        )

    def _markup_declaration_at(self, index: int, chunk: bytes | memoryview) -> bool:
        # expat puts the error at the "<" in a prolog and just after the "<!" in content, which
        # may be at the very start of this chunk; then the "<!" ended the previous one.
        if not 0 <= index <= len(chunk):
            return False
        window = bytes(chunk[max(index - 2, 0) : index + 3])
        if index < 2:
            window = self._tail[index - 2 :] + window
        position = window.find(b"<!")
        return position >= 0 and window[position + 2 : position + 3].isupper()

    # --- expat callbacks ------------------------------------------------------------------

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        if depth == 0:
            self._open_stream(name, attrs)
            return
        if depth >= self._max_depth:
            raise StreamXMLError(XMLCondition.POLICY_VIOLATION, "elements are nested too deep")
        if self._text_pieces:
            self._store_text()
        if attrs:
            if len(attrs) > MAX_ATTRIBUTES:
                raise StreamXMLError(XMLCondition.POLICY_VIOLATION, "too many attributes")
            if _SEPARATOR in "".join(attrs):  # one C-level scan for namespaced attributes
                attrs = {("{" + k if _SEPARATOR in k else k): v for k, v in attrs.items()}
        tag = "{" + name if _SEPARATOR in name else name
        if depth == 1:
            assert self._parser is not None
            self._mark = self._position(self._parser)
            self._stack.append(ET.Element(tag, attrs))
        else:
            self._stack.append(ET.SubElement(self._stack[-1], tag, attrs))
        self._depth = depth + 1

    def _end(self, name: str) -> None:
        if self._text_pieces:
            self._store_text()
        depth = self._depth - 1
        self._depth = depth
        if depth > 1:
            self._stack.pop()
        elif depth == 1:
            # The caps are also checked per slice; this catches a whole stanza in one slice.
            assert self._parser is not None
            if self._position(self._parser) - self._mark > self._max_stanza_bytes:
                self._too_big()
            self._events.append(ElementReceived(self._stack.pop()))
            if len(self._intern) > _INTERN_LIMIT:
                self._intern.clear()
        else:
            self._events.append(StreamClosed())

    def _text(self, data: str) -> None:
        # Text arrives in as many pieces as there were reads; joining them once, when the next
        # tag comes, keeps a large body trickled in byte by byte from costing quadratic time.
        # Character data directly inside the stream (whitespace keepalives, RFC 6120 §11.7,
        # or text that means nothing there) is dropped.
        if self._stack:
            self._text_pieces.append(data)

    def _store_text(self) -> None:
        # Called before any tag changes the tree, so the text belongs where it would have then.
        pieces = self._text_pieces
        text = pieces[0] if len(pieces) == 1 else "".join(pieces)
        pieces.clear()
        element = self._stack[-1]
        if len(element):
            element[-1].tail = text
        else:
            element.text = text

    def _open_stream(self, name: str, attrs: dict[str, str]) -> None:
        assert self._parser is not None or self._priming
        if self._priming:  # a parked stream's header, replayed: it was checked the first time
            self._depth = 1
            return
        # RFC 6120 §4.8.1 and §4.9.3.10: the root is <stream> in the streams namespace, and
        # §4.8.2: the content namespace of a client stream (the default one) is jabber:client.
        if name != _STREAM_NAME:
            raise StreamXMLError(
                XMLCondition.INVALID_NAMESPACE,
                f"the root element must be <stream:stream> in the {STREAMS_NS} namespace",
            )
        if self._content_namespace != CLIENT_NS:
            raise StreamXMLError(
                XMLCondition.INVALID_NAMESPACE,
                f"the default namespace of a client stream must be {CLIENT_NS}",
            )
        if len(attrs) > MAX_ATTRIBUTES:
            raise StreamXMLError(XMLCondition.POLICY_VIOLATION, "too many attributes")
        # Namespace declarations inside stanzas need no attention.
        assert self._parser is not None
        self._parser.StartNamespaceDeclHandler = None
        attributes: dict[str, str] = {}
        for key, value in attrs.items():
            if _SEPARATOR not in key:
                attributes[key] = value
            elif key == _XML_LANG_NAME:
                attributes["xml:lang"] = value
        self._depth = 1
        self._events.append(StreamOpened(MappingProxyType(attributes)))

    def _namespace_declared(self, prefix: str | None, uri: str) -> None:
        if self._priming:
            return
        if prefix is None:
            self._content_namespace = uri
        self._declarations[prefix] = uri

    def _xml_declaration(self, version: str, encoding: str | None, standalone: int) -> None:
        # RFC 6120 §11.6: the stream is UTF-8; a declaration naming anything else is refused
        # even though the bytes would be read as UTF-8 regardless.
        if encoding is not None and encoding.upper() != "UTF-8":
            raise StreamXMLError(
                XMLCondition.UNSUPPORTED_ENCODING, "streams must be UTF-8 (RFC 6120 §11.6)"
            )

    # RFC 6120 §11.1: everything below is restricted XML. The DOCTYPE handler fires as soon as
    # the declaration's name (and any external ID) is read, before any entity in an internal
    # subset is declared, so nothing is ever expanded or fetched.

    def _doctype(self, *args: object) -> NoReturn:
        raise StreamXMLError(XMLCondition.RESTRICTED_XML, "a DTD is not allowed (RFC 6120 §11.1)")

    def _entity_declared(self, *args: object) -> NoReturn:
        raise StreamXMLError(
            XMLCondition.RESTRICTED_XML, "entity declarations are not allowed (RFC 6120 §11.1)"
        )

    def _external_entity(self, *args: object) -> NoReturn:
        raise StreamXMLError(
            XMLCondition.RESTRICTED_XML, "external entities are not allowed (RFC 6120 §11.1)"
        )

    def _skipped_entity(self, *args: object) -> NoReturn:
        raise StreamXMLError(
            XMLCondition.RESTRICTED_XML, "entity references are not allowed (RFC 6120 §11.1)"
        )

    def _comment(self, data: str) -> NoReturn:
        raise StreamXMLError(
            XMLCondition.RESTRICTED_XML, "comments are not allowed (RFC 6120 §11.1)"
        )

    def _processing_instruction(self, target: str, data: str) -> NoReturn:
        raise StreamXMLError(
            XMLCondition.RESTRICTED_XML, "processing instructions are not allowed (RFC 6120 §11.1)"
        )
