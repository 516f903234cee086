"""What a c2s stream reports to its caller: its phase, and what the peer did."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import Enum


class Phase(Enum):
    """Where the stream is in RFC 6120 negotiation."""

    PLAINTEXT = "plaintext"
    TLS_PENDING = "tls-pending"
    SECURED = "secured"
    AUTHENTICATING = "authenticating"
    AUTHENTICATED = "authenticated"
    BOUND = "bound"
    CLOSED = "closed"


# --- Events: what the peer did ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSRequested:
    """``<proceed/>`` is queued: flush it in plaintext, then run the TLS handshake."""


@dataclass(frozen=True, slots=True)
class AuthRequested:
    """SASL ``<auth/>`` (RFC 6120 §6.4.2); ``initial_response`` is None when absent."""

    mechanism: str
    initial_response: bytes | None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    data: bytes


@dataclass(frozen=True, slots=True)
class AuthAborted:
    """The exchange ended without a decision; drop the mechanism."""


@dataclass(frozen=True, slots=True)
class BindRequested:
    iq_id: str
    resource: str | None


@dataclass(frozen=True, slots=True)
class NonzaReceived:
    """An element outside jabber:client in a namespace the caller advertised: before
    authentication (enrollment, renewal), or after it (XEP-0198 stream management)."""

    element: ET.Element


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    """A valid stanza from a bound session, ``from`` already stamped (RFC 6120 §8.1.2.1)."""

    element: ET.Element


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer closed the stream; our closing tag is queued."""


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """The stream is over with an error; the stream error is queued."""

    condition: str
    text: str


Event = (
    TLSRequested
    | AuthRequested
    | AuthResponse
    | AuthAborted
    | BindRequested
    | NonzaReceived
    | StanzaReceived
    | StreamEnded
    | StreamFailed
)
