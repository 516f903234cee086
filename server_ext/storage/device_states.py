"""Enabling, disabling and revoking devices: a revoked device's whole rotation chain is
revoked with it, and revocation is final; deleting an account revokes all its devices."""

from __future__ import annotations

import sqlite3

from pairing.protocol.jid import JID
from server_ext.errors import RegistryError, UnknownCertificate
from server_ext.model import CertificateRecord, DeviceRecord, DeviceState
from server_ext.storage.database import iso
from server_ext.storage.device_reads import DeviceReads

_STATE_EVENT = {
    DeviceState.ACTIVE: "device.enabled",
    DeviceState.DISABLED: "device.disabled",
    DeviceState.REVOKED: "device.revoked",
}


class DeviceStates(DeviceReads):
    """The state changes of devices, each audited."""

    def set_state(
        self, device_id: int, state: DeviceState, *, actor: str, reason: str = ""
    ) -> tuple[DeviceRecord, bool]:
        """Enable, disable or revoke a device; returns it and whether anything changed.

        Revoking revokes every certificate of the device's rotation chain, so no certificate
        it ever had can log in again. Revocation is final, and revoking again keeps the first
        reason.
        """
        with self._file.transaction("change the device state") as conn:
            device = self.get(device_id)
            if device is None:
                raise UnknownCertificate(f"no device with id {device_id}")
            if device.state is DeviceState.REVOKED:
                if state is DeviceState.REVOKED:
                    return device, False
                raise RegistryError(
                    f"the device {device.name!r} was revoked; revocation is final. "
                    "Enroll it again as a new device."
                )
            if device.state is state:
                return device, False
            self._change_state(conn, device, state, actor=actor, reason=reason)
        updated = self.get(device_id)
        assert updated is not None
        return updated, True

    def _change_state(
        self,
        conn: sqlite3.Connection,
        device: DeviceRecord,
        state: DeviceState,
        *,
        actor: str,
        reason: str,
    ) -> None:
        now = iso(self._file.clock())
        revoked = state is DeviceState.REVOKED
        stored_reason = (reason or "no reason given") if revoked else None
        conn.execute(
            "UPDATE devices SET state = ?, state_changed_at = ?, revoked_reason = ? WHERE id = ?",
            (state.value, now, stored_reason, device.id),
        )
        fingerprints = [
            str(r["fingerprint"])
            for r in conn.execute(
                "SELECT fingerprint FROM certificates WHERE device_id = ? ORDER BY id",
                (device.id,),
            )
        ]
        if revoked:
            conn.execute(
                "UPDATE certificates SET state = 'revoked', state_changed_at = ?, "
                "revoked_reason = coalesce(revoked_reason, ?) "
                "WHERE device_id = ? AND state != 'revoked'",
                (now, stored_reason, device.id),
            )
        self._audit.write(
            _STATE_EVENT[state],
            actor=actor,
            subject=fingerprints[-1] if fingerprints else f"device:{device.id}",
            detail={
                "account": str(device.account),
                "name": device.name,
                "device": str(device.id),
                "reason": reason,
                "certificates": ",".join(fingerprints),
            },
        )

    def revoke_account(self, account: JID, *, actor: str, reason: str) -> list[CertificateRecord]:
        """Within a transaction: revoke every device of ``account``; returns the certificates
        that were still usable."""
        conn = self._file.conn
        revoked = self._certificates("d.account = ? AND c.state != 'revoked'", (str(account),))
        for device in self._devices("d.account = ? AND d.state != 'revoked'", (str(account),)):
            self._change_state(conn, device, DeviceState.REVOKED, actor=actor, reason=reason)
        # Certificates of devices revoked earlier are revoked already; this catches none, but
        # keeps the invariant explicit: nothing of a deleted account can log in.
        conn.execute(
            "UPDATE certificates SET state = 'revoked', state_changed_at = ?, "
            "revoked_reason = coalesce(revoked_reason, ?) WHERE account = ? AND state != 'revoked'",
            (iso(self._file.clock()), reason, str(account)),
        )
        return revoked


__all__ = ["DeviceStates"]
