"""The append-only audit log (SQLite triggers refuse updates and deletes)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Mapping, Sequence

from server_ext.model import AuditEvent
from server_ext.storage.database import SQLiteFile, iso, storage_error


class AuditLog:
    """Rows with stable event names (``device.revoked``, ``token.issued``, …)."""

    def __init__(self, file: SQLiteFile) -> None:
        self._file = file

    def write(
        self,
        event: str,
        *,
        actor: str,
        subject: str,
        address: str | None = None,
        detail: Mapping[str, str] | None = None,
    ) -> None:
        """Append one row; inside a store's transaction it commits (or not) with it."""
        try:
            self._file.conn.execute(
                "INSERT INTO audit (at, event, actor, subject, address, detail) "
                "VALUES (?,?,?,?,?,?)",
                (
                    iso(self._file.clock()),
                    event,
                    actor,
                    subject,
                    address,
                    json.dumps(dict(detail or {})),
                ),
            )
        except sqlite3.Error as exc:
            raise storage_error(exc, "write the audit log") from exc

    def events(
        self,
        *,
        subjects: Sequence[str] | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Rows oldest first; ``subjects`` keeps those about any of these subjects, ``limit``
        the newest that many (as ``tail`` and ``journalctl -n`` do)."""
        clauses: list[str] = []
        args: list[str] = []
        if subjects is not None:
            clauses.append(f"subject IN ({', '.join('?' for _ in subjects) or 'NULL'})")
            args.extend(subjects)
        if since is not None:
            clauses.append("at >= ?")
            args.append(iso(since))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT id, at, event, actor, subject, address, detail FROM audit{where}"
        if limit is not None:
            query = f"SELECT * FROM ({query} ORDER BY id DESC LIMIT {int(limit)})"
        rows = self._file.conn.execute(f"{query} ORDER BY id", args).fetchall()
        return [
            AuditEvent(
                id=r["id"],
                at=dt.datetime.fromisoformat(r["at"]),
                event=r["event"],
                actor=r["actor"],
                subject=r["subject"],
                address=r["address"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]
