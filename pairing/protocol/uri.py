"""The enrollment URI carried by the QR code (docs/protocol.md, "The enrollment URI").

    XMPP-DP:1/<TOKEN>/<FINGERPRINT>/<HOST>/<PORT>/<JID>

Every character is in the QR alphanumeric set (0-9 A-Z space $ % * + - . / :), so the code
stays small: the token and the server's SHA-256 fingerprint are upper-case base32, and the
host and JID use *case-inverted* percent-encoding: lower-case ASCII letters are written
upper-case, and every other byte outside ``0-9 . - / :`` (upper-case letters included) is
``%XX``. ``alice@example.org/weatherbot`` becomes ``ALICE%40EXAMPLE.ORG/WEATHERBOT``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from pairing.errors import InvalidJID, PairingError
from pairing.protocol.jid import JID

SCHEME = "XMPP-DP"
VERSION = 1
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_PLAIN = frozenset("0123456789.-/:")
_HEX = frozenset("0123456789ABCDEF")


class InvalidPairingURI(PairingError, ValueError):
    """The text is not a valid enrollment URI; the message names the field."""


def _encode(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if "a" <= ch <= "z":
            out.append(ch.upper())
        elif ch in _PLAIN:
            out.append(ch)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _decode(text: str, field: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise InvalidPairingURI(f"the {field} has a bad %-escape at position {i}")
            raw.append(int(pair, 16))
            i += 3
            continue
        if "A" <= ch <= "Z":
            raw.append(ord(ch.lower()))
        elif ch in _PLAIN:
            raw.append(ord(ch))
        elif "a" <= ch <= "z":
            raise InvalidPairingURI(
                f"the {field} has lower-case letters: the URI was altered after it was made"
            )
        else:
            raise InvalidPairingURI(f"the {field} has a character {ch!r} that must be escaped")
        i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPairingURI(f"the {field} is not valid UTF-8") from None


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _unb32(text: str, field: str, size: int) -> bytes:
    if not text or not set(text) <= _TOKEN_CHARS:
        raise InvalidPairingURI(f"the {field} must be upper-case base32")
    try:
        data = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise InvalidPairingURI(f"the {field} is not valid base32") from None
    if len(data) != size:
        raise InvalidPairingURI(f"the {field} must be {size} bytes, not {len(data)}")
    return data


@dataclass(frozen=True, slots=True)
class EnrollmentURI:
    """Everything a device needs to enroll: who it will be, where, and which server to trust."""

    jid: JID  # the full JID the device logs in as
    token: str  # 32 upper-case base32 characters
    host: str
    port: int
    fingerprint: str  # SHA-256 of the server certificate's DER, 64 hex digits

    def __post_init__(self) -> None:
        if not self.jid.local or not self.jid.resource:
            raise InvalidPairingURI("the JID must be a full JID: user@domain/resource")
        _unb32(self.token, "token", 20)
        if len(self.fingerprint) != 64 or not set(self.fingerprint) <= set("0123456789abcdef"):
            raise InvalidPairingURI("the fingerprint must be 64 lower-case hex digits")
        if not self.host:
            raise InvalidPairingURI("the host is empty")
        if not 0 < self.port < 65536:
            raise InvalidPairingURI(f"the port {self.port} is out of range")

    def __str__(self) -> str:
        fp = _b32(bytes.fromhex(self.fingerprint))
        return (
            f"{SCHEME}:{VERSION}/{self.token}/{fp}/{_encode(self.host)}/{self.port}/"
            f"{_encode(str(self.jid))}"
        )

    def __repr__(self) -> str:
        # The token is a secret: keep it out of logs and tracebacks.
        return f"EnrollmentURI(jid={self.jid!s}, host={self.host}, port={self.port})"

    @classmethod
    def parse(cls, text: str) -> EnrollmentURI:
        """Parse strictly; every malformed field gets its own message."""
        text = text.strip()
        prefix, sep, rest = text.partition(":")
        if not sep or prefix.upper() != SCHEME:
            raise InvalidPairingURI(f"not an enrollment URI: it must start with {SCHEME}:")
        parts = rest.split("/", 5)
        if len(parts) != 6:
            raise InvalidPairingURI(
                "an enrollment URI has six parts: version/token/fingerprint/host/port/JID"
            )
        version, token, fp, host, port, jid_text = parts
        if version != str(VERSION):
            raise InvalidPairingURI(
                f"enrollment URI version {version!r} is not supported (this software reads "
                f"version {VERSION}); update the device software"
            )
        _unb32(token, "token", 20)
        fingerprint = _unb32(fp, "fingerprint", 32).hex()
        host_text = _decode(host, "host")
        if not port.isdigit():
            raise InvalidPairingURI(f"the port {port!r} is not a number")
        try:
            jid = JID.parse(_decode(jid_text, "JID"))
        except InvalidJID as exc:
            raise InvalidPairingURI(f"the JID is invalid: {exc}") from None
        return cls(jid, token, host_text, int(port), fingerprint)
