"""Renewing an expired certificate before SASL (docs/protocol.md, "Renewal").

The certificate registered is the one the client proved possession of in *this* TLS
handshake; the signature in ``<renew/>`` proves it also holds the expired certificate's key,
and binds both to this server. Nothing is registered before every check has passed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from pairing.protocol.jid import JID
from pairing.protocol.renewal import RENEW_NS, RenewalRefused, RenewalRequest, RenewCondition
from server_ext.app.enroll import failure_element
from server_ext.errors import DuplicateCertificate, RegistryError
from server_ext.model import CertificateRecord, DeviceState, RotationFacts
from server_ext.policy.certificates import CertificateRefused, require_registrable
from server_ext.policy.renewal import check_renewal
from server_ext.policy.rotation import RotationRefused, check_successor
from server_ext.storage.registry import Registry
from server_ext.wire.namespaces import clark

log = logging.getLogger(__name__)

RENEW_TAG = clark(RENEW_NS, "renew")
_EXPIRED = clark(RENEW_NS, "expired")
_SIGNATURE = clark(RENEW_NS, "signature")
MAX_CERTIFICATE_BYTES = 16 * 1024
MAX_SIGNATURE_BYTES = 1024  # RSA-8192 signs in 1024 bytes; EC and EdDSA in far fewer


def feature() -> ET.Element:
    """The stream feature that says an expired certificate may be renewed here."""
    return ET.Element(RENEW_TAG)


@dataclass(frozen=True, slots=True)
class RenewalResult:
    """What to send back, and what happened (for throttling and audit)."""

    reply: ET.Element
    condition: RenewCondition | None = None
    certificate: CertificateRecord | None = None
    replaces: str | None = None  # the expired certificate's fingerprint, once it was known


def refused(condition: RenewCondition, text: str, replaces: str | None = None) -> RenewalResult:
    return RenewalResult(failure_element(condition.value, text), condition, None, replaces)


def renew(
    element: ET.Element,
    *,
    presented: PeerCertificate | UnreadableCertificate | None,
    registry: Registry,
    domain: str,
    address: str,
    grace: dt.timedelta,
    interval: dt.timedelta,
) -> RenewalResult:
    """Check a ``<renew/>`` and register the presented certificate as the successor."""
    try:
        request = _parse(element)
    except RenewalRefused as exc:
        return refused(exc.condition, exc.text)
    old_fingerprint = request.expired.fingerprint
    if not isinstance(presented, PeerCertificate):
        return refused(
            RenewCondition.BAD_CERTIFICATE,
            "present the new certificate in the TLS handshake",
            old_fingerprint,
        )
    try:
        jid, registered = register_successor(
            request,
            presented,
            registry=registry,
            domain=domain,
            address=address,
            grace=grace,
            interval=interval,
            where="in TLS",
        )
    except RenewalRefused as exc:
        return refused(exc.condition, exc.text, old_fingerprint)
    success = ET.Element(clark(RENEW_NS, "success"), {"jid": str(jid), "name": registered.name})
    return RenewalResult(success, None, registered, old_fingerprint)


def register_successor(
    request: RenewalRequest,
    presented: PeerCertificate,
    *,
    registry: Registry,
    domain: str,
    address: str,
    grace: dt.timedelta,
    interval: dt.timedelta,
    via: str = "renewal",
    where: str = "",
) -> tuple[JID, CertificateRecord]:
    """Register ``presented`` as the successor of ``request.expired`` (the certificate whose
    key signed the request), or raise :class:`RenewalRefused`. ``presented`` is a certificate
    whose key the caller has seen proved (in TLS, or by a signature over HTTPS).

    ``via`` is ``renewal`` (a valid or expired certificate within the grace period) or
    ``rotation`` (the HTTPS rotation: the current certificate must still be valid).
    """
    old_fingerprint = request.expired.fingerprint
    now = registry.clock()
    # The signature first: whoever lacks the old key learns nothing about the device.
    request.verify(domain, presented.der)
    old = registry.devices.by_fingerprint(old_fingerprint)
    existing = registry.devices.by_fingerprint(presented.fingerprint)
    if (
        old is not None
        and existing is not None
        and existing.replaces == old.id
        and existing.device.state is not DeviceState.REVOKED
    ):
        # A retry after a lost answer, signed by the old key for this very successor. Over
        # HTTPS the old certificate was retired already, so this is said before the old
        # certificate's own state is judged: the device then makes the successor current.
        raise RenewalRefused(
            RenewCondition.ALREADY_REGISTERED,
            "this certificate is already registered; log in with it",
        )
    jid = check_renewal(old, now=now, grace=grace)
    assert old is not None
    if via == "rotation" and old.not_after <= now:
        raise RenewalRefused(
            RenewCondition.BAD_CERTIFICATE,
            "the current certificate has expired: renew it instead of rotating",
        )
    if presented.fingerprint == old_fingerprint:
        raise RenewalRefused(
            RenewCondition.BAD_CERTIFICATE,
            f"present the new certificate{' ' + where if where else ''}, not the current one",
        )
    if registry.devices.by_fingerprint(presented.fingerprint) is not None:
        # A retry after a lost answer: the device logs in with it (the EXTERNAL decision then
        # says whether it may).
        raise RenewalRefused(
            RenewCondition.ALREADY_REGISTERED,
            "this certificate is already registered; log in with it",
        )
    try:
        require_registrable(presented, jid.bare, now, exactly=jid)
    except CertificateRefused as exc:
        condition = (
            RenewCondition.JID_MISMATCH
            if exc.problem.about_identity
            else RenewCondition.BAD_CERTIFICATE
        )
        raise RenewalRefused(condition, f"the new certificate is refused: {exc}") from None

    def allow(facts: RotationFacts) -> None:
        check_successor(facts, now=registry.clock(), interval=interval)

    try:
        registered = registry.devices.add_successor(
            old.fingerprint,
            presented,
            actor=str(jid),
            allow=allow,
            via=via,
            address=address,
        )
    except RotationRefused as exc:
        raise RenewalRefused(RenewCondition.RATE_LIMITED, str(exc)) from None
    except DuplicateCertificate:
        raise RenewalRefused(
            RenewCondition.ALREADY_REGISTERED,
            "this certificate is already registered; log in with it",
        ) from None
    except RegistryError as exc:
        log.error("renewal not stored: %s", exc)
        raise RenewalRefused(
            RenewCondition.INTERNAL_ERROR, "the server cannot store it now; retry"
        ) from None
    return jid, registered


def _parse(element: ET.Element) -> RenewalRequest:
    """The request, parsed once here at the boundary."""
    if element.tag != RENEW_TAG:
        raise RenewalRefused(RenewCondition.MALFORMED, "expected <renew/>")
    expired = _base64_child(element, _EXPIRED, "expired", MAX_CERTIFICATE_BYTES)
    signature = _base64_child(element, _SIGNATURE, "signature", MAX_SIGNATURE_BYTES)
    return RenewalRequest.parse(expired, signature)


def _base64_child(element: ET.Element, tag: str, what: str, limit: int) -> bytes:
    child = element.find(tag)
    text = "".join((child.text or "").split()) if child is not None else ""
    if not text:
        raise RenewalRefused(RenewCondition.MALFORMED, f"the <{what}/> element is required")
    if len(text) > limit * 4 // 3 + 4:
        raise RenewalRefused(RenewCondition.MALFORMED, f"<{what}/> is too large")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RenewalRefused(RenewCondition.MALFORMED, f"<{what}/> is not base64") from None
