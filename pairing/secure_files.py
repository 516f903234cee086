"""Writing key and certificate files safely: the final mode from the first byte, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # every temporary file of ours starts so; a crash may leave one behind


def fsync_directory(path: Path) -> None:
    """Make the entries of ``path`` (a rename, a new file) durable.

    A rename is atomic at once but durable only after its directory is synced (fsync(2)):
    without it, a power cut can bring back the old name after the new one was used.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (it must not exist) with ``mode`` from the first byte, and sync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask made of it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``, so readers see the old file or the whole new one.

    The temporary file gets ``mode`` before any byte is written, so a private key is never
    readable by others, not even for a moment; a crash leaves no half-written file behind
    (at worst a ``.tmp-*`` file, which ``device-agent reset`` removes).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """A private key: mode 0600."""
    write_atomic(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """A certificate: mode 0644."""
    write_atomic(path, data, 0o644)
