"""How devices and certificates are read: columns by name, rows into records."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pairing.protocol.jid import JID
from server_ext.model import CertificateRecord, CertState, DeviceRecord, DeviceState
from server_ext.storage.database import parse_time

CERT_COLUMNS = (
    "c.id, c.fingerprint, c.der, c.subject_jids, c.not_before, c.not_after, c.state, "
    "c.added_by, c.added_via, c.added_at, c.last_login_at, c.last_login_address, "
    "c.revoked_reason, c.state_changed_at, c.replaces"
)
DEVICE_COLUMNS = (
    "d.id AS d_id, d.account AS d_account, d.name AS d_name, d.state AS d_state, "
    "d.no_cert_management AS d_no_cert_management, d.added_by AS d_added_by, "
    "d.added_via AS d_added_via, d.added_at AS d_added_at, "
    "d.revoked_reason AS d_revoked_reason, d.state_changed_at AS d_state_changed_at"
)


def device_from_row(row: Any) -> DeviceRecord:
    return DeviceRecord(
        id=row["d_id"],
        account=JID.parse(row["d_account"]),
        name=row["d_name"],
        state=DeviceState(row["d_state"]),
        no_cert_management=bool(row["d_no_cert_management"]),
        added_by=row["d_added_by"],
        added_via=row["d_added_via"],
        added_at=dt.datetime.fromisoformat(row["d_added_at"]),
        revoked_reason=row["d_revoked_reason"],
        state_changed_at=parse_time(row["d_state_changed_at"]),
    )


def certificate_from_row(row: Any) -> CertificateRecord:
    return CertificateRecord(
        id=row["id"],
        device=device_from_row(row),
        fingerprint=row["fingerprint"],
        der=bytes(row["der"]),
        subject_jids=tuple(json.loads(row["subject_jids"])),
        not_before=dt.datetime.fromisoformat(row["not_before"]),
        not_after=dt.datetime.fromisoformat(row["not_after"]),
        state=CertState(row["state"]),
        added_by=row["added_by"],
        added_via=row["added_via"],
        added_at=dt.datetime.fromisoformat(row["added_at"]),
        last_login_at=parse_time(row["last_login_at"]),
        last_login_address=row["last_login_address"],
        revoked_reason=row["revoked_reason"],
        state_changed_at=parse_time(row["state_changed_at"]),
        replaces=row["replaces"],
    )
