"""Redeeming an enrollment token before SASL (docs/protocol.md, "Enrollment").

The certificate registered is the one the client proved possession of in *this* TLS
handshake, so a stolen token cannot enroll a different key.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pairing.protocol.enrollment import ENROLL_NS, EnrollCondition
from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from server_ext.errors import (
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
    TokenRaceLost,
)
from server_ext.model import CertificateRecord, TokenRecord
from server_ext.policy.tokens import TokenRefused, check_redemption, hash_token, well_formed
from server_ext.storage.registry import Registry
from server_ext.wire.namespaces import clark

log = logging.getLogger(__name__)

ENROLL_TAG = clark(ENROLL_NS, "enroll")


def feature() -> ET.Element:
    """The stream feature that says a token may be redeemed here (before SASL)."""
    return ET.Element(ENROLL_TAG)


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """What to send back, and what happened (for throttling and audit)."""

    reply: ET.Element
    condition: EnrollCondition | None = None
    certificate: CertificateRecord | None = None


def failure_element(condition: str, text: str) -> ET.Element:
    """``<failure><CONDITION/><text/></failure>``, for redemption and renewal alike."""
    element = ET.Element(clark(ENROLL_NS, "failure"))
    ET.SubElement(element, clark(ENROLL_NS, condition))
    ET.SubElement(element, clark(ENROLL_NS, "text")).text = text
    return element


def failure(condition: EnrollCondition, text: str) -> EnrollResult:
    return EnrollResult(failure_element(condition.value, text), condition)


def redeem(
    element: ET.Element,
    *,
    presented: PeerCertificate | UnreadableCertificate | None,
    registry: Registry,
    address: str,
) -> EnrollResult:
    """Check the token against the certificate and register it, atomically with the burn."""
    if element.tag != ENROLL_TAG:
        return failure(EnrollCondition.MALFORMED, "expected <enroll token='…'/>")
    try:
        record, registered = redeem_token(
            element.get("token", ""), presented, registry=registry, address=address
        )
    except TokenRefused as refused:
        return failure(refused.condition, refused.text)
    success = ET.Element(
        clark(ENROLL_NS, "success"), {"jid": str(record.jid), "name": registered.name}
    )
    return EnrollResult(success, None, registered)


def redeem_token(
    token: str,
    presented: PeerCertificate | UnreadableCertificate | None,
    *,
    registry: Registry,
    address: str,
) -> tuple[TokenRecord, CertificateRecord]:
    """Burn ``token`` and register ``presented`` for its full JID in one transaction, or raise
    :class:`TokenRefused`. The caller has seen ``presented``'s key proved (TLS or signature).
    Shared by the pre-SASL ``<enroll/>`` and the HTTPS enrollment."""
    if not well_formed(token):
        raise TokenRefused(
            EnrollCondition.TOKEN_UNKNOWN, "this is not a token issued by this server"
        )
    token_hash = hash_token(token)
    record = registry.tokens.by_hash(token_hash)
    try:
        check_redemption(record, presented, registry.clock())
    except TokenRefused as refused:
        if refused.condition is EnrollCondition.TOKEN_EXPIRED:
            registry.tokens.expire()
        raise
    assert isinstance(presented, PeerCertificate) and record is not None
    try:
        registered = registry.tokens.redeem(token_hash, presented, address=address)
    except TokenRaceLost:
        raise TokenRefused(EnrollCondition.TOKEN_USED, "this token has already been used") from None
    except DuplicateName:
        # Only a device that is not revoked keeps its name (a revoked one gives it up). The
        # device cannot change the token's name: the client tells the owner what to do.
        raise TokenRefused(
            EnrollCondition.NAME_CONFLICT,
            f"the account already has a device named {record.name!r} that is not revoked",
        ) from None
    except JIDInUse as exc:
        raise TokenRefused(EnrollCondition.JID_IN_USE, str(exc)) from None
    except DuplicateCertificate:
        raise TokenRefused(
            EnrollCondition.ALREADY_REGISTERED,
            "this certificate is already registered; log in with it",
        ) from None
    except RegistryError as exc:
        log.error("enrollment not stored: %s", exc)
        raise TokenRefused(
            EnrollCondition.INTERNAL_ERROR, "the server cannot store it now; retry"
        ) from None
    return record, registered
