"""Pair-setup messages (docs/protocol.md §5): named after their step, validated on construction.

Plain frames carry the SRP exchange at fixed widths; after it, every message travels in an
``Encrypted`` frame whose plaintext is one JSON object with a ``type``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from pairing.errors import InvalidJID, PairingError, RemoteProtocolError
from pairing.protocol.frames import Frame
from pairing.protocol.jid import JID, prepare_resourcepart
from pairing.protocol.srp import HASH_BYTES, N_BYTES, SALT_BYTES
from pairing.protocol.uri import HTTPSEnrollmentURI

PROTOCOL_VERSION = 1


class FrameType(IntEnum):
    DEVICE_HELLO = 0x01
    SETUP_REQUEST = 0x02
    NOT_EXPECTED = 0x03
    SETUP_CHALLENGE = 0x04
    SETUP_PROOF = 0x05
    SETUP_VERIFIED = 0x06
    SETUP_FAILED = 0x07
    ENCRYPTED = 0x10


class FailureReason(IntEnum):
    WRONG_CODE = 1
    BUSY = 2
    LOCKED_OUT = 3
    TIMEOUT = 4
    PROTOCOL_ERROR = 5
    WINDOW_CLOSED = 6


REASON_TEXT = {
    FailureReason.WRONG_CODE: "the setup code does not match",
    FailureReason.BUSY: "the device is pairing with someone else; try again in a moment",
    FailureReason.LOCKED_OUT: "the device is locked after too many wrong codes; reset it",
    FailureReason.TIMEOUT: "pairing took too long",
    FailureReason.PROTOCOL_ERROR: "the peer broke the pairing protocol",
    FailureReason.WINDOW_CLOSED: "the pairing window closed",
}


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what} is not UTF-8") from None


def _short(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"{what} is longer than 255 bytes")
    return bytes([len(raw)]) + raw


@dataclass(frozen=True, slots=True)
class DeviceHello:
    """Device → user, first: who I am, and the setup hash that matches my label."""

    device_id: str
    setup_hash: bytes
    name: str
    resource: str
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if len(self.device_id.encode()) != 10 or len(self.setup_hash) != 4:
            raise ValueError("a device id has 10 characters and a setup hash 4 bytes")
        if not self.resource:
            raise ValueError("the device must propose a resource")
        # RFC 7622 §3.4: the proposed resource becomes the device's resourcepart, so it is
        # prepared (OpaqueString) here, where it enters, and a refused one ends the pairing.
        object.__setattr__(self, "resource", prepare_resourcepart(self.resource))

    def frame(self) -> Frame:
        body = (
            bytes([self.version])
            + self.device_id.encode()
            + self.setup_hash
            + _short(self.name, "name")
            + _short(self.resource, "resource")
        )
        return Frame(FrameType.DEVICE_HELLO, body)

    @classmethod
    def parse(cls, body: bytes) -> DeviceHello:
        try:
            version = body[0]
            device_id = _text(body[1:11], "the device id")
            setup_hash = body[11:15]
            n = body[15]
            name = _text(body[16 : 16 + n], "the name")
            r = body[16 + n]
            resource = _text(body[17 + n : 17 + n + r], "the resource")
            if len(body) != 17 + n + r:
                raise IndexError
            return cls(device_id, setup_hash, name, resource, version)
        except (IndexError, ValueError) as exc:
            raise RemoteProtocolError(f"malformed DeviceHello: {exc or 'wrong length'}") from None


@dataclass(frozen=True, slots=True)
class SetupChallenge:
    """Device → user: the SRP salt and B."""

    salt: bytes = field(repr=False)
    b_pub: bytes = field(repr=False)

    def frame(self) -> Frame:
        return Frame(FrameType.SETUP_CHALLENGE, self.salt + self.b_pub)

    @classmethod
    def parse(cls, body: bytes) -> SetupChallenge:
        if len(body) != SALT_BYTES + N_BYTES:
            raise RemoteProtocolError("malformed SetupChallenge")
        return cls(body[:SALT_BYTES], body[SALT_BYTES:])


@dataclass(frozen=True, slots=True)
class SetupProof:
    """User → device: A and the proof M1."""

    a_pub: bytes = field(repr=False)
    m1: bytes = field(repr=False)

    def frame(self) -> Frame:
        return Frame(FrameType.SETUP_PROOF, self.a_pub + self.m1)

    @classmethod
    def parse(cls, body: bytes) -> SetupProof:
        if len(body) != N_BYTES + HASH_BYTES:
            raise RemoteProtocolError("malformed SetupProof")
        return cls(body[:N_BYTES], body[N_BYTES:])


@dataclass(frozen=True, slots=True)
class SetupVerified:
    """Device → user: the device's proof M2."""

    m2: bytes = field(repr=False)

    def frame(self) -> Frame:
        return Frame(FrameType.SETUP_VERIFIED, self.m2)

    @classmethod
    def parse(cls, body: bytes) -> SetupVerified:
        if len(body) != HASH_BYTES:
            raise RemoteProtocolError("malformed SetupVerified")
        return cls(body)


@dataclass(frozen=True, slots=True)
class SetupFailed:
    """Either side: the pairing is over, and why."""

    reason: FailureReason

    def frame(self) -> Frame:
        return Frame(FrameType.SETUP_FAILED, bytes([self.reason]))

    @classmethod
    def parse(cls, body: bytes) -> SetupFailed:
        try:
            return cls(FailureReason(body[0]))
        except (IndexError, ValueError):
            raise RemoteProtocolError("malformed SetupFailed") from None


@dataclass(frozen=True, slots=True)
class NotExpected:
    """User → device: this window has no code for you (yet); try again later."""

    def frame(self) -> Frame:
        return Frame(FrameType.NOT_EXPECTED, b"")


# --- encrypted messages (JSON inside ChaCha20-Poly1305) --------------------------------------


class EnrollMode(StrEnum):
    TOKEN = "token"  # the device redeems a one-time token itself (QR flow's server feature)
    XEP0257 = "xep0257"  # the user's client uploads the device certificate with XEP-0257


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError(f"{what} is not valid base64") from None


def _device_jid(obj: dict[str, Any], key: str, *, optional: bool = False) -> JID | None:
    text = _str(obj, key, optional=optional)
    if not text:
        return None
    try:
        jid = JID.parse(text)
    except InvalidJID as exc:
        raise RemoteProtocolError(f"the field {key!r} is invalid: {exc}") from None
    if not jid.local or not jid.resource:
        raise RemoteProtocolError(f"the field {key!r} must be a full JID: user@domain/resource")
    return jid


def _str(obj: dict[str, Any], key: str, *, optional: bool = False) -> str:
    value = obj.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or (not value and not optional):
        raise RemoteProtocolError(f"the field {key!r} must be a non-empty string")
    return value


@dataclass(frozen=True, slots=True)
class EnrollmentOffer:
    """User → device: who to become, which server to trust, and how to enroll."""

    jid: JID  # the full JID the device will log in as
    host: str
    port: int
    fingerprint: str
    mode: EnrollMode
    token: str = field(default="", repr=False)
    # For an account on a stock server (ejabberd, Prosody): the v2 URI the device enrolls with
    # over server-ext's HTTPS API (docs/protocol.md §9). host, port and fingerprint are then
    # its XMPP server's, and fingerprint is empty when the system's CAs check it.
    https_uri: HTTPSEnrollmentURI | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.jid.local or not self.jid.resource:
            raise ValueError("the JID must be a full JID: user@domain/resource")
        if self.mode is EnrollMode.TOKEN and not self.token:
            raise ValueError("token mode needs a token")
        uri = self.https_uri
        if uri is not None:
            if self.mode is not EnrollMode.TOKEN:
                raise ValueError("a v2 URI comes only with token mode")
            if uri.jid != self.jid or uri.token != self.token:
                raise ValueError("the v2 URI is for another JID or token")
            if (uri.xmpp_host, uri.xmpp_port, uri.xmpp_pin or "") != (
                self.host,
                self.port,
                self.fingerprint,
            ):
                raise ValueError("the v2 URI names another XMPP server")
            return
        if not 0 < self.port < 65536 or len(self.fingerprint) != 64:
            raise ValueError("bad port or fingerprint")

    @classmethod
    def for_https(cls, uri: HTTPSEnrollmentURI) -> EnrollmentOffer:
        """The offer that hands a v2 URI to the device (an account on a stock server)."""
        return cls(
            uri.jid,
            uri.xmpp_host,
            uri.xmpp_port,
            uri.xmpp_pin or "",
            EnrollMode.TOKEN,
            uri.token,
            uri,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "enrollment-offer",
            "jid": str(self.jid),
            "host": self.host,
            "port": self.port,
            "fingerprint": self.fingerprint,
            "mode": self.mode.value,
            "token": self.token,
            **({"uri": str(self.https_uri)} if self.https_uri is not None else {}),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EnrollmentOffer:
        port = obj.get("port")
        jid = _device_jid(obj, "jid")
        assert jid is not None  # not optional
        uri_text = _str(obj, "uri", optional=True)
        try:
            # Parsed here, once: the device acts on the value, never on the text.
            https_uri = HTTPSEnrollmentURI.parse(uri_text) if uri_text else None
            return cls(
                jid,
                _str(obj, "host"),
                port if isinstance(port, int) else -1,
                _str(obj, "fingerprint", optional=https_uri is not None),
                EnrollMode(_str(obj, "mode")),
                _str(obj, "token", optional=True),
                https_uri,
            )
        except (ValueError, PairingError) as exc:
            raise RemoteProtocolError(f"malformed enrollment offer: {exc}") from None


@dataclass(frozen=True, slots=True)
class CertificateSubmission:
    """Device → user (XEP-0257 mode): its certificate, and a signature proving it holds the key."""

    der: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"type": "certificate", "der": _b64(self.der), "signature": _b64(self.signature)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CertificateSubmission:
        return cls(_unb64(obj.get("der"), "der"), _unb64(obj.get("signature"), "signature"))


@dataclass(frozen=True, slots=True)
class CertificateRegistered:
    """User → device (XEP-0257 mode): the certificate is registered; log in now."""

    def to_json(self) -> dict[str, Any]:
        return {"type": "certificate-registered"}


@dataclass(frozen=True, slots=True)
class EnrollmentResult:
    """Device → user, last: did the first EXTERNAL login work?"""

    ok: bool
    jid: JID | None = None  # the JID the device logged in as, or tried to
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        jid = str(self.jid) if self.jid is not None else ""
        return {"type": "result", "ok": self.ok, "jid": jid, "error": self.error}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EnrollmentResult:
        ok = obj.get("ok")
        if not isinstance(ok, bool):
            raise RemoteProtocolError("the field 'ok' must be true or false")
        return cls(ok, _device_jid(obj, "jid", optional=True), _str(obj, "error", optional=True))


SecureMessage = EnrollmentOffer | CertificateSubmission | CertificateRegistered | EnrollmentResult

_PARSERS: dict[str, Any] = {
    "enrollment-offer": EnrollmentOffer.from_json,
    "certificate": CertificateSubmission.from_json,
    "certificate-registered": lambda obj: CertificateRegistered(),
    "result": EnrollmentResult.from_json,
}


def encode_secure(message: SecureMessage) -> bytes:
    return json.dumps(message.to_json(), separators=(",", ":")).encode()


def decode_secure(plaintext: bytes) -> SecureMessage:
    try:
        obj = json.loads(plaintext)
    except (UnicodeDecodeError, ValueError):
        raise RemoteProtocolError("an encrypted message is not JSON") from None
    if not isinstance(obj, dict) or obj.get("type") not in _PARSERS:
        raise RemoteProtocolError("an encrypted message has no known type")
    message: SecureMessage = _PARSERS[obj["type"]](obj)
    return message
