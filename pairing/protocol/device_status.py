"""Asking server-ext whether this device is still allowed (docs/protocol.md, section 9.7).

A device on a stock server is not always told why its login fails: ejabberd ends a revoked
device's session with a plain ``<conflict/>`` and then refuses its certificate like any
unknown one, so the agent cannot tell a revocation (stop for good) from a passing problem
(try again later). After a refusal it asks the registry instead, proving with its key that
the question is its own: ``POST /api/v1/device/status`` with its certificate, a fresh nonce
of the server's and the key's signature over both. Only the device's own key can ask, so the
answer (active, disabled or revoked, and the reason) tells nobody else anything.

Pure: no I/O, like :mod:`pairing.protocol.https_api`, whose helpers it shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pairing.protocol.https_api import (
    MAX_SIGNATURE_BYTES,
    _b64,
    _certificate,
    _field,
    _malformed,
    _nonce,
    b64,
    pem,
)
from pairing.protocol.identity import PeerCertificate

DEVICE_STATUS_PATH = "/api/v1/device/status"  # POST DeviceStatusQuery

#: What the device key signs to ask: a signature made for this means nothing else.
STATUS_LABEL = b"urn:xmpp-device-pairing:device-status:0 signature"


def status_message(nonce: str, certificate_fingerprint: str) -> bytes:
    """What the device's key signs to ask about the device of that certificate."""
    return (
        STATUS_LABEL
        + b"\x00"
        + nonce.encode("ascii")
        + b"\x00"
        + bytes.fromhex(certificate_fingerprint)
    )


class DeviceState(StrEnum):
    """The device's state in the registry (server_ext.model.DeviceState, on the wire)."""

    ACTIVE = "active"
    DISABLED = "disabled"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class DeviceStatusQuery:
    """``POST /api/v1/device/status``: the device's certificate, a nonce from
    ``/api/v1/challenge`` and the certificate key's signature over :func:`status_message`."""

    certificate: PeerCertificate
    nonce: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "certificate": pem(self.certificate),
            "nonce": self.nonce,
            "signature": b64(self.signature),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceStatusQuery:
        return cls(
            _certificate(data, "certificate"),
            _nonce(data),
            _b64(data, "signature", MAX_SIGNATURE_BYTES),
        )

    def message(self) -> bytes:
        return status_message(self.nonce, self.certificate.fingerprint)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """200: the state of the device that certificate belongs to, and why (when not active)."""

    state: DeviceState
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceStatus:
        try:
            state = DeviceState(_field(data, "state"))
        except ValueError:
            raise _malformed("the field 'state' is not a device state") from None
        return cls(state, _field(data, "reason", optional=True))


__all__ = [
    "DEVICE_STATUS_PATH",
    "STATUS_LABEL",
    "DeviceState",
    "DeviceStatus",
    "DeviceStatusQuery",
    "status_message",
]
