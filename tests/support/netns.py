"""A private network namespace for one test: its own loopback, so its own mDNS world.

LAN pairing is discovered over multicast DNS on 127.0.0.1. On a shared host every test run
hears every other run's windows and devices, and a window of one run tries its code on the
device of another ("found device … the setup code does not match"). A test marked ``lan``
therefore runs in a network namespace of its own (Linux ``unshare(CLONE_NEWNET)``) with only
a loopback interface; the server and the CLIs it starts inherit it, and nothing outside
hears them or is heard by them. Afterwards the test process returns to the namespace it came
from, and the namespace disappears with the last process in it.

As root this needs nothing else. Otherwise a user namespace is made first (once per run,
while the process is still single-threaded), which unprivileged users may do on most
distributions; the test process then stays in it for the rest of the run.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_homes: list[int] = []  # the namespaces the test process came from, innermost last


class NamespaceUnavailable(RuntimeError):
    """Neither root nor an unprivileged user namespace can make a private network."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _map_own_ids() -> None:
    # An unprivileged user namespace may map exactly the caller's own uid and gid.
    uid, gid = os.getuid(), os.getgid()
    with open("/proc/self/setgroups", "w") as handle:
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"{gid} {gid} 1")


def _loopback_up() -> None:
    # A new namespace has a loopback interface that is down: bring it up (ip link set lo up).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def _new_network() -> None:
    try:
        _unshare(CLONE_NEWNET)
    except PermissionError:
        # Not root: a user namespace gives this process the right to make network ones. It
        # can only be entered while the process has one thread.
        if threading.active_count() != 1:
            raise NamespaceUnavailable(
                "not root, and the test process already runs threads (a user namespace "
                "needs a single-threaded process)"
            ) from None
        try:
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
            _map_own_ids()
        except OSError as exc:
            raise NamespaceUnavailable(
                f"not root, and no unprivileged user namespace either ({exc})"
            ) from None
    _loopback_up()


@contextmanager
def private_network() -> Iterator[None]:
    """Run the block (and every process it starts) in a fresh network namespace."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    _homes.append(home)
    try:
        _new_network()
        try:
            yield
        finally:
            try:
                setns(home)
            except PermissionError:
                pass  # a user namespace cannot go back to the host's network; stay private
    finally:
        _homes.remove(home)
        os.close(home)


def outer_network() -> str:
    """A path to the network the test process came from: where the host's other runs live.

    Inside :func:`private_network` it names the namespace left behind (a child process opens
    it before its inherited descriptors are closed); outside, the current one.
    """
    if _homes:
        return f"/proc/self/fd/{_homes[-1]}"
    return "/proc/thread-self/ns/net"


@contextmanager
def another_host(here: str = "10.77.0.1", there: str = "10.77.0.2") -> Iterator[str]:
    """A second "machine" on this test's LAN: a network namespace joined to the current one
    by a veth pair, ``here`` on this side and ``there`` on the other. Yields the path of its
    namespace (for :func:`setns` in a child). Needs root and iproute2.

    Two processes on one host share the mDNS port, and the unicast answer to a probe
    reaches only one of them (RFC 6762 §8.1 probes ask for unicast replies); two namespaces
    behave like two machines.
    """
    holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    try:
        path = f"/proc/{holder.pid}/ns/net"
        for _ in range(100):  # until unshare has moved the sleeper out
            if os.path.exists(path) and os.readlink(path) != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.02)
        commands = [
            [
                "ip",
                "link",
                "add",
                "lan0",
                "type",
                "veth",
                "peer",
                "name",
                "lan1",
                "netns",
                str(holder.pid),
            ],
            ["ip", "addr", "add", f"{here}/24", "dev", "lan0"],
            ["ip", "link", "set", "lan0", "up"],
            ["nsenter", f"--net={path}", "ip", "link", "set", "lo", "up"],
            ["nsenter", f"--net={path}", "ip", "addr", "add", f"{there}/24", "dev", "lan1"],
            ["nsenter", f"--net={path}", "ip", "link", "set", "lan1", "up"],
        ]
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise NamespaceUnavailable(f"{' '.join(command)}: {result.stderr.strip()}")
        yield path
    finally:
        holder.kill()
        holder.wait()
