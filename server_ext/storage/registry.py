"""The registry: accounts, devices and their certificates, tokens, and the audit log.

One SQLite file (``server_ext.storage.database``), one store per aggregate, one clock.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from server_ext.storage.accounts import AccountStore
from server_ext.storage.audit import AuditLog
from server_ext.storage.database import Clock, SQLiteFile, utcnow
from server_ext.storage.devices import DeviceStore
from server_ext.storage.tokens import TokenStore


class Registry:
    """What the server knows: ``accounts``, ``devices``, ``tokens`` and ``audit``."""

    def __init__(self, file: SQLiteFile) -> None:
        self._file = file
        self.audit = AuditLog(file)
        self.devices = DeviceStore(file, self.audit)
        self.tokens = TokenStore(file, self.audit, self.devices)
        self.accounts = AccountStore(file, self.audit, self.devices, self.tokens)

    @classmethod
    def open(cls, path: Path, *, clock: Clock = utcnow) -> Registry:
        """Open (creating if needed) the registry at ``path`` and apply pending migrations."""
        return cls(SQLiteFile.open(path, clock))

    @property
    def path(self) -> Path:
        return self._file.path

    def copy_to(self, destination: Path) -> None:
        """A consistent snapshot of the registry file (:meth:`SQLiteFile.copy_to`)."""
        self._file.copy_to(destination)

    @property
    def clock(self) -> Clock:
        return self._file.clock

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
