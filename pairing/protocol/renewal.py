"""Renewing an expired device certificate before SASL (docs/protocol.md, "Renewal").

A device that was offline past its certificate's expiry cannot log in with EXTERNAL, so it
cannot register a successor the usual way (over its own session). Instead, like a token
redemption, it renews before SASL: it presents its *new* certificate in the TLS handshake
(which proves it holds the new key), and sends

.. code-block:: xml

    <renew xmlns='urn:xmpp-device-pairing:enroll:0'>
      <expired>BASE64 DER of the expired certificate</expired>
      <signature>BASE64 signature by the expired certificate's key</signature>
    </renew>

The signature covers :func:`renewal_message`: a fixed label, the server's domain and the
SHA-256 of the new certificate. So it proves the sender holds the *old* key, and it cannot be
replayed to register another key (the hash would differ) or at another server (the domain
would). The server answers with the enrollment exchange's ``<success/>`` or
``<failure><CONDITION/><text/></failure>``, conditions from :class:`RenewCondition`.

Pure: bytes and keys in, bytes or :class:`RenewalRefused` out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import UnsupportedAlgorithm

from pairing.errors import CertificateError, PairingError
from pairing.protocol.enrollment import ENROLL_NS
from pairing.protocol.identity import PeerCertificate, load_certificate
from pairing.protocol.proofs import InvalidProof, SigningKey, sign, verify

RENEW_NS = ENROLL_NS  # the same pre-authentication namespace as <enroll/>
#: The signed message starts with this, so a signature made for renewal means nothing else.
RENEWAL_LABEL = b"urn:xmpp-device-pairing:renew:0 signature"


class RenewCondition(StrEnum):
    """Why the server refused a renewal (the child of ``<failure/>``)."""

    MALFORMED = "malformed"  # not <renew> with <expired/> and <signature/> in base64
    BAD_SIGNATURE = "bad-signature"  # not signed by the expired certificate's key
    NOT_REGISTERED = "not-registered"  # the expired certificate is not registered here
    REVOKED = "revoked"  # its device was revoked: never renewable
    DISABLED = "disabled"  # its device is disabled, or the certificate was replaced already
    GRACE_EXPIRED = "grace-expired"  # it expired longer ago than the server allows
    BAD_CERTIFICATE = "bad-certificate"  # the new certificate (the TLS one) is refused
    JID_MISMATCH = "jid-mismatch"  # the new certificate names another JID than the old one
    ALREADY_REGISTERED = "already-registered"  # the new certificate is registered already
    RATE_LIMITED = "rate-limited"  # too many failures, or successors too often
    INTERNAL_ERROR = "internal-error"


class RenewalRefused(PairingError):
    """A renewal request is not acceptable; ``condition`` says why."""

    def __init__(self, condition: RenewCondition, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def renewal_message(domain: str, new_certificate_der: bytes) -> bytes:
    """What the expired key signs: the label, the (prepared) domain and the new DER's SHA-256.

    The digest has a fixed length and ends the message, and a domain holds no NUL, so no two
    (domain, certificate) pairs give the same bytes.
    """
    return (
        RENEWAL_LABEL
        + b"\x00"
        + domain.encode("utf-8")
        + b"\x00"
        + hashlib.sha256(new_certificate_der).digest()
    )


def sign_renewal(key: SigningKey, domain: str, new_certificate_der: bytes) -> bytes:
    """The device's signature over :func:`renewal_message` with its expiring key."""
    return sign(key, renewal_message(domain, new_certificate_der))


@dataclass(frozen=True, slots=True)
class RenewalRequest:
    """A ``<renew/>`` parsed once, where it enters: the expired certificate and the signature."""

    expired: PeerCertificate
    signature: bytes
    _public_key: object  # the expired certificate's key, kept from the single parse

    @classmethod
    def parse(cls, expired_der: bytes, signature: bytes) -> RenewalRequest:
        """Read the expired certificate; :class:`RenewalRefused` (malformed) if unreadable."""
        try:
            cert = load_certificate(expired_der)
            expired = PeerCertificate.from_x509(cert)
            key = cert.public_key()
        except (CertificateError, ValueError, UnsupportedAlgorithm) as exc:
            raise RenewalRefused(
                RenewCondition.MALFORMED, f"the expired certificate cannot be read: {exc}"
            ) from None
        return cls(expired, signature, key)

    def verify(self, domain: str, new_certificate_der: bytes) -> None:
        """Raise :class:`RenewalRefused` unless the expired key signed this very renewal."""
        try:
            verify(self._public_key, self.signature, renewal_message(domain, new_certificate_der))
        except InvalidProof:
            raise RenewalRefused(
                RenewCondition.BAD_SIGNATURE,
                "the signature is not by the expired certificate's key over this renewal "
                "(this server, the certificate presented in TLS)",
            ) from None

    def __repr__(self) -> str:
        return f"RenewalRequest({self.expired!r})"


__all__ = [
    "RENEWAL_LABEL",
    "RENEW_NS",
    "RenewCondition",
    "RenewalRefused",
    "RenewalRequest",
    "SigningKey",
    "renewal_message",
    "sign_renewal",
]
