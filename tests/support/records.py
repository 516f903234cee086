"""Registry records built by hand, for the pure policy tests."""

from __future__ import annotations

import datetime as dt

from pairing.protocol.identity import fingerprint
from pairing.protocol.jid import JID
from server_ext.model import CertificateRecord, CertState, DeviceRecord, DeviceState

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def certificate_record(
    der: bytes,
    *,
    account: JID,
    subject_jids: tuple[str, ...] = (),
    state: CertState = CertState.ACTIVE,
    device_state: DeviceState = DeviceState.ACTIVE,
    revoked_reason: str | None = None,
) -> CertificateRecord:
    """``der`` as registered for the device "bot" of ``account``."""
    device = DeviceRecord(
        id=1,
        account=account,
        name="bot",
        state=device_state,
        no_cert_management=False,
        added_by="t",
        added_via="t",
        added_at=NOW,
        revoked_reason=revoked_reason if device_state is DeviceState.REVOKED else None,
    )
    return CertificateRecord(
        id=1,
        device=device,
        fingerprint=fingerprint(der),
        der=der,
        subject_jids=subject_jids,
        not_before=NOW,
        not_after=NOW,
        state=state,
        added_by="t",
        added_via="t",
        added_at=NOW,
    )
