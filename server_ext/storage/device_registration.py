"""The rows of a new device or certificate, written within a caller's transaction: the
uniqueness rules (one fingerprint, one live device per name and per full JID), the name a
revoked device gives up, and the audit row of each certificate."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from server_ext.errors import DuplicateCertificate, DuplicateName, JIDInUse
from server_ext.model import DeviceRecord, DeviceState
from server_ext.storage.database import iso, parse_time
from server_ext.storage.device_reads import DeviceReads
from server_ext.storage.device_rows import DEVICE_COLUMNS, device_from_row


class DeviceRegistration(DeviceReads):
    """Inserts for enrollment, token redemption (``storage.tokens``) and rotation."""

    def insert_device(
        self,
        account: JID,
        name: str,
        cert: PeerCertificate,
        no_cert_management: bool,
        added_by: str,
        added_via: str,
    ) -> int:
        """Within a transaction: the device row for ``cert``, after the uniqueness rules."""
        conn = self._file.conn
        if conn.execute(
            "SELECT 1 FROM certificates WHERE fingerprint = ?", (cert.fingerprint,)
        ).fetchone():
            raise DuplicateCertificate("this certificate is already registered")
        holder = conn.execute(
            "SELECT id, state, state_changed_at FROM devices WHERE account = ? AND name = ?",
            (str(account), name),
        ).fetchone()
        if holder is not None:
            if holder["state"] != DeviceState.REVOKED.value:
                raise DuplicateName(f"{account} already has a device named {name!r}")
            # A revoked device gives its name up (docs/admin.md, "Names"): it keeps its id,
            # its certificates and its audit history under a name that says what it was.
            self._retire_name(
                conn, holder["id"], account, name, parse_time(holder["state_changed_at"])
            )
        for jid in cert.jids:
            holder = self._live_device_for(jid)
            if holder is not None:
                # One live device per full JID: two would only knock each other off the same
                # resource (RFC 6120 §7.7.2.2), and a revocation by JID must name one device.
                raise JIDInUse(
                    f"the device {holder.name!r} (id {holder.id}) already logs in as {jid}; "
                    "revoke it first, or choose another resource"
                )
        cur = conn.execute(
            "INSERT INTO devices (account, name, state, no_cert_management, added_by, "
            "added_via, added_at) VALUES (?,?,'active',?,?,?,?)",
            (
                str(account),
                name,
                int(no_cert_management),
                added_by,
                added_via,
                iso(self._file.clock()),
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _retire_name(
        self,
        conn: sqlite3.Connection,
        device_id: int,
        account: JID,
        name: str,
        revoked_at: dt.datetime | None,
    ) -> None:
        """Within a transaction: rename the revoked device ``device_id`` so ``name`` is free."""
        when = (revoked_at or self._file.clock()).strftime("%Y-%m-%d")
        # The device id makes the new name unique; the name is cut so the whole stays within
        # XEP-0257's 1023 characters.
        renamed = f"{name[:960]} (revoked {when}, device {device_id})"
        conn.execute("UPDATE devices SET name = ? WHERE id = ?", (renamed, device_id))
        conn.execute("UPDATE certificates SET name = ? WHERE device_id = ?", (renamed, device_id))
        newest = conn.execute(
            "SELECT fingerprint FROM certificates WHERE device_id = ? ORDER BY id DESC LIMIT 1",
            (device_id,),
        ).fetchone()
        self._audit.write(
            "device.renamed",
            actor="server",
            # Like the device's other events, so `audit --device` shows it in its history.
            subject=str(newest["fingerprint"]) if newest else f"device:{device_id}",
            detail={
                "account": str(account),
                "device": str(device_id),
                "from": name,
                "to": renamed,
                "reason": "a new device takes the name of this revoked one",
            },
        )

    def _live_device_for(self, jid: JID) -> DeviceRecord | None:
        """The device that is not revoked and logs in as the full ``jid``, if any."""
        if jid.is_bare:
            return None
        rows = self._file.conn.execute(
            # certificate_jids (migration m008) makes this an index lookup, whatever the
            # number of devices of the account.
            f"SELECT {DEVICE_COLUMNS} FROM certificate_jids j "
            "JOIN certificates c ON c.id = j.certificate_id JOIN devices d ON d.id = c.device_id "
            "WHERE j.jid = ? AND d.account = ? AND d.state != 'revoked' "
            "AND c.state != 'revoked' LIMIT 1",
            (str(jid), str(jid.bare)),
        ).fetchall()
        return device_from_row(rows[0]) if rows else None

    def insert_certificate(
        self,
        device_id: int,
        account: JID,
        name: str,
        cert: PeerCertificate,
        added_by: str,
        added_via: str,
        *,
        replaces: int | None = None,
    ) -> int:
        """Within a transaction: the certificate row of a device, and its audit row."""
        cur = self._file.conn.execute(
            "INSERT INTO certificates (device_id, account, name, fingerprint, der, subject_jids, "
            "not_before, not_after, state, added_by, added_via, added_at, replaces) "
            "VALUES (?,?,?,?,?,?,?,?,'active',?,?,?,?)",
            (
                device_id,
                str(account),
                name,
                cert.fingerprint,
                cert.der,
                json.dumps([str(j) for j in cert.jids]),
                iso(cert.not_before),
                iso(cert.not_after),
                added_by,
                added_via,
                iso(self._file.clock()),
                replaces,
            ),
        )
        self._audit.write(
            "cert.added",
            actor=added_by,
            subject=cert.fingerprint,
            detail={
                "account": str(account),
                "name": name,
                "via": added_via,
                "device": str(device_id),
            },
        )
        assert cur.lastrowid is not None
        return cur.lastrowid


__all__ = ["DeviceRegistration"]
