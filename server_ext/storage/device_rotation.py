"""Certificate rotation and renewal: a successor registered under the rotation policy,
the predecessors retired at its first login, and every certificate login recorded."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from pairing.protocol.identity import PeerCertificate
from server_ext.errors import DuplicateCertificate, UnknownCertificate
from server_ext.model import CertificateRecord, RotationFacts
from server_ext.storage.database import iso, parse_time, storage_error
from server_ext.storage.device_registration import DeviceRegistration


class DeviceRotation(DeviceRegistration):
    """A device moving from one certificate to the next, without downtime."""

    def add_successor(
        self,
        current_fingerprint: str,
        cert: PeerCertificate,
        *,
        actor: str,
        allow: Callable[[RotationFacts], None],
        via: str = "rotation",
        address: str | None = None,
    ) -> CertificateRecord:
        """Register ``cert`` as the successor of a device's certificate, if ``allow`` (the
        rotation policy, called with the facts inside the transaction) does not raise.

        ``via`` is ``rotation`` (over the device's own EXTERNAL session) or ``renewal`` (an
        expired certificate renewing before SASL); both count as the device's successors for
        the rotation interval. The old certificate keeps working (no downtime) until the new
        one first logs in (:meth:`retire_replaced`). A successor that never logged in is
        revoked ("superseded before first use"), so a device has at most one waiting.
        """
        try:
            with self._file.transaction("rotate the certificate") as conn:
                old = self.by_fingerprint(current_fingerprint)
                if old is None:
                    raise UnknownCertificate("only a registered certificate can be rotated")
                device = old.device
                (last,) = conn.execute(
                    "SELECT max(added_at) FROM certificates WHERE device_id = ? "
                    "AND added_via IN ('rotation', 'renewal')",
                    (device.id,),
                ).fetchone()
                waiting = self._certificates(
                    "c.device_id = ? AND c.id > ? AND c.last_login_at IS NULL "
                    "AND c.state = 'active'",
                    (device.id, old.id),
                )
                allow(RotationFacts(old, parse_time(last), tuple(waiting)))
                now = iso(self._file.clock())
                for unused in waiting:
                    conn.execute(
                        "UPDATE certificates SET state = 'revoked', state_changed_at = ?, "
                        "revoked_reason = 'superseded before first use' WHERE id = ?",
                        (now, unused.id),
                    )
                    self._audit.write(
                        "cert.revoked",
                        actor=actor,
                        subject=unused.fingerprint,
                        detail={
                            "account": str(device.account),
                            "name": device.name,
                            "device": str(device.id),
                            "reason": "superseded before first use",
                        },
                    )
                if conn.execute(
                    "SELECT 1 FROM certificates WHERE fingerprint = ?", (cert.fingerprint,)
                ).fetchone():
                    raise DuplicateCertificate("this certificate is already registered")
                new_id = self.insert_certificate(
                    device.id,
                    device.account,
                    device.name,
                    cert,
                    actor,
                    via,
                    replaces=old.id,
                )
                detail = {
                    "account": str(device.account),
                    "name": device.name,
                    "device": str(device.id),
                    "replaces": old.fingerprint,
                }
                if via == "renewal":
                    detail["replaced_expired"] = iso(old.not_after)
                self._audit.write(
                    "cert.renewed" if via == "renewal" else "cert.rotated",
                    actor=actor,
                    subject=cert.fingerprint,
                    address=address,
                    detail=detail,
                )
        except sqlite3.IntegrityError:
            raise DuplicateCertificate("this certificate is already registered") from None
        except sqlite3.Error as exc:
            raise storage_error(exc, "rotate the certificate") from exc
        record = self.certificate(new_id)
        assert record is not None
        return record

    def retire_replaced(self, fingerprint: str) -> list[CertificateRecord]:
        """At a rotated certificate's first login, disable the older ones of its device."""
        record = self.by_fingerprint(fingerprint)
        if record is None or record.replaces is None:
            return []
        with self._file.transaction("retire the replaced certificate") as conn:
            older = self._certificates(
                "c.device_id = ? AND c.id < ? AND c.state = 'active'",
                (record.device.id, record.id),
            )
            for old in older:
                conn.execute(
                    "UPDATE certificates SET state = 'disabled', state_changed_at = ? WHERE id = ?",
                    (iso(self._file.clock()), old.id),
                )
                self._audit.write(
                    "cert.disabled",
                    actor="server",
                    subject=old.fingerprint,
                    detail={
                        "account": str(old.account),
                        "name": old.name,
                        "device": str(old.device.id),
                        "reason": "rotated",
                    },
                )
        return older

    def record_login(self, fingerprint: str, address: str) -> None:
        try:
            self._file.conn.execute(
                "UPDATE certificates SET last_login_at = ?, last_login_address = ? "
                "WHERE fingerprint = ?",
                (iso(self._file.clock()), address, fingerprint),
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "record the login") from exc


__all__ = ["DeviceRotation"]
