"""Registering a certificate by ad-hoc command: XEP-0257 ``<append/>`` for stock servers.

ejabberd and Prosody have no working XEP-0257 (docs/stock-servers.md), so a user of theirs
registers a certificate through the component (``server_ext.net.component``): the ``pairing``
CLI its own at ``pairing login``, or a device's by hand (``pairing certs add``). The rules
are XEP-0257's, as ``app/saslcert.py`` applies them: a unique name per account (a duplicate
is an error, §3.1), every xmppAddr of the requester's account, valid now, a strong key, never
a CA certificate (``policy/certificates.require_registrable``).
"""

from __future__ import annotations

import base64
import binascii
import logging

from pairing.errors import CertificateError
from pairing.protocol.identity import PeerCertificate, format_fingerprint
from server_ext.app.adhoc import Command, Field
from server_ext.app.handlers import Requester, ServerContext
from server_ext.errors import (
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
)
from server_ext.model import DeviceState, RegistryChange
from server_ext.policy.certificates import CertificateRefused, require_registrable
from server_ext.wire.stanzas import ErrorType, StanzaError

log = logging.getLogger(__name__)

NODE_ADD = "urn:xmpp-device-pairing:certificates:add"
#: The largest certificate accepted, as the XEP-0257 handler (base64 of 16 KiB of DER).
_MAX_BASE64 = 22 * 1024
_YES = ("1", "true", "yes")


def _restricted(ctx: ServerContext, requester: Requester) -> bool:
    """The requester's full JID is a live device that may not manage certificates
    (XEP-0257 ``<no-cert-management/>``). The stock server does not tell which certificate a
    session used, so the device is recognised by the full JID it logs in as."""
    return any(
        device.no_cert_management and device.state is not DeviceState.REVOKED
        for device in ctx.registry.devices.for_jid(requester.jid)
    )


def _register(
    ctx: ServerContext, requester: Requester, values: dict[str, str]
) -> tuple[str, list[dict[str, str]]]:
    account = requester.jid.bare
    if _restricted(ctx, requester):
        raise StanzaError(
            ErrorType.AUTH, "forbidden", "this device may not manage certificates (XEP-0257 §2)"
        )
    name = values.get("name", "").strip()
    if not name:
        raise StanzaError(ErrorType.MODIFY, "bad-request", "give the certificate a name")
    text = "".join(values.get("certificate", "").split())
    if not text or len(text) > _MAX_BASE64:
        raise StanzaError(ErrorType.MODIFY, "bad-request", "certificate: base64 DER expected")
    try:
        cert = PeerCertificate.parse(base64.b64decode(text, validate=True))
    except (binascii.Error, CertificateError) as exc:
        raise StanzaError(
            ErrorType.MODIFY, "bad-request", f"certificate: not a certificate ({exc})"
        ) from None
    try:
        require_registrable(cert, account, ctx.clock())
    except CertificateRefused as exc:
        raise StanzaError(ErrorType.MODIFY, "not-acceptable", exc.text) from None
    try:
        record = ctx.registry.devices.add(
            account,
            name,
            cert,
            no_cert_management=values.get("no-cert-management", "").lower() in _YES,
            added_by=str(requester.jid),
            added_via="component",
        )
    except (DuplicateName, DuplicateCertificate, JIDInUse) as exc:
        # XEP-0257 §3.1: a duplicate name MUST be refused, never overwritten.
        raise StanzaError(ErrorType.CANCEL, "conflict", str(exc)) from None
    except RegistryError as exc:
        log.error("cannot register a certificate: %s", exc)
        raise StanzaError(
            ErrorType.WAIT, "resource-constraint", "the server cannot store it now; try later"
        ) from None
    ctx.changes(RegistryChange("certificate registered (component)"))
    return (
        f"Registered {name!r} for {account}: {format_fingerprint(cert.fingerprint)}.",
        [
            {
                "id": str(record.device.id),
                "name": record.name,
                "fingerprint": record.fingerprint,
                "jid": ", ".join(record.subject_jids),
            }
        ],
    )


COMMANDS = (
    Command(
        NODE_ADD,
        "Register a certificate",
        (
            Field("name", "Name (unique for your account)", required=True),
            Field("certificate", "Certificate (base64 DER, one line)", required=True),
            Field("no-cert-management", "It may not manage certificates", "boolean"),
        ),
        _register,
    ),
)
