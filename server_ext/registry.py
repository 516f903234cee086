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
from collections.abc import Iterator, Mapping
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
    RegistryError,
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
    ScramCredentials,
    TokenRecord,
    TokenState,
)
from server_ext.sasl.scram import DEFAULT_ITERATIONS, HASHES, derive_credentials

log = logging.getLogger(__name__)

_CERT_COLUMNS = (
    "id, account, name, fingerprint, der, subject_jids, not_before, not_after, state, "
    "no_cert_management, added_by, added_via, added_at, last_login_at, last_login_address, "
    "revoked_reason, state_changed_at, replaces"
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _cert_record(row: tuple[Any, ...]) -> CertificateRecord:
    return CertificateRecord(
        id=row[0],
        account=JID.parse(row[1]),
        name=row[2],
        fingerprint=row[3],
        der=bytes(row[4]),
        subject_jids=tuple(json.loads(row[5])),
        not_before=dt.datetime.fromisoformat(row[6]),
        not_after=dt.datetime.fromisoformat(row[7]),
        state=CertState(row[8]),
        no_cert_management=bool(row[9]),
        added_by=row[10],
        added_via=row[11],
        added_at=dt.datetime.fromisoformat(row[12]),
        last_login_at=_parse_time(row[13]),
        last_login_address=row[14],
        revoked_reason=row[15],
        state_changed_at=_parse_time(row[16]),
        replaces=row[17],
    )


def _duplicate(exc: sqlite3.IntegrityError, account: JID, name: str) -> RegistryError:
    if "fingerprint" in str(exc):
        return DuplicateCertificate("this certificate is already registered")
    return DuplicateName(f"{account} already has a certificate named {name!r}")


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
        """Delete the account and revoke its certificates; returns the ones revoked."""
        jid = jid.bare
        with self._transaction("delete the account") as conn:
            cur = conn.execute("DELETE FROM accounts WHERE jid = ?", (str(jid),))
            if cur.rowcount == 0:
                raise UnknownAccount(f"no account {jid}")
            revoked = [
                _cert_record(row)
                for row in conn.execute(
                    f"SELECT {_CERT_COLUMNS} FROM certificates "
                    "WHERE account = ? AND state != 'revoked'",
                    (str(jid),),
                )
            ]
            conn.execute(
                "UPDATE certificates SET state = 'revoked', revoked_reason = 'account deleted', "
                "state_changed_at = ? WHERE account = ? AND state != 'revoked'",
                (_iso(_now()), str(jid)),
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
            for record in revoked:
                self._audit_row(
                    conn,
                    "cert.revoked",
                    actor=actor,
                    subject=record.fingerprint,
                    detail={"account": str(jid), "name": record.name, "reason": "account deleted"},
                )
            self._audit_row(conn, "account.deleted", actor=actor, subject=str(jid))
        return revoked

    # --- certificates ---------------------------------------------------------------------

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
        """Register ``der`` for ``account`` under ``name`` (unique per account)."""
        now = now or _now()
        try:
            with self._transaction("register the certificate") as conn:
                cert_id = self._insert_certificate(
                    conn, account.bare, name, der, no_cert_management, added_by, added_via, now
                )
        except sqlite3.IntegrityError as exc:
            raise _duplicate(exc, account.bare, name) from None
        except sqlite3.Error as exc:
            raise _storage_error(exc, "register the certificate") from exc
        record = self._certificate_where("id = ?", (cert_id,))
        assert record is not None
        return record

    def _insert_certificate(
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
        try:
            cert = load_certificate(der)
            subjects = [str(j) for j in xmpp_addrs(cert)]
        except CertificateError as exc:
            raise RegistryError(str(exc)) from exc
        fp = fingerprint(der)
        cur = conn.execute(
            "INSERT INTO certificates (account, name, fingerprint, der, subject_jids, "
            "not_before, not_after, state, no_cert_management, added_by, added_via, "
            "added_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                str(account),
                name,
                fp,
                der,
                json.dumps(subjects),
                _iso(cert.not_valid_before_utc),
                _iso(cert.not_valid_after_utc),
                CertState.ACTIVE.value,
                int(no_cert_management),
                added_by,
                added_via,
                _iso(now),
            ),
        )
        self._audit_row(
            conn,
            "cert.added",
            actor=added_by,
            subject=fp,
            now=now,
            detail={"account": str(account), "name": name, "via": added_via},
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _certificate_where(self, where: str, args: tuple[Any, ...]) -> CertificateRecord | None:
        row = self._conn.execute(
            f"SELECT {_CERT_COLUMNS} FROM certificates WHERE {where}", args
        ).fetchone()
        return _cert_record(row) if row is not None else None

    def certificate_by_fingerprint(self, fp: str) -> CertificateRecord | None:
        """The certificate with this SHA-256 fingerprint: the login hot path, one indexed read."""
        return self._certificate_where("fingerprint = ?", (fp,))

    def get_certificate(self, account: JID, name: str) -> CertificateRecord | None:
        return self._certificate_where("account = ? AND name = ?", (str(account.bare), name))

    def certificate_by_id(self, cert_id: int) -> CertificateRecord | None:
        return self._certificate_where("id = ?", (cert_id,))

    def find_certificates(self, fingerprint_prefix: str) -> list[CertificateRecord]:
        """Certificates whose fingerprint starts with ``fingerprint_prefix`` (hex)."""
        prefix = fingerprint_prefix.replace(":", "").lower()
        rows = self._conn.execute(
            f"SELECT {_CERT_COLUMNS} FROM certificates WHERE fingerprint >= ? AND fingerprint < ? "
            "ORDER BY id",
            (prefix, prefix + "g"),
        ).fetchall()
        return [_cert_record(r) for r in rows]

    def list_certificates(
        self, account: JID | None = None, state: CertState | None = None
    ) -> list[CertificateRecord]:
        clauses, args = [], []
        if account is not None:
            clauses.append("account = ?")
            args.append(str(account.bare))
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"SELECT {_CERT_COLUMNS} FROM certificates{where} ORDER BY account, name", args
        ).fetchall()
        return [_cert_record(r) for r in rows]

    def set_certificate_state(
        self, account: JID, name: str, state: CertState, *, actor: str, reason: str = ""
    ) -> CertificateRecord:
        """Enable, disable or revoke; revocation is final."""
        account = account.bare
        with self._transaction("change the certificate state") as conn:
            row = conn.execute(
                "SELECT fingerprint, state FROM certificates WHERE account = ? AND name = ?",
                (str(account), name),
            ).fetchone()
            if row is None:
                raise UnknownCertificate(f"{account} has no certificate named {name!r}")
            fp, current = row
            if current == CertState.REVOKED.value and state is not CertState.REVOKED:
                raise RegistryError(
                    f"the certificate {name!r} was revoked; revocation is final. "
                    "Register a new certificate under a new name."
                )
            conn.execute(
                "UPDATE certificates SET state = ?, state_changed_at = ?, revoked_reason = ? "
                "WHERE account = ? AND name = ?",
                (
                    state.value,
                    _iso(_now()),
                    (reason or "no reason given") if state is CertState.REVOKED else None,
                    str(account),
                    name,
                ),
            )
            event = {
                "active": "cert.enabled",
                "disabled": "cert.disabled",
                "revoked": "cert.revoked",
            }
            self._audit_row(
                conn,
                event[state.value],
                actor=actor,
                subject=fp,
                detail={"account": str(account), "name": name, "reason": reason},
            )
        record = self.get_certificate(account, name)
        assert record is not None
        return record

    def rotate_certificate(
        self, old_fingerprint: str, der: bytes, *, actor: str, now: dt.datetime | None = None
    ) -> CertificateRecord:
        """Register ``der`` as the successor of an active certificate: same name, same device.

        The old certificate keeps working (no downtime) and is renamed ``name (<fp prefix>)``;
        it is disabled when the new one first logs in (:meth:`retire_replaced`).
        """
        now = now or _now()
        with self._transaction("rotate the certificate") as conn:
            old = self._certificate_where("fingerprint = ?", (old_fingerprint,))
            if old is None or old.state is not CertState.ACTIVE:
                raise UnknownCertificate("only an active certificate can be rotated")
            name = old.name
            unused = self._certificate_where(
                "replaces = ? AND last_login_at IS NULL AND state = 'active'", (old.id,)
            )
            if unused is not None:
                # An earlier rotation registered a successor the device never used (it could
                # not store the new key): retire that one and give its name to this one.
                name = unused.name
                conn.execute(
                    "UPDATE certificates SET name = ?, state = 'revoked', state_changed_at = ?, "
                    "revoked_reason = 'superseded before first use' WHERE id = ?",
                    (f"{unused.name} ({unused.fingerprint[:8]})", _iso(now), unused.id),
                )
                self._audit_row(
                    conn,
                    "cert.revoked",
                    actor=actor,
                    subject=unused.fingerprint,
                    now=now,
                    detail={
                        "account": str(old.account),
                        "name": unused.name,
                        "reason": "superseded before first use",
                    },
                )
            else:
                conn.execute(
                    "UPDATE certificates SET name = ? WHERE id = ?",
                    (f"{old.name} ({old.fingerprint[:8]})", old.id),
                )
            try:
                new_id = self._insert_certificate(
                    conn, old.account, name, der, old.no_cert_management, actor, "rotation", now
                )
            except sqlite3.IntegrityError as exc:
                raise _duplicate(exc, old.account, name) from None
            conn.execute("UPDATE certificates SET replaces = ? WHERE id = ?", (old.id, new_id))
            self._audit_row(
                conn,
                "cert.rotated",
                actor=actor,
                subject=fingerprint(der),
                now=now,
                detail={"account": str(old.account), "name": name, "replaces": old.fingerprint},
            )
        record = self.certificate_by_id(new_id)
        assert record is not None
        return record

    def retire_replaced(self, fp: str) -> CertificateRecord | None:
        """At a rotated certificate's first login, disable the one it replaced."""
        record = self.certificate_by_fingerprint(fp)
        if record is None or record.replaces is None:
            return None
        old = self.certificate_by_id(record.replaces)
        if old is None or old.state is not CertState.ACTIVE:
            return None
        return self.set_certificate_state(
            old.account, old.name, CertState.DISABLED, actor="server", reason="rotated"
        )

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
                cert_id = self._insert_certificate(
                    conn, account, name, der, True, created_by, "token", now
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
        record = self._certificate_where("id = ?", (cert_id,))
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
        subject: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        clauses, args = [], []
        if subject is not None:
            clauses.append("subject = ?")
            args.append(subject)
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
