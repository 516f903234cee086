"""XEP-0198 for a C2S session: ``<enable/>``, acks both ways, resuming on a new stream, and
answering the senders of what a session that ends never had acknowledged.

The counters and the unacknowledged queue are :class:`server_ext.session.sm.StreamManagement`;
this is what the session does with them.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from typing import Final

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.session import sm
from server_ext.session.actions import Action, Bound, ResumeRequested, SMEnabled
from server_ext.session.sm import HandledCountTooHigh, SMCondition, SMPhase, StreamManagement
from server_ext.session.state import SessionState
from server_ext.wire import namespaces as ns
from server_ext.wire.stanzas import ErrorType, error_reply, local_name
from server_ext.wire.xml_events import ElementReceived
from server_ext.wire.xmlparser import StreamParser
from server_ext.wire.xmlwriter import serialize

#: §4: the server's ``<r/>``, sent often.
REQUEST_ACK: Final = serialize(ET.Element(ns.clark(sm.SM_NS, "r")))
# What the unacknowledged queue (stanzas this server serialized) is read back within.
_REPLAY_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
_NO_BOUNCE = frozenset({"error", "groupchat", "headline"})


class ManagedSession(SessionState):
    """The session's side of XEP-0198, once the client enabled it."""

    @property
    def resumable(self) -> bool:
        """The link dropped without a closing tag and the client may resume (XEP-0198 §5)."""
        return (
            self.sm is not None
            and self.sm.resume_id is not None
            and self.jid is not None
            and not self.stream.closed
        )

    @property
    def detached(self) -> bool:
        return self.sm is not None and self.sm.phase is SMPhase.DETACHED

    @property
    def over_quota(self) -> bool:
        """More stanzas unacknowledged than one session may hold: it must end."""
        return self.sm is not None and self.sm.overflowed

    def _request_ack_if_due(self) -> None:
        management = self.sm
        if management is not None and management.ack_due():
            self.stream.send_nonza_bytes(REQUEST_ACK)

    def request_ack(self) -> None:
        """Ask the client what it has handled (XEP-0198 §4 ``<r/>``), if it manages the stream."""
        if self.sm is not None and not self.detached:
            self.stream.send_nonza_bytes(REQUEST_ACK)

    def detach(self) -> None:
        """The link is gone but the session stays, waiting for <resume/> (XEP-0198 §5)."""
        assert self.sm is not None
        self.sm.detach()
        self.stream.data_to_send()  # what was queued for the dead link is in the SM queue

    def resume(self, previous: SessionState, previd: str, h: int) -> list[Action]:
        """Continue ``previous`` on this stream, if this client is its owner (XEP-0198 §5)."""
        management = previous.sm
        if self.stream.closed:
            # The same chunk ended this stream after <resume/>: the session stays detached.
            return []
        if self.jid is not None:
            # A bind in the chunk after <resume/> was answered first: this stream has its
            # session now (§5: resumption is instead of a bind, never after one).
            self.stream.send_nonza(sm.failed(SMCondition.UNEXPECTED_REQUEST))
            return []
        if (
            management is None
            or previous.jid is None
            or management.resume_id != previd
            or previous.jid.bare != self._identity
            # The same device: a certificate login resumes only with that certificate, and
            # with the SASL mechanism the session used. Another account's or another
            # device's previd is unknown to this client, as if it did not exist (§5, §9).
            or previous.fingerprint != self.fingerprint
            or previous.auth_method != self.auth_method
        ):
            self.refuse_resume()
            return []
        try:
            retransmit = management.resume(h)
        except HandledCountTooHigh as error:
            self.stream.close("undefined-condition", str(error), sm.too_high(error))
            return []
        previous.sm = None
        self.sm = management
        self.jid = previous.jid
        self.stream.resumed(previous.jid, sm.resumed(previd, management.handled), retransmit)
        self.stream.observer = management
        return [Bound()]

    def bounce_unacked(self) -> int:
        """The session ends with stanzas its client never acknowledged: answer their senders
        as if the recipient had gone (XEP-0198 §5 and RFC 6120 §10.5.3.2, RFC 6121 §8.5.3.2);
        returns how many were answered. Every request gets an answer, even from a device
        that never came back."""
        management = self.sm
        if management is None or self.jid is None:
            return 0
        parser = StreamParser(max_stanza_bytes=self._services.max_stanza_bytes * 2)
        parser.feed(_REPLAY_HEADER)
        answered = 0
        for data in management.take_unacked():
            for item in parser.feed(data):
                if isinstance(item, ElementReceived) and self._bounce(item.element):
                    answered += 1
        return answered

    def _bounce(self, stanza: ET.Element) -> bool:
        kind = local_name(stanza)
        if kind == "presence" or (kind == "message" and stanza.get("type") in _NO_BOUNCE):
            return False  # RFC 6121 §8.5.3.2.1: these are dropped silently
        if kind == "iq" and stanza.get("type") not in ("get", "set"):
            return False
        try:
            sender = JID.parse(stanza.get("from", ""))
        except InvalidJID:
            return False
        target = self._context.sessions.get(sender)
        if target is None or target is self._owner:
            return False
        reply = error_reply(
            stanza,
            ErrorType.CANCEL,
            "recipient-unavailable" if kind == "message" else "service-unavailable",
            "the device went offline before it received this",
        )
        if reply is None:
            return False
        target.deliver(reply)
        return True

    def refuse_resume(self) -> None:
        # §5: item-not-found; the client may bind a new session on this stream.
        self.stream.send_nonza(sm.failed(SMCondition.ITEM_NOT_FOUND))

    def _stream_management(self, element: ET.Element, actions: list[Action]) -> None:
        name = element.tag.rsplit("}", 1)[-1]
        management = self.sm
        if name == "enable":
            if self.jid is None or management is not None:
                # §3: only after bind, and once.
                self.stream.send_nonza(sm.failed(SMCondition.UNEXPECTED_REQUEST))
                return
            resume = element.get("resume") in ("true", "1")
            timeout = self._services.resume_timeout
            wanted = element.get("max")
            if timeout > 0 and wanted is not None and wanted.isascii() and wanted.isdigit():
                # §3: the client's preferred maximum; the server's setting is the ceiling.
                timeout = max(1, min(timeout, int(wanted)))
            management = StreamManagement(
                secrets.token_urlsafe(18) if resume and timeout > 0 else None,
                timeout=timeout,
                max_unacked=self._services.max_unacked,
            )
            self.sm = management
            self.stream.send_nonza(sm.enabled(management))
            self.stream.observer = management
            if management.resume_id is not None:
                actions.append(SMEnabled(management.resume_id))
        elif name == "resume":
            h = sm.parse_h(element.get("h"))
            previd = element.get("previd") or ""
            if self.jid is not None or self._identity is None:
                self.stream.send_nonza(sm.failed(SMCondition.UNEXPECTED_REQUEST))
            elif h is None or not previd:
                self.stream.send_nonza(sm.failed(SMCondition.BAD_REQUEST))
            else:
                actions.append(ResumeRequested(previd, h))
        elif name == "r" and management is not None:
            self.stream.send_nonza_bytes(management.answer())
        elif name == "a" and management is not None:
            h = sm.parse_h(element.get("h"))
            if h is None:
                self.stream.close("invalid-xml", "'h' must be an unsigned 32-bit integer")
                return
            try:
                management.ack(h)
            except HandledCountTooHigh as error:
                # §4: an 'h' above what was sent is a stream error with this condition.
                self.stream.close("undefined-condition", str(error), sm.too_high(error))
        else:
            # §4: <r/> or <a/> before <enable/>, or an element XEP-0198 does not define.
            self.stream.close("unsupported-stanza-type", "stream management is not enabled")


__all__ = ["REQUEST_ACK", "ManagedSession"]
