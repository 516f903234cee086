"""XEP-0257 (``urn:xmpp:saslcert:1``) on the server: append, items, disable, revoke.

Where Prosody's ``mod_client_certs`` is lax (see docs/server.md), this module refuses: a
duplicate name is a ``conflict``, expired or foreign certificates are ``not-acceptable``,
unknown names are ``item-not-found``, and ``no-cert-management`` is enforced.
"""

from __future__ import annotations

import base64
import binascii
import logging
import xml.etree.ElementTree as ET

from pairing.errors import CertificateError
from pairing.protocol.conditions import device_revoked
from pairing.protocol.identity import PeerCertificate
from server_ext.app.handlers import Requester, ServerContext
from server_ext.app.router import Session
from server_ext.errors import (
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
)
from server_ext.model import DeviceRecord, DeviceState, RegistryChange, RotationFacts
from server_ext.policy.certificates import CertificateRefused, require_registrable
from server_ext.policy.rotation import RotationRefused, check_successor
from server_ext.wire import namespaces as ns
from server_ext.wire.stanzas import ErrorType, StanzaError, local_name

log = logging.getLogger(__name__)

_NAME = ns.clark(ns.SASLCERT, "name")
_CERT = ns.clark(ns.SASLCERT, "x509cert")
_NO_MANAGEMENT = ns.clark(ns.SASLCERT, "no-cert-management")
MAX_NAME_LENGTH = 1023
MAX_CERTIFICATE_BYTES = 16 * 1024


def handle(ctx: ServerContext, requester: Requester, iq: ET.Element) -> ET.Element | None:
    """Answer one XEP-0257 IQ from ``requester`` (TLS and authentication are given)."""
    payload = iq[0]
    action = local_name(payload)
    iq_type = iq.get("type")
    if action == "append" and iq_type == "set":
        name = _name_in(payload)
        cert = _certificate_in(payload)
        if _is_rotation(ctx, requester, cert):
            _rotate(ctx, requester, cert)
            return None
        _refuse_restricted_session(ctx, requester)
        _append(ctx, requester, payload, name, cert)
        return None
    _refuse_restricted_session(ctx, requester)
    if action == "items" and iq_type == "get":
        return _items(ctx, requester)
    if iq_type == "set" and action in ("disable", "revoke"):
        _change_state(ctx, requester, payload, action)
        return None
    raise StanzaError(ErrorType.CANCEL, "bad-request", f"unknown XEP-0257 request {action!r}")


def _name_in(payload: ET.Element) -> str:
    name = _text_of(payload, _NAME, "name")
    if len(name) > MAX_NAME_LENGTH:
        raise StanzaError(ErrorType.MODIFY, "bad-request", "the name is longer than 1023 chars")
    return name


def _certificate_in(payload: ET.Element) -> PeerCertificate:
    """The ``<x509cert/>`` of an append, parsed once, here at the boundary."""
    encoded = "".join(_text_of(payload, _CERT, "x509cert").split())
    if len(encoded) > MAX_CERTIFICATE_BYTES * 4 // 3 + 4:
        raise StanzaError(ErrorType.MODIFY, "not-acceptable", "the certificate is too large")
    try:
        der = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise StanzaError(
            ErrorType.MODIFY, "bad-request", "<x509cert/> is not valid base64 DER"
        ) from None
    try:
        return PeerCertificate.parse(der)
    except CertificateError as exc:
        raise StanzaError(ErrorType.MODIFY, "bad-request", str(exc)) from None


def _is_rotation(ctx: ServerContext, requester: Requester, cert: PeerCertificate) -> bool:
    """A device registering its own successor (docs/admin.md, "Rotation"): over its own
    EXTERNAL session, for a certificate naming exactly that session's full JID, from a device
    locked to that resource. Anything else is an ordinary append, with the ordinary rules."""
    if requester.fingerprint is None or cert.jids != (requester.jid,):
        return False
    current = ctx.registry.devices.by_fingerprint(requester.fingerprint)
    return current is not None and current.subject_jids == (str(requester.jid),)


def _rotate(ctx: ServerContext, requester: Requester, cert: PeerCertificate) -> None:
    """Allowed even under no-cert-management: a device can renew itself and nothing else."""
    assert requester.fingerprint is not None
    try:
        require_registrable(cert, requester.jid.bare, ctx.clock(), exactly=requester.jid)
    except CertificateRefused as exc:
        raise StanzaError(ErrorType.MODIFY, "not-acceptable", str(exc)) from None

    def allow(facts: RotationFacts) -> None:
        check_successor(facts, now=ctx.clock(), interval=ctx.rotation_interval)

    try:
        ctx.registry.devices.add_successor(
            requester.fingerprint, cert, actor=str(requester.jid), allow=allow
        )
    except RotationRefused as exc:
        # A device that asks again and again is refused and audited, with the answer XEP-0205
        # §3 suggests for a throttled request: <resource-constraint/>, type wait.
        ctx.audit(
            "cert.rotation_refused",
            actor=str(requester.jid),
            subject=requester.fingerprint,
            address=requester.address,
            reason=str(exc),
        )
        raise StanzaError(ErrorType.WAIT, "resource-constraint", str(exc)) from None
    except DuplicateCertificate:
        raise StanzaError(
            ErrorType.CANCEL, "conflict", "this certificate is already registered"
        ) from None
    except RegistryError as exc:
        raise StanzaError(ErrorType.CANCEL, "not-allowed", str(exc)) from None
    ctx.changes(RegistryChange("rotation (XEP-0257)"))


def _refuse_restricted_session(ctx: ServerContext, requester: Requester) -> None:
    # XEP-0257 §3.1: a client that logged in with a certificate appended with
    # <no-cert-management/> must not manage certificates. Prosody never enforces this.
    if requester.fingerprint is None:
        return
    record = ctx.registry.devices.by_fingerprint(requester.fingerprint)
    if record is not None and record.no_cert_management:
        raise StanzaError(
            ErrorType.AUTH,
            "forbidden",
            "this session logged in with a certificate that may not manage certificates",
        )


def _items(ctx: ServerContext, requester: Requester) -> ET.Element:
    """One item per device that is not revoked, with its current certificate."""
    account = requester.jid.bare
    items = ET.Element(ns.clark(ns.SASLCERT, "items"))
    registry = ctx.registry
    for device in registry.devices.all(account):
        if device.state is DeviceState.REVOKED:
            continue
        current = registry.devices.current(device.id)
        if current is None:  # pragma: no cover - a device is created with its certificate
            continue
        item = ET.SubElement(items, ns.clark(ns.SASLCERT, "item"))
        ET.SubElement(item, _NAME).text = device.name
        ET.SubElement(item, _CERT).text = base64.b64encode(current.der).decode()
        online = device_sessions(ctx, device)
        if online:
            # XEP-0257 §3.2: <users/> lists the resources logged in with this certificate;
            # during a rotation that may be either certificate of the device.
            users = ET.SubElement(item, ns.clark(ns.SASLCERT, "users"))
            for session in online:
                ET.SubElement(users, ns.clark(ns.SASLCERT, "resource")).text = session.jid.resource
    return items


def _text_of(payload: ET.Element, tag: str, what: str) -> str:
    el = payload.find(tag)
    text = (el.text or "").strip() if el is not None else ""
    if not text:
        raise StanzaError(ErrorType.MODIFY, "bad-request", f"the <{what}/> element is required")
    return text


def _append(
    ctx: ServerContext,
    requester: Requester,
    payload: ET.Element,
    name: str,
    cert: PeerCertificate,
) -> None:
    account = requester.jid.bare
    try:
        require_registrable(cert, account, ctx.clock())
    except CertificateRefused as exc:
        raise StanzaError(ErrorType.MODIFY, "not-acceptable", str(exc)) from None
    try:
        ctx.registry.devices.add(
            account,
            name,
            cert,
            no_cert_management=payload.find(_NO_MANAGEMENT) is not None,
            added_by=str(requester.jid),
            added_via="xep-0257",
        )
    except DuplicateName:
        raise StanzaError(
            ErrorType.CANCEL,
            "conflict",
            f"a certificate named {name!r} already exists (revoke it to free the name)",
        ) from None
    except DuplicateCertificate:
        raise StanzaError(
            ErrorType.CANCEL, "conflict", "this certificate is already registered"
        ) from None
    except JIDInUse as exc:
        raise StanzaError(ErrorType.CANCEL, "conflict", str(exc)) from None
    except RegistryError as exc:
        log.error("cannot store certificate: %s", exc)
        raise StanzaError(
            ErrorType.WAIT, "resource-constraint", "the server cannot store it now; try later"
        ) from None
    ctx.changes(RegistryChange("certificate appended (XEP-0257)"))


def _change_state(
    ctx: ServerContext, requester: Requester, payload: ET.Element, action: str
) -> None:
    account = requester.jid.bare
    name = _text_of(payload, _NAME, "name")
    device = ctx.registry.devices.by_name(account, name)
    if device is None or device.state is DeviceState.REVOKED:
        # Prosody answers success for unknown names; the client deserves to know.
        raise StanzaError(ErrorType.CANCEL, "item-not-found", f"no certificate named {name!r}")
    state = DeviceState.REVOKED if action == "revoke" else DeviceState.DISABLED
    try:
        updated, _ = ctx.registry.devices.set_state(
            device.id,
            state,
            actor=str(requester.jid),
            reason=f"by {requester.jid} (XEP-0257 {action})",
        )
    except RegistryError as exc:
        log.error("cannot change device state: %s", exc)
        raise StanzaError(
            ErrorType.WAIT, "resource-constraint", "the server cannot store it now; try later"
        ) from None
    if state is DeviceState.REVOKED:
        # XEP-0257 §3.4: the server SHOULD close the streams using it; here, those of every
        # certificate of the device's rotation chain.
        close_device_sessions(ctx, updated)
    ctx.changes(RegistryChange(f"XEP-0257 {action}", updated.id))


def device_sessions(ctx: ServerContext, device: DeviceRecord) -> list[Session]:
    """Live sessions that logged in with any certificate of ``device``."""
    return [
        session
        for record in ctx.registry.devices.chain(device.id)
        for session in ctx.sessions.with_certificate(record.fingerprint)
    ]


def close_device_sessions(ctx: ServerContext, device: DeviceRecord) -> int:
    """End every live session of a revoked device (XEP-0257 §3.4 revoke)."""
    sessions = device_sessions(ctx, device)
    reason = device.revoked_reason or "no reason given"
    for session in sessions:
        # RFC 6120 §4.9.3.16 and §13.7.2.3: <reset/> is the condition for a certificate that
        # was revoked during the life of the stream.
        session.terminate(
            "reset", f"the device {device.name!r} was revoked: {reason}", device_revoked()
        )
    return len(sessions)
