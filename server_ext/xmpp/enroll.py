"""Redeeming an enrollment token before SASL (docs/protocol.md, "Enrollment").

The certificate registered is the one the client proved possession of in *this* TLS
handshake, so a stolen token cannot enroll a different key.
"""

from __future__ import annotations

import datetime as dt
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from pairing.errors import CertificateError
from pairing.protocol.enrollment import ENROLL_NS, EnrollCondition
from pairing.protocol.identity import load_certificate
from server_ext.errors import (
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
    TokenRaceLost,
)
from server_ext.model import CertificateRecord
from server_ext.policy.tokens import TokenRefused, check_redemption, hash_token, well_formed
from server_ext.registry import Registry

log = logging.getLogger(__name__)

FEATURE = f"<enroll xmlns='{ENROLL_NS}'/>".encode()
ENROLL_TAG = f"{{{ENROLL_NS}}}enroll"


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """What to send back, and what happened (for throttling and audit)."""

    reply: bytes
    condition: EnrollCondition | None = None
    certificate: CertificateRecord | None = None


def failure(condition: EnrollCondition, text: str) -> EnrollResult:
    body = f"<{condition.value}/><text xml:lang='en'>{escape(text)}</text>"
    return EnrollResult(f"<failure xmlns='{ENROLL_NS}'>{body}</failure>".encode(), condition)


def redeem(
    element: ET.Element,
    *,
    peer_certificate_der: bytes | None,
    registry: Registry,
    address: str,
    now: dt.datetime,
) -> EnrollResult:
    """Check the token against the certificate and register it, atomically with the burn."""
    if element.tag != ENROLL_TAG:
        return failure(EnrollCondition.MALFORMED, "expected <enroll token='…'/>")
    token = element.get("token", "")
    if not well_formed(token):
        return failure(EnrollCondition.TOKEN_UNKNOWN, "this is not a token issued by this server")
    token_hash = hash_token(token)
    record = registry.token_by_hash(token_hash)
    try:
        cert = load_certificate(peer_certificate_der) if peer_certificate_der else None
    except CertificateError:
        cert = None
    try:
        check_redemption(record, cert, now)
    except TokenRefused as refused:
        if refused.condition is EnrollCondition.TOKEN_EXPIRED:
            registry.expire_tokens(now)
        return failure(refused.condition, refused.text)
    assert peer_certificate_der is not None and record is not None
    try:
        registered = registry.redeem_token(
            token_hash, peer_certificate_der, address=address, now=now
        )
    except TokenRaceLost:
        return failure(EnrollCondition.TOKEN_USED, "this token has already been used")
    except DuplicateName:
        return failure(
            EnrollCondition.NAME_CONFLICT,
            f"the account already has a device named {record.name!r}; "
            "ask for a token with another name",
        )
    except JIDInUse as exc:
        return failure(EnrollCondition.JID_IN_USE, str(exc))
    except DuplicateCertificate:
        return failure(
            EnrollCondition.ALREADY_REGISTERED,
            "this certificate is already registered; log in with it",
        )
    except RegistryError as exc:
        log.error("enrollment not stored: %s", exc)
        return failure(EnrollCondition.INTERNAL_ERROR, "the server cannot store it now; retry")
    reply = (
        f"<success xmlns='{ENROLL_NS}' jid={quoteattr(str(record.jid))} "
        f"name={quoteattr(registered.name)}/>"
    ).encode()
    return EnrollResult(reply, None, registered)
