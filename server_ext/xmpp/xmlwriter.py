"""Serializing stanzas and stream framing for c2s streams (RFC 6120 §4)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

STREAM_CLOSE = b"</stream:stream>"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"


def _escape_text(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _escape_attr(text: str) -> str:
    text = _escape_text(text)
    if "'" in text:
        text = text.replace("'", "&apos;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    for ch, ref in (("\n", "&#10;"), ("\r", "&#13;"), ("\t", "&#9;")):
        if ch in text:
            text = text.replace(ch, ref)
    return text


def _write(element: ET.Element, parent_ns: str, out: list[str]) -> None:
    tag = element.tag
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
    else:
        namespace, local = parent_ns, tag
    out.append("<" + local)
    if namespace != parent_ns:
        out.append(f" xmlns='{_escape_attr(namespace)}'")
    for key, value in element.attrib.items():
        if key == _XML_LANG:
            name = "xml:lang"
        elif key.startswith("{"):
            # Namespaced attributes other than xml:lang do not occur on c2s streams we write.
            continue
        else:
            name = key
        out.append(f" {name}='{_escape_attr(value)}'")
    if len(element) or element.text:
        out.append(">")
        if element.text:
            out.append(_escape_text(element.text))
        for child in element:
            _write(child, namespace, out)
            if child.tail:
                out.append(_escape_text(child.tail))
        out.append(f"</{local}>")
    else:
        out.append("/>")


def serialize(element: ET.Element, *, default_namespace: str = "jabber:client") -> bytes:
    """UTF-8 XML for ``element`` in a stream whose content namespace is ``default_namespace``."""
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
    """The server's response stream header (RFC 6120 §4.7)."""
    to_attr = f" to='{_escape_attr(to)}'" if to else ""
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' "
        f"id='{_escape_attr(stream_id)}' from='{_escape_attr(from_domain)}'{to_attr} "
        f"version='{_escape_attr(version)}' xml:lang='{_escape_attr(lang)}'>"
    ).encode()


def stream_error(condition: str, text: str | None = None) -> bytes:
    """A ``<stream:error/>`` (RFC 6120 §4.9) with an optional human-readable text."""
    body = f"<{condition} xmlns='{_STREAM_ERRORS}'/>"
    if text:
        body += f"<text xmlns='{_STREAM_ERRORS}' xml:lang='en'>{_escape_text(text)}</text>"
    return f"<stream:error>{body}</stream:error>".encode()
