"""Whether a device certificate may be registered for an account, or used to log in.

One place for every certificate rule, so that XEP-0257 ``append``, rotation, ``server-ext
certs add``, token redemption and SASL EXTERNAL cannot drift apart. Pure: facts in
(:class:`~pairing.protocol.identity.PeerCertificate`, the clock's reading), and a
:class:`CertificateRefused` out when a rule is broken.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pairing.protocol.identity import KeyType, PeerCertificate
from pairing.protocol.jid import JID
from server_ext.errors import ServerExtError

#: RSA below 2048 bits has been disallowed for signatures since 2013 (NIST SP 800-131A).
MIN_RSA_BITS = 2048
#: The curves TLS 1.3 can sign with (RFC 8446 §4.2.3: ecdsa_secp256r1/384r1/521r1 only).
ACCEPTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_ADVICE = "use EC P-256, P-384 or P-521, Ed25519, or RSA of at least 2048 bits"


class Problem(StrEnum):
    """Which rule a certificate broke; callers map it to their protocol's condition."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    NO_CLIENT_AUTH = "no-client-auth"
    WEAK_KEY = "weak-key"
    CERTIFICATE_AUTHORITY = "certificate-authority"
    NO_JID = "no-jid"
    FOREIGN_JID = "foreign-jid"
    WRONG_JID = "wrong-jid"

    @property
    def about_identity(self) -> bool:
        """The certificate is sound but names the wrong JIDs."""
        return self in (Problem.NO_JID, Problem.FOREIGN_JID, Problem.WRONG_JID)


class CertificateRefused(ServerExtError):
    """The certificate breaks a rule; the message says which, for the person who sent it."""

    def __init__(self, problem: Problem, text: str) -> None:
        super().__init__(text)
        self.problem = problem
        self.text = text


def require_strong_key(cert: PeerCertificate) -> None:
    """Refuse keys that can be factored or forged; the one rule for device keys."""
    if cert.key_type is KeyType.RSA:
        if cert.key_bits < MIN_RSA_BITS:
            raise CertificateRefused(
                Problem.WEAK_KEY,
                f"weak key: RSA with {cert.key_bits} bits (at least {MIN_RSA_BITS} are required)",
            )
        return
    if cert.key_type is KeyType.EC:
        if cert.curve not in ACCEPTED_CURVES:
            raise CertificateRefused(
                Problem.WEAK_KEY, f"weak key: the EC curve {cert.curve} is refused; {_ADVICE}"
            )
        return
    if cert.key_type in (KeyType.ED25519, KeyType.ED448):
        return
    if cert.key_type is KeyType.DSA:
        # DSA is gone from TLS 1.3 (RFC 8446 §4.2.3) and from FIPS 186-5.
        raise CertificateRefused(Problem.WEAK_KEY, f"weak key: DSA is refused; {_ADVICE}")
    raise CertificateRefused(Problem.WEAK_KEY, f"weak key: its type is not supported; {_ADVICE}")


def require_usable(cert: PeerCertificate, now: dt.datetime) -> None:
    """Valid now, allowed for TLS client authentication, and with a strong key."""
    # XEP-0257 §2: expired certificates MUST be rejected (Prosody accepts them on upload);
    # so are certificates that are not valid yet.
    if cert.not_after <= now:
        raise CertificateRefused(Problem.EXPIRED, "the certificate has expired")
    if cert.not_before > now:
        raise CertificateRefused(Problem.NOT_YET_VALID, "the certificate is not valid yet")
    if cert.certificate_authority:
        # A device certificate is a leaf. On ejabberd every usable device certificate is a
        # trust anchor (c2s_cafile): a CA certificate there would let its key sign a
        # certificate for any account of the domain (docs/stock-servers.md), so no server
        # accepts one, at registration or at login.
        raise CertificateRefused(
            Problem.CERTIFICATE_AUTHORITY,
            "the certificate is a CA certificate (basicConstraints CA, keyCertSign or X.509 "
            "version 1); a device certificate must be a leaf",
        )
    if not cert.client_auth:
        raise CertificateRefused(
            Problem.NO_CLIENT_AUTH,
            "the certificate's extendedKeyUsage does not allow TLS client authentication",
        )
    require_strong_key(cert)


def require_registrable(
    cert: PeerCertificate, account: JID, now: dt.datetime, *, exactly: JID | None = None
) -> None:
    """May ``cert`` be registered for ``account`` now?

    Every xmppAddr must belong to the account (XEP-0178 §3); with ``exactly`` (a token's or a
    rotating device's full JID) the certificate must name that JID and nothing else, since it
    will be locked to that resource (XEP-0257 §2) and may not speak for another identity.
    """
    require_usable(cert, now)
    if exactly is not None:
        if cert.jids != (exactly,):
            named = ", ".join(str(j) for j in cert.jids) or "no JID"
            raise CertificateRefused(
                Problem.WRONG_JID, f"the certificate must name {exactly} alone, but names {named}"
            )
        return
    if not cert.jids:
        raise CertificateRefused(
            Problem.NO_JID, f"the certificate has no xmppAddr; it must name {account} (XEP-0178)"
        )
    foreign = [str(jid) for jid in cert.jids if jid.bare != account.bare]
    if foreign:
        raise CertificateRefused(
            Problem.FOREIGN_JID,
            f"the certificate names {', '.join(foreign)}, not only {account.bare}",
        )
