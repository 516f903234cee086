"""Pairing windows among strangers: codes are tried only where they belong, idle sockets
cannot hold a window, and closing one prints no traceback (issue 8, "Pairing windows").

Every test has its own network namespace (the ``lan`` mark), so the strangers here are the
test's own devices and nothing else on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pairing.protocol.frames import Frame
from pairing.protocol.pair_messages import FailureReason, FrameType
from tests.integration.cli_support import BIN
from tests.integration.test_lan_pairing import LOOPBACK, finish, make_label, start, user_cmd

pytestmark = pytest.mark.lan


class Watched:
    """A CLI process whose stderr lines are collected as they come (it may run for long)."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = start(cmd)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first stderr line containing ``text`` (fails the test after ``timeout``)."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                hit = next((line for line in self.lines if text in line), None)
                if hit is not None:
                    return hit
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line with {text!r} in:\n{''.join(self.lines)}")
                self._changed.wait(min(left, 0.5))

    def finish(self, timeout: float = 90) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.proc.returncode, out, "".join(self.lines)


def device(state: Path, *extra: str, timeout: int = 60, interface: str = "127.0.0.1") -> list[str]:
    return [
        str(BIN / "device-agent"),
        "--state-dir",
        str(state),
        "pair",
        "--timeout",
        str(timeout),
        "--interface",
        interface,
        *extra,
    ]


def strikes(state: Path) -> int:
    path = state / "attempts.json"
    return int(json.loads(path.read_text())["failures"]) if path.exists() else 0


def test_a_bare_code_is_tried_once_on_a_stranger_and_the_window_pairs_its_device(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """A stranger that answers first costs one try of the code, not its budget, and does not
    make the window fail: the window goes on and pairs the device the code belongs to."""
    _, port, pin = served
    pw = tmp_path / "pw"
    make_label(tmp_path / "stranger", "neighbour", "Neighbour's plug")
    ours = make_label(tmp_path / "ours", "kitchen", "Kitchen sensor")
    window = Watched(
        [
            *user_cmd(port, pin, pw),
            "listen",
            "--code",
            ours["code"],
            "--timeout",
            "90",
            *LOOPBACK,
            "--json",
        ]
    )
    stranger = start(device(tmp_path / "stranger", timeout=80))
    try:
        window.wait_for("pairing window")
        window.wait_for("does not match")  # the stranger answered first
        mine = start(device(tmp_path / "ours"))
        code, out, err = finish(mine, 90)
        assert code == 0, err
        assert "paired: this device logs in as alice@localhost/kitchen" in out
        wcode, wout, werr = window.finish()
        assert wcode == 0, werr
        (row,) = json.loads(wout)  # the stranger is no row of this window's report
        assert row["device_id"] == ours["device_id"] and row["ok"] is True
    finally:
        stranger.terminate()
        _, _, serr = finish(stranger)
    assert strikes(tmp_path / "stranger") == 1, serr
    assert "does not expect this device" in serr  # asked again: told so, without a strike
    assert strikes(tmp_path / "ours") == 0


def test_a_fleet_window_never_tries_a_code_on_a_device_it_does_not_list(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    pw = tmp_path / "pw"
    make_label(tmp_path / "stranger", "neighbour", "")
    ours = make_label(tmp_path / "ours", "kitchen", "")
    (tmp_path / "fleet.csv").write_text(f"device_id,code\n{ours['device_id']},{ours['code']}\n")
    window = Watched(
        [
            *user_cmd(port, pin, pw),
            "listen",
            "--codes",
            str(tmp_path / "fleet.csv"),
            "--timeout",
            "90",
            *LOOPBACK,
            "--json",
        ]
    )
    stranger = start(device(tmp_path / "stranger", timeout=80))
    try:
        window.wait_for("not expected (no code for it)")
        code, _, err = finish(start(device(tmp_path / "ours")), 90)
        assert code == 0, err
        wcode, wout, werr = window.finish()
        assert wcode == 0, werr
        assert [r["device_id"] for r in json.loads(wout)] == [ours["device_id"]]
    finally:
        stranger.terminate()
        finish(stranger)
    assert strikes(tmp_path / "stranger") == 0


def test_pairing_add_with_a_bare_code_skips_a_stranger_that_does_not_prove_it(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """The reverse direction: `pairing add --code` connects to advertising devices one at a
    time; a stranger costs one try, and the device that proves the code is paired."""
    _, port, pin = served
    pw = tmp_path / "pw"
    make_label(tmp_path / "stranger", "neighbour", "")
    ours = make_label(tmp_path / "ours", "lamp", "Desk lamp")
    stranger = Watched(device(tmp_path / "stranger", "--advertise", timeout=80))
    stranger.wait_for("waiting for a user's client")
    user = Watched(
        [
            *user_cmd(port, pin, pw),
            "add",
            "--code",
            ours["code"],
            "--timeout",
            "90",
            *LOOPBACK,
            "--json",
        ]
    )
    try:
        user.wait_for("does not match")
        code, out, err = finish(start(device(tmp_path / "ours", "--advertise")), 90)
        assert code == 0, err
        assert "paired: this device logs in as alice@localhost/lamp" in out
        ucode, uout, uerr = user.finish()
        assert ucode == 0, uerr
        assert [(r["device_id"], r["ok"]) for r in json.loads(uout)] == [(ours["device_id"], True)]
    finally:
        stranger.proc.terminate()
        stranger.finish()
    assert strikes(tmp_path / "stranger") == 1


def test_idle_connections_cannot_keep_a_device_out_of_the_window(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """16 idle sockets fill the window (a 17th is told busy); they get a short handshake
    deadline, so the real device, told busy at first, pairs while they are still open."""
    _, port, pin = served
    pw = tmp_path / "pw"
    ours = make_label(tmp_path / "ours", "kitchen", "")
    window = Watched(
        [
            *user_cmd(port, pin, pw),
            "listen",
            "--code",
            ours["code"],
            "--timeout",
            "120",
            "--host",
            "127.0.0.1",
            *LOOPBACK,
        ]
    )
    line = window.wait_for("pairing window")
    window_port = int(line.split("127.0.0.1:")[1].split()[0])
    idle = [socket.create_connection(("127.0.0.1", window_port), timeout=5) for _ in range(16)]
    busy = Frame(FrameType.SETUP_FAILED, bytes([FailureReason.BUSY])).encode()
    try:
        time.sleep(0.5)  # let the window accept all sixteen
        with socket.create_connection(("127.0.0.1", window_port), timeout=5) as extra:
            assert extra.recv(16) == busy  # the cap holds
        code, out, err = finish(start(device(tmp_path / "ours", timeout=50)), 90)
        assert code == 0, err
        assert "paired" in out
        timed_out = Frame(FrameType.SETUP_FAILED, bytes([FailureReason.TIMEOUT])).encode()
        for sock in idle:  # each idle socket was told why it was dropped
            sock.settimeout(30)
            assert sock.recv(16) == timed_out
    finally:
        for sock in idle:
            sock.close()
    wcode, _, werr = window.finish()
    assert wcode == 0, werr


def test_closing_a_window_or_a_device_with_connections_open_prints_one_line(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """Issue 8, "Tracebacks": no CancelledError callbacks when a window or an advertising
    device stops while someone is still connected; each says what happened in one line."""
    _, port, pin = served
    window = Watched(
        [
            *user_cmd(port, pin, tmp_path / "pw"),
            "listen",
            "--code",
            "314-15-926",
            "--timeout",
            "4",
            "--host",
            "127.0.0.1",
            *LOOPBACK,
        ]
    )
    line = window.wait_for("pairing window")
    window_port = int(line.split("127.0.0.1:")[1].split()[0])
    with socket.create_connection(("127.0.0.1", window_port), timeout=30) as held:
        code, _, err = window.finish()
        closed = Frame(FrameType.SETUP_FAILED, bytes([FailureReason.WINDOW_CLOSED])).encode()
        assert held.recv(16) == closed
    assert code == 1
    assert "Traceback" not in err and "CancelledError" not in err, err
    assert err.rstrip().splitlines()[-1] == "Error: not every expected device was paired"

    make_label(tmp_path / "lamp", "lamp", "")
    lamp = Watched(device(tmp_path / "lamp", "--advertise", timeout=4))
    line = lamp.wait_for("waiting for a user's client")
    lamp_port = int(line.rsplit(" port ", 1)[1].split()[0])
    with socket.create_connection(("127.0.0.1", lamp_port), timeout=30):
        code, _, err = lamp.finish()
    assert code == 1
    assert "Traceback" not in err and "CancelledError" not in err, err
    assert err.rstrip().splitlines()[-1].startswith("Error: no user's client paired this device")


def test_a_device_paired_twice_at_once_says_so_in_one_line(tmp_path: Path) -> None:
    """Issue 8, "Tracebacks": a second `pair --advertise` for one device (zeroconf's
    NonUniqueNameException before) gives one clear line and exit 1; the first keeps waiting."""
    make_label(tmp_path / "lamp", "lamp", "")
    first = Watched(device(tmp_path / "lamp", "--advertise", timeout=60))
    try:
        first.wait_for("waiting for a user's client")
        for extra in (["--advertise"], []):
            second = subprocess.run(
                device(tmp_path / "lamp", *extra, timeout=20),
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            assert second.returncode == 1
            assert "Traceback" not in second.stderr, second.stderr
            (line,) = second.stderr.splitlines()
            assert line.startswith("Error: another device-agent is already pairing this device")
        assert first.proc.poll() is None
    finally:
        first.proc.terminate()
        first.finish()


@pytest.fixture
def second_machine() -> Iterator[str]:
    """Another machine on this test's LAN (tests/support/netns.py), or a skip."""
    from tests.support.netns import NamespaceUnavailable, another_host

    try:
        with another_host(HERE, THERE) as there:
            yield there
    except (NamespaceUnavailable, OSError) as exc:
        pytest.skip(f"cannot make a second machine here: {exc}")


HERE, THERE = "10.77.0.1", "10.77.0.2"


def test_a_cloned_device_on_another_machine_says_so_in_one_line(
    tmp_path: Path, second_machine: str
) -> None:
    """A device image copied to a second machine advertises the same device id: mDNS probing
    there finds the name taken (RFC 6762 §8.1) and the copy stops with one line, instead of
    zeroconf's NonUniqueNameException; the original keeps waiting."""
    from tests.support.netns import setns

    make_label(tmp_path / "lamp", "lamp", "")
    shutil.copytree(tmp_path / "lamp", tmp_path / "clone")
    first = Watched(device(tmp_path / "lamp", "--advertise", interface=HERE))
    try:
        first.wait_for("waiting for a user's client")

        def on_the_second_machine() -> None:
            fd = os.open(second_machine, os.O_RDONLY)
            setns(fd)
            os.close(fd)

        clone = subprocess.run(
            device(tmp_path / "clone", "--advertise", timeout=20, interface=THERE),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            preexec_fn=on_the_second_machine,
        )
        assert clone.returncode == 1
        assert "Traceback" not in clone.stderr, clone.stderr
        last = clone.stderr.rstrip().splitlines()[-1]
        assert last.startswith("Error: ") and "already advertised on this network" in last
        assert first.proc.poll() is None
    finally:
        first.proc.terminate()
        first.finish()
