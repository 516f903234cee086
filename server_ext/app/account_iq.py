"""The server's answers to IQs addressed to itself or to the requester's own account.

Disco (XEP-0030), ping (XEP-0199), software version (XEP-0092), an empty roster for client
compatibility (RFC 6121 §2; this server stores no rosters), and password change (XEP-0077 §3.3).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from pairing import __version__
from pairing.errors import InvalidJID
from pairing.protocol.jid import prepare_localpart
from server_ext.app import adhoc, saslcert
from server_ext.app.adhoc import COMMANDS
from server_ext.app.handlers import IQHandler, Requester, ServerContext
from server_ext.auth.credentials import PasswordRefused, credentials_for, prepare_password
from server_ext.errors import RegistryError
from server_ext.wire import namespaces as ns
from server_ext.wire.stanzas import ErrorType, StanzaError

log = logging.getLogger(__name__)

SERVER_FEATURES = (
    COMMANDS,
    ns.DISCO_INFO,
    ns.DISCO_ITEMS,
    ns.PING,
    ns.VERSION,
    ns.SASLCERT,
    ns.REGISTER,
)


def disco_info(ctx: ServerContext, requester: Requester, iq: ET.Element) -> ET.Element | None:
    if iq.get("type") != "get":
        raise StanzaError(ErrorType.CANCEL, "bad-request", "disco#info is a get")
    query = ET.Element(ns.clark(ns.DISCO_INFO, "query"))
    node = iq[0].get("node")
    if node:
        if node not in adhoc.BY_NODE:
            raise StanzaError(ErrorType.CANCEL, "item-not-found", "no such node")
        # XEP-0050 §2.3: a command node's identity and features.
        query.set("node", node)
        ET.SubElement(
            query,
            ns.clark(ns.DISCO_INFO, "identity"),
            {"category": "automation", "type": "command-node", "name": adhoc.BY_NODE[node].name},
        )
        for feature in (COMMANDS, adhoc.DATA):
            ET.SubElement(query, ns.clark(ns.DISCO_INFO, "feature"), {"var": feature})
        return query
    to = iq.get("to")
    if to and "@" in to:
        # XEP-0030 §3.1: the account itself.
        ET.SubElement(
            query,
            ns.clark(ns.DISCO_INFO, "identity"),
            {"category": "account", "type": "registered"},
        )
        features: tuple[str, ...] = (ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PING)
    else:
        ET.SubElement(
            query,
            ns.clark(ns.DISCO_INFO, "identity"),
            {"category": "server", "type": "im", "name": "server-ext"},
        )
        features = SERVER_FEATURES
    for feature in features:
        ET.SubElement(query, ns.clark(ns.DISCO_INFO, "feature"), {"var": feature})
    return query


def disco_items(ctx: ServerContext, requester: Requester, iq: ET.Element) -> ET.Element | None:
    if iq.get("type") != "get":
        raise StanzaError(ErrorType.CANCEL, "bad-request", "disco#items is a get")
    node = iq[0].get("node")
    if node == COMMANDS and not (iq.get("to") or "").count("@"):
        return adhoc.disco_items(ctx.domain)
    if node:
        raise StanzaError(ErrorType.CANCEL, "item-not-found", "no such node")
    return ET.Element(ns.clark(ns.DISCO_ITEMS, "query"))


def ping(ctx: ServerContext, requester: Requester, iq: ET.Element) -> ET.Element | None:
    if iq.get("type") != "get":
        raise StanzaError(ErrorType.CANCEL, "bad-request", "a ping is a get")
    return None


def version(ctx: ServerContext, requester: Requester, iq: ET.Element) -> ET.Element | None:
    if iq.get("type") != "get":
        raise StanzaError(ErrorType.CANCEL, "bad-request", "software version is a get")
    query = ET.Element(ns.clark(ns.VERSION, "query"))
    ET.SubElement(query, ns.clark(ns.VERSION, "name")).text = "server-ext"
    ET.SubElement(query, ns.clark(ns.VERSION, "version")).text = __version__
    return query


def roster(ctx: ServerContext, requester: Requester, iq: ET.Element) -> ET.Element | None:
    if iq.get("type") == "get":
        # Bots built on slixmpp ask for the roster at start; an empty one keeps them working.
        return ET.Element(ns.clark(ns.ROSTER, "query"))
    raise StanzaError(ErrorType.CANCEL, "not-allowed", "this server does not store rosters")


def register(ctx: ServerContext, requester: Requester, iq: ET.Element) -> ET.Element | None:
    query = iq[0]
    if iq.get("type") == "get":
        reply = ET.Element(ns.clark(ns.REGISTER, "query"))
        ET.SubElement(reply, ns.clark(ns.REGISTER, "registered"))
        ET.SubElement(reply, ns.clark(ns.REGISTER, "username")).text = requester.jid.local
        ET.SubElement(reply, ns.clark(ns.REGISTER, "password"))
        return reply
    if query.find(ns.clark(ns.REGISTER, "remove")) is not None:
        raise StanzaError(ErrorType.CANCEL, "not-allowed", "ask an administrator to delete it")
    password_el = query.find(ns.clark(ns.REGISTER, "password"))
    if password_el is None or not password_el.text:
        raise StanzaError(ErrorType.MODIFY, "bad-request", "a new <password/> is required")
    if requester.auth_method == "EXTERNAL":
        # XEP-0257 §4: a session authenticated with a certificate may not change the
        # password; a stolen device must not be able to take over the account.
        raise StanzaError(
            ErrorType.AUTH,
            "not-authorized",
            "a session logged in with a certificate may not change the password",
        )
    username_el = query.find(ns.clark(ns.REGISTER, "username"))
    if username_el is not None and not _is_own_username(username_el.text or "", requester):
        raise StanzaError(ErrorType.MODIFY, "bad-request", "the username is not yours")
    try:
        password = prepare_password(password_el.text)
    except PasswordRefused as exc:
        raise StanzaError(ErrorType.MODIFY, "not-acceptable", f"unusable password: {exc}") from None
    try:
        ctx.registry.accounts.set_credentials(
            requester.jid.bare, credentials_for(password), actor=str(requester.jid)
        )
    except RegistryError as exc:
        log.error("cannot change password: %s", exc)
        raise StanzaError(ErrorType.WAIT, "resource-constraint", "try again later") from None
    return None


def _is_own_username(text: str, requester: Requester) -> bool:
    # XEP-0077 §3.3: the username is the localpart, compared after the same PRECIS
    # preparation as at login (RFC 7622 §3.3), so fullwidth "ALICE" is alice and "ﬁx" is nobody.
    try:
        return prepare_localpart(text) == requester.jid.local
    except InvalidJID:
        return False


def account_handlers() -> dict[tuple[str, str], IQHandler]:
    """Handlers by (namespace, element name) for IQs to the server or one's own account."""
    return {
        (COMMANDS, "command"): adhoc.handle,
        (ns.DISCO_INFO, "query"): disco_info,
        (ns.DISCO_ITEMS, "query"): disco_items,
        (ns.PING, "ping"): ping,
        (ns.VERSION, "query"): version,
        (ns.ROSTER, "query"): roster,
        (ns.REGISTER, "query"): register,
        (ns.SASLCERT, "items"): saslcert.handle,
        (ns.SASLCERT, "append"): saslcert.handle,
        (ns.SASLCERT, "disable"): saslcert.handle,
        (ns.SASLCERT, "revoke"): saslcert.handle,
    }
