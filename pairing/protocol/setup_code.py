"""The setup code printed on a device's label, and the label's QR payload.

The code is eight digits shown as ``XXX-XX-XXX`` (HomeKit's format): about 26.5 bits, enough
because SRP gives a network attacker one guess per attempt and the device caps attempts.
A passive listener learns nothing to guess with offline (docs/threat-model.md).

Label payload, in the QR alphanumeric set: ``XMPP-DP-SETUP:1/<DEVICE-ID>/<SETUP-ID>/<CODE>``.
The setup id is printed too; with the device id it gives the 4-byte *setup hash* a device
announces, which lets a scanned label be matched to the right device without revealing the
code (HomeKit's ``sh``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from pairing.errors import PairingError

LABEL_SCHEME = "XMPP-DP-SETUP"
LABEL_VERSION = 1
_ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: people copy labels
_SETUP_HASH_LABEL = b"xmpp-dp setup hash v1"
DEVICE_ID_LENGTH = 10


class InvalidSetupCode(PairingError, ValueError):
    """Not a usable setup code or label; the message says why."""


def _trivial(digits: str) -> bool:
    # HomeKit and Matter refuse these: all one digit, and the two obvious runs.
    if len(set(digits)) == 1:
        return True
    ascending = "0123456789" * 2
    descending = "9876543210" * 2
    return digits in ascending or digits in descending


@dataclass(frozen=True, slots=True)
class SetupCode:
    digits: str  # exactly eight digits

    def __post_init__(self) -> None:
        if len(self.digits) != 8 or not self.digits.isdigit() or not self.digits.isascii():
            raise InvalidSetupCode("a setup code has eight digits, like 123-45-678")
        if _trivial(self.digits):
            raise InvalidSetupCode("this setup code is too easy to guess and is not allowed")

    @classmethod
    def generate(cls) -> SetupCode:
        """A uniformly random, non-trivial code (CSPRNG, rejection sampling)."""
        while True:
            digits = f"{secrets.randbelow(10**8):08d}"
            if not _trivial(digits):
                return cls(digits)

    @classmethod
    def parse(cls, text: str) -> SetupCode:
        """Accepts ``123-45-678``, ``12345678`` or spaced digits."""
        digits = "".join(ch for ch in text if ch not in " -")
        return cls(digits)

    def __str__(self) -> str:
        d = self.digits
        return f"{d[:3]}-{d[3:5]}-{d[5:]}"

    def __repr__(self) -> str:
        return "SetupCode(***)"  # never in logs or tracebacks


def parse_device_id(text: str) -> str:
    """A device id as printed on a label (case-insensitive), or :class:`InvalidSetupCode`."""
    device_id = text.strip().upper()
    if len(device_id) != DEVICE_ID_LENGTH or any(c not in _ID_ALPHABET for c in device_id):
        raise InvalidSetupCode(
            f"a device id is {DEVICE_ID_LENGTH} characters from {_ID_ALPHABET}, "
            f"not {text.strip()[:40]!r}"
        )
    return device_id


def new_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def setup_hash(setup_id: str, device_id: str) -> bytes:
    """4 bytes that match a label to an announcing device; says nothing about the code."""
    return hashlib.sha512(_SETUP_HASH_LABEL + setup_id.encode() + device_id.encode()).digest()[:4]


@dataclass(frozen=True, slots=True)
class SetupLabel:
    """What is printed on the device: its id, a setup id and the code."""

    device_id: str  # DEVICE_ID_LENGTH characters
    setup_id: str  # 4 characters
    code: SetupCode

    def __post_init__(self) -> None:
        for value, size, what in (
            (self.device_id, DEVICE_ID_LENGTH, "device id"),
            (self.setup_id, 4, "setup id"),
        ):
            if len(value) != size or any(c not in _ID_ALPHABET for c in value):
                raise InvalidSetupCode(f"the {what} must be {size} characters from {_ID_ALPHABET}")

    @classmethod
    def generate(cls) -> SetupLabel:
        return cls(new_id(DEVICE_ID_LENGTH), new_id(4), SetupCode.generate())

    @property
    def setup_hash(self) -> bytes:
        return setup_hash(self.setup_id, self.device_id)

    def payload(self) -> str:
        return f"{LABEL_SCHEME}:{LABEL_VERSION}/{self.device_id}/{self.setup_id}/{self.code.digits}"

    @classmethod
    def parse(cls, text: str) -> SetupLabel:
        prefix, sep, rest = text.strip().partition(":")
        if not sep or prefix.upper() != LABEL_SCHEME:
            raise InvalidSetupCode(f"not a setup label: it must start with {LABEL_SCHEME}:")
        parts = rest.split("/")
        if len(parts) != 4:
            raise InvalidSetupCode("a setup label has four parts: version/device id/setup id/code")
        if parts[0] != str(LABEL_VERSION):
            raise InvalidSetupCode(f"setup label version {parts[0]!r} is not supported")
        return cls(parts[1], parts[2], SetupCode.parse(parts[3]))

    def __repr__(self) -> str:
        return f"SetupLabel(device_id={self.device_id}, setup_id={self.setup_id}, code=***)"
