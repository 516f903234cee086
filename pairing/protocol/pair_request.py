"""Pairing requests: the bot shows a QR code, its owner approves it on the web page
(docs/protocol.md, section 9.6; the pattern of RFC 8628, the OAuth device authorization grant).

The device makes its key and self-signed certificate, asks for a request bound to them
(:class:`PairRequest`, signed by the key over a server nonce), shows the approval URL as a QR
code and the short user code, then asks how the request stands (:class:`PairStatusQuery`),
again signed by the key: the request id is not a secret (it is in the URL and the logs), and
only the key's holder learns the answer. Nothing here logs a device in: the certificate is
registered only when the account's owner approves, and the device then logs in with EXTERNAL.

Pure: no I/O, only the stdlib and the shared message helpers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pairing.protocol.https_api import (
    MAX_SIGNATURE_BYTES,
    APIRefused,
    Enrolled,
    _b64,
    _certificate,
    _field,
    _malformed,
    _nonce,
    b64,
    pem,
)
from pairing.protocol.identity import PeerCertificate

PAIR_REQUEST_PATH = "/api/v1/pair-request"  # POST PairRequest
PAIR_STATUS_PATH = "/api/v1/pair-request/status"  # POST PairStatusQuery (long poll)
#: Where the owner approves a request: ``/approve/{request}`` on the same HTTPS face.
APPROVE_PATH_PREFIX = "/approve/"

#: What the device key signs to ask for a request, and to ask how it stands. Distinct labels:
#: a signature made for one means nothing for the other, nor for enrollment or renewal.
PAIR_REQUEST_LABEL = b"urn:xmpp-device-pairing:pair-request:0 signature"
PAIR_STATUS_LABEL = b"urn:xmpp-device-pairing:pair-status:0 signature"

MAX_NAME_CHARS = 64
REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class PairState:
    """The ``state`` of a :class:`PairStatus` answer (refusals are conditions instead)."""

    PENDING = "pending"
    APPROVED = "approved"


#: The conditions a pairing request ends with when it does not end approved.
DENIED = "request-denied"
EXPIRED = "request-expired"
UNKNOWN = "request-unknown"


def pair_request_message(nonce: str, certificate_fingerprint: str, name: str) -> bytes:
    """What the device key signs to ask for a request (the name is length-prefixed)."""
    encoded = name.encode("utf-8")
    return (
        PAIR_REQUEST_LABEL
        + b"\x00"
        + nonce.encode("ascii")
        + b"\x00"
        + bytes.fromhex(certificate_fingerprint)
        + len(encoded).to_bytes(2, "big")
        + encoded
    )


def pair_status_message(nonce: str, request_id: str) -> bytes:
    """What the device key signs to ask how its request stands."""
    return PAIR_STATUS_LABEL + b"\x00" + nonce.encode("ascii") + b"\x00" + request_id.encode()


def check_name(name: str) -> str:
    """A device name as the page shows it: 1 to 64 printable characters."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise _malformed(f"the name must be 1 to {MAX_NAME_CHARS} printable characters")
    return name


def _request_id(data: Mapping[str, Any]) -> str:
    value = _field(data, "request")
    if not 16 <= len(value) <= 64 or not set(value) <= REQUEST_ID_CHARS:
        raise APIRefused(UNKNOWN, "this is not a pairing request of this server")
    return value


@dataclass(frozen=True, slots=True)
class PairRequest:
    """``POST /api/v1/pair-request``: the certificate to register if the owner approves, the
    name the device asks for, and the key's signature over :func:`pair_request_message`."""

    certificate: PeerCertificate
    name: str
    nonce: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "certificate": pem(self.certificate),
            "name": self.name,
            "nonce": self.nonce,
            "signature": b64(self.signature),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairRequest:
        return cls(
            _certificate(data, "certificate"),
            check_name(_field(data, "name")),
            _nonce(data),
            _b64(data, "signature", MAX_SIGNATURE_BYTES),
        )

    def message(self) -> bytes:
        return pair_request_message(self.nonce, self.certificate.fingerprint, self.name)


@dataclass(frozen=True, slots=True)
class PairRequestIssued:
    """200: the request's id, what the device shows (the approval URL and the user code), when
    the request lapses, and how long to wait between status queries (seconds)."""

    request: str
    user_code: str
    approve_url: str
    expires: dt.datetime
    interval: int

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "user_code": self.user_code,
            "approve_url": self.approve_url,
            "expires": self.expires.isoformat(timespec="seconds"),
            "interval": self.interval,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairRequestIssued:
        try:
            expires = dt.datetime.fromisoformat(_field(data, "expires"))
        except ValueError:
            raise _malformed("the field 'expires' is not an ISO 8601 time") from None
        interval = data.get("interval")
        if not isinstance(interval, int) or isinstance(interval, bool) or not 0 <= interval < 600:
            raise _malformed("the field 'interval' must be a number of seconds")
        url = _field(data, "approve_url")
        if not url.startswith("https://"):
            raise _malformed("the approval URL must be https")
        return cls(_request_id(data), _field(data, "user_code"), url, expires, interval)


@dataclass(frozen=True, slots=True)
class PairStatusQuery:
    """``POST /api/v1/pair-request/status``: the request id and the key's signature over
    :func:`pair_status_message`. The server holds the answer up to ``wait`` seconds while the
    request is pending (a long poll)."""

    request: str
    nonce: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"request": self.request, "nonce": self.nonce, "signature": b64(self.signature)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairStatusQuery:
        return cls(_request_id(data), _nonce(data), _b64(data, "signature", MAX_SIGNATURE_BYTES))

    def message(self) -> bytes:
        return pair_status_message(self.nonce, self.request)


@dataclass(frozen=True, slots=True)
class PairStatus:
    """200: ``pending``, or ``approved`` with the enrollment (denial and expiry are errors)."""

    state: str
    enrolled: Enrolled | None = None

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"state": self.state}
        if self.enrolled is not None:
            answer["enrolled"] = self.enrolled.to_json()
        return answer

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairStatus:
        state = _field(data, "state")
        if state == PairState.PENDING:
            return cls(state)
        if state == PairState.APPROVED:
            enrolled = data.get("enrolled")
            if not isinstance(enrolled, dict):
                raise _malformed("an approved request carries 'enrolled'")
            return cls(state, Enrolled.from_json(enrolled))
        raise _malformed(f"unknown state {state[:32]!r}")


__all__ = [
    "APPROVE_PATH_PREFIX",
    "DENIED",
    "EXPIRED",
    "PAIR_REQUEST_LABEL",
    "PAIR_REQUEST_PATH",
    "PAIR_STATUS_LABEL",
    "PAIR_STATUS_PATH",
    "UNKNOWN",
    "PairRequest",
    "PairRequestIssued",
    "PairState",
    "PairStatus",
    "PairStatusQuery",
    "check_name",
    "pair_request_message",
    "pair_status_message",
]
