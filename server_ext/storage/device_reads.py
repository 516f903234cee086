"""Reading devices and their certificates: by fingerprint (the login hot path), by id, by
name, by JID, a rotation chain, and what may log in now."""

from __future__ import annotations

from typing import Any

from pairing.protocol.jid import JID
from server_ext.model import CertificateRecord, CertState, DeviceRecord, DeviceState
from server_ext.storage.audit import AuditLog
from server_ext.storage.database import SQLiteFile, iso
from server_ext.storage.device_rows import (
    CERT_COLUMNS,
    DEVICE_COLUMNS,
    certificate_from_row,
    device_from_row,
)


class DeviceReads:
    """The reads of :class:`server_ext.storage.devices.DeviceStore`, and the file and audit
    log its writes share."""

    def __init__(self, file: SQLiteFile, audit: AuditLog) -> None:
        self._file = file
        self._audit = audit

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

    def usable(self, account: JID | None = None) -> list[CertificateRecord]:
        """Certificates that may log in now (the registry's clock): active, of an active
        device, within their validity (of ``account``, or of every account). What a stock
        server must trust."""
        now = self._file.clock()
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


__all__ = ["DeviceReads"]
