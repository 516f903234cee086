"""One-time enrollment tokens as stored: their SHA-256 only, never the token."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from server_ext.errors import (
    DuplicateCertificate,
    DuplicateName,
    RegistryError,
    TokenRaceLost,
    TooManyTokens,
    UnknownAccount,
    UnknownToken,
)
from server_ext.model import CertificateRecord, TokenRecord, TokenState
from server_ext.storage.audit import AuditLog
from server_ext.storage.database import SQLiteFile, iso, parse_time, storage_error
from server_ext.storage.devices import DeviceStore

_COLUMNS = (
    "id, token_hash, account, resource, name, state, created_at, expires_at, created_by, "
    "redeemed_at, redeemed_fingerprint"
)


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        token_hash=row["token_hash"],
        jid=JID.parse(f"{row['account']}/{row['resource']}"),
        name=row["name"],
        state=TokenState(row["state"]),
        created_at=dt.datetime.fromisoformat(row["created_at"]),
        expires_at=dt.datetime.fromisoformat(row["expires_at"]),
        created_by=row["created_by"],
        redeemed_at=parse_time(row["redeemed_at"]),
        redeemed_fingerprint=row["redeemed_fingerprint"],
    )


class TokenStore:
    """Issued tokens, bound to a full JID and a device name; burned atomically with the
    registration of the certificate that redeems them."""

    def __init__(self, file: SQLiteFile, audit: AuditLog, devices: DeviceStore) -> None:
        self._file = file
        self._audit = audit
        self._devices = devices

    def add(
        self,
        jid: JID,
        *,
        name: str,
        token_hash: str,
        expires_at: dt.datetime,
        created_by: str,
        max_outstanding: int,
    ) -> TokenRecord:
        """Store an issued token's hash, bound to the full ``jid`` and a device name."""
        account = jid.bare
        now = iso(self._file.clock())
        with self._file.transaction("issue the token") as conn:
            if (
                conn.execute("SELECT 1 FROM accounts WHERE jid = ?", (str(account),)).fetchone()
                is None
            ):
                raise UnknownAccount(f"no account {account}")
            (outstanding,) = conn.execute(
                "SELECT count(*) FROM tokens WHERE account = ? AND state = 'pending' "
                "AND expires_at > ?",
                (str(account), now),
            ).fetchone()
            if outstanding >= max_outstanding:
                raise TooManyTokens(
                    f"{account} already has {outstanding} unused tokens; cancel some first"
                )
            cur = conn.execute(
                "INSERT INTO tokens (token_hash, account, resource, name, state, created_at, "
                "expires_at, created_by) VALUES (?,?,?,?,'pending',?,?,?)",
                (token_hash, str(account), jid.resource, name, now, iso(expires_at), created_by),
            )
            token_id = cur.lastrowid
            self._audit.write(
                "token.issued",
                actor=created_by,
                subject=str(jid),
                detail={"token_id": str(token_id), "name": name, "expires_at": iso(expires_at)},
            )
        assert token_id is not None
        record = self.get(token_id)
        assert record is not None
        return record

    def _where(self, where: str, args: tuple[Any, ...]) -> list[TokenRecord]:
        rows = self._file.conn.execute(
            f"SELECT {_COLUMNS} FROM tokens WHERE {where} ORDER BY id", args
        ).fetchall()
        return [_token(r) for r in rows]

    def by_hash(self, token_hash: str) -> TokenRecord | None:
        found = self._where("token_hash = ?", (token_hash,))
        return found[0] if found else None

    def get(self, token_id: int) -> TokenRecord | None:
        found = self._where("id = ?", (token_id,))
        return found[0] if found else None

    def all(self, account: JID | None = None, state: TokenState | None = None) -> list[TokenRecord]:
        clauses, args = ["1"], []
        if account is not None:
            clauses.append("account = ?")
            args.append(str(account.bare))
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        return self._where(" AND ".join(clauses), tuple(args))

    def cancel(self, token_id: int, *, actor: str, account: JID | None = None) -> TokenRecord:
        """Cancel a pending token; ``account`` restricts it to that owner's tokens."""
        with self._file.transaction("cancel the token") as conn:
            record = self.get(token_id)
            if record is None or (account is not None and record.jid.bare != account.bare):
                raise UnknownToken(f"no token {token_id}")
            if record.state is not TokenState.PENDING:
                raise RegistryError(
                    f"token {token_id} is {record.state.value}; only a pending one can be cancelled"
                )
            conn.execute("UPDATE tokens SET state = 'cancelled' WHERE id = ?", (token_id,))
            self._audit.write(
                "token.cancelled",
                actor=actor,
                subject=str(record.jid),
                detail={"token_id": str(token_id)},
            )
        cancelled = self.get(token_id)
        assert cancelled is not None
        return cancelled

    def cancel_account(self, account: JID, *, actor: str, reason: str) -> None:
        """Within a transaction: cancel every pending token of ``account``."""
        for record in self._where("account = ? AND state = 'pending'", (str(account),)):
            self._file.conn.execute(
                "UPDATE tokens SET state = 'cancelled' WHERE id = ?", (record.id,)
            )
            self._audit.write(
                "token.cancelled",
                actor=actor,
                subject=str(record.jid),
                detail={"token_id": str(record.id), "reason": reason},
            )

    def redeem(self, token_hash: str, cert: PeerCertificate, *, address: str) -> CertificateRecord:
        """Burn the token and register ``cert`` in one transaction: both happen or neither.

        Of many concurrent redemptions exactly one wins: the UPDATE only matches a token
        that is still pending, and SQLite serialises writers (BEGIN IMMEDIATE).
        """
        now = iso(self._file.clock())
        record: TokenRecord | None = None
        try:
            with self._file.transaction("redeem the token") as conn:
                record = self.by_hash(token_hash)
                cur = conn.execute(
                    "UPDATE tokens SET state = 'redeemed', redeemed_at = ?, "
                    "redeemed_fingerprint = ? "
                    "WHERE token_hash = ? AND state = 'pending' AND expires_at > ?",
                    (now, cert.fingerprint, token_hash, now),
                )
                if record is None or cur.rowcount != 1:
                    raise TokenRaceLost("this token has already been used")
                account = record.jid.bare
                device_id = self._devices.insert_device(
                    account, record.name, cert, True, record.created_by, "token"
                )
                cert_id = self._devices.insert_certificate(
                    device_id, account, record.name, cert, record.created_by, "token"
                )
                self._audit.write(
                    "token.redeemed",
                    actor=str(record.jid),
                    subject=cert.fingerprint,
                    address=address,
                    detail={"token_id": str(record.id), "name": record.name},
                )
        except sqlite3.IntegrityError as exc:
            if "fingerprint" in str(exc):
                raise DuplicateCertificate("this certificate is already registered") from None
            name = record.name if record is not None else "?"
            raise DuplicateName(f"the account already has a device named {name!r}") from None
        except sqlite3.Error as exc:
            raise storage_error(exc, "redeem the token") from exc
        registered = self._devices.certificate(cert_id)
        assert registered is not None
        return registered

    def expire(self) -> list[TokenRecord]:
        """Mark pending tokens past their expiry as expired (audit ``token.expired``)."""
        now = iso(self._file.clock())
        with self._file.transaction("expire tokens") as conn:
            expired = self._where("state = 'pending' AND expires_at <= ?", (now,))
            for record in expired:
                conn.execute("UPDATE tokens SET state = 'expired' WHERE id = ?", (record.id,))
                self._audit.write(
                    "token.expired",
                    actor="server",
                    subject=str(record.jid),
                    detail={"token_id": str(record.id)},
                )
        return expired
