"""The HTTPS enrollment API of ``server-ext`` (docs/protocol.md, section 9): paths, messages,
and the proofs a device signs. Shared by the device (which builds requests and reads answers)
and the server (which reads requests and builds answers), like :mod:`pairing.protocol.renewal`.

Every body is one JSON object. Requests are parsed once, here, into frozen dataclasses; a
malformed one raises :class:`APIRefused` with :attr:`APICondition.MALFORMED`. Answers are
``200`` with the success object, or a 4xx/5xx with ``{"error": CONDITION, "text": …}``.

Pure: no I/O (no sockets, no HTTP library), only the stdlib and cryptography.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pairing.errors import CertificateError, InvalidJID, PairingError
from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID

# --- paths --------------------------------------------------------------------------------

API_PREFIX = "/api/v1"
CHALLENGE_PATH = "/api/v1/challenge"  # POST, empty body
ENROLL_PATH = "/api/v1/enroll"  # POST EnrollRequest
RENEW_PATH = "/api/v1/renew"  # POST SuccessorRequest: valid, or expired within the grace
ROTATE_PATH = "/api/v1/rotate"  # POST SuccessorRequest: the current certificate is valid
#: MongooseIM's http auth method calls ``{path_prefix}get_certs`` (its doc, "get_certs").
MONGOOSEIM_PREFIX = "/api/v1/mongooseim/"
MONGOOSEIM_GET_CERTS_PATH = MONGOOSEIM_PREFIX + "get_certs"
MONGOOSEIM_USER_EXISTS_PATH = MONGOOSEIM_PREFIX + "user_exists"
PROSODY_CERTIFICATE_PATH = "/api/v1/stock/prosody/certificate"  # POST ProsodyCertificateQuery

# --- the signed messages --------------------------------------------------------------------

#: What the device key signs to enroll: the label, the server's nonce, SHA-256 of the token
#: and SHA-256 of the certificate. A signature made for enrollment means nothing else.
ENROLL_LABEL = b"urn:xmpp-device-pairing:https-enroll:0 signature"
#: What a *new* key signs to prove it is held by the one registering it (renew, rotate).
POSSESSION_LABEL = b"urn:xmpp-device-pairing:https-possession:0 signature"

NONCE_BYTES = 32
MAX_BODY_BYTES = 64 * 1024
MAX_CERTIFICATE_BYTES = 16 * 1024
MAX_SIGNATURE_BYTES = 1024  # RSA-8192 signs in 1024 bytes; EC and EdDSA in far fewer
_NONCE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def token_digest(token: str) -> bytes:
    """SHA-256 of the normalised token: what the device signs instead of the token itself."""
    return hashlib.sha256(token.strip().upper().encode("ascii", "replace")).digest()


def enrollment_message(nonce: str, token: str, certificate_fingerprint: str) -> bytes:
    """What the device key signs to enroll (fixed-size digests end it: no two inputs collide)."""
    return (
        ENROLL_LABEL
        + b"\x00"
        + nonce.encode("ascii")
        + b"\x00"
        + token_digest(token)
        + bytes.fromhex(certificate_fingerprint)
    )


def possession_message(nonce: str, certificate_fingerprint: str) -> bytes:
    """What a new key signs to prove possession while it is registered (renew, rotate)."""
    return (
        POSSESSION_LABEL
        + b"\x00"
        + nonce.encode("ascii")
        + b"\x00"
        + bytes.fromhex(certificate_fingerprint)
    )


# --- conditions -----------------------------------------------------------------------------


class APICondition(StrEnum):
    """The ``error`` of a refused request. Enrollment and renewal reuse the XMPP exchanges'
    condition names (:class:`~pairing.protocol.enrollment.EnrollCondition`,
    :class:`~pairing.protocol.renewal.RenewCondition`), so a device reads both the same way."""

    MALFORMED = "malformed"
    NONCE_UNKNOWN = "nonce-unknown"  # never issued, used already, or older than 2 minutes
    BAD_SIGNATURE = "bad-signature"
    UNAUTHORIZED = "unauthorized"  # the stock server's secret is missing or wrong
    NOT_FOUND = "not-found"
    RATE_LIMITED = "rate-limited"
    INTERNAL_ERROR = "internal-error"


#: The HTTP status for each condition name (enrollment, renewal and API conditions).
STATUS: Mapping[str, int] = {
    "malformed": 400,
    "nonce-unknown": 400,
    "bad-signature": 403,
    "unauthorized": 401,
    "not-found": 404,
    "token-unknown": 403,
    "token-expired": 403,
    "token-used": 403,
    "token-cancelled": 403,
    "jid-mismatch": 403,
    "bad-certificate": 403,
    "not-registered": 403,
    "revoked": 403,
    "disabled": 403,
    "grace-expired": 403,
    "refused": 403,
    "name-conflict": 409,
    "jid-in-use": 409,
    "already-registered": 409,
    "rate-limited": 429,
    "internal-error": 500,
    # Pairing requests (pairing.protocol.pair_request).
    "request-denied": 403,
    "request-expired": 403,
    "request-unknown": 404,
}


class APIRefused(PairingError):
    """A request was refused: ``condition`` (a wire name) says why, ``text`` for people."""

    def __init__(self, condition: str, text: str, *, retry_after: int | None = None) -> None:
        super().__init__(f"{condition}: {text}")
        self.condition = str(condition)
        self.text = text
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS.get(self.condition, 400)

    def to_json(self) -> dict[str, Any]:
        return {"error": self.condition, "text": self.text}

    @classmethod
    def from_json(cls, status: int, data: Any) -> APIRefused:
        """What a device makes of an error answer (a body that is not ours says so)."""
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return cls(data["error"], str(data.get("text", "")))
        return cls("internal-error" if status >= 500 else "malformed", f"HTTP {status}")


# --- parsing helpers --------------------------------------------------------------------------


def _malformed(text: str) -> APIRefused:
    return APIRefused(APICondition.MALFORMED, text)


def _field(data: Mapping[str, Any], name: str, *, optional: bool = False) -> str:
    value = data.get(name)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise _malformed(f"the field {name!r} must be a string")
    return value


def _b64(data: Mapping[str, Any], name: str, limit: int) -> bytes:
    text = _field(data, name)
    if len(text) > limit * 4 // 3 + 4:
        raise _malformed(f"the field {name!r} is too large")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"the field {name!r} is not base64") from None


def _certificate(data: Mapping[str, Any], name: str) -> PeerCertificate:
    text = _field(data, name)
    if len(text) > MAX_CERTIFICATE_BYTES * 2:
        raise _malformed(f"the field {name!r} is too large")
    try:
        return PeerCertificate.parse(text.encode("ascii"))
    except (CertificateError, UnicodeEncodeError) as exc:
        raise _malformed(f"the field {name!r} is not a certificate: {exc}") from None


def _nonce(data: Mapping[str, Any]) -> str:
    nonce = _field(data, "nonce")
    if not 16 <= len(nonce) <= 128 or not set(nonce) <= _NONCE_CHARS:
        raise APIRefused(APICondition.NONCE_UNKNOWN, "this is not a nonce of this server")
    return nonce


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pem_of_der(der: bytes) -> str:
    """A DER certificate as PEM text (RFC 7468 §5): what the API carries."""
    body = base64.b64encode(der).decode("ascii")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


def pem(cert: PeerCertificate) -> str:
    return pem_of_der(cert.der)


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """``POST /api/v1/challenge`` → a single-use nonce, valid until ``expires`` (2 minutes)."""

    nonce: str
    expires: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "expires": self.expires.isoformat(timespec="seconds")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Challenge:
        nonce = _nonce(data)
        try:
            expires = dt.datetime.fromisoformat(_field(data, "expires"))
        except ValueError:
            raise _malformed("the field 'expires' is not an ISO 8601 time") from None
        return cls(nonce, expires)


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    """``POST /api/v1/enroll``: a token, the device's self-signed certificate, and the proof
    that the sender holds its key (a signature over :func:`enrollment_message`)."""

    token: str
    certificate: PeerCertificate
    nonce: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "certificate": pem(self.certificate),
            "nonce": self.nonce,
            "signature": b64(self.signature),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EnrollRequest:
        token = _field(data, "token")
        if len(token) > 256:
            raise _malformed("the field 'token' is too large")
        return cls(
            token,
            _certificate(data, "certificate"),
            _nonce(data),
            _b64(data, "signature", MAX_SIGNATURE_BYTES),
        )

    def message(self) -> bytes:
        return enrollment_message(self.nonce, self.token, self.certificate.fingerprint)

    def __repr__(self) -> str:
        return f"EnrollRequest({self.certificate!r})"  # never the token


@dataclass(frozen=True, slots=True)
class XMPPServer:
    """Where the enrolled device logs in with EXTERNAL: ``pin`` is the SHA-256 of the XMPP
    server's certificate, or None to check it against the system's CAs."""

    host: str
    port: int
    pin: str | None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "pin": self.pin}

    @classmethod
    def from_json(cls, data: Any) -> XMPPServer:
        if not isinstance(data, dict):
            raise _malformed("the field 'xmpp' must be an object")
        port = data.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise _malformed("xmpp.port must be a port number")
        pin = data.get("pin")
        if pin is not None and (
            not isinstance(pin, str) or len(pin) != 64 or not set(pin) <= set("0123456789abcdef")
        ):
            raise _malformed("xmpp.pin must be 64 lower-case hex digits or null")
        host = _field(data, "host")
        if not host:
            raise _malformed("xmpp.host is empty")
        return cls(host, port, pin)


@dataclass(frozen=True, slots=True)
class Enrolled:
    """The answer to an enrollment (and to its retry by the same certificate)."""

    jid: JID
    name: str
    xmpp: XMPPServer

    def to_json(self) -> dict[str, Any]:
        return {"jid": str(self.jid), "name": self.name, "xmpp": self.xmpp.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Enrolled:
        try:
            jid = JID.parse(_field(data, "jid"))
        except InvalidJID as exc:
            raise _malformed(f"the field 'jid' is not a JID: {exc}") from None
        return cls(jid, _field(data, "name"), XMPPServer.from_json(data.get("xmpp")))


@dataclass(frozen=True, slots=True)
class SuccessorRequest:
    """``POST /api/v1/renew`` and ``POST /api/v1/rotate``: register ``certificate`` as the
    successor of ``current``.

    ``signature`` is the *current* key's over
    :func:`pairing.protocol.renewal.renewal_message` (the same proof as the XMPP ``<renew/>``),
    ``proof`` the *new* key's over :func:`possession_message` (over HTTPS no TLS handshake
    proves it).
    """

    current: bytes  # DER of the device's current (maybe expired) certificate
    certificate: PeerCertificate
    nonce: str
    signature: bytes
    proof: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "current": b64(self.current),
            "certificate": pem(self.certificate),
            "nonce": self.nonce,
            "signature": b64(self.signature),
            "proof": b64(self.proof),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SuccessorRequest:
        return cls(
            _b64(data, "current", MAX_CERTIFICATE_BYTES),
            _certificate(data, "certificate"),
            _nonce(data),
            _b64(data, "signature", MAX_SIGNATURE_BYTES),
            _b64(data, "proof", MAX_SIGNATURE_BYTES),
        )

    def possession(self) -> bytes:
        return possession_message(self.nonce, self.certificate.fingerprint)


@dataclass(frozen=True, slots=True)
class Renewed:
    """The answer to a renewal or rotation: the device logs in with the new certificate."""

    jid: JID
    name: str
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {"jid": str(self.jid), "name": self.name, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Renewed:
        try:
            jid = JID.parse(_field(data, "jid"))
        except InvalidJID as exc:
            raise _malformed(f"the field 'jid' is not a JID: {exc}") from None
        return cls(jid, _field(data, "name"), _field(data, "fingerprint"))


@dataclass(frozen=True, slots=True)
class ProsodyCertificateQuery:
    """``POST /api/v1/stock/prosody/certificate`` (Bearer secret): what Prosody's module asks
    at SASL EXTERNAL. ``der`` is the certificate the client presented in *its* TLS handshake,
    ``authzid`` what the client sent (empty for ``=``)."""

    der: bytes
    authzid: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"der": b64(self.der), "authzid": self.authzid}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProsodyCertificateQuery:
        authzid = _field(data, "authzid", optional=True)
        if len(authzid) > 3071:  # RFC 7622 §3.1: three parts of at most 1023 bytes
            raise _malformed("the field 'authzid' is too large")
        return cls(_b64(data, "der", MAX_CERTIFICATE_BYTES), authzid)


@dataclass(frozen=True, slots=True)
class ProsodyCertificateAnswer:
    """200: who the certificate logs in as; ``resource`` is the locked resource, if any."""

    jid: JID
    account: JID
    resource: str | None

    def to_json(self) -> dict[str, Any]:
        return {"jid": str(self.jid), "account": str(self.account), "resource": self.resource}


__all__ = [
    "API_PREFIX",
    "CHALLENGE_PATH",
    "ENROLL_LABEL",
    "ENROLL_PATH",
    "MONGOOSEIM_GET_CERTS_PATH",
    "MONGOOSEIM_PREFIX",
    "MONGOOSEIM_USER_EXISTS_PATH",
    "POSSESSION_LABEL",
    "PROSODY_CERTIFICATE_PATH",
    "RENEW_PATH",
    "ROTATE_PATH",
    "STATUS",
    "APICondition",
    "APIRefused",
    "Challenge",
    "EnrollRequest",
    "Enrolled",
    "ProsodyCertificateAnswer",
    "ProsodyCertificateQuery",
    "Renewed",
    "SuccessorRequest",
    "XMPPServer",
    "enrollment_message",
    "pem_of_der",
    "possession_message",
    "token_digest",
]
