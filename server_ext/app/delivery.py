"""Where each stanza from a bound session goes (RFC 6120 §10, RFC 6121 §8.5).

The server answers IQs addressed to itself or to the sender's own account; everything else is
routed between local sessions. There is no server-to-server traffic and no offline storage,
so anything that cannot be delivered is answered with an error rather than dropped.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Protocol

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.app.handlers import IQHandler, Requester, ServerContext
from server_ext.app.router import Session
from server_ext.wire import namespaces as ns
from server_ext.wire.stanzas import ErrorType, StanzaError, error_reply, local_name, namespace

log = logging.getLogger(__name__)

_PRIORITY = ns.clark(ns.CLIENT, "priority")
_PRESENCE = ns.clark(ns.CLIENT, "presence")


class Sender(Requester, Session, Protocol):
    """A bound session as the dispatcher sees it."""

    def set_presence(self, available: bool, priority: int) -> None: ...


class Dispatcher:
    """Routes stanzas between sessions and answers the server's own IQs."""

    def __init__(self, ctx: ServerContext, handlers: Mapping[tuple[str, str], IQHandler]) -> None:
        self._ctx = ctx
        self._handlers = dict(handlers)
        # The last available presence of each resource, for the account's resources that
        # come online later (RFC 6121 §4.2.2): a device's status names it for its owner.
        self._last_presence: dict[JID, tuple[Session, ET.Element]] = {}

    def dispatch(self, sender: Sender, stanza: ET.Element) -> None:
        """Handle one stanza; every request gets an answer."""
        to_text = stanza.get("to")
        try:
            to = JID.parse(to_text) if to_text else None
        except InvalidJID:
            # RFC 6120 §8.3.3.8: a malformed address gets jid-malformed.
            self._reply_error(sender, stanza, ErrorType.MODIFY, "jid-malformed", "bad 'to'")
            return
        kind = local_name(stanza)
        if kind == "iq":
            self._iq(sender, stanza, to)
        elif kind == "message":
            self._message(sender, stanza, to)
        else:
            self._presence(sender, stanza, to)

    # --- iq -------------------------------------------------------------------------------

    def _iq(self, sender: Sender, iq: ET.Element, to: JID | None) -> None:
        domain = self._ctx.domain
        if to is not None and to.domain != domain:
            self._reply_error(sender, iq, ErrorType.CANCEL, "remote-server-not-found", "")
            return
        if to is None or to == JID("", domain) or to == sender.jid.bare:
            self._server_iq(sender, iq)
            return
        if to.is_bare or to.local == "":
            # IQs to another account's bare JID would be answered by that account's server on
            # its behalf; this server offers nothing there (RFC 6121 §8.5.2.1.3).
            self._reply_error(sender, iq, ErrorType.CANCEL, "service-unavailable", "")
            return
        target = self._ctx.sessions.get(to)
        if target is None:
            self._reply_error(sender, iq, ErrorType.CANCEL, "service-unavailable", "")
            return
        target.deliver(iq)

    def _server_iq(self, sender: Sender, iq: ET.Element) -> None:
        if iq.get("type") in ("result", "error"):
            return  # answers to nothing we asked; RFC 6120 §8.2.3 forbids replying.
        payload = iq[0]
        handler = self._handlers.get((namespace(payload), local_name(payload)))
        if handler is None:
            self._reply_error(sender, iq, ErrorType.CANCEL, "service-unavailable", "")
            return
        try:
            result = handler(self._ctx, sender, iq)
        except StanzaError as exc:
            self._reply_error(sender, iq, exc.error_type, exc.condition, exc.text)
            return
        except Exception:
            # A handler bug must still answer the request and must not end the session.
            log.exception("IQ handler failed for %s", payload.tag)
            self._reply_error(sender, iq, ErrorType.WAIT, "internal-server-error", "")
            return
        reply = ET.Element(iq.tag, {"type": "result", "id": iq.get("id", "")})
        reply.set("to", str(sender.jid))
        if iq.get("to"):
            reply.set("from", iq.get("to", ""))
        if result is not None:
            reply.append(result)
        sender.deliver(reply)

    # --- message --------------------------------------------------------------------------

    def _message(self, sender: Sender, message: ET.Element, to: JID | None) -> None:
        domain = self._ctx.domain
        message_type = message.get("type", "normal")
        if to is None:
            to = sender.jid.bare  # RFC 6120 §8.1.1.1: no 'to' means the sender's account.
        if to.domain != domain:
            self._reply_error(sender, message, ErrorType.CANCEL, "remote-server-not-found", "")
            return
        if not to.local:
            self._reply_error(sender, message, ErrorType.CANCEL, "service-unavailable", "")
            return
        sessions = self._ctx.sessions
        if to.resource:
            target = sessions.get(to)
            if target is not None:
                target.deliver(message)
                return
            if message_type in ("groupchat", "headline", "error"):
                if message_type == "groupchat":
                    self._reply_error(sender, message, ErrorType.CANCEL, "service-unavailable", "")
                return
        # RFC 6121 §8.5.2.1.1 / §8.5.3.2.1: to the bare JID, or a full JID that is gone.
        recipients = sessions.message_recipients(to.bare)
        if not recipients:
            if message_type not in ("headline", "error"):
                self._reply_error(
                    sender,
                    message,
                    ErrorType.CANCEL,
                    "service-unavailable",
                    "the recipient is offline and this server keeps no offline messages",
                )
            return
        for target in recipients:
            target.deliver(message)

    # --- presence -------------------------------------------------------------------------

    def _presence(self, sender: Sender, presence: ET.Element, to: JID | None) -> None:
        presence_type = presence.get("type")
        sessions = self._ctx.sessions
        if to is None:
            if presence_type not in (None, "unavailable"):
                return  # probes and subscriptions need a roster; this server keeps none.
            available = presence_type is None
            sender.set_presence(available, _priority(presence))
            self._remember(sender, presence if available else None)
            # RFC 6121 §4.2.2 and §4.5.2: broadcast to the user's other available resources,
            # and on initial presence tell the new resource about the others (unless it said
            # it is not looking, XEP-0352: it gets them when it becomes active).
            tell_sender = available and sender.csi_known is None
            for peer in sessions.available_resources(sender.jid.bare):
                if peer is sender:
                    continue
                if _reaches(peer, sender.jid, available):
                    copy = _copy(presence)
                    copy.set("to", str(peer.jid))
                    peer.deliver(copy)
                if tell_sender:
                    sender.deliver(self._presence_of(peer, to=sender.jid))
            return
        if to.domain != self._ctx.domain or presence_type not in (None, "unavailable"):
            return
        targets = [sessions.get(to)] if to.resource else sessions.available_resources(to.bare)
        for target in targets:
            if target is not None:
                target.deliver(presence)

    def went_offline(self, gone: Session) -> None:
        """RFC 6121 §4.5.2: the account's other resources learn that ``gone`` (unbound,
        without saying unavailable itself) is no longer available."""
        jid = gone.jid
        self._last_presence.pop(jid, None)
        for peer in self._ctx.sessions.available_resources(jid.bare):
            if peer is not gone and _reaches(peer, jid, available=False):
                peer.deliver(
                    ET.Element(
                        _PRESENCE, {"from": str(jid), "to": str(peer.jid), "type": "unavailable"}
                    )
                )

    # --- XEP-0352 client state indication ---------------------------------------------------

    def client_state(self, sender: Sender, *, active: bool) -> None:
        """The client says whether anyone is looking at it (XEP-0352 §4.2).

        An inactive client is not sent the presence of the account's other resources: a
        headless device never shows it, and with thousands of devices on one account that
        broadcast is what costs (each of N devices coming online would otherwise reach the
        N - 1 others). It is not queued either: the client learns the current presence of
        every available resource when it becomes active again, which is what a queue that
        keeps only each resource's latest presence (XEP-0352 §3.2) would deliver. It still
        hears that a resource it knew to be available went away.
        """
        if not active:
            if sender.csi_known is None:
                sender.csi_known = (
                    {
                        peer.jid
                        for peer in self._ctx.sessions.available_resources(sender.jid.bare)
                        if peer is not sender
                    }
                    if sender.available
                    else set()
                )
            return
        if sender.csi_known is None:
            return
        sender.csi_known = None
        if not sender.available:
            return
        for peer in self._ctx.sessions.available_resources(sender.jid.bare):
            if peer is not sender:
                sender.deliver(self._presence_of(peer, to=sender.jid))

    def _remember(self, sender: Sender, presence: ET.Element | None) -> None:
        jid = sender.jid
        if presence is None:
            self._last_presence.pop(jid, None)
            return
        self._last_presence[jid] = (sender, _copy(presence))
        if len(self._last_presence) > 2 * len(self._ctx.sessions) + 64:
            # Sessions that ended without unavailable presence leave entries behind; drop
            # those now and then, so the map stays as large as the live sessions.
            sessions = self._ctx.sessions
            self._last_presence = {
                full: entry
                for full, entry in self._last_presence.items()
                if sessions.get(full) is entry[0]
            }

    def _presence_of(self, peer: Session, *, to: JID) -> ET.Element:
        """``peer``'s last available presence (show, status, priority), addressed to ``to``."""
        remembered = self._last_presence.get(peer.jid)
        if remembered is not None and remembered[0] is peer:
            element = _copy(remembered[1])
            element.attrib.pop("id", None)  # that id belongs to the original broadcast
        else:
            element = ET.Element(_PRESENCE)
        element.set("from", str(peer.jid))
        element.set("to", str(to))
        return element

    def _reply_error(
        self, sender: Sender, stanza: ET.Element, error_type: ErrorType, condition: str, text: str
    ) -> None:
        reply = error_reply(stanza, error_type, condition, text)
        if reply is not None:
            reply.set("to", str(sender.jid))
            sender.deliver(reply)


def _reaches(peer: Session, sender: JID, available: bool) -> bool:
    """Whether a broadcast presence of ``sender`` goes to ``peer`` now (XEP-0352)."""
    known = peer.csi_known
    if known is None:
        return True  # an active client gets every broadcast
    if available:
        return False  # held back; the current presence follows when it becomes active
    if sender in known:
        known.discard(sender)
        return True
    return False  # it never learnt that this one was available


def _priority(presence: ET.Element) -> int:
    el = presence.find(_PRIORITY)
    try:
        value = int((el.text or "0").strip()) if el is not None else 0
    except ValueError:
        return 0
    return max(-128, min(127, value))  # RFC 6121 §4.7.2.3


def _copy(element: ET.Element) -> ET.Element:
    clone = ET.Element(element.tag, dict(element.attrib))
    clone.text = element.text
    clone.extend(list(element))
    return clone
