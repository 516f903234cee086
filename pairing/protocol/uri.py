"""The enrollment URI carried by the QR code (docs/protocol.md, "The enrollment URI").

    XMPP-DP:1/<TOKEN>/<FINGERPRINT>/<HOST>/<PORT>/<JID>
    XMPP-DP:2/<TOKEN>/<HTTPS FP>/<HTTPS HOST>/<HTTPS PORT>/<XMPP PIN>/<XMPP HOST>/<XMPP PORT>/<JID>

Version 1 enrolls before SASL on the embedded server; version 2 (docs/protocol.md, section 9)
enrolls over HTTPS with ``server-ext`` and then logs in to a stock XMPP server.

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
HTTPS_VERSION = 2
#: In place of the XMPP pin: check the XMPP server's certificate with the system's CAs.
SYSTEM_CAS = "-"
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
        _check_host(self.host, "host")
        _check_port(self.port, "port")

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
        """Parse a version-1 URI strictly; every malformed field gets its own message."""
        rest = _after_scheme(text)
        parts = rest.split("/", 5)
        if len(parts) != 6:
            raise InvalidPairingURI(
                "an enrollment URI has six parts: version/token/fingerprint/host/port/JID"
            )
        version, token, fp, host, port, jid_text = parts
        if version != str(VERSION):
            raise InvalidPairingURI(
                f"enrollment URI version {version!r} is not supported (this software reads "
                f"versions {VERSION} and {HTTPS_VERSION}); update the device software"
            )
        _unb32(token, "token", 20)
        fingerprint = _unb32(fp, "fingerprint", 32).hex()
        return cls(_jid(jid_text), token, _decode(host, "host"), _port(port, "port"), fingerprint)


@dataclass(frozen=True, slots=True)
class HTTPSEnrollmentURI:
    """Version 2: enroll over HTTPS with server-ext, then log in to a (stock) XMPP server."""

    jid: JID  # the full JID the device logs in as
    token: str  # 32 upper-case base32 characters
    https_host: str
    https_port: int
    https_fingerprint: str  # SHA-256 of server-ext's certificate, 64 hex digits (pinned)
    xmpp_host: str
    xmpp_port: int
    xmpp_pin: str | None  # SHA-256 of the XMPP server's certificate; None: the system's CAs

    def __post_init__(self) -> None:
        if not self.jid.local or not self.jid.resource:
            raise InvalidPairingURI("the JID must be a full JID: user@domain/resource")
        _unb32(self.token, "token", 20)
        for value, what in ((self.https_fingerprint, "HTTPS"), (self.xmpp_pin, "XMPP")):
            if value is not None and (
                len(value) != 64 or not set(value) <= set("0123456789abcdef")
            ):
                raise InvalidPairingURI(f"the {what} fingerprint must be 64 lower-case hex digits")
        _check_host(self.https_host, "HTTPS host")
        _check_host(self.xmpp_host, "XMPP host")
        _check_port(self.https_port, "HTTPS port")
        _check_port(self.xmpp_port, "XMPP port")

    @property
    def host(self) -> str:
        return self.https_host

    @property
    def port(self) -> int:
        return self.https_port

    def __str__(self) -> str:
        https_fp = _b32(bytes.fromhex(self.https_fingerprint))
        pin = _b32(bytes.fromhex(self.xmpp_pin)) if self.xmpp_pin else SYSTEM_CAS
        return (
            f"{SCHEME}:{HTTPS_VERSION}/{self.token}/{https_fp}/{_encode(self.https_host)}/"
            f"{self.https_port}/{pin}/{_encode(self.xmpp_host)}/{self.xmpp_port}/"
            f"{_encode(str(self.jid))}"
        )

    def __repr__(self) -> str:
        # The token is a secret: keep it out of logs and tracebacks.
        return (
            f"HTTPSEnrollmentURI(jid={self.jid!s}, https={self.https_host}:{self.https_port}, "
            f"xmpp={self.xmpp_host}:{self.xmpp_port})"
        )

    @classmethod
    def parse(cls, text: str) -> HTTPSEnrollmentURI:
        """Parse a version-2 URI strictly; every malformed field gets its own message."""
        parts = _after_scheme(text).split("/", 8)
        if len(parts) != 9 or parts[0] != str(HTTPS_VERSION):
            raise InvalidPairingURI(
                "a version-2 enrollment URI has nine parts: 2/token/HTTPS fingerprint/"
                "HTTPS host/HTTPS port/XMPP pin/XMPP host/XMPP port/JID"
            )
        _, token, https_fp, https_host, https_port, pin, xmpp_host, xmpp_port, jid_text = parts
        _unb32(token, "token", 20)
        return cls(
            _jid(jid_text),
            token,
            _decode(https_host, "HTTPS host"),
            _port(https_port, "HTTPS port"),
            _unb32(https_fp, "HTTPS fingerprint", 32).hex(),
            _decode(xmpp_host, "XMPP host"),
            _port(xmpp_port, "XMPP port"),
            None if pin == SYSTEM_CAS else _unb32(pin, "XMPP pin", 32).hex(),
        )


AnyEnrollmentURI = EnrollmentURI | HTTPSEnrollmentURI


def parse_enrollment_uri(text: str) -> AnyEnrollmentURI:
    """A version-1 or version-2 URI, by its version field."""
    version = _after_scheme(text).partition("/")[0]
    if version == str(HTTPS_VERSION):
        return HTTPSEnrollmentURI.parse(text)
    return EnrollmentURI.parse(text)


def _after_scheme(text: str) -> str:
    prefix, sep, rest = text.strip().partition(":")
    if not sep or prefix.upper() != SCHEME:
        raise InvalidPairingURI(f"not an enrollment URI: it must start with {SCHEME}:")
    return rest


def _jid(text: str) -> JID:
    try:
        return JID.parse(_decode(text, "JID"))
    except InvalidJID as exc:
        raise InvalidPairingURI(f"the JID is invalid: {exc}") from None


def _port(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise InvalidPairingURI(f"the {what} {text!r} is not a number")
    return int(text)


def _check_port(port: int, what: str) -> None:
    if not 0 < port < 65536:
        raise InvalidPairingURI(f"the {what} {port} is out of range")


def _check_host(host: str, what: str) -> None:
    if not host:
        raise InvalidPairingURI(f"the {what} is empty")
    if "/" in host:  # the URI's separator: a host with one could not be parsed back
        raise InvalidPairingURI(f"the {what} {host!r} contains '/'")
