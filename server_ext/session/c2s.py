"""One client's session above the wire: SASL, throttling, enrollment, bind and the resource
lock, without sockets, timers or TLS records.

The asyncio adapter (``server_ext.net.c2s_connection``) owns the socket and the TLS engine.
It feeds plaintext in (:meth:`C2SSession.receive_data`), writes what
:meth:`C2SSession.data_to_send` returns, and carries out the few things only it can do, which
the session returns as actions: start TLS, hold a failure back for a while, forget the
connection's unauthenticated slot, stop the authentication deadline. Tests drive this class
with bytes and no I/O (``tests/unit/test_c2s_session.py``).
"""

from __future__ import annotations

import logging
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pairing.errors import InvalidJID
from pairing.protocol.conditions import device_revoked
from pairing.protocol.enrollment import ENROLL_NS, EnrollCondition
from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from pairing.protocol.jid import JID
from pairing.protocol.renewal import RenewCondition
from server_ext.app import enroll, renewal
from server_ext.app.delivery import Dispatcher, Sender
from server_ext.app.handlers import ServerContext
from server_ext.auth.external import ExternalMechanism
from server_ext.auth.mechanism import Challenge, Failure, Mechanism, Outcome, Success
from server_ext.auth.plain import PlainMechanism
from server_ext.auth.scram import ChannelBindings, ScramMechanism
from server_ext.errors import RegistryError
from server_ext.log_limits import CappedLog
from server_ext.policy.throttle import LoginThrottle
from server_ext.session import sm
from server_ext.session.sm import HandledCountTooHigh, SMCondition, SMPhase, StreamManagement
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
from server_ext.wire.namespaces import clark
from server_ext.wire.stanzas import ErrorType, error_reply, local_name
from server_ext.wire.stream import C2SStream
from server_ext.wire.xmlparser import ElementReceived, StreamParser
from server_ext.wire.xmlwriter import serialize

log = logging.getLogger(__name__)
peer_log = CappedLog(log)  # for what peers do wrong: they must not be able to flood the log

PASSWORD_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
PLUS_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS")
SASL_CB_NS = "urn:xmpp:sasl-cb:0"  # XEP-0440
_CSI_FEATURE = ET.Element(ns.clark(ns.CSI, "csi"))  # XEP-0352 §4.1, offered after SASL
_CSI_PREFIX = "{" + ns.CSI + "}"
REQUEST_ACK = f"<r xmlns='{sm.SM_NS}'/>".encode()
# What the unacknowledged queue (stanzas this server serialized) is read back within.
_REPLAY_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
_NO_BOUNCE = frozenset({"error", "groupchat", "headline"})


@dataclass(frozen=True, slots=True)
class SessionServices:
    """What every session of one server shares."""

    context: ServerContext
    dispatcher: Dispatcher
    throttle: LoginThrottle
    max_stanza_bytes: int
    fake_salt_key: bytes  # for unknown users' SCRAM salts (stable across restarts)
    # XEP-0198: the longest a detached session is kept ('max'), and how many unacknowledged
    # stanzas one session may hold before it is closed.
    resume_timeout: int = 300
    max_unacked: int = 500


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Write what is queued in plaintext (``<proceed/>``), then put TLS on the connection."""


@dataclass(frozen=True, slots=True)
class HoldFailure:
    """Read nothing for ``delay`` seconds, then call :meth:`C2SSession.release`: a failed
    password on an account guessed from many addresses is answered late."""

    delay: float


@dataclass(frozen=True, slots=True)
class Authenticated:
    """SASL succeeded: the connection no longer counts as unauthenticated."""


@dataclass(frozen=True, slots=True)
class Bound:
    """A resource is bound: the authentication deadline no longer applies."""


@dataclass(frozen=True, slots=True)
class SMEnabled:
    """XEP-0198 §3: the session may be resumed with ``resume_id``; the adapter keeps the index."""

    resume_id: str


@dataclass(frozen=True, slots=True)
class ResumeRequested:
    """XEP-0198 §5: find the session ``previd`` names and call :meth:`C2SSession.resume`
    with it, or :meth:`C2SSession.refuse_resume` when there is none."""

    previd: str
    h: int


Action = StartTLS | HoldFailure | Authenticated | Bound | SMEnabled | ResumeRequested


class C2SSession:
    """The protocol of one c2s connection above :class:`C2SStream`.

    ``owner`` is what the session table routes to (the adapter, which can write); the
    session registers it when a resource is bound.
    """

    def __init__(
        self, services: SessionServices, owner: Sender, *, address: str, direct_tls: bool
    ) -> None:
        self._services = services
        self._context = services.context
        self._owner = owner
        self.address = address
        self.stream = C2SStream(
            services.context.domain,
            tls=direct_tls,
            max_stanza_bytes=services.max_stanza_bytes,
            extension_namespaces=(ENROLL_NS,),
            session_namespaces=(sm.SM_NS, ns.CSI),
            session_features=(sm.feature(), _CSI_FEATURE),
        )
        self._direct_tls = direct_tls
        #: What the client presented in its TLS handshake, parsed once.
        self.presented: PeerCertificate | UnreadableCertificate | None = None
        self._bindings: ChannelBindings | None = None
        self._mechanism: Mechanism | None = None
        self._mechanism_name = ""
        self._identity: JID | None = None
        self._locked_resource: str | None = None
        self._held: list[Event] | None = None  # events waiting behind a held failure
        self._held_failure: tuple[str, str | None] | None = None
        # Session facts, set once SASL succeeds and a resource is bound.
        self.jid: JID | None = None
        self.auth_method = ""
        self.fingerprint: str | None = None
        #: XEP-0198 state once the client enabled it.
        self.sm: StreamManagement | None = None

    # --- inputs ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Action]:
        """Plaintext from the client; returns what the adapter must do."""
        actions: list[Action] = []
        self._handle_all(self.stream.receive_data(data), actions)
        self._request_ack_if_due()
        return actions

    def tls_established(
        self,
        presented: PeerCertificate | UnreadableCertificate | None,
        bindings: ChannelBindings | None = None,
    ) -> None:
        """The TLS handshake finished; ``presented`` is the client certificate it proved, and
        ``bindings`` what SCRAM-*-PLUS can bind to on this connection."""
        self.presented = presented
        self._bindings = bindings if bindings is not None and bindings.types else None
        mechanisms = list(PASSWORD_MECHANISMS)
        features: list[ET.Element] = []
        if self._bindings is not None:
            # RFC 5802 §6: the -PLUS variants first, so that clients that can bind do; XEP-0440
            # says which binding types this connection offers.
            mechanisms[:0] = PLUS_MECHANISMS
            offer = ET.Element(clark(SASL_CB_NS, "sasl-channel-binding"))
            for kind in self._bindings.types:
                ET.SubElement(offer, clark(SASL_CB_NS, "channel-binding"), {"type": kind})
            features.append(offer)
        if presented is not None:
            # XEP-0178 §3: offer EXTERNAL when the client presented a certificate; a device
            # with a certificate may also redeem an enrollment token first, or renew an
            # expired certificate with it (docs/protocol.md, sections 3 and 8).
            mechanisms.insert(0, "EXTERNAL")
            features.extend((enroll.feature(), renewal.feature()))
        if self._direct_tls:
            self.stream.set_pre_auth_offer(mechanisms=mechanisms, extra_features=features)
        else:
            self.stream.tls_established(mechanisms=mechanisms, extra_features=features)

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

    def resume(self, previous: C2SSession, previd: str, h: int) -> list[Action]:
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

    # --- SASL -----------------------------------------------------------------------------

    def _mechanism_for(self, name: str) -> Mechanism:
        context = self._context
        accounts = context.registry.accounts
        if name == "EXTERNAL":
            return ExternalMechanism(
                context.domain,
                self.presented,
                context.registry.devices.by_fingerprint,
                context.clock,
            )
        if name.startswith("SCRAM-"):
            hash_name = "sha256" if name.startswith("SCRAM-SHA-256") else "sha1"
            return ScramMechanism(
                hash_name,
                context.domain,
                lambda jid: accounts.scram_credentials(jid, hash_name),
                fake_salt_key=self._services.fake_salt_key,
                bindings=self._bindings,
                plus=name.endswith("-PLUS"),
            )
        return PlainMechanism(context.domain, lambda jid: accounts.scram_credentials(jid, "sha256"))

    def _start_auth(self, event: AuthRequested, actions: list[Action]) -> None:
        name = event.mechanism
        if name != "EXTERNAL":
            # Certificate logins never consult the throttle: guessing passwords must not lock
            # the owner's devices out.
            wait = self._services.throttle.retry_after(None, self.address)
            if wait > 0:
                self.stream.auth_failed(
                    "temporary-auth-failure",
                    f"too many failed logins from your address; retry in {int(wait) + 1} s",
                )
                return
        self._mechanism = self._mechanism_for(name)
        self._mechanism_name = name
        self._apply(self._mechanism.start(event.initial_response), actions)

    def _apply(self, outcome: Outcome, actions: list[Action]) -> None:
        if isinstance(outcome, Challenge):
            self.stream.auth_challenge(outcome.data)
            return
        mechanism, self._mechanism = self._mechanism, None
        if isinstance(outcome, Success):
            self._succeeded(outcome, mechanism, actions)
        else:
            self._failed(outcome, actions)

    def _succeeded(
        self, outcome: Success, mechanism: Mechanism | None, actions: list[Action]
    ) -> None:
        throttle = self._services.throttle
        account = outcome.identity.bare
        name = self._mechanism_name
        if name != "EXTERNAL":
            wait = throttle.retry_after(account, self.address)
            if wait > 0:
                # The same answer, at once, whether or not the password was right: no oracle.
                self.stream.auth_failed("temporary-auth-failure", _held_back(wait))
                return
            throttle.succeeded(account, self.address)
        self._identity = account
        self._locked_resource = outcome.locked_resource
        self.auth_method = name
        self.fingerprint = outcome.certificate_fingerprint
        self.stream.auth_succeeded(account, outcome.additional_data)
        actions.append(Authenticated())
        if self.fingerprint is not None:
            accepted = mechanism.accepted if isinstance(mechanism, ExternalMechanism) else None
            self._record_certificate_login(
                account, retire=accepted is not None and accepted.replaces is not None
            )

    def _failed(self, outcome: Failure, actions: list[Action]) -> None:
        throttle = self._services.throttle
        name = self._mechanism_name
        condition, text = str(outcome.condition), outcome.text
        delay = 0.0
        if name != "EXTERNAL":
            wait = throttle.retry_after(outcome.account, self.address)
            throttle.failed(outcome.account, self.address)
            if wait > 0:
                # This address is over its limit for the account: the answer the right password
                # gets too, and just as fast, so it tells the guesser nothing.
                condition, text = "temporary-auth-failure", _held_back(wait)
            elif outcome.account is not None:
                delay = throttle.failure_delay(outcome.account)
        subject = str(outcome.account or "unknown")
        if name == "EXTERNAL" and self.presented is not None:
            # A failed certificate login belongs to that device's history (audit --device).
            subject = self.presented.fingerprint
        self._context.audit(
            "login.failed",
            actor=str(outcome.account or "unknown"),
            subject=subject,
            address=self.address,
            mechanism=name,
            condition=str(outcome.condition),
        )
        if delay > 0:
            # The account is being guessed from many addresses: answer failures late (a tarpit)
            # and read nothing more from this client meanwhile. Successes are never delayed.
            self._held, self._held_failure = [], (condition, text)
            actions.append(HoldFailure(delay))
            return
        application = device_revoked() if outcome.device_revoked else None
        self.stream.auth_failed(condition, text, application)

    def _record_certificate_login(self, account: JID, *, retire: bool) -> None:
        assert self.fingerprint is not None
        devices = self._context.registry.devices
        try:
            devices.record_login(self.fingerprint, self.address)
            if retire:  # the first logins of a rotated certificate retire its predecessor
                devices.retire_replaced(self.fingerprint)
        except RegistryError as exc:
            log.error("last login not recorded: %s", exc)
        self._context.audit(
            "login.external", actor=str(account), subject=self.fingerprint, address=self.address
        )

    # --- enrollment and bind --------------------------------------------------------------

    def _enroll(self, element: ET.Element) -> None:
        throttle = self._services.throttle
        wait = throttle.retry_after(None, self.address)
        if wait > 0:
            result = enroll.failure(
                EnrollCondition.RATE_LIMITED,
                f"too many failed attempts from your address; retry in {int(wait) + 1} s",
            )
        else:
            result = enroll.redeem(
                element,
                presented=self.presented,
                registry=self._context.registry,
                address=self.address,
            )
        if result.condition is not None:
            if result.condition is EnrollCondition.TOKEN_UNKNOWN:
                # Guessing is hopeless at 160 bits, but each unknown token still counts
                # against the address, like a failed password.
                throttle.failed(None, self.address)
            repeated = result.condition is EnrollCondition.ALREADY_REGISTERED
            self._context.audit(
                # A device retrying with its own, registered certificate has not failed.
                "enroll.repeated" if repeated else "enroll.failed",
                actor="unknown",
                subject=self.address,
                address=self.address,
                condition=result.condition.value,
            )
        self.stream.send_nonza(result.reply)

    def _renew(self, element: ET.Element) -> None:
        throttle = self._services.throttle
        context = self._context
        wait = throttle.retry_after(None, self.address)
        if wait > 0:
            result = renewal.refused(
                RenewCondition.RATE_LIMITED,
                f"too many failed attempts from your address; retry in {int(wait) + 1} s",
            )
        else:
            result = renewal.renew(
                element,
                presented=self.presented,
                registry=context.registry,
                domain=context.domain,
                address=self.address,
                grace=context.renewal_grace,
                interval=context.rotation_interval,
            )
        if result.condition is not None:
            if result.condition in (RenewCondition.BAD_SIGNATURE, RenewCondition.MALFORMED):
                # Whoever sends a certificate without its key is guessing: count it against
                # the address, like a failed password.
                throttle.failed(None, self.address)
            if result.condition is not RenewCondition.ALREADY_REGISTERED:
                context.audit(
                    "cert.renewal_refused",
                    actor="unknown",
                    subject=result.replaces or self.address,
                    address=self.address,
                    condition=result.condition.value,
                )
        self.stream.send_nonza(result.reply)

    def _bind(self, event: BindRequested, actions: list[Action]) -> None:
        identity = self._identity
        assert identity is not None
        requested = event.resource
        locked = self._locked_resource
        if locked is not None and requested not in (None, locked):
            # XEP-0257 §2 / XEP-0178: a full JID in xmppAddr pins the resource.
            self.stream.bind_failed(
                event.iq_id, "cancel", "not-allowed", f"this certificate may bind only {locked!r}"
            )
            return
        resource = locked or requested or f"r-{secrets.token_hex(6)}"
        try:
            jid = identity.with_resource(resource)
        except InvalidJID as exc:
            self.stream.bind_failed(event.iq_id, "modify", "bad-request", str(exc))
            return
        self.jid = jid
        displaced = self._context.sessions.add(self._owner)
        if displaced is not None:
            # RFC 6120 §7.7.2.2: the newer session wins; the old one gets <conflict/>.
            displaced.terminate("conflict", "replaced by a new session for the same resource")
        actions.append(Bound())
        self.stream.bind_succeeded(event.iq_id, jid)

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

    # --- XEP-0198 stream management ---------------------------------------------------------

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


def _held_back(wait: float) -> str:
    return f"too many failed logins for this account from your address; retry in {int(wait) + 1} s"


__all__ = [
    "PASSWORD_MECHANISMS",
    "Action",
    "Authenticated",
    "Bound",
    "C2SSession",
    "HoldFailure",
    "ResumeRequested",
    "SMEnabled",
    "SessionServices",
    "StartTLS",
]
