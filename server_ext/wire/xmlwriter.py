"""Serializing stanzas and stream framing for c2s streams (RFC 6120 §4).

Elements are written the way XMPP peers expect them: UTF-8 without an XML declaration, each
namespace change as a default ``xmlns='…'`` declaration (never an ``ns0:`` prefix), and
``xml:lang`` under its reserved prefix.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from typing import Final

from server_ext.errors import ServerExtError
from server_ext.wire import namespaces as ns

__all__ = ["STREAM_CLOSE", "XMLWriteError", "serialize", "stream_error", "stream_header"]

STREAM_CLOSE: Final = b"</stream:stream>"
_XML_NS: Final = ns.XML
# Attributes in namespaces other than xml: need a prefix (a default namespace never applies to
# attributes); these are declared on the element that uses them.
_ATTRIBUTE_PREFIX: Final = "a"

# Characters XML 1.0 cannot carry at all, not even as character references (XML 1.0 §2.2).
_FORBIDDEN_CHARACTER: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What would end a name early and turn the rest into markup. Names come from parsed XML or
# from constants, so this guards against injection rather than checking the full XML grammar.
_NOT_IN_NAME: Final = re.compile(r"""[\s<>&'"=/:!?]""")
_CONDITION: Final = re.compile(r"[a-z]+(?:-[a-z]+)*\Z")
_NAMES_CHECKED_LIMIT: Final = 1024
_names_checked: set[str] = set()


class XMLWriteError(ServerExtError):
    """An element or string cannot be written as XML."""


def _check_characters(text: str) -> None:
    # isprintable() is a quick C-level pass that clears most strings; it also fails on
    # allowed characters (newlines, non-ASCII spaces), which the exact pattern then accepts.
    if not text.isprintable() and _FORBIDDEN_CHARACTER.search(text) is not None:
        raise XMLWriteError("the text contains a character XML 1.0 does not allow")


def _escape_text(text: str) -> str:
    _check_characters(text)
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        # A literal CR would reach the reader as LF (XML 1.0 §2.11).
        text = text.replace("\r", "&#13;")
    return text


def _escape_attribute(text: str) -> str:
    text = _escape_text(text)
    if "'" in text:
        text = text.replace("'", "&apos;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\n" in text:
        # Attribute value normalization (XML 1.0 §3.3.3) would turn these into spaces.
        text = text.replace("\n", "&#10;")
    if "\t" in text:
        text = text.replace("\t", "&#9;")
    return text


def _check_name(name: str) -> None:
    if not name or _NOT_IN_NAME.search(name) is not None:
        raise XMLWriteError("an element or attribute name is not a valid XML name")
    if len(_names_checked) < _NAMES_CHECKED_LIMIT:
        _names_checked.add(name)


def _write(element: ET.Element, parent_namespace: str, out: list[str]) -> None:
    tag = element.tag
    if not isinstance(tag, str):
        # ET.Comment and ET.ProcessingInstruction; RFC 6120 §11.1 forbids sending them.
        raise XMLWriteError("comments and processing instructions cannot be sent")
    if tag[:1] == "{":
        namespace, _, local = tag[1:].partition("}")
    else:
        namespace, local = "", tag  # no namespace, even inside a namespaced parent
    if local not in _names_checked:
        _check_name(local)
    if namespace == ns.STREAMS:
        # RFC 6120 §4.8.5: the stream namespace goes with the 'stream' prefix, which the
        # stream header declares; the default namespace around it stays what it was.
        start = "<stream:" + local
        local = "stream:" + local
        namespace = parent_namespace
    else:
        start = "<" + local
        if namespace != parent_namespace:
            start += " xmlns='" + _escape_attribute(namespace) + "'"
    if element.attrib:
        start += _attributes(element.attrib)
    text = element.text
    if text or len(element):
        out.append(start + ">")
        if text:
            out.append(_escape_text(text))
        for child in element:
            _write(child, namespace, out)
            tail = child.tail
            if tail:
                out.append(_escape_text(tail))
        out.append("</" + local + ">")
    else:
        out.append(start + "/>")


def _attributes(attributes: dict[str, str]) -> str:
    written = ""
    prefixes: dict[str, str] | None = None
    for key, value in attributes.items():
        if key[:1] != "{":
            namespace, name = "", key
        else:
            namespace, _, name = key[1:].partition("}")
        if name not in _names_checked:
            _check_name(name)
        if namespace == _XML_NS:
            name = "xml:" + name
        elif namespace:
            if prefixes is None:
                prefixes = {}
            prefix = prefixes.get(namespace)
            if prefix is None:
                prefix = prefixes[namespace] = f"{_ATTRIBUTE_PREFIX}{len(prefixes) + 1}"
                written += f" xmlns:{prefix}='{_escape_attribute(namespace)}'"
            name = prefix + ":" + name
        written += " " + name + "='" + _escape_attribute(value) + "'"
    return written


def serialize(element: ET.Element, *, default_namespace: str = "jabber:client") -> bytes:
    """UTF-8 XML for ``element`` inside a stream whose content namespace is ``default_namespace``.

    Raises :class:`XMLWriteError` for text XML cannot carry (such as control characters) and
    for comments or processing instructions in the tree.
    """
    out: list[str] = []
    _write(element, default_namespace, out)
    return "".join(out).encode("utf-8")


def stream_header(
    *,
    stream_id: str,
    from_domain: str,
    to: str | None = None,
    lang: str = "en",
    version: str = "1.0",
) -> bytes:
    """The receiving entity's response stream header (RFC 6120 §4.7)."""
    to_attribute = f" to='{_escape_attribute(to)}'" if to else ""
    return (
        f"{_HEADER_START}{_escape_attribute(stream_id)}' from='{_escaped(from_domain)}'"
        f"{to_attribute} version='{_escaped(version)}' xml:lang='{_escaped(lang)}'>"
    ).encode()


_HEADER_START = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    " xmlns:stream='http://etherx.jabber.org/streams' id='"
)


@functools.lru_cache(maxsize=64)
def _escaped(value: str) -> str:
    """An attribute value that repeats on every stream (the domain, version, language),
    escaped once."""
    return _escape_attribute(value)


def stream_error(
    condition: str, text: str | None = None, application: ET.Element | None = None
) -> bytes:
    """A ``<stream:error/>``: a defined condition, optional text, and an optional
    application-specific condition element (RFC 6120 §4.9.2, §4.9.4)."""
    if _CONDITION.match(condition) is None:
        raise XMLWriteError("a stream error condition is a lower-case name such as 'conflict'")
    error = ET.Element(ns.clark(ns.STREAMS, "error"))
    ET.SubElement(error, ns.clark(ns.STREAM_ERRORS, condition))
    if text:
        ET.SubElement(error, ns.clark(ns.STREAM_ERRORS, "text"), {ns.clark(ns.XML, "lang"): "en"})
        error[-1].text = text
    if application is not None:
        error.append(application)
    return serialize(error)
