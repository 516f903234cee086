"""Pair-setup state machines: the device (SRP server role) and the user's client (SRP client).

Sans-I/O, like h11: ``receive_data(bytes)`` returns events, the methods queue frames, and
``data_to_send()`` hands them to whoever owns the socket. The device holds the verifier
whichever side opened the TCP connection; the user's client knows the code.

::

    device                               user's client
      DeviceHello  ───────────────────▶  DeviceIntroduced      (user: have I a code?)
      SetupRequested ◀──────────────────  SetupRequest / NotExpected
      SetupChallenge(salt, B) ─────────▶
                   ◀──────────────────── SetupProof(A, M1)
      SetupVerified(M2) / SetupFailed ──▶ Paired / PairingFailed
      ══════════════ ChaCha20-Poly1305 from here on ═══════════════
      OfferReceived ◀─────────────────── EnrollmentOffer(jid, server, pin, token | xep0257)
      [xep0257] CertificateSubmission ──▶ CertificateReceived (signature checked)
                ◀─────────────────────── CertificateRegistered
      EnrollmentResult ────────────────▶ EnrollmentFinished
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pairing.errors import LocalProtocolError, RemoteProtocolError
from pairing.protocol.frames import Frame, FrameDecoder
from pairing.protocol.pair_messages import (
    CertificateRegistered,
    CertificateSubmission,
    DeviceHello,
    EnrollmentOffer,
    EnrollmentResult,
    FailureReason,
    FrameType,
    NotExpected,
    SecureMessage,
    SetupChallenge,
    SetupFailed,
    SetupProof,
    SetupVerified,
    decode_secure,
    encode_secure,
)
from pairing.protocol.secure_channel import SecureChannel
from pairing.protocol.srp import SRPClient, SRPError, SRPServer, Verifier

POP_LABEL = b"xmpp-dp certificate possession v1"


def possession_message(binding: bytes, der: bytes) -> bytes:
    """What the device signs: it holds this certificate's key *in this pairing session*."""
    return POP_LABEL + binding + hashlib.sha256(der).digest()


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceIntroduced:
    hello: DeviceHello


@dataclass(frozen=True, slots=True)
class SetupRequested:
    """The user's client has a code for this device: accept (SRP starts) or refuse."""


@dataclass(frozen=True, slots=True)
class NotExpectedByUser:
    """The window has no code for this device; try another window or later."""


@dataclass(frozen=True, slots=True)
class Paired:
    """SRP proofs checked both ways; the channel is encrypted from now on."""


@dataclass(frozen=True, slots=True)
class PairingFailed:
    reason: FailureReason


@dataclass(frozen=True, slots=True)
class OfferReceived:
    offer: EnrollmentOffer


@dataclass(frozen=True, slots=True)
class CertificateReceived:
    """The device's certificate, whose key the device proved it holds in this session."""

    der: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RegistrationConfirmed:
    pass


@dataclass(frozen=True, slots=True)
class EnrollmentFinished:
    result: EnrollmentResult


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The peer broke the protocol; an error frame is queued and the session is over."""

    text: str


Event = (
    DeviceIntroduced
    | SetupRequested
    | NotExpectedByUser
    | Paired
    | PairingFailed
    | OfferReceived
    | CertificateReceived
    | RegistrationConfirmed
    | EnrollmentFinished
    | ProtocolViolation
)


class DeviceState(Enum):
    HELLO_SENT = "hello-sent"
    SETUP_REQUESTED = "setup-requested"
    CHALLENGED = "challenged"
    SECURED = "secured"
    CERTIFICATE_SENT = "certificate-sent"
    REGISTERED = "registered"
    DONE = "done"
    FAILED = "failed"


class UserState(Enum):
    AWAITING_HELLO = "awaiting-hello"
    INTRODUCED = "introduced"
    SETUP_SENT = "setup-sent"
    PROOF_SENT = "proof-sent"
    SECURED = "secured"
    OFFER_SENT = "offer-sent"
    CERTIFICATE_RECEIVED = "certificate-received"
    AWAITING_RESULT = "awaiting-result"
    DONE = "done"
    FAILED = "failed"


#: Which plain frames each state accepts (the docs' state table is generated from these).
DEVICE_ACCEPTS: dict[DeviceState, frozenset[FrameType]] = {
    DeviceState.HELLO_SENT: frozenset({FrameType.SETUP_REQUEST, FrameType.NOT_EXPECTED}),
    DeviceState.CHALLENGED: frozenset({FrameType.SETUP_PROOF}),
    DeviceState.SECURED: frozenset({FrameType.ENCRYPTED}),
    DeviceState.CERTIFICATE_SENT: frozenset({FrameType.ENCRYPTED}),
}
USER_ACCEPTS: dict[UserState, frozenset[FrameType]] = {
    UserState.AWAITING_HELLO: frozenset({FrameType.DEVICE_HELLO}),
    UserState.SETUP_SENT: frozenset({FrameType.SETUP_CHALLENGE}),
    UserState.PROOF_SENT: frozenset({FrameType.SETUP_VERIFIED}),
    UserState.OFFER_SENT: frozenset({FrameType.ENCRYPTED}),
    UserState.AWAITING_RESULT: frozenset({FrameType.ENCRYPTED}),
}


class _Session:
    """What both roles share: framing, the error path, and the encrypted channel."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._out: list[bytes] = []
        self._channel: SecureChannel | None = None
        self.failed = False

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    def _send(self, frame: Frame) -> None:
        self._out.append(frame.encode())

    def _send_secure(self, message: SecureMessage) -> None:
        if self._channel is None:
            raise LocalProtocolError("no encrypted channel yet")
        aad = bytes([FrameType.ENCRYPTED])
        self._send(Frame(FrameType.ENCRYPTED, self._channel.seal(encode_secure(message), aad)))

    def _open(self, frame: Frame) -> SecureMessage:
        assert self._channel is not None
        return decode_secure(self._channel.open(frame.body, bytes([FrameType.ENCRYPTED])))

    def _violation(self, text: str) -> ProtocolViolation:
        self._fail()
        self._send(SetupFailed(FailureReason.PROTOCOL_ERROR).frame())
        return ProtocolViolation(text)

    def _fail(self) -> None:
        self.failed = True

    def receive_data(self, data: bytes) -> list[Event]:
        if self.failed:
            return []
        events: list[Event] = []
        try:
            for frame in self._decoder.feed(data):
                if frame.type == FrameType.SETUP_FAILED:
                    self._fail()
                    events.append(PairingFailed(SetupFailed.parse(frame.body).reason))
                    break
                events.extend(self._handle(frame))
                if self.failed:
                    break
        except RemoteProtocolError as exc:
            events.append(self._violation(str(exc)))
        return events

    def _handle(self, frame: Frame) -> list[Event]:  # pragma: no cover - overridden
        raise NotImplementedError


class DeviceSession(_Session):
    """The device's side of one pairing attempt."""

    def __init__(self, hello: DeviceHello, verifier: Verifier) -> None:
        super().__init__()
        self.state = DeviceState.HELLO_SENT
        self._verifier = verifier
        self._srp: SRPServer | None = None
        self._send(hello.frame())

    def _fail(self) -> None:
        super()._fail()
        self.state = DeviceState.FAILED

    def _handle(self, frame: Frame) -> list[Event]:
        allowed = DEVICE_ACCEPTS.get(self.state, frozenset())
        if frame.type not in allowed:
            raise RemoteProtocolError(
                f"frame {frame.type:#04x} is not allowed in {self.state.value}"
            )
        if frame.type == FrameType.NOT_EXPECTED:
            self._fail()
            return [NotExpectedByUser()]
        if frame.type == FrameType.SETUP_REQUEST:
            self.state = DeviceState.SETUP_REQUESTED
            return [SetupRequested()]
        if frame.type == FrameType.SETUP_PROOF:
            proof = SetupProof.parse(frame.body)
            assert self._srp is not None
            try:
                m2, key = self._srp.verify(proof.a_pub, proof.m1)
            except SRPError:
                self._fail()
                self._send(SetupFailed(FailureReason.WRONG_CODE).frame())
                return [PairingFailed(FailureReason.WRONG_CODE)]
            self._send(SetupVerified(m2).frame())
            self._channel = SecureChannel(key, is_device=True)
            self.state = DeviceState.SECURED
            return [Paired()]
        message = self._open(frame)
        if self.state is DeviceState.SECURED and isinstance(message, EnrollmentOffer):
            return [OfferReceived(message)]
        if self.state is DeviceState.CERTIFICATE_SENT and isinstance(
            message, CertificateRegistered
        ):
            self.state = DeviceState.REGISTERED
            return [RegistrationConfirmed()]
        raise RemoteProtocolError(f"{type(message).__name__} is not expected now")

    def accept_setup(self) -> None:
        """Start SRP: send the salt and B."""
        if self.state is not DeviceState.SETUP_REQUESTED:
            raise LocalProtocolError(f"cannot start SRP in {self.state.value}")
        self._srp = SRPServer(self._verifier)
        self._send(SetupChallenge(self._srp.salt, self._srp.public).frame())
        self.state = DeviceState.CHALLENGED

    def refuse(self, reason: FailureReason) -> None:
        """End the attempt with ``reason`` (busy, locked out, timeout, ...)."""
        self._fail()
        self._send(SetupFailed(reason).frame())

    def submit_certificate(self, der: bytes, key: ec.EllipticCurvePrivateKey) -> None:
        """XEP-0257 mode: send the certificate with a signature bound to this session."""
        if self.state is not DeviceState.SECURED or self._channel is None:
            raise LocalProtocolError(f"cannot send a certificate in {self.state.value}")
        signature = key.sign(
            possession_message(self._channel.binding, der), ec.ECDSA(hashes.SHA256())
        )
        self._send_secure(CertificateSubmission(der, signature))
        self.state = DeviceState.CERTIFICATE_SENT

    @property
    def may_send_result(self) -> bool:
        """Whether :meth:`send_result` is allowed now: offered, and not yet done or failed."""
        return self.state in (DeviceState.SECURED, DeviceState.REGISTERED)

    def send_result(self, result: EnrollmentResult) -> None:
        if not self.may_send_result:
            raise LocalProtocolError(f"cannot report a result in {self.state.value}")
        self._send_secure(result)
        self.state = DeviceState.DONE


class UserSession(_Session):
    """The user's client's side of one pairing attempt with one device."""

    def __init__(self) -> None:
        super().__init__()
        self.state = UserState.AWAITING_HELLO
        self.hello: DeviceHello | None = None
        self._srp: SRPClient | None = None

    def _fail(self) -> None:
        super()._fail()
        self.state = UserState.FAILED

    def _handle(self, frame: Frame) -> list[Event]:
        allowed = USER_ACCEPTS.get(self.state, frozenset())
        if frame.type not in allowed:
            raise RemoteProtocolError(
                f"frame {frame.type:#04x} is not allowed in {self.state.value}"
            )
        if frame.type == FrameType.DEVICE_HELLO:
            self.hello = DeviceHello.parse(frame.body)
            self.state = UserState.INTRODUCED
            return [DeviceIntroduced(self.hello)]
        if frame.type == FrameType.SETUP_CHALLENGE:
            challenge = SetupChallenge.parse(frame.body)
            assert self._srp is not None
            try:
                m1 = self._srp.respond(challenge.salt, challenge.b_pub)
            except SRPError as exc:
                raise RemoteProtocolError(str(exc)) from None
            self._send(SetupProof(self._srp.public, m1).frame())
            self.state = UserState.PROOF_SENT
            return []
        if frame.type == FrameType.SETUP_VERIFIED:
            assert self._srp is not None
            try:
                key = self._srp.verify(SetupVerified.parse(frame.body).m2)
            except SRPError as exc:
                # The device could not prove the code: maybe an impostor. Tell it nothing more.
                raise RemoteProtocolError(str(exc)) from None
            self._channel = SecureChannel(key, is_device=False)
            self.state = UserState.SECURED
            return [Paired()]
        message = self._open(frame)
        if self.state is UserState.OFFER_SENT and isinstance(message, CertificateSubmission):
            self._check_possession(message)
            self.state = UserState.CERTIFICATE_RECEIVED
            return [CertificateReceived(message.der)]
        if isinstance(message, EnrollmentResult):
            self.state = UserState.DONE
            return [EnrollmentFinished(message)]
        raise RemoteProtocolError(f"{type(message).__name__} is not expected now")

    def _check_possession(self, message: CertificateSubmission) -> None:
        assert self._channel is not None
        try:
            cert = x509.load_der_x509_certificate(message.der)
            public_key = cert.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise RemoteProtocolError("the device certificate must use an EC key")
            public_key.verify(
                message.signature,
                possession_message(self._channel.binding, message.der),
                ec.ECDSA(hashes.SHA256()),
            )
        except (ValueError, InvalidSignature):
            raise RemoteProtocolError(
                "the device did not prove it holds its certificate's key"
            ) from None

    def start_setup(self, code: str) -> None:
        """We have this device's code: ask it to start SRP."""
        if self.state is not UserState.INTRODUCED:
            raise LocalProtocolError(f"cannot start setup in {self.state.value}")
        self._srp = SRPClient(code)
        self._send(Frame(FrameType.SETUP_REQUEST, b""))
        self.state = UserState.SETUP_SENT

    def reject(self) -> None:
        """No code for this device: tell it so it can retry later."""
        self._send(NotExpected().frame())
        self._fail()

    def abort(self, reason: FailureReason) -> None:
        self._send(SetupFailed(reason).frame())
        self._fail()

    def send_offer(self, offer: EnrollmentOffer) -> None:
        if self.state is not UserState.SECURED:
            raise LocalProtocolError(f"cannot send an offer in {self.state.value}")
        self._send_secure(offer)
        self.state = UserState.OFFER_SENT

    def confirm_registered(self) -> None:
        if self.state is not UserState.CERTIFICATE_RECEIVED:
            raise LocalProtocolError(f"cannot confirm in {self.state.value}")
        self._send_secure(CertificateRegistered())
        self.state = UserState.AWAITING_RESULT


def run_back_to_back(
    device: DeviceSession, user: UserSession, on_event: Callable[[str, Event], None]
) -> None:
    """Shuttle bytes between two sessions until both are quiet (tests and docs examples)."""
    moved = True
    while moved:
        moved = False
        for sender, receiver, name in ((device, user, "user"), (user, device, "device")):
            data = sender.data_to_send()
            if data:
                moved = True
                for event in receiver.receive_data(data):
                    on_event(name, event)


def state_table_markdown() -> str:
    """The accepted-frames table of both roles, as docs/protocol.md shows it (a test checks)."""
    lines = ["| Role | State | Accepts |", "|---|---|---|"]
    for role, table in (("device", DEVICE_ACCEPTS), ("user", USER_ACCEPTS)):
        for state, frames in table.items():
            names = ", ".join(sorted(f"`{FrameType(f).name}`" for f in frames))
            lines.append(f"| {role} | `{state.value}` | {names} |")
    return "\n".join(lines)
