"""Devices and the certificates of their rotation chains (XEP-0257 names, states, logins).

:class:`DeviceStore` is one store made of parts, one a module: reads (``device_reads``), the
rows of new devices and certificates (``device_registration``), states and revocation
(``device_states``) and rotation (``device_rotation``). Here: adding and renaming a device.
"""

from __future__ import annotations

import sqlite3

from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from server_ext.errors import DuplicateCertificate, DuplicateName, RegistryError, UnknownCertificate
from server_ext.model import CertificateRecord, DeviceRecord, DeviceState
from server_ext.storage.database import storage_error
from server_ext.storage.device_rotation import DeviceRotation
from server_ext.storage.device_states import DeviceStates


class DeviceStore(DeviceRotation, DeviceStates):
    """A device is the unit an owner names, lists, disables and revokes; it holds one
    certificate, or a few while it rotates to a successor."""

    # --- enrolling ----------------------------------------------------------------------

    def add(
        self,
        account: JID,
        name: str,
        cert: PeerCertificate,
        *,
        no_cert_management: bool = False,
        added_by: str,
        added_via: str,
    ) -> CertificateRecord:
        """Register ``cert`` as a new device of ``account`` named ``name`` (unique per account)."""
        try:
            with self._file.transaction("register the certificate"):
                device_id = self.insert_device(
                    account.bare, name, cert, no_cert_management, added_by, added_via
                )
                cert_id = self.insert_certificate(
                    device_id, account.bare, name, cert, added_by, added_via
                )
        except sqlite3.IntegrityError as exc:
            raise _duplicate(exc, account.bare, name) from None
        except sqlite3.Error as exc:
            raise storage_error(exc, "register the certificate") from exc
        record = self.certificate(cert_id)
        assert record is not None
        return record

    def rename(self, device_id: int, name: str, *, actor: str) -> DeviceRecord:
        """Give a device that is not revoked another name, unique within its account."""
        device = self.get(device_id)
        if device is None:
            raise UnknownCertificate(f"no device with id {device_id}")
        if device.state is DeviceState.REVOKED:
            raise RegistryError(f"the device {device.name!r} was revoked")
        if name == device.name:
            return device
        try:
            with self._file.transaction("rename the device") as conn:
                conn.execute("UPDATE devices SET name = ? WHERE id = ?", (name, device_id))
                conn.execute(
                    "UPDATE certificates SET name = ? WHERE device_id = ?", (name, device_id)
                )
                newest = conn.execute(
                    "SELECT fingerprint FROM certificates WHERE device_id = ? "
                    "ORDER BY id DESC LIMIT 1",
                    (device_id,),
                ).fetchone()
                self._audit.write(
                    "device.renamed",
                    actor=actor,
                    subject=str(newest["fingerprint"]) if newest else f"device:{device_id}",
                    detail={
                        "account": str(device.account),
                        "device": str(device_id),
                        "from": device.name,
                        "to": name,
                    },
                )
        except sqlite3.IntegrityError as exc:
            raise _duplicate(exc, device.account, name) from None
        updated = self.get(device_id)
        assert updated is not None
        return updated


def _duplicate(exc: sqlite3.IntegrityError, account: JID, name: str) -> RegistryError:
    if "fingerprint" in str(exc):
        return DuplicateCertificate("this certificate is already registered")
    return DuplicateName(f"{account} already has a device named {name!r}")


__all__ = ["DeviceStore"]
