"""The admin channel: a Unix socket that only the server's own user can reach.

Changing the registry from another process is not enough to cut off a device that is online
now; the CLI writes the registry *and then* tells the running server over this socket, which
closes the affected sessions at once. So the CLI must never talk to an impostor: one that
answers "closed 1 live session(s)" while the session stays open.

- The socket is ``<data_dir>/admin/admin.sock``. The server creates ``admin/`` with mode 0700,
  and both ends open it without following symlinks and check with ``fstat`` that it is a
  directory of their own user with mode 0700, or refuse. Nobody else can put anything in it.
- Both ends then use the directory through the descriptor they checked
  (``/proc/self/fd/N/admin.sock``), so a long data-dir path never sends the socket elsewhere
  (``sun_path`` holds 108 bytes) and the directory cannot be swapped after the check.
- Both ends check the peer with ``SO_PEERCRED``: the server answers only clients of its own
  uid or root, and the CLI believes only a server of its own uid or root.

No socket in a genuine directory means no server is running. Anything else that stops the CLI
from reaching a genuine server is :class:`AdminChannelError`, never "not running".

One JSON object per line each way. Requests: ``{"op": "device-changed", "device": <id>}``,
``{"op": "trust-changed", "reason": …}`` (a certificate was registered by hand),
``{"op": "sessions"}``, ``{"op": "kick", "jid": …}``, ``{"op": "reload-tls"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from server_ext.errors import ConfigError, ServerExtError
from server_ext.log_limits import CappedLog

log = logging.getLogger(__name__)
peer_log = CappedLog(log)

SOCKET_DIR = "admin"
SOCKET_NAME = "admin.sock"
_MAX_REQUEST = 64 * 1024
_MAX_UNIX_PATH = 107  # sun_path holds 108 bytes on Linux, with the final NUL
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (socket(7))


class AdminChannelError(ServerExtError):
    """The running server cannot be reached safely; nothing was told to it."""


def socket_path(data_dir: Path) -> Path:
    """Where the admin socket lives: ``<data_dir>/admin/admin.sock`` (for messages and tests)."""
    return data_dir.absolute() / SOCKET_DIR / SOCKET_NAME


def _problem(info: os.stat_result, owners: tuple[int, ...]) -> str | None:
    """Why a directory with ``info`` is not private to one of ``owners``, or None."""
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid not in owners:
        return f"belongs to uid {info.st_uid}, not to uid {os.geteuid()}"
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        return f"has mode {mode:04o}, not 0700"
    return None


@contextlib.contextmanager
def _private_dir(data_dir: Path, *, create: bool, owners: tuple[int, ...]) -> Iterator[int | None]:
    """A descriptor of ``<data_dir>/admin`` after checking it is private; None if it is absent.

    Raises :class:`ConfigError` when it exists but is a symlink, not a directory, someone
    else's, or open to others.
    """
    where = data_dir.absolute() / SOCKET_DIR
    try:
        parent = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:
        raise ConfigError(f"cannot open the data directory {data_dir}: {exc.strerror}") from None
    try:
        if create:
            try:
                os.mkdir(SOCKET_DIR, 0o700, dir_fd=parent)
            except FileExistsError:
                pass  # checked below like any other
            else:
                os.chmod(SOCKET_DIR, 0o700, dir_fd=parent)  # whatever the umask
        try:
            fd = os.open(
                SOCKET_DIR,
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=parent,
            )
        except FileNotFoundError:
            fd = None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ConfigError(
                    f"refusing the admin socket directory {where}: it is a symlink or not a "
                    "directory; remove it"
                ) from None
            raise ConfigError(f"cannot open {where}: {exc.strerror}") from None
    finally:
        os.close(parent)
    if fd is None:
        yield None
        return
    try:
        problem = _problem(os.fstat(fd), owners)
        if problem:
            raise ConfigError(
                f"refusing the admin socket directory {where}: it {problem}; only the "
                "server's own user may have it (remove it and restart the server)"
            )
        yield fd
    finally:
        os.close(fd)


def _address(fd: int, where: Path) -> str:
    """A path to the socket that goes through the checked descriptor, short whatever the
    data-dir path (Linux resolves ``/proc/self/fd/N`` to the directory itself)."""
    through = f"/proc/self/fd/{fd}"
    if os.path.isdir(through):
        return f"{through}/{SOCKET_NAME}"
    if len(str(where).encode()) > _MAX_UNIX_PATH:
        raise ConfigError(
            f"the data directory path is too long for a Unix socket ({where}) and /proc is "
            "not mounted; use a shorter --data-dir"
        )
    return str(where)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(raw)[1])


def _trusted(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class AdminListener:
    """The listening admin socket; :meth:`close` removes it from the private directory."""

    def __init__(self, server: asyncio.AbstractServer, dir_fd: int) -> None:
        self._server = server
        self._dir_fd: int | None = dir_fd

    def close(self) -> None:
        self._server.close()
        if self._dir_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(SOCKET_NAME, dir_fd=self._dir_fd)
            os.close(self._dir_fd)
            self._dir_fd = None


async def serve_admin(data_dir: Path, handle: Handler) -> AdminListener:
    """Listen in ``<data_dir>/admin``; ``handle`` turns a request into a reply (never raises)."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if not _trusted(uid):
                peer_log.log(
                    logging.WARNING, "admin peer", "admin channel: refused a client of uid %d", uid
                )
                reply: dict[str, Any] = {
                    "ok": False,
                    "error": f"refused: uid {uid} is not the server's user or root",
                }
            else:
                line = await asyncio.wait_for(reader.readline(), 5)
                reply = await _answer(line, handle)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    where = socket_path(data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # noqa: ASYNC240 - at startup
    with _private_dir(data_dir, create=True, owners=(os.geteuid(),)) as checked:
        assert checked is not None  # created just now or verified
        dir_fd = os.dup(checked)  # kept open for the listener's life
    try:
        address = _address(dir_fd, where)
        if _answers(address):
            raise ConfigError(
                f"another server-ext is already running with this data directory ({where})"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_NAME, dir_fd=dir_fd)  # left by a crashed server
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(SOCKET_NAME, 0o600, dir_fd=dir_fd)
        sock.listen(16)
        server = await asyncio.start_unix_server(on_client, sock=sock)
    except BaseException:
        os.close(dir_fd)
        raise
    return AdminListener(server, dir_fd)


async def _answer(line: bytes, handle: Handler) -> dict[str, Any]:
    if len(line) > _MAX_REQUEST:
        return {"ok": False, "error": "request too large"}
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("not an object")
        return await handle(request)
    except ValueError as exc:
        return {"ok": False, "error": f"bad request: {exc}"}
    except Exception:  # the admin channel must never take the server down
        log.exception("admin request failed")
        return {"ok": False, "error": "internal error"}


def _answers(address: str) -> bool:
    """True when a live server already listens at ``address``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


def request(
    data_dir: Path, payload: dict[str, Any], *, timeout: float = 3.0
) -> dict[str, Any] | None:
    """Ask the running server; None when no server is running for ``data_dir``.

    Raises :class:`AdminChannelError` when a server may be running but cannot be reached
    safely: the directory or the socket's owner is not ours, or it does not answer properly.
    """
    where = socket_path(data_dir)
    try:
        with _private_dir(data_dir, create=False, owners=(os.geteuid(), 0)) as fd:
            if fd is None:
                return None  # no server ever ran here
            return _exchange(_address(fd, where), where, payload, timeout)
    except ConfigError as exc:
        raise AdminChannelError(str(exc)) from None


def _exchange(
    address: str, where: Path, payload: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            return None  # no socket, or one left by a crashed server: not running
        except OSError as exc:
            raise AdminChannelError(f"cannot reach the server at {where}: {exc}") from None
        uid = peer_uid(sock)
        if not _trusted(uid):
            # Checked before a single byte is sent: an impostor learns nothing and is not
            # believed (issue 8).
            raise AdminChannelError(
                f"refusing the admin socket {where}: it is served by uid {uid}, "
                f"not by uid {os.geteuid()} or root"
            )
        data = b""
        try:
            sock.sendall(json.dumps(payload).encode() + b"\n")
            while not data.endswith(b"\n") and len(data) <= _MAX_REQUEST:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise AdminChannelError(f"the server at {where} did not answer: {exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise AdminChannelError(f"the server at {where} sent a malformed reply")
    return reply
