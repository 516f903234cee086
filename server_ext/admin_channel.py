"""The admin channel: a Unix socket in the data directory, so the CLI reaches the live server.

Changing the registry from another process is not enough to cut off a device that is online
now; the CLI writes the registry *and then* tells the running server over this socket, which
closes the affected sessions at once. The socket is mode 0600 in a 0700 directory: only the
server's own user (the one that can already edit the registry file) can use it.

One JSON object per line each way. Requests: ``{"op": "certificate-changed", "fingerprint":
…}``, ``{"op": "sessions"}``, ``{"op": "kick", "jid": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server_ext.errors import ConfigError

log = logging.getLogger(__name__)

SOCKET_NAME = "admin.sock"
_MAX_REQUEST = 64 * 1024
_MAX_UNIX_PATH = 100  # sun_path holds 108 bytes on Linux


def socket_path(data_dir: Path) -> Path:
    """``<data_dir>/admin.sock``, or a short private path when that would be too long."""
    natural = data_dir.resolve() / SOCKET_NAME
    if len(str(natural).encode()) <= _MAX_UNIX_PATH:
        return natural
    digest = hashlib.sha256(str(natural).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"server-ext-{os.getuid()}" / f"{digest}.sock"


Handler = Callable[[dict[str, Any]], dict[str, Any]]


async def serve_admin(path: Path, handle: Handler) -> asyncio.AbstractServer:
    """Listen on ``path``; ``handle`` turns a request into a reply (never raises)."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if len(line) > _MAX_REQUEST:
                reply: dict[str, Any] = {"ok": False, "error": "request too large"}
            else:
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                    reply = handle(request)
                except ValueError as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                except Exception:  # the admin channel must never take the server down
                    log.exception("admin request failed")
                    reply = {"ok": False, "error": "internal error"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _answers(path):
        raise ConfigError(
            f"another server-ext is already running with this data directory ({path})"
        )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # noqa: ASYNC240 - a socket left by a crashed server, at startup
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_client, path=str(path))
    finally:
        os.umask(old_umask)
    path.chmod(0o600)  # noqa: ASYNC240 - at startup
    return server


def _answers(path: Path) -> bool:
    """True when a live server already listens on ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def request(
    data_dir: Path, payload: dict[str, Any], *, timeout: float = 3.0
) -> dict[str, Any] | None:
    """Ask the running server; None when no server is running for ``data_dir``."""
    path = socket_path(data_dir)
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (ConnectionRefusedError, FileNotFoundError):
        return None  # a stale socket: the server is not running
    except OSError as exc:
        return {"ok": False, "error": f"the server did not answer: {exc}"}
    try:
        reply = json.loads(data)
    except ValueError:
        return {"ok": False, "error": "the server sent a malformed reply"}
    return reply if isinstance(reply, dict) else None
