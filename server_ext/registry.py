"""The registry: accounts, certificates and the audit log in one SQLite file.

This is the only module that touches SQLite. The file is in WAL mode so the server and the
admin CLI (another process) can use it at once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlite_utils import Database

from pairing.errors import CertificateError
from pairing.protocol.identity import fingerprint, load_certificate, xmpp_addrs
from pairing.protocol.jid import JID
from server_ext.errors import (
    AccountExists,
    DuplicateCertificate,
    DuplicateName,
    JIDInUse,
    RegistryError,
    RotationRefused,
    ServerExtError,
    TokenRaceLost,
    TooManyTokens,
    UnknownAccount,
    UnknownCertificate,
    UnknownToken,
)
from server_ext.migrations import migrations
from server_ext.model import (
    Account,
    AuditEvent,
    CertificateRecord,
    CertState,
    DeviceRecord,
    DeviceState,
    ScramCredentials,
    TokenRecord,
    TokenState,
)
from server_ext.sasl.scram import DEFAULT_ITERATIONS, HASHES, derive_credentials

log = logging.getLogger(__name__)

_CERT_COLUMNS = (
    "c.id, c.fingerprint, c.der, c.subject_jids, c.not_before, c.not_after, c.state, "
    "c.added_by, c.added_via, c.added_at, c.last_login_at, c.last_login_address, "
    "c.revoked_reason, c.state_changed_at, c.replaces"
)
_DEVICE_COLUMNS = (
    "d.id, d.account, d.name, d.state, d.no_cert_management, d.added_by, d.added_via, "
    "d.added_at, d.revoked_reason, d.state_changed_at"
)
_N_CERT = _CERT_COLUMNS.count(",") + 1
_STATE_EVENT = {
    DeviceState.ACTIVE: "enabled",
    DeviceState.DISABLED: "disabled",
    DeviceState.REVOKED: "revoked",
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _device_record(row: tuple[Any, ...]) -> DeviceRecord:
    return DeviceRecord(
        id=row[0],
        account=JID.parse(row[1]),
        name=row[2],
        state=DeviceState(row[3]),
        no_cert_management=bool(row[4]),
        added_by=row[5],
        added_via=row[6],
        added_at=dt.datetime.fromisoformat(row[7]),
        revoked_reason=row[8],
        state_changed_at=_parse_time(row[9]),
    )


def _cert_record(row: tuple[Any, ...]) -> CertificateRecord:
    """A certificate row followed by its device's columns."""
    return CertificateRecord(
        id=row[0],
        device=_device_record(row[_N_CERT:]),
        fingerprint=row[1],
        der=bytes(row[2]),
        subject_jids=tuple(json.loads(row[3])),
        not_before=dt.datetime.fromisoformat(row[4]),
        not_after=dt.datetime.fromisoformat(row[5]),
        state=CertState(row[6]),
        added_by=row[7],
        added_via=row[8],
        added_at=dt.datetime.fromisoformat(row[9]),
        last_login_at=_parse_time(row[10]),
        last_login_address=row[11],
        revoked_reason=row[12],
        state_changed_at=_parse_time(row[13]),
        replaces=row[14],
    )


class _Refusal(Exception):
    """Rolls a transaction back on a refusal that is audited after the rollback."""


def _subject_jids(der: bytes) -> tuple[JID, ...]:
    try:
        return xmpp_addrs(load_certificate(der))
    except CertificateError as exc:
        raise RegistryError(str(exc)) from exc


def _duplicate(exc: sqlite3.IntegrityError, account: JID, name: str) -> RegistryError:
    if "fingerprint" in str(exc):
        return DuplicateCertificate("this certificate is already registered")
    return DuplicateName(f"{account} already has a device named {name!r}")


def _token_record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(
        id=row[0],
        token_hash=row[1],
        jid=JID.parse(f"{row[2]}/{row[3]}"),
        name=row[4],
        state=TokenState(row[5]),
        created_at=dt.datetime.fromisoformat(row[6]),
        expires_at=dt.datetime.fromisoformat(row[7]),
        created_by=row[8],
        redeemed_at=_parse_time(row[9]),
        redeemed_fingerprint=row[10],
    )


_TOKEN_COLUMNS = (
    "id, token_hash, account, resource, name, state, created_at, expires_at, created_by, "
    "redeemed_at, redeemed_fingerprint"
)


def _storage_error(exc: sqlite3.Error, action: str) -> RegistryError:
    message = str(exc)
    if "full" in message or "disk" in message:
        hint = "the disk is full; free some space and retry"
    elif "readonly" in message or "read-only" in message:
        hint = "the registry file is read-only; check its permissions"
    elif "locked" in message or "busy" in message:
        hint = "another process holds the registry; retry in a moment"
    else:
        hint = "check the registry file"
    return RegistryError(f"cannot {action}: {message} ({hint})")


class Registry:
    """Accounts (SCRAM keys only), certificates (XEP-0257) and an append-only audit log."""

    def __init__(self, db: Database, path: Path) -> None:
        self._db = db
        self._conn: sqlite3.Connection = db.conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Registry:
        """Open (creating if needed) the registry at ``path`` and apply pending migrations."""
        path = Path(path)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
                os.close(fd)
            conn = sqlite3.connect(
                str(path), timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"cannot open the registry {path}: {exc}") from exc
        db = Database(conn)
        try:
            db.enable_wal()
            conn.execute("PRAGMA foreign_keys=ON")
            # WAL with synchronous=NORMAL is durable across application crashes and only
            # risks the last transactions on power loss, without an fsync per login.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            migrations.apply(db)
        except sqlite3.Error as exc:
            conn.close()
            raise _storage_error(exc, f"prepare the registry {path}") from exc
        except ServerExtError:
            conn.close()
            raise
        return cls(db, path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _storage_error(exc, action) from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise _storage_error(exc, action) from exc

    def _audit_row(
        self,
        conn: sqlite3.Connection,
        event: str,
        *,
        actor: str,
        subject: str,
        address: str | None = None,
        detail: Mapping[str, str] | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO audit (at, event, actor, subject, address, detail) VALUES (?,?,?,?,?,?)",
            (_iso(now or _now()), event, actor, subject, address, json.dumps(dict(detail or {}))),
        )

    # --- accounts -------------------------------------------------------------------------

    def add_account(
        self, jid: JID, password: str, *, admin: bool = False, iterations: int = DEFAULT_ITERATIONS
    ) -> Account:
        """Create an account; only SCRAM keys are stored, never the password."""
        jid = jid.bare
        creds = [derive_credentials(password, h, iterations=iterations) for h in HASHES]
        now = _now()
        try:
            with self._transaction("add the account") as conn:
                conn.execute(
                    "INSERT INTO accounts (jid, is_admin, created_at) VALUES (?,?,?)",
                    (str(jid), int(admin), _iso(now)),
                )
                self._store_credentials(conn, jid, creds)
                self._audit_row(
                    conn,
                    "account.created",
                    actor="registry",
                    subject=str(jid),
                    detail={"admin": str(admin).lower()},
                )
        except sqlite3.IntegrityError:
            raise AccountExists(f"the account {jid} already exists") from None
        except sqlite3.Error as exc:
            raise _storage_error(exc, "add the account") from exc
        return Account(jid, admin, now, tuple(creds))

    def _store_credentials(
        self, conn: sqlite3.Connection, jid: JID, creds: list[ScramCredentials]
    ) -> None:
        for c in creds:
            conn.execute(
                "INSERT OR REPLACE INTO scram_credentials "
                "(jid, hash_name, salt, iterations, stored_key, server_key) VALUES (?,?,?,?,?,?)",
                (str(jid), c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key),
            )

    def get_account(self, jid: JID) -> Account | None:
        row = self._conn.execute(
            "SELECT jid, is_admin, created_at FROM accounts WHERE jid = ?", (str(jid.bare),)
        ).fetchone()
        if row is None:
            return None
        creds = self._conn.execute(
            "SELECT hash_name, salt, iterations, stored_key, server_key FROM scram_credentials "
            "WHERE jid = ?",
            (row[0],),
        ).fetchall()
        return Account(
            JID.parse(row[0]),
            bool(row[1]),
            dt.datetime.fromisoformat(row[2]),
            tuple(
                ScramCredentials(c[0], bytes(c[1]), c[2], bytes(c[3]), bytes(c[4])) for c in creds
            ),
        )

    def list_accounts(self) -> list[Account]:
        rows = self._conn.execute("SELECT jid FROM accounts ORDER BY jid").fetchall()
        accounts = [self.get_account(JID.parse(r[0])) for r in rows]
        return [a for a in accounts if a is not None]

    def scram_credentials(self, jid: JID, hash_name: str) -> ScramCredentials | None:
        """The stored SCRAM keys for a login; one indexed read."""
        row = self._conn.execute(
            "SELECT salt, iterations, stored_key, server_key FROM scram_credentials "
            "WHERE jid = ? AND hash_name = ?",
            (str(jid.bare), hash_name),
        ).fetchone()
        if row is None:
            return None
        return ScramCredentials(hash_name, bytes(row[0]), row[1], bytes(row[2]), bytes(row[3]))

    def set_password(self, jid: JID, password: str, *, actor: str = "registry") -> None:
        jid = jid.bare
        creds = [derive_credentials(password, h) for h in HASHES]
        with self._transaction("change the password") as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE jid = ?", (str(jid),)).fetchone() is None:
                raise UnknownAccount(f"no account {jid}")
            self._store_credentials(conn, jid, creds)
            self._audit_row(conn, "account.password_changed", actor=actor, subject=str(jid))

    def set_admin(self, jid: JID, admin: bool, *, actor: str = "registry") -> None:
        jid = jid.bare
        with self._transaction("change the admin flag") as conn:
            cur = conn.execute(
                "UPDATE accounts SET is_admin = ? WHERE jid = ?", (int(admin), str(jid))
            )
            if cur.rowcount == 0:
                raise UnknownAccount(f"no account {jid}")
            self._audit_row(
                conn,
                "account.admin_changed",
                actor=actor,
                subject=str(jid),
                detail={"admin": str(admin).lower()},
            )

    def delete_account(self, jid: JID, *, actor: str = "registry") -> list[CertificateRecord]:
        """Delete the account and revoke its devices; returns the certificates revoked."""
        jid = jid.bare
        now = _now()
        with self._transaction("delete the account") as conn:
            cur = conn.execute("DELETE FROM accounts WHERE jid = ?", (str(jid),))
            if cur.rowcount == 0:
                raise UnknownAccount(f"no account {jid}")
            revoked = self._certificates_where(
                "d.account = ? AND c.state != 'revoked'", (str(jid),)
            )
            devices = self._devices_where("d.account = ? AND d.state != 'revoked'", (str(jid),))
            conn.execute(
                "UPDATE devices SET state = 'revoked', revoked_reason = 'account deleted', "
                "state_changed_at = ? WHERE account = ? AND state != 'revoked'",
                (_iso(now), str(jid)),
            )
            conn.execute(
                "UPDATE certificates SET state = 'revoked', revoked_reason = 'account deleted', "
                "state_changed_at = ? WHERE account = ? AND state != 'revoked'",
                (_iso(now), str(jid)),
            )
            # Outstanding tokens of a deleted account are cancelled with it.
            pending = conn.execute(
                "SELECT id, resource FROM tokens WHERE account = ? AND state = 'pending'",
                (str(jid),),
            ).fetchall()
            for token_id, resource in pending:
                conn.execute("UPDATE tokens SET state = 'cancelled' WHERE id = ?", (token_id,))
                self._audit_row(
                    conn,
                    "token.cancelled",
                    actor=actor,
                    subject=f"{jid}/{resource}",
                    detail={"token_id": str(token_id), "reason": "account deleted"},
                )
            for device in devices:
                fingerprints = [c.fingerprint for c in revoked if c.device.id == device.id]
                self._audit_row(
                    conn,
                    "device.revoked",
                    actor=actor,
                    subject=fingerprints[-1] if fingerprints else f"device:{device.id}",
                    detail={
                        "account": str(jid),
                        "name": device.name,
                        "device": str(device.id),
                        "reason": "account deleted",
                        "certificates": ",".join(fingerprints),
                    },
                )
            self._audit_row(conn, "account.deleted", actor=actor, subject=str(jid))
        return revoked

    # --- devices and their certificates ---------------------------------------------------

    def add_certificate(
        self,
        account: JID,
        name: str,
        der: bytes,
        *,
        no_cert_management: bool = False,
        added_by: str,
        added_via: str,
        now: dt.datetime | None = None,
    ) -> CertificateRecord:
        """Register ``der`` as a new device of ``account`` named ``name`` (unique per account)."""
        now = now or _now()
        try:
            with self._transaction("register the certificate") as conn:
                device_id = self._insert_device(
                    conn, account.bare, name, der, no_cert_management, added_by, added_via, now
                )
                cert_id = self._insert_certificate(
                    conn, device_id, account.bare, name, der, added_by, added_via, now
                )
        except sqlite3.IntegrityError as exc:
            raise _duplicate(exc, account.bare, name) from None
        except sqlite3.Error as exc:
            raise _storage_error(exc, "register the certificate") from exc
        record = self.certificate_by_id(cert_id)
        assert record is not None
        return record

    def _insert_device(
        self,
        conn: sqlite3.Connection,
        account: JID,
        name: str,
        der: bytes,
        no_cert_management: bool,
        added_by: str,
        added_via: str,
        now: dt.datetime,
    ) -> int:
        fp = fingerprint(der)
        if conn.execute("SELECT 1 FROM certificates WHERE fingerprint = ?", (fp,)).fetchone():
            raise DuplicateCertificate("this certificate is already registered")
        if conn.execute(
            "SELECT 1 FROM devices WHERE account = ? AND name = ?", (str(account), name)
        ).fetchone():
            raise DuplicateName(f"{account} already has a device named {name!r}")
        for jid in _subject_jids(der):
            holder = self._live_device_for(conn, jid)
            if holder is not None:
                # One live device per full JID: two would only knock each other off the same
                # resource (RFC 6120 §7.7.2.2), and a revocation by JID must name one device.
                raise JIDInUse(
                    f"the device {holder[1]!r} (id {holder[0]}) already logs in as {jid}; "
                    "revoke it first, or choose another resource"
                )
        cur = conn.execute(
            "INSERT INTO devices (account, name, state, no_cert_management, added_by, "
            "added_via, added_at) VALUES (?,?,'active',?,?,?,?)",
            (str(account), name, int(no_cert_management), added_by, added_via, _iso(now)),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _live_device_for(self, conn: sqlite3.Connection, jid: JID) -> tuple[int, str] | None:
        """The device that is not revoked and logs in as the full ``jid``, if any."""
        if jid.is_bare:
            return None
        row = conn.execute(
            "SELECT d.id, d.name FROM devices d JOIN certificates c ON c.device_id = d.id, "
            "json_each(c.subject_jids) j WHERE d.account = ? AND d.state != 'revoked' "
            "AND c.state != 'revoked' AND j.value = ? LIMIT 1",
            (str(jid.bare), str(jid)),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row is not None else None

    def _insert_certificate(
        self,
        conn: sqlite3.Connection,
        device_id: int,
        account: JID,
        name: str,
        der: bytes,
        added_by: str,
        added_via: str,
        now: dt.datetime,
        *,
        replaces: int | None = None,
    ) -> int:
        try:
            cert = load_certificate(der)
            subjects = [str(j) for j in xmpp_addrs(cert)]
        except CertificateError as exc:
            raise RegistryError(str(exc)) from exc
        fp = fingerprint(der)
        cur = conn.execute(
            "INSERT INTO certificates (device_id, account, name, fingerprint, der, subject_jids, "
            "not_before, not_after, state, added_by, added_via, added_at, replaces) "
            "VALUES (?,?,?,?,?,?,?,?,'active',?,?,?,?)",
            (
                device_id,
                str(account),
                name,
                fp,
                der,
                json.dumps(subjects),
                _iso(cert.not_valid_before_utc),
                _iso(cert.not_valid_after_utc),
                added_by,
                added_via,
                _iso(now),
                replaces,
            ),
        )
        self._audit_row(
            conn,
            "cert.added",
            actor=added_by,
            subject=fp,
            now=now,
            detail={
                "account": str(account),
                "name": name,
                "via": added_via,
                "device": str(device_id),
            },
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _certificates_where(
        self, where: str, args: tuple[Any, ...], order: str = "c.id"
    ) -> list[CertificateRecord]:
        rows = self._conn.execute(
            f"SELECT {_CERT_COLUMNS}, {_DEVICE_COLUMNS} FROM certificates c "
            f"JOIN devices d ON d.id = c.device_id WHERE {where} ORDER BY {order}",
            args,
        ).fetchall()
        return [_cert_record(r) for r in rows]

    def _certificate_where(self, where: str, args: tuple[Any, ...]) -> CertificateRecord | None:
        found = self._certificates_where(where, args)
        return found[0] if found else None

    def certificate_by_fingerprint(self, fp: str) -> CertificateRecord | None:
        """The certificate with this SHA-256 fingerprint: the login hot path, one indexed read."""
        return self._certificate_where("c.fingerprint = ?", (fp,))

    def certificate_by_id(self, cert_id: int) -> CertificateRecord | None:
        return self._certificate_where("c.id = ?", (cert_id,))

    def get_certificate(self, account: JID, name: str) -> CertificateRecord | None:
        """The current certificate of the device ``name`` of ``account``."""
        device = self.device_by_name(account, name)
        return self.current_certificate(device.id) if device is not None else None

    def find_certificates(self, fingerprint_prefix: str) -> list[CertificateRecord]:
        """Certificates whose fingerprint starts with ``fingerprint_prefix`` (hex)."""
        prefix = fingerprint_prefix.replace(":", "").lower()
        return self._certificates_where(
            "c.fingerprint >= ? AND c.fingerprint < ?", (prefix, prefix + "g")
        )

    def list_certificates(
        self, account: JID | None = None, state: CertState | None = None
    ) -> list[CertificateRecord]:
        clauses, args = ["1"], []
        if account is not None:
            clauses.append("d.account = ?")
            args.append(str(account.bare))
        if state is not None:
            clauses.append("c.state = ?")
            args.append(state.value)
        return self._certificates_where(
            " AND ".join(clauses), tuple(args), order="d.account, d.name, c.id"
        )

    def device_certificates(self, device_id: int) -> list[CertificateRecord]:
        """Every certificate of a device, oldest first (its rotation chain)."""
        return self._certificates_where("c.device_id = ?", (device_id,))

    def current_certificate(self, device_id: int) -> CertificateRecord | None:
        """The device's newest certificate that is not revoked, else its newest one."""
        chain = self.device_certificates(device_id)
        live = [c for c in chain if c.state is not CertState.REVOKED]
        candidates = live or chain
        return candidates[-1] if candidates else None

    def _devices_where(self, where: str, args: tuple[Any, ...]) -> list[DeviceRecord]:
        rows = self._conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices d WHERE {where} ORDER BY d.account, d.name",
            args,
        ).fetchall()
        return [_device_record(r) for r in rows]

    def get_device(self, device_id: int) -> DeviceRecord | None:
        found = self._devices_where("d.id = ?", (device_id,))
        return found[0] if found else None

    def device_by_name(self, account: JID, name: str) -> DeviceRecord | None:
        found = self._devices_where("d.account = ? AND d.name = ?", (str(account.bare), name))
        return found[0] if found else None

    def list_devices(
        self, account: JID | None = None, state: DeviceState | None = None
    ) -> list[DeviceRecord]:
        clauses, args = ["1"], []
        if account is not None:
            clauses.append("d.account = ?")
            args.append(str(account.bare))
        if state is not None:
            clauses.append("d.state = ?")
            args.append(state.value)
        return self._devices_where(" AND ".join(clauses), tuple(args))

    def devices_for_jid(self, jid: JID) -> list[DeviceRecord]:
        """Devices with a certificate naming ``jid`` exactly, newest first."""
        rows = self._conn.execute(
            f"SELECT DISTINCT {_DEVICE_COLUMNS} FROM devices d "
            "JOIN certificates c ON c.device_id = d.id, json_each(c.subject_jids) j "
            "WHERE d.account = ? AND j.value = ? ORDER BY d.id DESC",
            (str(jid.bare), str(jid)),
        ).fetchall()
        return [_device_record(r) for r in rows]

    def set_device_state(
        self,
        device_id: int,
        state: DeviceState,
        *,
        actor: str,
        reason: str = "",
        now: dt.datetime | None = None,
    ) -> tuple[DeviceRecord, bool]:
        """Enable, disable or revoke a device; returns it and whether anything changed.

        Revoking revokes every certificate of the device's rotation chain, so no certificate
        it ever had can log in again. Revocation is final, and revoking again keeps the first
        reason.
        """
        now = now or _now()
        with self._transaction("change the device state") as conn:
            found = self._devices_where("d.id = ?", (device_id,))
            if not found:
                raise UnknownCertificate(f"no device with id {device_id}")
            device = found[0]
            if device.state is DeviceState.REVOKED:
                if state is DeviceState.REVOKED:
                    return device, False
                raise RegistryError(
                    f"the device {device.name!r} was revoked; revocation is final. "
                    "Enroll it again as a new device."
                )
            if device.state is state:
                return device, False
            revoked = state is DeviceState.REVOKED
            stored_reason = (reason or "no reason given") if revoked else None
            conn.execute(
                "UPDATE devices SET state = ?, state_changed_at = ?, revoked_reason = ? "
                "WHERE id = ?",
                (state.value, _iso(now), stored_reason, device_id),
            )
            fingerprints = [
                str(r[0])
                for r in conn.execute(
                    "SELECT fingerprint FROM certificates WHERE device_id = ? ORDER BY id",
                    (device_id,),
                )
            ]
            if revoked:
                conn.execute(
                    "UPDATE certificates SET state = 'revoked', state_changed_at = ?, "
                    "revoked_reason = coalesce(revoked_reason, ?) "
                    "WHERE device_id = ? AND state != 'revoked'",
                    (_iso(now), stored_reason, device_id),
                )
            self._audit_row(
                conn,
                f"device.{_STATE_EVENT[state]}",
                actor=actor,
                subject=fingerprints[-1] if fingerprints else f"device:{device_id}",
                now=now,
                detail={
                    "account": str(device.account),
                    "name": device.name,
                    "device": str(device_id),
                    "reason": reason,
                    "certificates": ",".join(fingerprints),
                },
            )
        updated = self.get_device(device_id)
        assert updated is not None
        return updated, True

    def rotate_certificate(
        self,
        old_fingerprint: str,
        der: bytes,
        *,
        actor: str,
        min_interval: dt.timedelta = dt.timedelta(hours=1),
        now: dt.datetime | None = None,
    ) -> CertificateRecord:
        """Register ``der`` as the successor of an active certificate of an active device.

        The old certificate keeps working (no downtime) until the new one first logs in
        (:meth:`retire_replaced`). A device has at most one successor waiting for its first
        login, and registers one at most once per ``min_interval``: a successor it never used
        (it could not store the new key) is revoked when it asks again.
        """
        now = now or _now()
        refused: tuple[CertificateRecord, int] | None = None
        try:
            with self._transaction("rotate the certificate") as conn:
                old = self._certificate_where("c.fingerprint = ?", (old_fingerprint,))
                if (
                    old is None
                    or old.state is not CertState.ACTIVE
                    or old.device.state is not DeviceState.ACTIVE
                ):
                    raise UnknownCertificate("only an active certificate can be rotated")
                device = old.device
                (last,) = conn.execute(
                    "SELECT max(added_at) FROM certificates WHERE device_id = ? "
                    "AND added_via = 'rotation'",
                    (device.id,),
                ).fetchone()
                if last is not None:
                    allowed_at = dt.datetime.fromisoformat(last) + min_interval
                    if allowed_at > now:
                        refused = (old, int((allowed_at - now).total_seconds()) + 1)
                        raise _Refusal
                pending = self._certificates_where(
                    "c.device_id = ? AND c.id > ? AND c.last_login_at IS NULL "
                    "AND c.state = 'active'",
                    (device.id, old.id),
                )
                for unused in pending:
                    # An earlier rotation registered a successor the device never used (it
                    # could not store the new key): it is retired for good.
                    conn.execute(
                        "UPDATE certificates SET state = 'revoked', state_changed_at = ?, "
                        "revoked_reason = 'superseded before first use' WHERE id = ?",
                        (_iso(now), unused.id),
                    )
                    self._audit_row(
                        conn,
                        "cert.revoked",
                        actor=actor,
                        subject=unused.fingerprint,
                        now=now,
                        detail={
                            "account": str(device.account),
                            "name": device.name,
                            "device": str(device.id),
                            "reason": "superseded before first use",
                        },
                    )
                if conn.execute(
                    "SELECT 1 FROM certificates WHERE fingerprint = ?", (fingerprint(der),)
                ).fetchone():
                    raise DuplicateCertificate("this certificate is already registered")
                new_id = self._insert_certificate(
                    conn,
                    device.id,
                    device.account,
                    device.name,
                    der,
                    actor,
                    "rotation",
                    now,
                    replaces=old.id,
                )
                self._audit_row(
                    conn,
                    "cert.rotated",
                    actor=actor,
                    subject=fingerprint(der),
                    now=now,
                    detail={
                        "account": str(device.account),
                        "name": device.name,
                        "device": str(device.id),
                        "replaces": old.fingerprint,
                    },
                )
        except _Refusal:
            assert refused is not None
            old, wait = refused
            # Written after the rollback: the refusal itself is what the audit log keeps.
            self.audit(
                "cert.rotation_refused",
                actor=actor,
                subject=old.fingerprint,
                now=now,
                detail={
                    "account": str(old.account),
                    "name": old.name,
                    "device": str(old.device.id),
                    "retry_after": str(wait),
                },
            )
            raise RotationRefused(
                f"this device registered a successor certificate recently; retry in {wait} s",
                retry_after=wait,
            ) from None
        except sqlite3.IntegrityError:
            raise DuplicateCertificate("this certificate is already registered") from None
        except sqlite3.Error as exc:
            raise _storage_error(exc, "rotate the certificate") from exc
        record = self.certificate_by_id(new_id)
        assert record is not None
        return record

    def retire_replaced(self, fp: str, now: dt.datetime | None = None) -> list[CertificateRecord]:
        """At a rotated certificate's first login, disable the older ones of its device."""
        now = now or _now()
        record = self.certificate_by_fingerprint(fp)
        if record is None or record.replaces is None:
            return []
        with self._transaction("retire the replaced certificate") as conn:
            older = self._certificates_where(
                "c.device_id = ? AND c.id < ? AND c.state = 'active'",
                (record.device.id, record.id),
            )
            for old in older:
                conn.execute(
                    "UPDATE certificates SET state = 'disabled', state_changed_at = ? WHERE id = ?",
                    (_iso(now), old.id),
                )
                self._audit_row(
                    conn,
                    "cert.disabled",
                    actor="server",
                    subject=old.fingerprint,
                    now=now,
                    detail={
                        "account": str(old.account),
                        "name": old.name,
                        "device": str(old.device.id),
                        "reason": "rotated",
                    },
                )
        return older

    def record_login(self, fp: str, address: str, now: dt.datetime | None = None) -> None:
        try:
            self._conn.execute(
                "UPDATE certificates SET last_login_at = ?, last_login_address = ? "
                "WHERE fingerprint = ?",
                (_iso(now or _now()), address, fp),
            )
        except sqlite3.Error as exc:
            raise _storage_error(exc, "record the login") from exc

    # --- tokens ---------------------------------------------------------------------------

    def add_token(
        self,
        jid: JID,
        *,
        name: str,
        token_hash: str,
        expires_at: dt.datetime,
        created_by: str,
        max_outstanding: int,
        now: dt.datetime | None = None,
    ) -> TokenRecord:
        """Store an issued token's hash, bound to the full ``jid`` and a certificate name."""
        now = now or _now()
        account = jid.bare
        with self._transaction("issue the token") as conn:
            if (
                conn.execute("SELECT 1 FROM accounts WHERE jid = ?", (str(account),)).fetchone()
                is None
            ):
                raise UnknownAccount(f"no account {account}")
            (outstanding,) = conn.execute(
                "SELECT count(*) FROM tokens WHERE account = ? AND state = 'pending' "
                "AND expires_at > ?",
                (str(account), _iso(now)),
            ).fetchone()
            if outstanding >= max_outstanding:
                raise TooManyTokens(
                    f"{account} already has {outstanding} unused tokens; cancel some first"
                )
            cur = conn.execute(
                "INSERT INTO tokens (token_hash, account, resource, name, state, created_at, "
                "expires_at, created_by) VALUES (?,?,?,?,'pending',?,?,?)",
                (
                    token_hash,
                    str(account),
                    jid.resource,
                    name,
                    _iso(now),
                    _iso(expires_at),
                    created_by,
                ),
            )
            token_id = cur.lastrowid
            self._audit_row(
                conn,
                "token.issued",
                actor=created_by,
                subject=str(jid),
                now=now,
                detail={"token_id": str(token_id), "name": name, "expires_at": _iso(expires_at)},
            )
        record = self._token_where("id = ?", (token_id,))
        assert record is not None
        return record

    def _token_where(self, where: str, args: tuple[Any, ...]) -> TokenRecord | None:
        row = self._conn.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE {where}", args
        ).fetchone()
        return _token_record(row) if row is not None else None

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        return self._token_where("token_hash = ?", (token_hash,))

    def get_token(self, token_id: int) -> TokenRecord | None:
        return self._token_where("id = ?", (token_id,))

    def list_tokens(
        self, account: JID | None = None, state: TokenState | None = None
    ) -> list[TokenRecord]:
        clauses, args = [], []
        if account is not None:
            clauses.append("account = ?")
            args.append(str(account.bare))
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens{where} ORDER BY id", args
        ).fetchall()
        return [_token_record(r) for r in rows]

    def cancel_token(self, token_id: int, *, actor: str, account: JID | None = None) -> TokenRecord:
        """Cancel a pending token; ``account`` restricts it to that owner's tokens."""
        with self._transaction("cancel the token") as conn:
            row = conn.execute(
                "SELECT account, resource, state FROM tokens WHERE id = ?", (token_id,)
            ).fetchone()
            if row is None or (account is not None and row[0] != str(account.bare)):
                raise UnknownToken(f"no token {token_id}")
            if row[2] != TokenState.PENDING.value:
                raise RegistryError(
                    f"token {token_id} is {row[2]}; only a pending one can be cancelled"
                )
            conn.execute("UPDATE tokens SET state = 'cancelled' WHERE id = ?", (token_id,))
            self._audit_row(
                conn,
                "token.cancelled",
                actor=actor,
                subject=f"{row[0]}/{row[1]}",
                detail={"token_id": str(token_id)},
            )
        record = self.get_token(token_id)
        assert record is not None
        return record

    def redeem_token(
        self,
        token_hash: str,
        der: bytes,
        *,
        address: str,
        now: dt.datetime | None = None,
    ) -> CertificateRecord:
        """Burn the token and register ``der`` in one transaction: both happen or neither.

        Of many concurrent redemptions exactly one wins: the UPDATE only matches a token
        that is still pending, and SQLite serialises writers (BEGIN IMMEDIATE).
        """
        now = now or _now()
        fp = fingerprint(der)
        try:
            with self._transaction("redeem the token") as conn:
                row = conn.execute(
                    "SELECT id, account, resource, name, created_by FROM tokens "
                    "WHERE token_hash = ?",
                    (token_hash,),
                ).fetchone()
                cur = conn.execute(
                    "UPDATE tokens SET state = 'redeemed', redeemed_at = ?, "
                    "redeemed_fingerprint = ? "
                    "WHERE token_hash = ? AND state = 'pending' AND expires_at > ?",
                    (_iso(now), fp, token_hash, _iso(now)),
                )
                if row is None or cur.rowcount != 1:
                    raise TokenRaceLost("this token has already been used")
                token_id, account_text, resource, name, created_by = row
                account = JID.parse(account_text)
                device_id = self._insert_device(
                    conn, account, name, der, True, created_by, "token", now
                )
                cert_id = self._insert_certificate(
                    conn, device_id, account, name, der, created_by, "token", now
                )
                self._audit_row(
                    conn,
                    "token.redeemed",
                    actor=f"{account_text}/{resource}",
                    subject=fp,
                    address=address,
                    now=now,
                    detail={"token_id": str(token_id), "name": name},
                )
        except sqlite3.IntegrityError as exc:
            raise _duplicate(exc, JID.parse(account_text), name) from None
        except sqlite3.Error as exc:
            raise _storage_error(exc, "redeem the token") from exc
        record = self.certificate_by_id(cert_id)
        assert record is not None
        return record

    def expire_tokens(self, now: dt.datetime | None = None) -> list[TokenRecord]:
        """Mark pending tokens past their expiry as expired (audit ``token.expired``)."""
        now = now or _now()
        with self._transaction("expire tokens") as conn:
            rows = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE state = 'pending' AND expires_at <= ?",
                (_iso(now),),
            ).fetchall()
            expired = [_token_record(r) for r in rows]
            for record in expired:
                conn.execute("UPDATE tokens SET state = 'expired' WHERE id = ?", (record.id,))
                self._audit_row(
                    conn,
                    "token.expired",
                    actor="server",
                    subject=str(record.jid),
                    now=now,
                    detail={"token_id": str(record.id)},
                )
        return expired

    # --- audit ----------------------------------------------------------------------------

    def audit(
        self,
        event: str,
        *,
        actor: str,
        subject: str,
        address: str | None = None,
        detail: Mapping[str, str] | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        try:
            self._audit_row(
                self._conn,
                event,
                actor=actor,
                subject=subject,
                address=address,
                detail=detail,
                now=now,
            )
        except sqlite3.Error as exc:
            raise _storage_error(exc, "write the audit log") from exc

    def audit_events(
        self,
        *,
        subjects: Sequence[str] | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Audit rows, oldest first; ``subjects`` keeps those about any of these subjects."""
        clauses: list[str] = []
        args: list[str] = []
        if subjects is not None:
            clauses.append(f"subject IN ({', '.join('?' for _ in subjects) or 'NULL'})")
            args.extend(subjects)
        if since is not None:
            clauses.append("at >= ?")
            args.append(_iso(since))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = self._conn.execute(
            f"SELECT id, at, event, actor, subject, address, detail FROM audit{where} "
            f"ORDER BY id{tail}",
            args,
        ).fetchall()
        return [
            AuditEvent(
                r[0], dt.datetime.fromisoformat(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6])
            )
            for r in rows
        ]
