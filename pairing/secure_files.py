"""Writing key and certificate files safely: the final mode from the first byte, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``, so readers see the old file or the whole new one.

    The temporary file gets ``mode`` before any byte is written, so a private key is never
    readable by others, not even for a moment; a crash leaves no half-written file behind.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
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


def write_private(path: Path, data: bytes) -> None:
    """A private key: mode 0600."""
    write_atomic(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """A certificate: mode 0644."""
    write_atomic(path, data, 0o644)
