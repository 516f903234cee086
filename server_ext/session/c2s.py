"""One client's session above the wire: SASL, throttling, enrollment, bind and the resource
lock, XEP-0198 and XEP-0352, without sockets, timers or TLS records.

The asyncio adapter (``server_ext.net.c2s_connection``) owns the socket and the TLS engine. It feeds
plaintext in (:meth:`C2SSession.receive_data`), writes what :meth:`C2SSession.data_to_send`
returns, and carries out the few things only it can do, which the session returns as
actions (``server_ext.session.actions``): start TLS, hold a failure back for a while, forget
the connection's unauthenticated slot, stop the authentication deadline. Tests drive this
class with bytes and no I/O (``tests/unit/test_c2s_session.py``).

This module routes the stream's events to the session's parts (``state`` lists them) and
answers XEP-0352 client state indication itself.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from server_ext.app import renewal
from server_ext.log_limits import CappedLog
from server_ext.session import sm
from server_ext.session.actions import Action, StartTLS
from server_ext.session.binding import Binding
from server_ext.session.enrollment import Enrollment
from server_ext.session.sasl_step import SASLStep
from server_ext.session.sm import SMPhase
from server_ext.session.stream_management import ManagedSession
from server_ext.wire import namespaces as ns
from server_ext.wire.events import (
    AuthAborted,
    AuthRequested,
    AuthResponse,
    BindRequested,
    Event,
    NonzaReceived,
    Phase,
    StanzaReceived,
    StreamFailed,
    TLSRequested,
)
from server_ext.wire.xmlwriter import serialize

log = logging.getLogger(__name__)
peer_log = CappedLog(log)  # for what peers do wrong: they must not be able to flood the log

_CSI_PREFIX = "{" + ns.CSI + "}"


class C2SSession(SASLStep, Enrollment, Binding, ManagedSession):
    """The protocol of one c2s connection above :class:`C2SStream`: what the client sends
    goes to the part that handles it; the state they share is :class:`SessionState`."""

    # --- inputs ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Action]:
        """Plaintext from the client; returns what the adapter must do."""
        actions: list[Action] = []
        self._handle_all(self.stream.receive_data(data), actions)
        self._request_ack_if_due()
        return actions

    def release(self) -> list[Action]:
        """The hold is over: send the failure, then handle what arrived meanwhile."""
        actions: list[Action] = []
        held, failure = self._held or [], self._held_failure
        self._held, self._held_failure = None, None
        if failure is not None and self.stream.phase is Phase.AUTHENTICATING:
            self.stream.auth_failed(*failure)
        self._handle_all(held, actions)
        return actions

    def timed_out(self) -> None:
        """The authentication deadline passed."""
        if self.jid is None:
            # RFC 6120 §4.9.3.4: connection-timeout for a stream that never authenticated.
            self.stream.close("connection-timeout", "authenticate sooner")

    # --- outputs --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        return self.stream.data_to_send()

    @property
    def closed(self) -> bool:
        return self.stream.closed

    @property
    def holding(self) -> bool:
        return self._held is not None

    def deliver(self, element: ET.Element) -> None:
        management = self.sm
        if management is not None and management.phase is SMPhase.DETACHED:
            # Nobody reads the stream now: queue the stanza for the client's return.
            management.stanza_sent(serialize(element))
            return
        self.stream.send_element(element)
        self._request_ack_if_due()
        if self.over_quota:
            # RFC 6120 §4.9.3.17: the client does not acknowledge what it is sent, and the
            # server will not hold more for it. A closed stream cannot be resumed.
            self.stream.close("resource-constraint", "too many unacknowledged stanzas")

    def close(
        self, condition: str | None, text: str | None, application: ET.Element | None = None
    ) -> None:
        self.stream.close(condition, text, application)

    # --- events ---------------------------------------------------------------------------

    def _handle_all(self, events: list[Event], actions: list[Action]) -> None:
        for index, event in enumerate(events):
            if self.stream.closed and not isinstance(event, StreamFailed):
                # What came before the end of the stream in the same chunk is not acted on:
                # no login is decided, audited or counted for a stream that is already over.
                continue
            if self._held is not None:
                self._held.extend(events[index:])  # answered in order, after the late failure
                return
            self._handle(event, actions)
            if isinstance(event, TLSRequested):
                break

    def _handle(self, event: Event, actions: list[Action]) -> None:
        if isinstance(event, StanzaReceived):
            self._services.dispatcher.dispatch(self._owner, event.element)
        elif isinstance(event, TLSRequested):
            actions.append(StartTLS())  # <proceed/> goes out in plaintext, then TLS starts
        elif isinstance(event, AuthRequested):
            self._start_auth(event, actions)
        elif isinstance(event, AuthResponse):
            if self._mechanism is None:  # pragma: no cover - the stream orders this
                self.stream.auth_failed("malformed-request", "no exchange in progress")
            else:
                self._apply(self._mechanism.respond(event.data), actions)
        elif isinstance(event, AuthAborted):
            self._mechanism = None
        elif isinstance(event, BindRequested):
            self._bind(event, actions)
        elif isinstance(event, NonzaReceived):
            if event.element.tag.startswith("{" + sm.SM_NS + "}"):
                self._stream_management(event.element, actions)
            elif event.element.tag.startswith(_CSI_PREFIX):
                self._client_state(event.element)
            elif event.element.tag == renewal.RENEW_TAG:
                self._renew(event.element)
            else:
                self._enroll(event.element)
        elif isinstance(event, StreamFailed):
            peer_log.log(
                logging.INFO,
                f"stream {event.condition}",
                "stream from %s failed: %s",
                self.address,
                event.condition,
            )

    # --- XEP-0352 client state indication ---------------------------------------------------

    def _client_state(self, element: ET.Element) -> None:
        name = element.tag.rsplit("}", 1)[-1]
        if name not in ("active", "inactive"):
            self.stream.close("unsupported-stanza-type", "XEP-0352 defines active and inactive")
            return
        active = name == "active"
        if self.jid is None:
            # Before the bind: nothing is available or known yet, the state just holds.
            self._owner.csi_known = None if active else set()
        else:
            self._services.dispatcher.client_state(self._owner, active=active)


__all__ = ["C2SSession"]
