"""The registry's SQLite file: opening it, transactions, the clock and error wording.

The file is in WAL mode so the server and the admin CLI (another process) can use it at once.
Rows are read by column name (:class:`sqlite3.Row`), never by position.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from server_ext.errors import RegistryError, ServerExtError
from server_ext.storage.migrations import migrations

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime) -> str:
    """How times are stored: UTC, ISO 8601, microseconds (so that text order is time order)."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def storage_error(exc: sqlite3.Error, action: str) -> RegistryError:
    """A failed SQLite call as one line that says what to do."""
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


class SQLiteFile:
    """One connection to the registry file, shared by its stores, with one clock."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Clock) -> None:
        self.conn = conn
        self.path = path
        self.clock = clock

    @classmethod
    def open(cls, path: Path, clock: Clock = utcnow) -> SQLiteFile:
        """Open (creating it 0600 in a 0700 directory if needed) and migrate the file."""
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
        try:
            db = Database(conn)
            db.enable_wal()
            conn.execute("PRAGMA foreign_keys=ON")
            # WAL with synchronous=NORMAL is durable across application crashes and only
            # risks the last transactions on power loss, without an fsync per login.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            migrations.apply(db)
        except sqlite3.Error as exc:
            conn.close()
            raise storage_error(exc, f"prepare the registry {path}") from exc
        except ServerExtError:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        return cls(conn, path, clock)

    def close(self) -> None:
        self.conn.close()

    def copy_to(self, destination: Path) -> None:
        """A consistent copy of the whole file at ``destination`` (created 0600), taken with
        SQLite's online backup while the server keeps writing: a snapshot of one moment,
        never a file torn between two transactions as a plain copy of a WAL database can be."""
        try:
            fd = os.open(destination, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            os.close(fd)
            target = sqlite3.connect(str(destination))
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"cannot create {destination}: {exc}") from exc
        try:
            self.conn.backup(target)
            # One self-contained file: no -wal beside it to lose when the copy is moved.
            target.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            raise storage_error(exc, f"copy the registry to {destination}") from exc
        finally:
            target.close()

    @contextmanager
    def transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or a rollback on any exception.

        Re-entrant: inside a transaction it joins the outer one, so that an operation of one
        store can be part of another's (deleting an account revokes its devices).
        """
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(exc, action) from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise storage_error(exc, action) from exc
