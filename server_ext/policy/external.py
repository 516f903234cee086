"""The SASL EXTERNAL decision (XEP-0178 §3, XEP-0257 §2): pure, with the clock injected."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pairing.errors import InvalidJID
from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from pairing.protocol.jid import JID
from server_ext.errors import ServerExtError
from server_ext.model import CertificateRecord, CertState, DeviceState
from server_ext.policy.certificates import CertificateRefused, require_usable
from server_ext.wire.conditions import SASLCondition


@dataclass(frozen=True, slots=True)
class ExternalAccepted:
    identity: JID  # the bare JID of the account
    locked_resource: str | None
    certificate: CertificateRecord


class ExternalRefused(ServerExtError):
    """The login is refused; ``text`` says which rule, ``account`` whom it tried to be."""

    def __init__(
        self,
        condition: SASLCondition,
        text: str,
        account: JID | None = None,
        *,
        device_revoked: bool = False,
    ) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text
        self.account = account
        #: The certificate belongs to a revoked device: it will never log in again.
        self.device_revoked = device_revoked


def decide_external(
    *,
    presented: PeerCertificate | UnreadableCertificate | None,
    authzid: str,
    domain: str,
    registered: CertificateRecord | None,
    now: dt.datetime,
) -> ExternalAccepted:
    """Accept an EXTERNAL login or raise :class:`ExternalRefused`.

    ``presented`` is what the client proved possession of in this TLS handshake, and
    ``registered`` the registry's row for its fingerprint.
    """
    refused = SASLCondition.NOT_AUTHORIZED
    if presented is None:
        raise ExternalRefused(refused, "no client certificate was presented in TLS")
    if isinstance(presented, UnreadableCertificate):
        raise ExternalRefused(refused, f"the client certificate is unusable: {presented.reason}")
    try:
        require_usable(presented, now)
    except CertificateRefused as exc:
        raise ExternalRefused(refused, f"the client certificate is refused: {exc}") from None
    jids = [jid for jid in presented.jids if jid.domain == domain and jid.local]
    if not jids:
        raise ExternalRefused(
            refused, f"the certificate has no xmppAddr for {domain} (XEP-0178 §3)"
        )
    chosen = _choose(jids, authzid)
    account = chosen.bare
    if registered is None:
        raise ExternalRefused(
            refused, "this certificate is not registered for any account", account
        )
    device = registered.device
    if device.state is DeviceState.REVOKED:
        # Every certificate of a revoked device is refused, whichever of its rotation chain.
        reason = device.revoked_reason or "no reason given"
        raise ExternalRefused(
            refused, f"this device was revoked: {reason}", account, device_revoked=True
        )
    if registered.state is CertState.REVOKED:
        reason = registered.revoked_reason or "no reason given"
        # Only this certificate (a successor superseded before its first use), not the device.
        raise ExternalRefused(refused, f"this certificate was revoked: {reason}", account)
    if device.state is DeviceState.DISABLED:
        raise ExternalRefused(refused, "this device was disabled", account)
    if registered.state is not CertState.ACTIVE:
        raise ExternalRefused(
            refused,
            "this certificate was disabled: a newer certificate of this device replaced it",
            account,
        )
    if registered.account != account:
        raise ExternalRefused(refused, f"this certificate is not registered for {account}", account)
    return ExternalAccepted(
        identity=account, locked_resource=chosen.resource or None, certificate=registered
    )


def _choose(jids: list[JID], authzid: str) -> JID:
    if not authzid:
        # XEP-0178 §3: with several xmppAddrs the client MUST say which one it wants.
        if len(jids) > 1:
            raise ExternalRefused(
                SASLCondition.INVALID_AUTHZID,
                "the certificate names several JIDs; send the one to log in as as authzid",
            )
        return jids[0]
    try:
        wanted = JID.parse(authzid)
    except InvalidJID:
        raise ExternalRefused(SASLCondition.INVALID_AUTHZID, "the authzid is not a JID") from None
    if wanted in jids:
        return wanted
    if wanted.is_bare:
        # Conversations, Gajim and libstrophe send the bare JID even when the certificate
        # carries a full one; the resource lock then still applies.
        matches = [jid for jid in jids if jid.bare == wanted]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ExternalRefused(
                SASLCondition.INVALID_AUTHZID,
                "the certificate names several resources of that account; send a full JID",
            )
    # Never another account: ejabberd 23.01 logs in as whatever the authzid names.
    raise ExternalRefused(
        SASLCondition.INVALID_AUTHZID, "the authzid is not one of the certificate's JIDs"
    )
