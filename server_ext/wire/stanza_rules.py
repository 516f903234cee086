"""What a c2s stream accepts from its client once SASL succeeded: one bind request
(RFC 6120 §7), then stanzas (§8), checked before the caller sees them.

Breaking a rule that ends the stream raises :class:`StreamError`; a request that is only
refused gets a :class:`Refusal`, the iq error to answer it with.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import NamedTuple

from pairing.protocol.jid import JID
from server_ext.wire import namespaces as ns
from server_ext.wire.conditions import StreamError
from server_ext.wire.events import BindRequested

__all__ = ["IQ", "SESSION", "STANZAS", "Refusal", "iq_refusal", "read_bind", "stamp_from"]

IQ = ns.clark(ns.CLIENT, "iq")
STANZAS = frozenset({IQ, ns.clark(ns.CLIENT, "message"), ns.clark(ns.CLIENT, "presence")})
SESSION = ns.clark(ns.SESSION, "session")
_BIND = ns.clark(ns.BIND, "bind")
_RESOURCE = ns.clark(ns.BIND, "resource")
_IQ_TYPES = frozenset({"get", "set", "result", "error"})


class Refusal(NamedTuple):
    """The iq error that answers a request instead of passing it on."""

    error_type: str
    condition: str
    text: str


def read_bind(el: ET.Element, *, binding: bool) -> BindRequested | Refusal:
    """The bind request ``el`` is, while another is ``binding`` or not; anything else before
    a resource is bound ends the stream."""
    if el.tag == IQ:
        bind = el.find(_BIND)
        if bind is not None:
            iq_id = el.get("id")
            if not iq_id or el.get("type") != "set":
                return Refusal("modify", "bad-request", "bind needs an id and set")
            if binding:
                # A second bind in the chunk that carried the first (a client that retried
                # on a stream it thought lost): one resource per stream (RFC 6120 §7.1).
                return Refusal("cancel", "not-allowed", "a resource is being bound already")
            resource_el = bind.find(_RESOURCE)
            resource = (resource_el.text or "").strip() if resource_el is not None else ""
            return BindRequested(iq_id, resource or None)
    # RFC 6120 §7.1: a client MUST NOT send stanzas before binding a resource.
    raise StreamError("not-authorized", "bind a resource before sending stanzas")


def stamp_from(el: ET.Element, bound: JID) -> None:
    """Set the stanza's 'from' to the session's full JID ``bound``; a 'from' that names
    another entity ends the stream (RFC 6120 §8.1.2.1)."""
    claimed = el.get("from")
    if claimed is not None and claimed not in (str(bound), str(bound.bare)):
        try:
            valid = JID.parse(claimed) in (bound, bound.bare)
        except ValueError:
            valid = False
        if not valid:
            raise StreamError("invalid-from", "the 'from' address is not this session")
    el.set("from", str(bound))


def iq_refusal(el: ET.Element) -> Refusal | None:
    """Why the iq ``el`` is malformed (RFC 6120 §8.2.3), or None when it is not."""
    iq_type = el.get("type")
    if iq_type not in _IQ_TYPES or not el.get("id"):
        return Refusal("modify", "bad-request", "an iq needs an id and a type")
    if iq_type in ("get", "set") and len(el) != 1:
        # RFC 6120 §8.2.3: a get or set has exactly one payload element.
        return Refusal("modify", "bad-request", "an iq needs exactly one child")
    return None
