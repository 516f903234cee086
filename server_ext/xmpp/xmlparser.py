"""An incremental XML parser for c2s streams that refuses what RFC 6120 §11 forbids.

expat does the parsing; this module turns its callbacks into ElementTree elements with Clark
names (``{jabber:client}message``), one event per top-level child of the stream, and ends the
stream on DTDs, comments, processing instructions, entity references, bad UTF-8, oversized
stanzas and wrong namespaces.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from xml.parsers import expat

from server_ext.errors import ServerExtError

STREAMS_NS = "http://etherx.jabber.org/streams"
CLIENT_NS = "jabber:client"
XML_NS = "http://www.w3.org/XML/1998/namespace"
_STREAM_TAG = f"{STREAMS_NS} stream"  # expat's namespace_separator is a space
_SLICE = 16 * 1024  # expat is fed in slices so the size cap holds during a huge write
_MAX_ATTRIBUTES = 64


class XMLCondition(StrEnum):
    """The stream error conditions this parser raises (RFC 6120 §4.9.3)."""

    NOT_WELL_FORMED = "not-well-formed"
    RESTRICTED_XML = "restricted-xml"
    POLICY_VIOLATION = "policy-violation"
    INVALID_NAMESPACE = "invalid-namespace"
    UNSUPPORTED_ENCODING = "unsupported-encoding"


class StreamXMLError(ServerExtError):
    """The peer's XML ends the stream with ``condition``."""

    def __init__(self, condition: XMLCondition, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The stream header; ``attributes`` has ``xml:lang`` under that key."""

    attributes: Mapping[str, str]
    content_namespace: str = CLIENT_NS


@dataclass(frozen=True, slots=True)
class ElementReceived:
    """A complete top-level child of the stream."""

    element: ET.Element = field(compare=False)


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer sent ``</stream:stream>``."""


ParserEvent = StreamOpened | ElementReceived | StreamClosed


def _clark(name: str) -> str:
    namespace, _, local = name.rpartition(" ")
    return f"{{{namespace}}}{local}" if namespace else local


class StreamParser:
    """Feed bytes, get stream events; one instance per stream (reset after a restart)."""

    def __init__(self, *, max_stanza_bytes: int = 262144, max_depth: int = 32) -> None:
        self._max_stanza_bytes = max_stanza_bytes
        self._max_depth = max_depth
        self._error: StreamXMLError | None = None
        self.reset()

    def reset(self) -> None:
        """Start over for a new stream (RFC 6120 §5.4.3.3, §6.4.6)."""
        parser = expat.ParserCreate("UTF-8", " ")
        # RFC 6120 §11.1: no external or parameter entities, ever.
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.StartDoctypeDeclHandler = self._forbidden_doctype
        parser.EntityDeclHandler = self._forbidden_entity
        parser.CommentHandler = self._forbidden_comment
        parser.ProcessingInstructionHandler = self._forbidden_pi
        parser.SkippedEntityHandler = self._forbidden_entity_ref
        parser.ExternalEntityRefHandler = self._forbidden_external
        parser.XmlDeclHandler = self._xml_decl
        parser.StartNamespaceDeclHandler = self._namespace_decl
        parser.ordered_attributes = False
        parser.buffer_text = True
        self._parser = parser
        self._events: list[ParserEvent] = []
        self._stack: list[ET.Element] = []
        self._depth = 0
        self._boundary = 0  # where the current top-level element (or gap) began
        self._fed = 0
        self._default_namespace: str | None = None
        self._error = None

    def feed(self, data: bytes) -> list[ParserEvent]:
        """Parse ``data``; returns the events it completes. Raises :class:`StreamXMLError`."""
        if self._error is not None:
            raise self._error
        view = memoryview(data)
        try:
            for offset in range(0, len(view), _SLICE):
                chunk = view[offset : offset + _SLICE]
                self._parser.Parse(bytes(chunk), False)
                self._fed += len(chunk)
                # Also between stanzas and inside a huge start tag: expat keeps an unfinished
                # token in memory, so the cap must hold before any element completes.
                self._check_size(self._fed)
        except StreamXMLError as exc:
            self._error = exc
            raise
        except expat.ExpatError as exc:
            self._error = self._translate(exc)
            raise self._error from None
        events, self._events = self._events, []
        return events

    # --- limits ---------------------------------------------------------------------------

    def _check_size(self, position: int) -> None:
        if position - self._boundary > self._max_stanza_bytes:
            raise StreamXMLError(
                XMLCondition.POLICY_VIOLATION,
                f"a stanza is larger than {self._max_stanza_bytes} bytes",
            )

    def _translate(self, exc: expat.ExpatError) -> StreamXMLError:
        code = exc.code
        errors = expat.errors
        if code in (
            expat.errors.codes[errors.XML_ERROR_UNDEFINED_ENTITY],
            expat.errors.codes[errors.XML_ERROR_EXTERNAL_ENTITY_HANDLING],
            expat.errors.codes[errors.XML_ERROR_ENTITY_DECLARED_IN_PE],
        ):
            return StreamXMLError(XMLCondition.RESTRICTED_XML, "entity references are not allowed")
        if (
            code == expat.errors.codes[errors.XML_ERROR_UNKNOWN_ENCODING]
            or code == (expat.errors.codes[errors.XML_ERROR_INCORRECT_ENCODING])
        ):
            return StreamXMLError(XMLCondition.UNSUPPORTED_ENCODING, "only UTF-8 is supported")
        return StreamXMLError(
            XMLCondition.NOT_WELL_FORMED, f"not well-formed XML: {expat.ErrorString(code)}"
        )

    # --- expat callbacks ------------------------------------------------------------------

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        if depth == 0:
            if name != _STREAM_TAG:
                raise StreamXMLError(
                    XMLCondition.INVALID_NAMESPACE,
                    "the root element must be <stream:stream> in the streams namespace",
                )
            if self._default_namespace != CLIENT_NS:
                # RFC 6120 §4.9.3.10: the content namespace of a c2s stream is jabber:client.
                raise StreamXMLError(
                    XMLCondition.INVALID_NAMESPACE, "the content namespace must be jabber:client"
                )
            self._depth = 1
            self._boundary = self._parser.CurrentByteIndex
            self._events.append(StreamOpened(self._header_attributes(attrs)))
            return
        if depth >= self._max_depth:
            raise StreamXMLError(XMLCondition.POLICY_VIOLATION, "elements are nested too deep")
        if len(attrs) > _MAX_ATTRIBUTES:
            raise StreamXMLError(XMLCondition.POLICY_VIOLATION, "too many attributes")
        element = ET.Element(
            _clark(name), {_clark(k): v for k, v in attrs.items()} if attrs else {}
        )
        if self._stack:
            self._stack[-1].append(element)
        self._stack.append(element)
        self._depth = depth + 1

    def _end(self, name: str) -> None:
        depth = self._depth - 1
        self._depth = depth
        if depth == 0:
            self._events.append(StreamClosed())
            return
        element = self._stack.pop()
        if depth == 1:
            position = self._parser.CurrentByteIndex
            self._check_size(position)
            self._boundary = position
            self._events.append(ElementReceived(element))

    def _text(self, data: str) -> None:
        if not self._stack:
            # Whitespace keepalives between stanzas (RFC 6120 §4.6.1) are not a stanza.
            self._boundary = self._parser.CurrentByteIndex
            return
        element = self._stack[-1]
        if len(element):
            last = element[-1]
            last.tail = (last.tail or "") + data
        else:
            element.text = (element.text or "") + data

    def _header_attributes(self, attrs: dict[str, str]) -> dict[str, str]:
        result: dict[str, str] = {}
        for key, value in attrs.items():
            if key == f"{XML_NS} lang":
                result["xml:lang"] = value
            elif " " not in key:
                result[key] = value
        return result

    def _namespace_decl(self, prefix: str | None, uri: str) -> None:
        if self._depth == 0 and prefix is None:
            self._default_namespace = uri

    def _forbidden_doctype(self, *args: object) -> None:
        raise StreamXMLError(XMLCondition.RESTRICTED_XML, "a DTD is not allowed (RFC 6120 §11.1)")

    def _forbidden_entity(self, *args: object) -> None:
        raise StreamXMLError(
            XMLCondition.RESTRICTED_XML, "entity declarations are not allowed (RFC 6120 §11.1)"
        )

    def _forbidden_entity_ref(self, *args: object) -> None:
        raise StreamXMLError(XMLCondition.RESTRICTED_XML, "entity references are not allowed")

    def _forbidden_external(self, *args: object) -> int:
        raise StreamXMLError(XMLCondition.RESTRICTED_XML, "external entities are not allowed")

    def _forbidden_comment(self, data: str) -> None:
        raise StreamXMLError(
            XMLCondition.RESTRICTED_XML, "comments are not allowed (RFC 6120 §11.1)"
        )

    def _forbidden_pi(self, target: str, data: str) -> None:
        raise StreamXMLError(
            XMLCondition.RESTRICTED_XML, "processing instructions are not allowed (RFC 6120 §11.1)"
        )

    def _xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        # RFC 6120 §11.6: UTF-8 only.
        if encoding is not None and encoding.upper().replace("_", "-") != "UTF-8":
            raise StreamXMLError(XMLCondition.UNSUPPORTED_ENCODING, "only UTF-8 is supported")
