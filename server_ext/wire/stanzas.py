"""Building replies to stanzas (RFC 6120 §8): results and errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from enum import StrEnum

from server_ext.wire import namespaces as ns
from server_ext.wire.xmlwriter import serialize


class ErrorType(StrEnum):
    """RFC 6120 §8.3.2 error types."""

    AUTH = "auth"
    CANCEL = "cancel"
    CONTINUE = "continue"
    MODIFY = "modify"
    WAIT = "wait"


class StanzaError(Exception):
    """Raised by a handler to answer the request with an error stanza (RFC 6120 §8.3)."""

    def __init__(self, error_type: ErrorType, condition: str, text: str = "") -> None:
        super().__init__(text or condition)
        self.error_type = error_type
        self.condition = condition
        self.text = text


def local_name(element: ET.Element) -> str:
    """The tag without its namespace."""
    return element.tag.rpartition("}")[2]


def namespace(element: ET.Element) -> str:
    tag = element.tag
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def reply_to(stanza: ET.Element, stanza_type: str) -> ET.Element:
    """An empty reply of the same kind, addressed back to the sender."""
    reply = ET.Element(stanza.tag)
    stanza_id = stanza.get("id")
    if stanza_id is not None:
        reply.set("id", stanza_id)
    sender = stanza.get("from")
    if sender:
        reply.set("to", sender)
    recipient = stanza.get("to")
    if recipient:
        reply.set("from", recipient)
    reply.set("type", stanza_type)
    return reply


def error_reply(
    stanza: ET.Element, error_type: ErrorType, condition: str, text: str = ""
) -> ET.Element | None:
    """The error answer to ``stanza``, or None when RFC 6120 §8.3.1 forbids one."""
    if stanza.get("type") in ("error", "result"):
        return None
    reply = reply_to(stanza, "error")
    # RFC 6120 §8.3.1: the error stanza SHOULD include the original payload.
    if local_name(stanza) != "iq":
        for child in stanza:
            reply.append(child)
    error = ET.SubElement(reply, ns.clark(ns.CLIENT, "error"), {"type": str(error_type)})
    ET.SubElement(error, ns.clark(ns.STANZAS, condition))
    if text:
        text_el = ET.SubElement(error, ns.clark(ns.STANZAS, "text"))
        text_el.set(ns.clark(ns.XML, "lang"), "en")
        text_el.text = text
    return reply


def iq_result(iq_id: str) -> ET.Element:
    """An empty ``<iq type='result'/>`` answering the request ``iq_id``."""
    return ET.Element(ns.clark(ns.CLIENT, "iq"), {"type": "result", "id": iq_id})


def iq_error(
    iq_id: str | None, to: str | None, error_type: str, condition: str, text: str
) -> bytes:
    """A serialized ``<iq type='error'/>`` with a stanza error condition and its text."""
    iq = ET.Element(ns.clark(ns.CLIENT, "iq"), {"type": "error"})
    if iq_id is not None:
        iq.set("id", iq_id)
    if to:
        iq.set("to", to)
    error = ET.SubElement(iq, ns.clark(ns.CLIENT, "error"), {"type": error_type})
    ET.SubElement(error, ns.clark(ns.STANZAS, condition))
    ET.SubElement(error, ns.clark(ns.STANZAS, "text")).text = text
    return serialize(iq)
