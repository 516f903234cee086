"""What every server-side SASL mechanism returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pairing.protocol.jid import JID
from server_ext.errors import ServerExtError
from server_ext.wire.conditions import SASLCondition


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """The authorized identity (bare), and for EXTERNAL the certificate and resource lock."""

    identity: JID
    method: str
    additional_data: bytes | None = None
    certificate_fingerprint: str | None = None
    locked_resource: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    condition: SASLCondition
    text: str
    account: JID | None = None  # the account the client tried, when known
    device_revoked: bool = False  # the certificate belongs to a revoked device: final


Outcome = Challenge | Success | Failure


class SASLUsageError(ServerExtError):
    """A mechanism was driven after it had already decided (our bug, not the peer's)."""


class Mechanism(Protocol):
    name: str

    def start(self, initial_response: bytes | None) -> Outcome: ...

    def respond(self, data: bytes) -> Outcome: ...
