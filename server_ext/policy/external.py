"""The SASL EXTERNAL decision (XEP-0178 §3, XEP-0257 §2): pure, with the clock injected."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pairing.errors import CertificateError, InvalidJID
from pairing.protocol.identity import (
    allows_client_auth,
    load_certificate,
    require_strong_key,
    xmpp_addrs,
)
from pairing.protocol.jid import JID
from server_ext.model import CertificateRecord, CertState, DeviceState
from server_ext.sasl.mechanism import SASLCondition


@dataclass(frozen=True, slots=True)
class ExternalAccepted:
    identity: JID  # the bare JID of the account
    locked_resource: str | None
    fingerprint: str
    certificate: CertificateRecord


@dataclass(frozen=True, slots=True)
class ExternalRejected:
    condition: SASLCondition
    text: str
    account: JID | None = None


ExternalDecision = ExternalAccepted | ExternalRejected


def decide_external(
    *,
    peer_certificate_der: bytes | None,
    authzid: str,
    domain: str,
    registered: CertificateRecord | None,
    now: dt.datetime,
) -> ExternalDecision:
    """Accept or refuse an EXTERNAL login; ``registered`` is the registry row for the DER."""
    not_authorized = SASLCondition.NOT_AUTHORIZED
    if peer_certificate_der is None:
        return ExternalRejected(not_authorized, "no client certificate was presented in TLS")
    try:
        cert = load_certificate(peer_certificate_der)
        jids = [jid for jid in xmpp_addrs(cert) if jid.domain == domain and jid.local]
    except CertificateError as exc:
        return ExternalRejected(not_authorized, f"the client certificate is unusable: {exc}")
    # XEP-0257 §2: expired certificates MUST be rejected; so are not-yet-valid ones.
    if cert.not_valid_after_utc <= now:
        return ExternalRejected(not_authorized, "the client certificate has expired")
    if cert.not_valid_before_utc > now:
        return ExternalRejected(not_authorized, "the client certificate is not valid yet")
    if not allows_client_auth(cert):
        return ExternalRejected(
            not_authorized, "the certificate's extendedKeyUsage excludes TLS client auth"
        )
    try:
        require_strong_key(cert)
    except CertificateError as exc:
        return ExternalRejected(not_authorized, f"the client certificate is refused: {exc}")
    if not jids:
        return ExternalRejected(
            not_authorized, f"the certificate has no xmppAddr for {domain} (XEP-0178 §3)"
        )
    chosen = _choose(jids, authzid)
    if isinstance(chosen, ExternalRejected):
        return chosen
    account = chosen.bare
    if registered is None:
        return ExternalRejected(
            not_authorized, "this certificate is not registered for any account", account
        )
    device = registered.device
    if device.state is DeviceState.REVOKED:
        # Every certificate of a revoked device is refused, whichever of its rotation chain.
        reason = device.revoked_reason or "no reason given"
        return ExternalRejected(not_authorized, f"this device was revoked: {reason}", account)
    if registered.state is CertState.REVOKED:
        reason = registered.revoked_reason or "no reason given"
        return ExternalRejected(not_authorized, f"this certificate was revoked: {reason}", account)
    if device.state is DeviceState.DISABLED:
        return ExternalRejected(not_authorized, "this device was disabled", account)
    if registered.state is not CertState.ACTIVE:
        return ExternalRejected(
            not_authorized,
            "this certificate was disabled: a newer certificate of this device replaced it",
            account,
        )
    if registered.account != account:
        return ExternalRejected(
            not_authorized, f"this certificate is not registered for {account}", account
        )
    return ExternalAccepted(
        identity=account,
        locked_resource=chosen.resource or None,
        fingerprint=registered.fingerprint,
        certificate=registered,
    )


def _choose(jids: list[JID], authzid: str) -> JID | ExternalRejected:
    if not authzid:
        # XEP-0178 §3: with several xmppAddrs the client MUST say which one it wants.
        if len(jids) > 1:
            return ExternalRejected(
                SASLCondition.INVALID_AUTHZID,
                "the certificate names several JIDs; send the one to log in as as authzid",
            )
        return jids[0]
    try:
        wanted = JID.parse(authzid)
    except InvalidJID:
        return ExternalRejected(SASLCondition.INVALID_AUTHZID, "the authzid is not a JID")
    if wanted in jids:
        return wanted
    if wanted.is_bare:
        # Conversations, Gajim and libstrophe send the bare JID even when the certificate
        # carries a full one; the resource lock then still applies.
        matches = [jid for jid in jids if jid.bare == wanted]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            return ExternalRejected(
                SASLCondition.INVALID_AUTHZID,
                "the certificate names several resources of that account; send a full JID",
            )
    # Never another account: ejabberd 23.01 logs in as whatever the authzid names.
    return ExternalRejected(
        SASLCondition.INVALID_AUTHZID, "the authzid is not one of the certificate's JIDs"
    )
