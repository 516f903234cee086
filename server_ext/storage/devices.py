"""Devices and the certificates of their rotation chains (XEP-0257 names, states, logins)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from typing import Any

from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from server_ext.errors import (
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
    UnknownCertificate,
)
from server_ext.model import (
    CertificateRecord,
    CertState,
    DeviceRecord,
    DeviceState,
    RotationFacts,
)
from server_ext.storage.audit import AuditLog
from server_ext.storage.database import SQLiteFile, iso, parse_time, storage_error
from server_ext.storage.device_rows import (
    CERT_COLUMNS,
    DEVICE_COLUMNS,
    certificate_from_row,
    device_from_row,
)

_STATE_EVENT = {
    DeviceState.ACTIVE: "device.enabled",
    DeviceState.DISABLED: "device.disabled",
    DeviceState.REVOKED: "device.revoked",
}


class DeviceStore:
    """A device is the unit an owner names, lists, disables and revokes; it holds one
    certificate, or a few while it rotates to a successor."""

    def __init__(self, file: SQLiteFile, audit: AuditLog) -> None:
        self._file = file
        self._audit = audit

    # --- reading ------------------------------------------------------------------------

    def _certificates(
        self, where: str, args: tuple[Any, ...], order: str = "c.id"
    ) -> list[CertificateRecord]:
        rows = self._file.conn.execute(
            f"SELECT {CERT_COLUMNS}, {DEVICE_COLUMNS} FROM certificates c "
            f"JOIN devices d ON d.id = c.device_id WHERE {where} ORDER BY {order}",
            args,
        ).fetchall()
        return [certificate_from_row(r) for r in rows]

    def _devices(self, where: str, args: tuple[Any, ...]) -> list[DeviceRecord]:
        rows = self._file.conn.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices d WHERE {where} ORDER BY d.account, d.name",
            args,
        ).fetchall()
        return [device_from_row(r) for r in rows]

    def by_fingerprint(self, fingerprint: str) -> CertificateRecord | None:
        """The certificate with this SHA-256: the login hot path, one indexed read."""
        found = self._certificates("c.fingerprint = ?", (fingerprint,))
        return found[0] if found else None

    def certificate(self, cert_id: int) -> CertificateRecord | None:
        found = self._certificates("c.id = ?", (cert_id,))
        return found[0] if found else None

    def find(self, fingerprint_prefix: str) -> list[CertificateRecord]:
        """Certificates whose fingerprint starts with ``fingerprint_prefix`` (hex)."""
        prefix = fingerprint_prefix.replace(":", "").lower()
        return self._certificates(
            "c.fingerprint >= ? AND c.fingerprint < ?", (prefix, prefix + "g")
        )

    def certificates(
        self, account: JID | None = None, state: CertState | None = None
    ) -> list[CertificateRecord]:
        clauses, args = ["1"], []
        if account is not None:
            clauses.append("d.account = ?")
            args.append(str(account.bare))
        if state is not None:
            clauses.append("c.state = ?")
            args.append(state.value)
        return self._certificates(" AND ".join(clauses), tuple(args), "d.account, d.name, c.id")

    def chain(self, device_id: int) -> list[CertificateRecord]:
        """Every certificate of a device, oldest first (its rotation chain)."""
        return self._certificates("c.device_id = ?", (device_id,))

    def current(self, device_id: int) -> CertificateRecord | None:
        """The device's newest certificate that is not revoked, else its newest one."""
        chain = self.chain(device_id)
        live = [c for c in chain if c.state is not CertState.REVOKED]
        candidates = live or chain
        return candidates[-1] if candidates else None

    def current_named(self, account: JID, name: str) -> CertificateRecord | None:
        """The current certificate of the device ``name`` of ``account``."""
        device = self.by_name(account, name)
        return self.current(device.id) if device is not None else None

    def usable(self, account: JID | None = None, *, now: dt.datetime) -> list[CertificateRecord]:
        """Certificates that may log in now: active, of an active device, within their
        validity (of ``account``, or of every account). What a stock server must trust."""
        where = (
            "c.state = 'active' AND d.state = 'active' AND c.not_before <= ? AND c.not_after > ?"
        )
        args: tuple[Any, ...] = (iso(now), iso(now))
        if account is not None:
            where += " AND d.account = ?"
            args += (str(account.bare),)
        return self._certificates(where, args)

    def get(self, device_id: int) -> DeviceRecord | None:
        found = self._devices("d.id = ?", (device_id,))
        return found[0] if found else None

    def by_name(self, account: JID, name: str) -> DeviceRecord | None:
        found = self._devices("d.account = ? AND d.name = ?", (str(account.bare), name))
        return found[0] if found else None

    def all(
        self, account: JID | None = None, state: DeviceState | None = None
    ) -> list[DeviceRecord]:
        clauses, args = ["1"], []
        if account is not None:
            clauses.append("d.account = ?")
            args.append(str(account.bare))
        if state is not None:
            clauses.append("d.state = ?")
            args.append(state.value)
        return self._devices(" AND ".join(clauses), tuple(args))

    def for_jid(self, jid: JID) -> list[DeviceRecord]:
        """Devices with a certificate naming ``jid`` exactly, newest first."""
        rows = self._file.conn.execute(
            f"SELECT DISTINCT {DEVICE_COLUMNS} FROM certificate_jids j "
            "JOIN certificates c ON c.id = j.certificate_id JOIN devices d ON d.id = c.device_id "
            "WHERE j.jid = ? AND d.account = ? ORDER BY d.id DESC",
            (str(jid), str(jid.bare)),
        ).fetchall()
        return [device_from_row(r) for r in rows]

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

    # --- states ---------------------------------------------------------------------------

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

    # --- rotation and logins ----------------------------------------------------------------

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


def _duplicate(exc: sqlite3.IntegrityError, account: JID, name: str) -> RegistryError:
    if "fingerprint" in str(exc):
        return DuplicateCertificate("this certificate is already registered")
    return DuplicateName(f"{account} already has a device named {name!r}")
