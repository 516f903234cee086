"""The admin channel is private (issue 8): real server-ext and CLI processes, and another local
user simulated by running the impostor as ``nobody`` (``setpriv``; the tests run as root).

Before the fix, a data-dir path too long for a Unix socket sent the socket to
``$TMPDIR/server-ext-<uid>/``, a directory the server accepted even when another user had made
it: that user swapped the socket, captured the revocation, and the CLI printed "closed 1 live
session(s)" while the device stayed online.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import queue
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server_ext.admin.admin_channel import socket_path
from tests.integration.cli_support import BIN, free_port, run

IMPOSTOR = Path(__file__).parent.parent / "support" / "impostor_admin.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # nobody cannot read the test venv's interpreter

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="simulating another local user needs root and setpriv",
)


def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


def as_nobody(*argv: str) -> list[str]:
    user = nobody()
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        *argv,
    ]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory like /tmp: every local user may create things in it."""
    path = Path(tempfile.mkdtemp(prefix="admin-channel-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Impostor:
    """A fake admin socket served by ``nobody``; ``log`` records what reached it."""

    def __init__(self, socket: Path, log: Path, *, silent: bool = False, user: bool = True):
        self.log = log
        log.touch()
        log.chmod(0o666)
        argv = [SYSTEM_PYTHON, str(IMPOSTOR), "serve", str(socket), str(log)]
        if silent:
            argv.append("--silent")
        self.proc = subprocess.Popen(
            as_nobody(*argv) if user else argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise AssertionError(f"the impostor did not start: {line}{self.proc.stderr}")

    def received(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


class Lines:
    """A process's stderr lines, read in a thread so a missing line is a timeout, not a hang."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        assert proc.stderr is not None
        stream = proc.stderr

        def pump() -> None:
            for line in stream:
                self._lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None


def server_ext(data: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> Any:
    return run("server-ext", "--data-dir", str(data), *args, env=env, ok=ok)


def start_server(data: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "server-ext"), "--data-dir", str(data), "serve", "--port", str(port),
         "--direct-tls-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert banner.startswith(f"listening on 127.0.0.1:{port}"), banner
    return proc, port


def add_alice(data: Path, tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret pass\n")
    server_ext(data, "init", "--domain", "localhost")
    server_ext(data, "user", "add", "alice", "--password-file", str(password))


def online_device(data: Path, port: int, state: Path, env: dict[str, str]) -> Any:
    issued = json.loads(
        server_ext(
            data, "token", "create", "--jid", "alice", "--resource", "bot",
            "--connect", f"127.0.0.1:{port}", "--json", env=env,
        ).stdout
    )  # fmt: skip
    run("device-agent", "--state-dir", str(state), "enroll", "--uri", issued["uri"])
    agent = subprocess.Popen(
        [str(BIN / "device-agent"), "--state-dir", str(state), "run"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines = Lines(agent)
    first = lines.next(30)
    assert first is not None and "online as alice@localhost/bot" in first, first
    return agent, lines


def registered_device(data: Path, tmp_path: Path) -> None:
    """alice with a registered device `bot`, no server running."""
    add_alice(data, tmp_path)
    state = tmp_path / "bot"
    run("device-agent", "--state-dir", str(state), "init", "--jid", "alice@localhost/bot")
    server_ext(data, "certs", "add", "bot", str(state / "device.crt"), "--user", "alice")


def private_dir_of(data: Path) -> os.stat_result:
    return os.lstat(socket_path(data).parent)


# --- the attack from the issue ------------------------------------------------------------


def test_a_long_data_dir_never_lets_another_user_swap_the_admin_socket(
    shared: Path, tmp_path: Path
) -> None:
    env = {"TMPDIR": str(shared)}  # the shared temp dir the old code fell back to
    data = tmp_path / ("long-data-directory-" * 6) / "server"
    natural = data.resolve() / "admin.sock"
    assert len(str(natural).encode()) > 108  # too long for sun_path
    # Another user prepares the directory the old code would pick, and waits.
    squat = shared / f"server-ext-{os.geteuid()}"
    subprocess.run(as_nobody("mkdir", "-m", "700", str(squat)), check=True)
    predicted = squat / (hashlib.sha256(str(natural).encode()).hexdigest()[:16] + ".sock")

    add_alice(data, tmp_path)
    server, port = start_server(data, env)
    impostor = None
    agent = None
    try:
        agent, lines = online_device(data, port, tmp_path / "bot", env)
        # The impostor replaces whatever is at the predicted path with its own socket.
        impostor = Impostor(predicted, shared / "impostor.log")
        out = server_ext(data, "devices", "revoke", "alice@localhost/bot", env=env, ok=False)
        line = lines.next(10)
        assert impostor.received() == "", "the revocation went to another user's socket"
        assert out.returncode == 0, out.stderr
        assert "closed 1 live session(s)" in out.stdout
        assert line is not None and "refused" in line, "the device is still online"
        # The socket lives in a directory of the server's user, mode 0700, not a symlink.
        info = private_dir_of(data)
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert stat.S_ISSOCK(os.lstat(socket_path(data)).st_mode)
    finally:
        for proc in (agent, impostor.proc if impostor else None, server):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=10)


# --- each end checks the other --------------------------------------------------------------


def test_the_cli_refuses_an_admin_socket_served_by_another_user(
    shared: Path, tmp_path: Path
) -> None:
    """The socket sits where the genuine one would, but another user serves it: SO_PEERCRED."""
    data = shared / "data"
    registered_device(data, tmp_path)
    where = socket_path(data)
    where.parent.mkdir(mode=0o700, exist_ok=True)
    # nobody serves a socket in its own directory; it ends up at the genuine path (a rename
    # keeps the listening socket), as if the server's user had been tricked into moving it.
    own = shared / "nobody"
    subprocess.run(as_nobody("mkdir", "-m", "700", str(own)), check=True)
    impostor = Impostor(own / "fake.sock", shared / "impostor.log")
    try:
        os.rename(own / "fake.sock", where)
        out = server_ext(data, "devices", "revoke", "alice@localhost/bot", ok=False)
    finally:
        impostor.stop()
    assert out.returncode == 1
    assert "closed" not in out.stdout
    (line,) = out.stderr.strip().splitlines()
    assert f"served by uid {nobody().pw_uid}" in line and "Traceback" not in out.stderr
    assert "request" not in impostor.received()  # not a byte of the request was sent


def test_the_server_refuses_admin_clients_of_another_user(shared: Path, tmp_path: Path) -> None:
    """Even if the socket's permissions are loosened by mistake, the server checks the peer."""
    data = shared / "data"
    add_alice(data, tmp_path)
    server, _ = start_server(data, {})
    try:
        where = socket_path(data)
        for folder in (data, where.parent):
            folder.chmod(0o755)
        where.chmod(0o666)
        asked = subprocess.run(
            as_nobody(SYSTEM_PYTHON, str(IMPOSTOR), "ask", str(where), '{"op": "sessions"}'),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert asked.returncode == 0, asked.stderr
        reply = json.loads(asked.stdout)
        assert reply["ok"] is False and "refused" in reply["error"], reply
        assert "sessions" not in reply
        # The server's own user is still served (once the CLI finds the directory private).
        where.parent.chmod(0o700)
        kicked = server_ext(data, "user", "kick", "alice")
        assert "closed 0 session(s) of alice@localhost" in kicked.stdout
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.parametrize("planted", ["directory", "symlink"])
def test_an_admin_directory_planted_by_another_user_is_refused_by_both_ends(
    shared: Path, tmp_path: Path, planted: str
) -> None:
    """A data dir others may write to: another user plants `admin/` (or a symlink) first."""
    data = shared / "data"
    registered_device(data, tmp_path)
    data.chmod(0o777)  # the operator's mistake
    admin = data / "admin"
    if planted == "directory":
        subprocess.run(as_nobody("mkdir", "-m", "700", str(admin)), check=True)
        target = admin
    else:
        target = shared / "elsewhere"
        subprocess.run(as_nobody("mkdir", "-m", "700", str(target)), check=True)
        subprocess.run(as_nobody("ln", "-s", str(target), str(admin)), check=True)
    impostor = Impostor(target / "admin.sock", shared / "impostor.log")
    try:
        out = server_ext(data, "devices", "revoke", "alice@localhost/bot", ok=False)
        assert out.returncode == 1
        assert "closed" not in out.stdout and "not running" not in out.stdout
        (line,) = out.stderr.strip().splitlines()
        assert "refusing the admin socket directory" in line
        # The server will not start on it either (and does not touch the impostor's socket).
        port = free_port()
        served = subprocess.run(
            [str(BIN / "server-ext"), "--data-dir", str(data), "serve", "--port", str(port),
             "--direct-tls-port", "0"],
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip
        assert served.returncode == 1
        assert "refusing the admin socket directory" in served.stderr
        assert "Traceback" not in served.stderr
        assert impostor.received() == ""
    finally:
        impostor.stop()


# --- "not running" stays honest ----------------------------------------------------------------


def test_not_running_and_not_answering_are_told_apart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    registered_device(data, tmp_path)
    # Never started: nothing to close, and the CLI says so.
    out = server_ext(data, "devices", "disable", "alice@localhost/bot")
    assert "the server is not running" in out.stdout
    server_ext(data, "devices", "enable", "alice@localhost/bot")
    # A server of our own user that does not answer: a clear error, never a count.
    where = socket_path(data)
    where.parent.mkdir(mode=0o700, exist_ok=True)
    hung = Impostor(where, tmp_path / "hung.log", silent=True, user=False)
    try:
        out = server_ext(data, "devices", "revoke", "alice@localhost/bot", ok=False)
    finally:
        hung.stop()
    assert out.returncode == 1
    assert "closed" not in out.stdout
    (line,) = out.stderr.strip().splitlines()
    assert "not told" in line or "did not answer" in line
    # A crashed server leaves its socket behind: that is "not running" again.
    where.unlink()
    crashed, _ = start_server(data, {})
    crashed.kill()
    crashed.wait(timeout=10)
    assert where.exists()
    shown = server_ext(data, "devices", "show", "1", "--json")
    assert json.loads(shown.stdout)["online"] is None  # unknown: no server is running
