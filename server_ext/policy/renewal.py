"""Whether an expired certificate may still renew itself (docs/admin.md, "Renewal after expiry").

Like step-ca's ``--allow-renewal-after-expiry``, but bounded: a certificate that expired less
than the grace period ago, of a device that was never revoked, may register a successor
before SASL (docs/protocol.md, "Renewal"). Pure: the registry's record and the clock's
reading in, the device's full JID or a :class:`~pairing.protocol.renewal.RenewalRefused` out.
"""

from __future__ import annotations

import datetime as dt

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from pairing.protocol.renewal import RenewalRefused, RenewCondition
from server_ext.model import CertificateRecord, CertState, DeviceState


def check_renewal(old: CertificateRecord | None, *, now: dt.datetime, grace: dt.timedelta) -> JID:
    """The full JID the renewed certificate must name, or :class:`RenewalRefused`."""
    if old is None:
        raise RenewalRefused(
            RenewCondition.NOT_REGISTERED, "the expired certificate is not registered here"
        )
    device = old.device
    if device.state is DeviceState.REVOKED:
        # Revocation is final: no certificate of a revoked device ever comes back.
        reason = device.revoked_reason or "no reason given"
        raise RenewalRefused(RenewCondition.REVOKED, f"this device was revoked: {reason}")
    if device.state is DeviceState.DISABLED:
        raise RenewalRefused(RenewCondition.DISABLED, "this device was disabled")
    if old.state is not CertState.ACTIVE:
        # Replaced by a successor that logged in, or superseded before its first use: only
        # the device's current certificate speaks for it.
        raise RenewalRefused(
            RenewCondition.DISABLED,
            "this certificate was replaced by a newer one of this device; renew that one",
        )
    jid = _full_jid(old)
    if old.not_after + grace <= now:
        days = grace / dt.timedelta(days=1)
        raise RenewalRefused(
            RenewCondition.GRACE_EXPIRED,
            f"the certificate expired on {old.not_after:%Y-%m-%d}, more than {days:g} days "
            "ago; the account owner must enroll the device again",
        )
    return jid


def _full_jid(old: CertificateRecord) -> JID:
    """A renewing certificate names exactly one full JID, as rotation requires (XEP-0257 §2)."""
    if len(old.subject_jids) == 1:
        try:
            jid = JID.parse(old.subject_jids[0])
        except InvalidJID:
            jid = None
        if jid is not None and jid.resource and jid.bare == old.account:
            return jid
    raise RenewalRefused(
        RenewCondition.JID_MISMATCH,
        "only a certificate naming one full JID of its account can renew itself",
    )
