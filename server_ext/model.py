"""Plain records shared by the registry, the policies and the server. No I/O here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from pairing.protocol.jid import JID


class CertState(StrEnum):
    """Life cycle of a registered certificate (XEP-0257 §3.3, §3.4)."""

    ACTIVE = "active"
    DISABLED = "disabled"  # no new logins; live sessions stay (XEP-0257 disable)
    REVOKED = "revoked"  # no new logins and live sessions are closed (XEP-0257 revoke)


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What SCRAM (RFC 5802 §3) stores instead of a password."""

    hash_name: str  # "sha1" or "sha256", a hashlib name
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class Account:
    jid: JID  # always bare
    is_admin: bool
    created_at: dt.datetime
    scram: tuple[ScramCredentials, ...]

    def credentials(self, hash_name: str) -> ScramCredentials | None:
        """The stored SCRAM keys for ``hash_name``, if any."""
        for creds in self.scram:
            if creds.hash_name == hash_name:
                return creds
        return None


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """A certificate registered for an account (XEP-0257 ``item``)."""

    id: int
    account: JID  # bare JID of the owning account
    name: str
    fingerprint: str  # SHA-256 of the DER, 64 lowercase hex digits
    der: bytes
    subject_jids: tuple[str, ...]  # the xmppAddr values, as registered
    not_before: dt.datetime
    not_after: dt.datetime
    state: CertState
    no_cert_management: bool
    added_by: str  # JID or "cli:<user>" of whoever registered it
    added_via: str  # "xep-0257", "cli", ...
    added_at: dt.datetime
    last_login_at: dt.datetime | None = None
    last_login_address: str | None = None
    revoked_reason: str | None = None
    state_changed_at: dt.datetime | None = None
    replaces: int | None = None  # the certificate this one rotated out


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One row of the append-only audit log."""

    id: int
    at: dt.datetime
    event: str  # stable name, e.g. "cert.added", "login.failed"
    actor: str
    subject: str
    address: str | None
    detail: dict[str, str]


class TokenState(StrEnum):
    """Life cycle of a one-time enrollment token."""

    PENDING = "pending"
    REDEEMED = "redeemed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An issued token as stored: its hash, never the token."""

    id: int
    token_hash: str
    jid: JID  # the full JID the device will log in as
    name: str  # the certificate name the device gets (XEP-0257 name)
    state: TokenState
    created_at: dt.datetime
    expires_at: dt.datetime
    created_by: str
    redeemed_at: dt.datetime | None = None
    redeemed_fingerprint: str | None = None
