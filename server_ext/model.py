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


class DeviceState(StrEnum):
    """Life cycle of a device: every certificate of its rotation chain follows it."""

    ACTIVE = "active"
    DISABLED = "disabled"  # no new logins; live sessions stay (XEP-0257 disable)
    REVOKED = "revoked"  # final: every certificate revoked and every session closed


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device: what an owner names, lists, disables and revokes (XEP-0257 ``item``).

    A device holds one certificate, or a few while it rotates to a successor (docs/admin.md,
    "Rotation"); revoking the device revokes them all.
    """

    id: int
    account: JID  # bare JID of the owning account
    name: str
    state: DeviceState
    no_cert_management: bool
    added_by: str  # JID or "cli:<user>" of whoever enrolled it
    added_via: str  # "token", "xep-0257", "cli", "lan", ...
    added_at: dt.datetime
    revoked_reason: str | None = None
    state_changed_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """A certificate registered for a device, joined with that device."""

    id: int
    device: DeviceRecord
    fingerprint: str  # SHA-256 of the DER, 64 lowercase hex digits
    der: bytes
    subject_jids: tuple[str, ...]  # the xmppAddr values, as registered
    not_before: dt.datetime
    not_after: dt.datetime
    state: CertState  # this certificate's own state; DISABLED once a successor took over
    added_by: str
    added_via: str  # how this certificate came: "token", "xep-0257", "cli", "rotation", ...
    added_at: dt.datetime
    last_login_at: dt.datetime | None = None
    last_login_address: str | None = None
    revoked_reason: str | None = None
    state_changed_at: dt.datetime | None = None
    replaces: int | None = None  # the certificate this one rotated out

    @property
    def account(self) -> JID:
        return self.device.account

    @property
    def name(self) -> str:
        return self.device.name

    @property
    def no_cert_management(self) -> bool:
        return self.device.no_cert_management


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


@dataclass(frozen=True, slots=True)
class RotationFacts:
    """What the rotation policy needs to know when a device asks for a successor."""

    current: CertificateRecord  # the certificate of the session that asks
    last_rotation_at: dt.datetime | None  # when the device last registered a successor
    waiting: tuple[CertificateRecord, ...]  # successors that never logged in


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """What a handler reports after it changed the registry (``ServerContext.changes``), so
    the serve process brings the stock server in step (``server_ext.stock.base``).

    ``device`` is set when a device's state changed (revoked, disabled, enabled): a revoked
    device's live sessions are closed. Every change syncs the trust set.
    """

    reason: str
    device: int | None = None
