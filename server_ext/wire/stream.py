"""The server side of one c2s stream (RFC 6120), as a sans-I/O state machine.

The caller owns the socket and TLS. It feeds bytes with :meth:`C2SStream.receive_data`, acts
on the events returned, answers through methods such as :meth:`C2SStream.auth_succeeded`,
and writes :meth:`C2SStream.data_to_send` to the wire. The state machine owns the order of
negotiation: STARTTLS (required), SASL, resource binding, then stanzas. What each phase
offers and reads is in ``features``, ``negotiation`` (STARTTLS, SASL) and ``stanza_rules``.

::

    PLAINTEXT --starttls--> TLS_PENDING --tls_established--> SECURED
    SECURED --auth--> AUTHENTICATING --auth_failed--> SECURED
    AUTHENTICATING --auth_succeeded--> AUTHENTICATED --bind_succeeded--> BOUND
    AUTHENTICATED --resumed (XEP-0198 §5)--> BOUND
    any --stream error / close--> CLOSED
"""

from __future__ import annotations

import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import Protocol

from pairing.errors import LocalProtocolError
from pairing.protocol.jid import JID
from server_ext.wire import namespaces as ns
from server_ext.wire.conditions import StreamError
from server_ext.wire.events import (
    AuthAborted,
    AuthRequested,
    Event,
    NonzaReceived,
    Phase,
    StanzaReceived,
    StreamEnded,
    StreamFailed,
    TLSRequested,
)
from server_ext.wire.features import stream_features
from server_ext.wire.negotiation import (
    PROCEED,
    SASL_REQUESTS,
    check_header,
    read_sasl,
    sasl_element,
    sasl_failure,
)
from server_ext.wire.stanza_rules import (
    IQ,
    SESSION,
    STANZAS,
    Refusal,
    iq_refusal,
    read_bind,
    stamp_from,
)
from server_ext.wire.stanzas import iq_error, iq_result
from server_ext.wire.xml_events import ElementReceived, StreamClosed, StreamOpened, StreamXMLError
from server_ext.wire.xmlparser import StreamParser
from server_ext.wire.xmlwriter import STREAM_CLOSE, serialize, stream_error, stream_header

log = logging.getLogger(__name__)

#: RFC 6120 §6.4.5: a server SHOULD allow between 2 and 5 retries, then close the stream.
MAX_AUTH_ATTEMPTS = 5

_STARTTLS = ns.clark(ns.TLS, "starttls")
_STREAM_ERROR = ns.clark(ns.STREAMS, "error")


class StanzaObserver(Protocol):
    """Told of every stanza of a bound stream, both ways (XEP-0198 §4 counts them)."""

    def stanza_received(self) -> None: ...

    def stanza_sent(self, data: bytes) -> None: ...


class C2SStream:
    """One client-to-server stream, from the first byte to the closing tag."""

    def __init__(
        self,
        domain: str,
        *,
        tls: bool = False,
        mechanisms: Sequence[str] = (),
        max_stanza_bytes: int = 256 * 1024,
        extension_namespaces: Iterable[str] = (),
        session_namespaces: Iterable[str] = (),
        session_features: Sequence[ET.Element] = (),
    ) -> None:
        self.domain = domain
        self.stream_id = ""
        self._parser = StreamParser(max_stanza_bytes=max_stanza_bytes)
        self._max_stanza_bytes = max_stanza_bytes
        self._out: list[bytes] = []
        self._header_sent = False
        self._awaiting_header = True
        self._mechanisms: tuple[str, ...] = tuple(mechanisms)
        self._extra_features: tuple[ET.Element, ...] = ()
        self._extension_namespaces = frozenset(extension_namespaces)
        # After authentication: nonzas the caller handles (XEP-0198) and features it offers.
        self._session_namespaces = frozenset(session_namespaces)
        self._session_features = tuple(session_features)
        #: Set by the caller to count stanzas (XEP-0198); None counts nothing.
        self.observer: StanzaObserver | None = None
        self._auth_attempts = 0
        self._authenticated: JID | None = None
        self._bound: JID | None = None
        self._binding = False  # a BindRequested is out and not answered yet
        self._phase = Phase.SECURED if tls else Phase.PLAINTEXT

    # --- state ----------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def closed(self) -> bool:
        return self._phase is Phase.CLOSED

    @property
    def authenticated_jid(self) -> JID | None:
        """The identity SASL authorized (bare JID), once authenticated."""
        return self._authenticated

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer, in order; the queue is emptied."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # --- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns what the caller must act on."""
        if self._phase is Phase.CLOSED or not data:
            return []
        if self._phase is Phase.TLS_PENDING:
            # Bytes after <starttls/> but before the handshake are plaintext injected ahead of
            # TLS; they must never be processed (the classic STARTTLS injection flaw).
            return []
        events: list[Event] = []
        try:
            parsed = self._parser.feed(data)
        except StreamXMLError as exc:
            return [self._fail(str(exc.condition), exc.text)]
        for item in parsed:
            try:
                if isinstance(item, StreamOpened):
                    self._on_stream_opened(item)
                elif isinstance(item, ElementReceived):
                    event = self._on_element(item.element)
                    if event is not None:
                        events.append(event)
                        if isinstance(event, TLSRequested):
                            # RFC 6120 §5.4.3.3: everything after <starttls/> belongs to TLS.
                            break
                elif isinstance(item, StreamClosed):
                    events.append(self._on_peer_close())
                    break
            except StreamError as exc:
                events.append(self._fail(exc.condition, exc.text))
                break
            if self.closed:  # a handler above may have closed the stream
                break
        if self._phase is Phase.BOUND:
            # Most bound device sessions then sit idle for hours: between stanzas the parser
            # holds nothing worth its memory (docs/performance.md, "Connected fleet").
            self._parser.park()
        return events

    def _on_stream_opened(self, opened: StreamOpened) -> None:
        if not self._awaiting_header:
            raise StreamError("not-well-formed", "a second stream header on the same stream")
        attrs = opened.attributes
        self._send_header(to=attrs.get("from"))
        check_header(attrs, self.domain)
        self._awaiting_header = False
        self._out.append(self._features())

    def _on_element(self, el: ET.Element) -> Event | None:
        if self._awaiting_header:
            raise StreamError("not-well-formed", "an element before the stream header")
        tag = el.tag
        if tag == _STREAM_ERROR:
            raise StreamError("undefined-condition", "the peer sent a stream error")
        phase = self._phase
        if phase is Phase.PLAINTEXT:
            if tag == _STARTTLS:
                self._out.append(PROCEED)
                self._phase = Phase.TLS_PENDING
                return TLSRequested()
            # RFC 6120 §5.3.1: this server requires TLS before anything else.
            raise StreamError("policy-violation", "STARTTLS is required before anything else")
        if phase is Phase.SECURED or phase is Phase.AUTHENTICATING:
            return self._on_sasl_element(el)
        if (phase is Phase.AUTHENTICATED or phase is Phase.BOUND) and (
            _namespace(tag) in self._session_namespaces
        ):
            return NonzaReceived(el)
        if phase is Phase.AUTHENTICATED:
            return self._on_bind_element(el)
        if phase is Phase.BOUND:
            return self._on_stanza(el)
        raise StreamError("internal-server-error", "unexpected element")

    def _on_sasl_element(self, el: ET.Element) -> Event | None:
        tag = el.tag
        if tag in SASL_REQUESTS:
            event, failure = read_sasl(
                el, authenticating=self._phase is Phase.AUTHENTICATING, mechanisms=self._mechanisms
            )
            if isinstance(event, AuthRequested):
                self._phase = Phase.AUTHENTICATING
            elif isinstance(event, AuthAborted):
                self._phase = Phase.SECURED
            if failure is not None:
                self._sasl_failure(*failure)
            return event
        if _namespace(tag) in self._extension_namespaces and self._phase is Phase.SECURED:
            return NonzaReceived(el)
        if tag in STANZAS:
            # RFC 6120 §6.4.1 / §4.9.3.12: no stanzas before authentication.
            raise StreamError("not-authorized", "authenticate before sending stanzas")
        raise StreamError("unsupported-stanza-type", "this element is not allowed here")

    def _on_bind_element(self, el: ET.Element) -> Event | None:
        request = read_bind(el, binding=self._binding)
        if isinstance(request, Refusal):
            self._send_iq_error(el, *request)
            return None
        self._binding = True
        return request

    def _on_stanza(self, el: ET.Element) -> Event | None:
        tag = el.tag
        if tag not in STANZAS:
            raise StreamError("unsupported-stanza-type", "only message, presence and iq here")
        bound = self._bound
        assert bound is not None
        if self.observer is not None:
            # XEP-0198 §4: every stanza counts as handled, those answered here included.
            self.observer.stanza_received()
        stamp_from(el, bound)
        if tag == IQ:
            refusal = iq_refusal(el)
            if refusal is not None:
                self._send_iq_error(el, *refusal)
                return None
            if el.get("type") == "set" and el[0].tag == SESSION:
                # RFC 3921 §3 session establishment, kept as a no-op for old clients.
                self._stanza(serialize(iq_result(el.get("id", ""))))
                return None
        return StanzaReceived(el)

    def _on_peer_close(self) -> Event:
        self._out.append(STREAM_CLOSE)
        self._phase = Phase.CLOSED
        return StreamEnded()

    # --- answers from the caller ----------------------------------------------------------

    def tls_established(
        self, *, mechanisms: Sequence[str], extra_features: Sequence[ET.Element] = ()
    ) -> None:
        """TLS is up: expect a new stream header and offer ``mechanisms`` (RFC 6120 §5.4.3.3)."""
        if not self._answering(Phase.TLS_PENDING):
            return
        self._phase = Phase.SECURED
        self._mechanisms = tuple(mechanisms)
        self._extra_features = tuple(extra_features)
        self._restart()

    def set_pre_auth_offer(
        self, *, mechanisms: Sequence[str], extra_features: Sequence[ET.Element] = ()
    ) -> None:
        """Mechanisms and features for a stream that started in TLS (XEP-0368)."""
        self._mechanisms = tuple(mechanisms)
        self._extra_features = tuple(extra_features)

    def auth_challenge(self, data: bytes) -> None:
        if not self._answering(Phase.AUTHENTICATING):
            return
        self._out.append(sasl_element("challenge", data))

    def auth_succeeded(self, identity: JID, additional_data: bytes | None = None) -> None:
        """SASL success (RFC 6120 §6.4.6): the peer must open a new stream."""
        if not self._answering(Phase.AUTHENTICATING):
            return
        self._out.append(sasl_element("success", additional_data))
        self._authenticated = identity.bare
        self._phase = Phase.AUTHENTICATED
        self._restart()

    def auth_failed(
        self, condition: str, text: str | None = None, application: ET.Element | None = None
    ) -> None:
        """SASL failure; after too many, the stream is closed with policy-violation.

        ``application`` is an element in an application namespace that says more than the
        RFC 6120 §6.5 condition can (a revoked device), for clients that know it.
        """
        if not self._answering(Phase.AUTHENTICATING):
            return
        self._phase = Phase.SECURED
        self._sasl_failure(condition, text, application)

    def bind_succeeded(self, iq_id: str, jid: JID) -> None:
        if not self._answering(Phase.AUTHENTICATED):
            return
        self._binding = False
        self._bound = jid
        self._phase = Phase.BOUND
        self._parser.park()  # the bind was read; a device often says nothing more for hours
        result = iq_result(iq_id)
        bind = ET.SubElement(result, ns.clark(ns.BIND, "bind"))
        ET.SubElement(bind, ns.clark(ns.BIND, "jid")).text = str(jid)
        self._out.append(serialize(result))

    def bind_failed(self, iq_id: str, error_type: str, condition: str, text: str) -> None:
        if not self._answering(Phase.AUTHENTICATED):
            return
        self._binding = False
        self._out.append(iq_error(iq_id, None, error_type, condition, text))

    def resumed(self, jid: JID, answer: ET.Element, retransmit: Sequence[bytes]) -> None:
        """XEP-0198 §5: the session of ``jid`` continues on this stream instead of a bind;
        ``retransmit`` (stanzas the client never acknowledged) follows ``<resumed/>`` as is,
        counted already."""
        if not self._answering(Phase.AUTHENTICATED):
            return
        self._bound = jid
        self._phase = Phase.BOUND
        self._out.append(serialize(answer))
        self._out.extend(retransmit)

    def send_element(self, element: ET.Element) -> None:
        """Queue a stanza for a bound session."""
        if self._phase is Phase.CLOSED:
            return
        self._stanza(serialize(element))

    def send_nonza(self, element: ET.Element) -> None:
        """Queue a top-level element outside jabber:client (an answer to a nonza)."""
        if self._phase is not Phase.CLOSED:
            self._out.append(serialize(element))

    def send_nonza_bytes(self, data: bytes) -> None:
        """Queue a serialized nonza (XEP-0198 ``<a/>``, sent often)."""
        if self._phase is not Phase.CLOSED:
            self._out.append(data)

    def close(
        self,
        condition: str | None = None,
        text: str | None = None,
        application: ET.Element | None = None,
    ) -> None:
        """Close the stream, with a stream error when ``condition`` is given (RFC 6120 §4.9),
        and an application-specific condition element when ``application`` is (§4.9.4)."""
        if self._phase is Phase.CLOSED:
            return
        if condition is not None:
            if not self._header_sent:
                self._send_header(to=None)
            self._out.append(stream_error(condition, text, application))
        if self._header_sent:
            self._out.append(STREAM_CLOSE)
        self._phase = Phase.CLOSED

    # --- internals ------------------------------------------------------------------------

    def _answering(self, phase: Phase) -> bool:
        """Whether an answer to an event may be given now.

        A chunk of input can hold an event and, after it, what ends the stream (a stream
        error, the peer's close): the caller answers the event after the stream closed, and
        that answer is moot, so it is dropped. Any other phase is our bug.
        """
        if self._phase is Phase.CLOSED:
            return False
        if self._phase is not phase:
            raise LocalProtocolError(f"not allowed in phase {self._phase.value}")
        return True

    def _restart(self) -> None:
        self._parser.reset()
        self._awaiting_header = True
        self._header_sent = False

    def _send_header(self, *, to: str | None) -> None:
        self.stream_id = secrets.token_hex(8)
        safe_to: str | None = None
        if to:
            try:
                safe_to = str(JID.parse(to))
            except ValueError:
                safe_to = None
        self._out.append(
            stream_header(stream_id=self.stream_id, from_domain=self.domain, to=safe_to, lang="en")
        )
        self._header_sent = True

    def _features(self) -> bytes:
        return stream_features(
            self._phase,
            mechanisms=self._mechanisms,
            extra_features=self._extra_features,
            session_features=self._session_features,
        )

    def _sasl_failure(
        self, condition: str, text: str | None, application: ET.Element | None = None
    ) -> None:
        self._out.append(sasl_failure(condition, text, application))
        if condition == "aborted" or condition == "invalid-mechanism":
            return
        self._auth_attempts += 1
        if self._auth_attempts >= MAX_AUTH_ATTEMPTS:
            self.close("policy-violation", "too many failed authentication attempts")

    def _send_iq_error(self, el: ET.Element, error_type: str, condition: str, text: str) -> None:
        if el.get("type") in ("error", "result"):
            return  # RFC 6120 §8.3.1: never answer an error or a result with an error.
        self._stanza(iq_error(el.get("id"), el.get("from"), error_type, condition, text))

    def _stanza(self, data: bytes) -> None:
        self._out.append(data)
        if self.observer is not None:
            self.observer.stanza_sent(data)

    def _fail(self, condition: str, text: str) -> StreamFailed:
        log.debug("stream %s failed: %s", self.stream_id, condition)
        self.close(condition, text)
        return StreamFailed(condition, text)


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""
