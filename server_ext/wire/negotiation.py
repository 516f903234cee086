"""STARTTLS and SASL on a c2s stream: the ``<proceed/>`` the server sends (RFC 6120
§5.4.2.3), what the client's ``<auth/>``, ``<response/>`` and ``<abort/>`` ask (§6.4), and the
server's challenge, success and failure, with the base64 of SASL data both ways."""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Final

from pairing.errors import InvalidJID
from pairing.protocol.jid import prepare_domainpart
from server_ext.wire import namespaces as ns
from server_ext.wire.conditions import StreamError
from server_ext.wire.events import AuthAborted, AuthRequested, AuthResponse
from server_ext.wire.xmlwriter import serialize

__all__ = [
    "PROCEED",
    "SASL_REQUESTS",
    "SASLRead",
    "check_header",
    "decode_sasl_data",
    "read_sasl",
    "sasl_element",
    "sasl_failure",
]


def check_header(attributes: Mapping[str, str], domain: str) -> None:
    """Refuse a client's stream header that is not XMPP 1.0 or not to ``domain``."""
    # RFC 6120 §4.7.5: a missing version means 0.9, which has no SASL or STARTTLS.
    version = attributes.get("version", "")
    major = version.split(".", 1)[0]
    if major != "1":
        raise StreamError("unsupported-version", "this server speaks XMPP version 1.0 only")
    # RFC 6120 §4.7.2 and RFC 7622 §3.2: the 'to' domainpart is prepared like every
    # other one, so a fullwidth or upper-case "LOCALHOST." reaches localhost and a name
    # that cannot be prepared is simply unknown.
    try:
        to = prepare_domainpart(attributes.get("to", ""))
    except InvalidJID:
        to = None
    if to != domain:
        raise StreamError("host-unknown", f"this server serves {domain} only")


#: RFC 6120 §5.4.2.3: the answer to ``<starttls/>``; the last plaintext the server sends.
PROCEED: Final = serialize(ET.Element(ns.clark(ns.TLS, "proceed")))

_AUTH = ns.clark(ns.SASL, "auth")
_RESPONSE = ns.clark(ns.SASL, "response")
_ABORT = ns.clark(ns.SASL, "abort")
#: The elements :func:`read_sasl` reads.
SASL_REQUESTS: Final = frozenset({_AUTH, _RESPONSE, _ABORT})

#: What a SASL element asks: the event for the caller (AuthRequested starts an exchange,
#: AuthAborted ends one), and the condition and text of the failure to send, if any.
SASLRead = tuple[AuthRequested | AuthResponse | AuthAborted | None, tuple[str, str | None] | None]


def read_sasl(el: ET.Element, *, authenticating: bool, mechanisms: tuple[str, ...]) -> SASLRead:
    """Read one of :data:`SASL_REQUESTS`, during an exchange or not, where ``mechanisms`` are
    offered."""
    tag = el.tag
    if tag == _AUTH:
        if authenticating:
            return AuthAborted(), ("malformed-request", "a new <auth/> arrived mid-exchange")
        mechanism = el.get("mechanism", "")
        if mechanism not in mechanisms:
            return None, ("invalid-mechanism", f"{mechanism!r} is not offered here")
        text = (el.text or "").strip()
        if not text:
            initial: bytes | None = None  # RFC 6120 §6.4.2: no initial response
        elif text == "=":
            initial = b""  # RFC 6120 §6.4.2: an empty initial response
        else:
            decoded = decode_sasl_data(text)
            if decoded is None:
                return None, ("incorrect-encoding", "the data is not valid base64")
            initial = decoded
        return AuthRequested(mechanism, initial), None
    if tag == _RESPONSE:
        if not authenticating:
            return None, ("malformed-request", "<response/> without an exchange")
        text = (el.text or "").strip()
        data = b"" if text in ("", "=") else decode_sasl_data(text)
        if data is None:
            return AuthAborted(), ("incorrect-encoding", "the data is not valid base64")
        return AuthResponse(data), None
    if tag != _ABORT:
        raise ValueError(f"{tag} is not a SASL request")
    if authenticating:
        return AuthAborted(), ("aborted", None)
    # Gajim's nbxmpp sends <abort/> after a failure; there is nothing left to abort.
    return None, None


def decode_sasl_data(text: str) -> bytes | None:
    """The bytes of SASL data in base64, or None when it is not valid base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def sasl_element(name: str, data: bytes | None) -> bytes:
    """``<challenge/>`` or ``<success/>`` carrying ``data`` (none when it is None)."""
    element = ET.Element(ns.clark(ns.SASL, name))
    if data is not None:
        # RFC 6120 §6.4.6: empty additional data is sent as "=".
        element.text = base64.b64encode(data).decode() if data else "="
    return serialize(element)


def sasl_failure(condition: str, text: str | None, application: ET.Element | None = None) -> bytes:
    """``<failure/>`` with an RFC 6120 §6.5 condition, optional text, and an element in an
    application namespace that says more than the condition can."""
    failure = ET.Element(ns.clark(ns.SASL, "failure"))
    ET.SubElement(failure, ns.clark(ns.SASL, condition))
    if text:
        ET.SubElement(failure, ns.clark(ns.SASL, "text"), {ns.clark(ns.XML, "lang"): "en"})
        failure[-1].text = text
    if application is not None:
        failure.append(application)
    return serialize(failure)
