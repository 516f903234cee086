"""One-time enrollment tokens: generation, hashing, lifetimes and the redemption rules.

Pure: the clock is passed in and nothing is stored here. The registry keeps only the SHA-256
of a token; the token itself exists in the issuer's reply and the QR code, nowhere else.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pairing.protocol.enrollment import EnrollCondition
from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from pairing.protocol.jid import JID
from server_ext.errors import ServerExtError
from server_ext.model import TokenRecord, TokenState
from server_ext.policy.certificates import CertificateRefused, require_registrable

TOKEN_BYTES = 20  # 160 bits from the CSPRNG, above the 128 the project requires
TOKEN_LENGTH = 32  # base32 characters, no padding: QR alphanumeric mode holds them


class TokenRefused(ServerExtError):
    """A token cannot be issued or redeemed; ``condition`` says why."""

    def __init__(self, condition: EnrollCondition, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


class TokenPolicyError(ServerExtError, ValueError):
    """A token request is outside the rules (lifetime, outstanding cap)."""


@dataclass(frozen=True, slots=True)
class TokenRules:
    """Lifetimes and caps, in the spirit of step-ca's one-time tokens (5 min, 10 s to 1 h)."""

    default_ttl: dt.timedelta = dt.timedelta(minutes=10)
    min_ttl: dt.timedelta = dt.timedelta(seconds=30)
    max_ttl: dt.timedelta = dt.timedelta(hours=1)
    max_outstanding: int = 10  # pending tokens per account

    def ttl(self, requested: dt.timedelta | None) -> dt.timedelta:
        """The lifetime to use, refusing one outside [min_ttl, max_ttl]."""
        ttl = requested if requested is not None else self.default_ttl
        if not self.min_ttl <= ttl <= self.max_ttl:
            raise TokenPolicyError(
                f"a token lives between {_human(self.min_ttl)} and {_human(self.max_ttl)}"
            )
        return ttl


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def generate_token() -> str:
    """A new token: 160 random bits as 32 upper-case base32 characters."""
    return base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").rstrip("=")


def hash_token(token: str) -> str:
    """What the registry stores and looks up: SHA-256 of the normalised token, hex.

    The lookup by hash is not constant-time, and need not be: timing can reveal at most
    a prefix of the hash of a 160-bit secret, which says nothing about the token.
    """
    return hashlib.sha256(token.strip().upper().encode("ascii", "replace")).hexdigest()


def well_formed(token: str) -> bool:
    text = token.strip().upper()
    return len(text) == TOKEN_LENGTH and all(c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in text)


def redeemed_by(record: TokenRecord, cert: PeerCertificate | None) -> bool:
    """Whether ``cert`` is the certificate that redeemed ``record`` (same SHA-256 of the DER)."""
    if cert is None or record.state is not TokenState.REDEEMED or not record.redeemed_fingerprint:
        return False
    return hmac.compare_digest(cert.fingerprint, record.redeemed_fingerprint)


def check_redemption(
    record: TokenRecord | None,
    presented: PeerCertificate | UnreadableCertificate | None,
    now: dt.datetime,
) -> JID:
    """The full JID to register the certificate for, or :class:`TokenRefused` with the reason."""
    cert = presented if isinstance(presented, PeerCertificate) else None
    if record is None:
        raise TokenRefused(EnrollCondition.TOKEN_UNKNOWN, "this token is not known to the server")
    if record.state is TokenState.REDEEMED:
        if redeemed_by(record, cert):
            # A retry by the very certificate that redeemed the token, whose first answer was
            # lost (docs/protocol.md, section 3). It proved possession of that key in this TLS
            # handshake, so it learns nothing new, and it logs in with what it already has.
            raise TokenRefused(
                EnrollCondition.ALREADY_REGISTERED,
                "this certificate redeemed this token already; log in with it",
            )
        raise TokenRefused(EnrollCondition.TOKEN_USED, "this token has already been used")
    if record.state is TokenState.CANCELLED:
        raise TokenRefused(EnrollCondition.TOKEN_CANCELLED, "this token was cancelled")
    if record.state is TokenState.EXPIRED or record.expires_at <= now:
        raise TokenRefused(
            EnrollCondition.TOKEN_EXPIRED, "this token has expired; ask for a new one"
        )
    if isinstance(presented, UnreadableCertificate):
        raise TokenRefused(EnrollCondition.BAD_CERTIFICATE, presented.reason)
    if cert is None:
        raise TokenRefused(
            EnrollCondition.BAD_CERTIFICATE, "present the device certificate in TLS to enroll"
        )
    target = record.jid
    try:
        require_registrable(cert, target.bare, now, exactly=target)
    except CertificateRefused as refused:
        condition = (
            EnrollCondition.JID_MISMATCH
            if refused.problem.about_identity
            else EnrollCondition.BAD_CERTIFICATE
        )
        raise TokenRefused(condition, f"the device certificate is refused: {refused}") from None
    return target
