"""XML namespaces used on c2s streams (RFC 6120 §4.9, §5, §6, §7; XEPs as named)."""

from __future__ import annotations

CLIENT = "jabber:client"
STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
XML = "http://www.w3.org/XML/1998/namespace"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PING = "urn:xmpp:ping"
ROSTER = "jabber:iq:roster"
REGISTER = "jabber:iq:register"
SASLCERT = "urn:xmpp:saslcert:1"  # XEP-0257
VERSION = "jabber:iq:version"
SM = "urn:xmpp:sm:3"  # XEP-0198
CSI = "urn:xmpp:csi:0"  # XEP-0352


def clark(namespace: str, tag: str) -> str:
    """``{namespace}tag``, the ElementTree name of an element."""
    return f"{{{namespace}}}{tag}"
