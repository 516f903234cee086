"""The pre-authentication token redemption exchange (docs/protocol.md, "Enrollment").

After TLS and before SASL, when the client presented a certificate, the server advertises
``<enroll xmlns='urn:xmpp-device-pairing:enroll:0'/>`` among the stream features. The device
sends ``<enroll token='…'/>``; the server registers *the certificate of this TLS handshake*
and answers ``<success/>`` or ``<failure><CONDITION/><text>…</text></failure>``. The device
then logs in with EXTERNAL on the same stream.
"""

from __future__ import annotations

from enum import StrEnum

ENROLL_NS = "urn:xmpp-device-pairing:enroll:0"


class EnrollCondition(StrEnum):
    """Why a redemption failed; the first four are the token's own failures."""

    TOKEN_UNKNOWN = "token-unknown"
    TOKEN_EXPIRED = "token-expired"
    TOKEN_USED = "token-used"
    TOKEN_CANCELLED = "token-cancelled"
    JID_MISMATCH = "jid-mismatch"  # the certificate's xmppAddr is not the token's full JID
    BAD_CERTIFICATE = "bad-certificate"  # none presented, expired, or not for client auth
    NAME_CONFLICT = "name-conflict"  # the device name is taken on the account
    JID_IN_USE = "jid-in-use"  # another device that is not revoked logs in as that JID
    ALREADY_REGISTERED = "already-registered"  # this certificate is registered already
    RATE_LIMITED = "rate-limited"
    MALFORMED = "malformed"
    INTERNAL_ERROR = "internal-error"

    @property
    def burns_token(self) -> bool:
        """Only a failure of the token itself leaves it unusable; others leave it unburned."""
        return self in (
            EnrollCondition.TOKEN_UNKNOWN,
            EnrollCondition.TOKEN_EXPIRED,
            EnrollCondition.TOKEN_USED,
            EnrollCondition.TOKEN_CANCELLED,
        )
