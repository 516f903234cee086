"""Accounts: a bare JID, an admin flag, and salted SCRAM keys (never a password)."""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
from collections.abc import Sequence

from pairing.protocol.jid import JID
from server_ext.errors import AccountExists, UnknownAccount
from server_ext.model import Account, CertificateRecord, ScramCredentials
from server_ext.storage.audit import AuditLog
from server_ext.storage.database import SQLiteFile, iso, storage_error
from server_ext.storage.devices import DeviceStore
from server_ext.storage.tokens import TokenStore


class AccountStore:
    """The credentials are made by the auth layer (``server_ext.auth.credentials``)."""

    def __init__(
        self, file: SQLiteFile, audit: AuditLog, devices: DeviceStore, tokens: TokenStore
    ) -> None:
        self._file = file
        self._audit = audit
        self._devices = devices
        self._tokens = tokens

    def add(
        self, jid: JID, credentials: Sequence[ScramCredentials], *, admin: bool = False
    ) -> Account:
        jid = jid.bare
        now = self._file.clock()
        try:
            with self._file.transaction("add the account") as conn:
                conn.execute(
                    "INSERT INTO accounts (jid, is_admin, created_at) VALUES (?,?,?)",
                    (str(jid), int(admin), iso(now)),
                )
                self._store_credentials(conn, jid, credentials)
                self._audit.write(
                    "account.created",
                    actor="registry",
                    subject=str(jid),
                    detail={"admin": str(admin).lower()},
                )
        except sqlite3.IntegrityError:
            raise AccountExists(f"the account {jid} already exists") from None
        except sqlite3.Error as exc:
            raise storage_error(exc, "add the account") from exc
        return Account(jid, admin, now, tuple(credentials))

    def ensure(self, jid: JID, *, actor: str) -> bool:
        """Make sure the account row exists, without credentials: an account whose password
        lives on a stock server (docs/server.md, "Stock servers"). True when it was made."""
        jid = jid.bare
        try:
            with self._file.transaction("record the account") as conn:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO accounts (jid, is_admin, created_at) VALUES (?,?,?)",
                    (str(jid), 0, iso(self._file.clock())),
                )
                made = cur.rowcount == 1
                if made:
                    self._audit.write(
                        "account.created",
                        actor=actor,
                        subject=str(jid),
                        detail={"admin": "false", "credentials": "stock server"},
                    )
        except sqlite3.Error as exc:
            raise storage_error(exc, "record the account") from exc
        return made

    def _store_credentials(
        self, conn: sqlite3.Connection, jid: JID, credentials: Sequence[ScramCredentials]
    ) -> None:
        for c in credentials:
            conn.execute(
                "INSERT OR REPLACE INTO scram_credentials "
                "(jid, hash_name, salt, iterations, stored_key, server_key) VALUES (?,?,?,?,?,?)",
                (str(jid), c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key),
            )

    def get(self, jid: JID) -> Account | None:
        conn = self._file.conn
        row = conn.execute(
            "SELECT jid, is_admin, created_at FROM accounts WHERE jid = ?", (str(jid.bare),)
        ).fetchone()
        if row is None:
            return None
        creds = conn.execute(
            "SELECT hash_name, salt, iterations, stored_key, server_key FROM scram_credentials "
            "WHERE jid = ?",
            (row["jid"],),
        ).fetchall()
        return Account(
            jid=JID.parse(row["jid"]),
            is_admin=bool(row["is_admin"]),
            created_at=dt.datetime.fromisoformat(row["created_at"]),
            scram=tuple(
                ScramCredentials(
                    c["hash_name"],
                    bytes(c["salt"]),
                    c["iterations"],
                    bytes(c["stored_key"]),
                    bytes(c["server_key"]),
                )
                for c in creds
            ),
        )

    def all(self) -> list[Account]:
        rows = self._file.conn.execute("SELECT jid FROM accounts ORDER BY jid").fetchall()
        accounts = [self.get(JID.parse(r["jid"])) for r in rows]
        return [a for a in accounts if a is not None]

    def scram_credentials(self, jid: JID, hash_name: str) -> ScramCredentials | None:
        """The stored SCRAM keys for a login; one indexed read."""
        row = self._file.conn.execute(
            "SELECT salt, iterations, stored_key, server_key FROM scram_credentials "
            "WHERE jid = ? AND hash_name = ?",
            (str(jid.bare), hash_name),
        ).fetchone()
        if row is None:
            return None
        return ScramCredentials(
            hash_name,
            bytes(row["salt"]),
            row["iterations"],
            bytes(row["stored_key"]),
            bytes(row["server_key"]),
        )

    def set_credentials(
        self, jid: JID, credentials: Sequence[ScramCredentials], *, actor: str = "registry"
    ) -> None:
        """A new password, as its SCRAM keys."""
        jid = jid.bare
        with self._file.transaction("change the password") as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE jid = ?", (str(jid),)).fetchone() is None:
                raise UnknownAccount(f"no account {jid}")
            self._store_credentials(conn, jid, credentials)
            self._audit.write("account.password_changed", actor=actor, subject=str(jid))

    def set_admin(self, jid: JID, admin: bool, *, actor: str = "registry") -> None:
        jid = jid.bare
        with self._file.transaction("change the admin flag") as conn:
            cur = conn.execute(
                "UPDATE accounts SET is_admin = ? WHERE jid = ?", (int(admin), str(jid))
            )
            if cur.rowcount == 0:
                raise UnknownAccount(f"no account {jid}")
            self._audit.write(
                "account.admin_changed",
                actor=actor,
                subject=str(jid),
                detail={"admin": str(admin).lower()},
            )

    def server_secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the registry, made the first time it is asked for,
        so that what depends on it (unknown users' SCRAM salts) survives a restart."""
        with self._file.transaction("keep a server secret") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?, ?)",
                (name, secrets.token_bytes(32)),
            )
            row = conn.execute(
                "SELECT value FROM server_secrets WHERE name = ?", (name,)
            ).fetchone()
        return bytes(row["value"])

    def delete(self, jid: JID, *, actor: str = "registry") -> list[CertificateRecord]:
        """Delete the account, revoke its devices and cancel its tokens, all at once; returns
        the certificates that were revoked."""
        jid = jid.bare
        with self._file.transaction("delete the account") as conn:
            cur = conn.execute("DELETE FROM accounts WHERE jid = ?", (str(jid),))
            if cur.rowcount == 0:
                raise UnknownAccount(f"no account {jid}")
            self._tokens.cancel_account(jid, actor=actor, reason="account deleted")
            revoked = self._devices.revoke_account(jid, actor=actor, reason="account deleted")
            self._audit.write("account.deleted", actor=actor, subject=str(jid))
        return revoked
