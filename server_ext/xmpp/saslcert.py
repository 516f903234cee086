"""XEP-0257 (``urn:xmpp:saslcert:1``) on the server: append, items, disable, revoke.

Where Prosody's ``mod_client_certs`` is lax (see docs/server.md), this module refuses: a
duplicate name is a ``conflict``, expired or foreign certificates are ``not-acceptable``,
unknown names are ``item-not-found``, and ``no-cert-management`` is enforced.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import xml.etree.ElementTree as ET

from cryptography import x509

from pairing.errors import CertificateError
from pairing.protocol.identity import (
    allows_client_auth,
    load_certificate,
    require_strong_key,
    xmpp_addrs,
)
from pairing.protocol.jid import JID
from server_ext.errors import (
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
    RotationRefused,
)
from server_ext.model import DeviceRecord, DeviceState
from server_ext.xmpp import namespaces as ns
from server_ext.xmpp.handlers import Requester, ServerContext
from server_ext.xmpp.router import Session
from server_ext.xmpp.stanzas import ErrorType, StanzaError, local_name

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
    if action == "append" and iq_type == "set" and requester.fingerprint is not None:
        rotated = _rotation(ctx, requester, payload)
        if rotated:
            return None
    _refuse_restricted_session(ctx, requester)
    if action == "items" and iq_type == "get":
        return _items(ctx, requester)
    if iq_type == "set":
        if action == "append":
            _append(ctx, requester, payload)
            return None
        if action in ("disable", "revoke"):
            _change_state(ctx, requester, payload, action)
            return None
    raise StanzaError(ErrorType.CANCEL, "bad-request", f"unknown XEP-0257 request {action!r}")


def _rotation(ctx: ServerContext, requester: Requester, payload: ET.Element) -> bool:
    """A device registering its own successor certificate (docs/admin.md, "Rotation").

    Allowed even under no-cert-management, but only for a certificate that names exactly this
    session's full JID: a device can renew itself and nothing else.
    """
    encoded = "".join((payload.findtext(_CERT) or "").split())
    try:
        der = base64.b64decode(encoded, validate=True)
        cert = load_certificate(der)
        jids = xmpp_addrs(cert)
    except (binascii.Error, ValueError, CertificateError):
        return False
    if jids != (requester.jid,):
        return False
    assert requester.fingerprint is not None
    current = ctx.registry.certificate_by_fingerprint(requester.fingerprint)
    if current is None or current.subject_jids != (str(requester.jid),):
        # Only a device locked to this resource renews itself this way; anything else is an
        # ordinary append, with the ordinary rules.
        return False
    problem = validate_for_account(cert, requester.jid.bare, ctx.clock(), jids=jids)
    if problem:
        raise StanzaError(ErrorType.MODIFY, "not-acceptable", problem)
    try:
        ctx.registry.rotate_certificate(
            requester.fingerprint,
            der,
            actor=str(requester.jid),
            min_interval=ctx.rotation_interval,
            now=ctx.clock(),
        )
    except RotationRefused as exc:
        # A device that asks again and again is refused (and audited by the registry), as
        # XEP-0205 §3 suggests for a throttled request: <resource-constraint/>, type wait.
        raise StanzaError(ErrorType.WAIT, "resource-constraint", str(exc)) from None
    except DuplicateCertificate:
        raise StanzaError(
            ErrorType.CANCEL, "conflict", "this certificate is already registered"
        ) from None
    except RegistryError as exc:
        raise StanzaError(ErrorType.CANCEL, "not-allowed", str(exc)) from None
    return True


def _refuse_restricted_session(ctx: ServerContext, requester: Requester) -> None:
    # XEP-0257 §3.1: a client that logged in with a certificate appended with
    # <no-cert-management/> must not manage certificates. Prosody never enforces this.
    if requester.fingerprint is None:
        return
    record = ctx.registry.certificate_by_fingerprint(requester.fingerprint)
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
    for device in registry.list_devices(account):
        if device.state is DeviceState.REVOKED:
            continue
        current = registry.current_certificate(device.id)
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


def _append(ctx: ServerContext, requester: Requester, payload: ET.Element) -> None:
    account = requester.jid.bare
    name = _text_of(payload, _NAME, "name")
    if len(name) > MAX_NAME_LENGTH:
        raise StanzaError(ErrorType.MODIFY, "bad-request", "the name is longer than 1023 chars")
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
        cert = load_certificate(der)
        jids = xmpp_addrs(cert)
    except CertificateError as exc:
        raise StanzaError(ErrorType.MODIFY, "bad-request", str(exc)) from None
    now = ctx.clock()
    problem = validate_for_account(cert, account, now, jids=jids)
    if problem:
        raise StanzaError(ErrorType.MODIFY, "not-acceptable", problem)
    try:
        ctx.registry.add_certificate(
            account,
            name,
            der,
            no_cert_management=payload.find(_NO_MANAGEMENT) is not None,
            added_by=str(requester.jid),
            added_via="xep-0257",
            now=now,
        )
    except DuplicateName:
        raise StanzaError(
            ErrorType.CANCEL,
            "conflict",
            f"a certificate named {name!r} already exists (names stay taken after revocation)",
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


def validate_for_account(
    cert: x509.Certificate,
    account: JID,
    now: dt.datetime,
    *,
    jids: tuple[JID, ...] | None = None,
) -> str | None:
    """Why ``cert`` cannot be registered for ``account`` now, or None if it can."""
    if jids is None:
        try:
            jids = xmpp_addrs(cert)
        except CertificateError as exc:
            return str(exc)
    # XEP-0257 §2: expired certificates MUST be rejected (Prosody accepts them on upload).
    if cert.not_valid_after_utc <= now:
        return "the certificate has expired"
    if cert.not_valid_before_utc > now:
        return "the certificate is not valid yet"
    if not allows_client_auth(cert):
        return "the certificate's extendedKeyUsage does not allow TLS client authentication"
    try:
        require_strong_key(cert)
    except CertificateError as exc:
        return str(exc)
    if not jids:
        return f"the certificate has no xmppAddr; it must name {account} (XEP-0178)"
    foreign = [str(jid) for jid in jids if jid.bare != account]
    if foreign:
        return f"the certificate names {', '.join(foreign)}, not only {account}"
    return None


def _change_state(
    ctx: ServerContext, requester: Requester, payload: ET.Element, action: str
) -> None:
    account = requester.jid.bare
    name = _text_of(payload, _NAME, "name")
    device = ctx.registry.device_by_name(account, name)
    if device is None or device.state is DeviceState.REVOKED:
        # Prosody answers success for unknown names; the client deserves to know.
        raise StanzaError(ErrorType.CANCEL, "item-not-found", f"no certificate named {name!r}")
    state = DeviceState.REVOKED if action == "revoke" else DeviceState.DISABLED
    try:
        updated, _ = ctx.registry.set_device_state(
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


def device_sessions(ctx: ServerContext, device: DeviceRecord) -> list[Session]:
    """Live sessions that logged in with any certificate of ``device``."""
    return [
        session
        for record in ctx.registry.device_certificates(device.id)
        for session in ctx.sessions.with_certificate(record.fingerprint)
    ]


def close_device_sessions(ctx: ServerContext, device: DeviceRecord) -> int:
    """End every live session of a revoked device (XEP-0257 §3.4 revoke)."""
    sessions = device_sessions(ctx, device)
    reason = device.revoked_reason or "no reason given"
    for session in sessions:
        # RFC 6120 §4.9.3.16 and §13.7.2.3: <reset/> is the condition for a certificate that
        # was revoked during the life of the stream.
        session.terminate("reset", f"the device {device.name!r} was revoked: {reason}")
    return len(sessions)
