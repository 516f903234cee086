"""What every server-side SASL mechanism returns, and the conditions it may fail with."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pairing.protocol.jid import JID
from server_ext.errors import ServerExtError


class SASLCondition(StrEnum):
    """RFC 6120 §6.5 failure conditions."""

    ABORTED = "aborted"
    ACCOUNT_DISABLED = "account-disabled"
    CREDENTIALS_EXPIRED = "credentials-expired"
    ENCRYPTION_REQUIRED = "encryption-required"
    INCORRECT_ENCODING = "incorrect-encoding"
    INVALID_AUTHZID = "invalid-authzid"
    INVALID_MECHANISM = "invalid-mechanism"
    MALFORMED_REQUEST = "malformed-request"
    MECHANISM_TOO_WEAK = "mechanism-too-weak"
    NOT_AUTHORIZED = "not-authorized"
    TEMPORARY_AUTH_FAILURE = "temporary-auth-failure"


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


Outcome = Challenge | Success | Failure


class SASLUsageError(ServerExtError):
    """A mechanism was driven after it had already decided (our bug, not the peer's)."""


class Mechanism(Protocol):
    name: str

    def start(self, initial_response: bytes | None) -> Outcome: ...

    def respond(self, data: bytes) -> Outcome: ...
