"""LAN pairing across processes: a pairing window (user), devices, and the server.

mDNS runs pinned to 127.0.0.1 (IPv4), the only interface these tests may use, and each test
has a network namespace of its own (the ``lan`` mark), so no other run on the host is heard.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pairing.protocol.frames import Frame
from pairing.protocol.pair_messages import FailureReason, FrameType
from tests.integration.cli_support import BIN, run
from tests.integration.test_cli import ECHO_CHECK

ROOT = Path(__file__).resolve().parents[2]

LOOPBACK = ["--interface", "127.0.0.1"]

pytestmark = pytest.mark.lan


def user_cmd(port: int, pin: str, pw: Path) -> list[str]:
    return [
        str(BIN / "pairing"),
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "--password-file",
        str(pw),
    ]


def make_label(state: Path, resource: str, name: str) -> dict[str, str]:
    out = run(
        "device-agent",
        "--state-dir",
        str(state),
        "label",
        "--resource",
        resource,
        "--name",
        name,
        "--json",
    )
    label: dict[str, str] = json.loads(out.stdout)
    setup = (state / "setup.json").read_text()
    assert label["code"].replace("-", "") not in setup  # only the verifier is kept
    return label


def start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def probe(name: str, *, network: str | None = None) -> subprocess.Popen[str]:
    """An mDNS advertisement in this test's network, or in the namespace open at ``network``."""
    from tests.support.netns import setns

    def enter() -> None:
        if network is not None:
            fd = os.open(network, os.O_RDONLY)
            setns(fd)
            os.close(fd)

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mdns_probe", name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=enter,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        pytest.skip(f"cannot advertise there: {proc.communicate()[1].strip()[-300:]}")
    return proc


async def test_a_test_hears_only_its_own_network() -> None:
    """Issue 9: parallel runs never hear each other. An advertisement from the host's shared
    network (where every other run on this machine lives) is not seen here; one made here is.
    """
    import asyncio

    from pairing.lan.discovery import browse
    from tests.support.mdns_probe import PROBE_SERVICE_TYPE
    from tests.support.netns import outer_network

    # Unique per process: two runs at once each advertise their own stranger out there.
    stranger_name = f"stranger-{os.getpid()}"
    stranger = probe(stranger_name, network=outer_network())
    ours = probe("ours")
    seen: set[str] = set()

    async def listen() -> None:
        async for found in browse(interfaces=["127.0.0.1"], service_type=PROBE_SERVICE_TYPE):
            seen.add(found.window_id)

    task = asyncio.create_task(listen())
    try:
        for _ in range(200):  # ours shows up within about a second
            if "ours" in seen:
                break
            await asyncio.sleep(0.05)
        assert "ours" in seen, "mDNS does not work in this test's network"
        # The stranger announced before ours did: had it been audible, it would be here too.
        await asyncio.sleep(2)
        assert stranger_name not in seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for proc in (stranger, ours):
            proc.terminate()
            proc.communicate(timeout=10)


@pytest.mark.parametrize("mode", ["token", "xep0257"])
def test_window_device_pair_enroll_and_login(
    served: tuple[Path, int, str], tmp_path: Path, mode: str
) -> None:
    data, port, pin = served
    pw = tmp_path / "pw"
    state = tmp_path / "sensor"
    label = make_label(state, "kitchen", "Kitchen sensor")
    window = start(
        [
            *user_cmd(port, pin, pw),
            "listen",
            "--code",
            label["code"],
            "--mode",
            mode,
            "--timeout",
            "60",
            *LOOPBACK,
            "--json",
        ]
    )
    device = start(
        [str(BIN / "device-agent"), "--state-dir", str(state), "pair", "--timeout", "60", *LOOPBACK]
    )
    code, out, err = finish(device)
    assert code == 0, err
    assert "paired: this device logs in as alice@localhost/kitchen" in out
    for step in ("found window", "code verified", "logged in with EXTERNAL"):
        assert step in err
    wcode, wout, werr = finish(window)
    assert wcode == 0, werr
    (row,) = json.loads(wout)
    assert row["ok"] is True and row["jid"] == "alice@localhost/kitchen"
    assert row["name"] == "Kitchen sensor"
    assert (
        "logged in as alice@localhost/kitchen"
        in run("device-agent", "--state-dir", str(state), "login").stdout
    )
    certs = json.loads(run("server-ext", "--data-dir", str(data), "certs", "list", "--json").stdout)
    assert [(c["name"], c["added_via"]) for c in certs] == [
        ("Kitchen sensor", "token" if mode == "token" else "xep-0257")
    ]
    # The paired device talks to its owner (the example bot runs on the device's state).
    bot = start([sys.executable, str(ROOT / "examples" / "echo_bot.py"), str(state)])
    try:
        assert bot.stdout is not None
        assert "online as alice@localhost/kitchen" in bot.stdout.readline()
        reply = subprocess.run(
            [sys.executable, "-c", ECHO_CHECK, str(port), pin, str(pw), "kitchen"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reply.stdout.strip() == "echo: ping", reply.stderr
    finally:
        bot.terminate()
        bot.wait(timeout=10)


def test_wrong_code_fails_on_both_sides_and_enrolls_nothing(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    data, port, pin = served
    pw = tmp_path / "pw"
    state = tmp_path / "sensor"
    label = make_label(state, "kitchen", "Kitchen sensor")
    wrong = "271-82-818" if label["code"] != "271-82-818" else "314-15-926"
    # The code is given for this very device (a bare --code is tried once per device only).
    (tmp_path / "fleet.csv").write_text(f"{label['device_id']},{wrong}\n")
    window = start(
        [
            *user_cmd(port, pin, pw),
            "listen",
            "--codes",
            str(tmp_path / "fleet.csv"),
            "--timeout",
            "60",
            *LOOPBACK,
            "--json",
        ]
    )
    device = start(
        [str(BIN / "device-agent"), "--state-dir", str(state), "pair", "--timeout", "20", *LOOPBACK]
    )
    wcode, wout, _ = finish(window, 90)
    assert wcode == 1
    (row,) = json.loads(wout)
    assert row["ok"] is False and "does not match" in row["error"] and row["failures"] == 3
    device.terminate()
    _, _, derr = finish(device)
    assert "wrong setup code" in derr
    assert json.loads((state / "attempts.json").read_text())["failures"] == 3
    assert not (state / "device.key").exists()
    assert (
        json.loads(run("server-ext", "--data-dir", str(data), "certs", "list", "--json").stdout)
        == []
    )


def test_lockout_after_the_lifetime_cap(served: tuple[Path, int, str], tmp_path: Path) -> None:
    _, port, pin = served
    pw = tmp_path / "pw"
    state = tmp_path / "sensor"
    label = make_label(state, "kitchen", "")
    wrong = "271-82-818" if label["code"] != "271-82-818" else "314-15-926"
    (tmp_path / "fleet.csv").write_text(f"{label['device_id']},{wrong}\n")
    window = start(
        [
            *user_cmd(port, pin, pw),
            "listen",
            "--codes",
            str(tmp_path / "fleet.csv"),
            "--timeout",
            "30",
            *LOOPBACK,
        ]
    )
    device = start(
        [
            str(BIN / "device-agent"),
            "--state-dir",
            str(state),
            "pair",
            "--timeout",
            "30",
            "--max-failures",
            "2",
            *LOOPBACK,
        ]
    )
    code, _, err = finish(device)
    assert code == 1
    assert "locked" in err
    again = run(
        "device-agent", "--state-dir", str(state), "pair", "--timeout", "5", *LOOPBACK, ok=False
    )
    assert again.returncode == 1 and "locked" in again.stderr
    window.terminate()
    finish(window)


def test_fleet_mode_pairs_two_devices_at_once(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    pw = tmp_path / "pw"
    rows = []
    devices = []
    for name in ("temp1", "temp2"):
        label = make_label(tmp_path / name, name, f"Sensor {name}")
        rows.append(f"{label['device_id']},{label['code']}")
    (tmp_path / "fleet.csv").write_text("device_id,code\n" + "\n".join(rows) + "\n")
    window = start(
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
    for name in ("temp1", "temp2"):
        devices.append(
            start(
                [
                    str(BIN / "device-agent"),
                    "--state-dir",
                    str(tmp_path / name),
                    "pair",
                    "--timeout",
                    "80",
                    *LOOPBACK,
                ]
            )
        )
    for device in devices:
        code, _, err = finish(device, 120)
        assert code == 0, err
    wcode, wout, werr = finish(window, 120)
    assert wcode == 0, werr
    report = json.loads(wout)
    assert sorted(r["jid"] for r in report) == ["alice@localhost/temp1", "alice@localhost/temp2"]
    assert all(r["ok"] for r in report)


def test_window_timeout(served: tuple[Path, int, str], tmp_path: Path) -> None:
    _, port, pin = served
    result = subprocess.run(
        [
            *user_cmd(port, pin, tmp_path / "pw"),
            "listen",
            "--code",
            "314-15-926",
            "--timeout",
            "2",
            *LOOPBACK,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "closed after 2 s" in result.stderr
    assert "not every expected device was paired" in result.stderr


def test_malformed_frames_get_an_error_and_the_window_keeps_serving(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    import socket
    import time

    _, port, pin = served
    pw = tmp_path / "pw"
    state = tmp_path / "sensor"
    label = make_label(state, "kitchen", "")
    window = start(
        [
            *user_cmd(port, pin, pw),
            "listen",
            "--code",
            label["code"],
            "--timeout",
            "60",
            "--host",
            "127.0.0.1",
            *LOOPBACK,
        ]
    )
    assert window.stderr is not None
    line = window.stderr.readline()
    assert "pairing window" in line, line
    window_port = int(line.split("127.0.0.1:")[1].split()[0])
    for garbage in (
        b"\xff\xff\xff" + b"x" * 10,
        Frame(FrameType.SETUP_PROOF, b"1").encode(),
        b"\x01\x00\x05hello",
    ):
        with socket.create_connection(("127.0.0.1", window_port), timeout=5) as sock:
            sock.sendall(garbage)
            reply = sock.recv(16)
            assert (
                reply
                == Frame(FrameType.SETUP_FAILED, bytes([FailureReason.PROTOCOL_ERROR])).encode()
            )
        time.sleep(0.05)
    device = start(
        [str(BIN / "device-agent"), "--state-dir", str(state), "pair", "--timeout", "60", *LOOPBACK]
    )
    code, _, err = finish(device)
    assert code == 0, err
    wcode, _, werr = finish(window)
    assert wcode == 0, werr


async def test_a_connection_flood_gets_busy_instead_of_tying_up_the_window() -> None:
    import asyncio

    from pairing.lan.window import CodeBook, PairingWindow
    from pairing.protocol.pair_messages import DeviceHello, EnrollmentOffer

    class NoEnrollment:  # never reached: no device gets past SRP here
        async def offer_for(self, hello: DeviceHello) -> EnrollmentOffer:
            raise AssertionError("unexpected")

        async def register(self, hello: DeviceHello, der: bytes) -> None:
            raise AssertionError("unexpected")

    window = PairingWindow(
        CodeBook(),
        NoEnrollment(),
        timeout=5,
        host="127.0.0.1",
        interfaces=["127.0.0.1"],
        max_concurrent=1,
        report=lambda _: None,
    )
    task = asyncio.create_task(window.run())
    for _ in range(500):  # the window binds its port first thing
        if window.port:
            break
        await asyncio.sleep(0.01)
    _, holder = await asyncio.open_connection("127.0.0.1", window.port)  # silent, holds a slot
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", window.port)
    reply = await asyncio.wait_for(reader.read(16), 5)
    assert reply == Frame(FrameType.SETUP_FAILED, bytes([FailureReason.BUSY])).encode()
    holder.close()
    writer.close()
    window.close()
    await asyncio.wait_for(task, 10)


def test_reverse_mode_device_advertises_and_the_user_adds_it(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """HomeKit's direction: the device advertises, `pairing add` browses and connects."""
    _, port, pin = served
    pw = tmp_path / "pw"
    state = tmp_path / "lamp"
    label = make_label(state, "lamp", "Desk lamp")
    run(
        "device-agent",
        "--state-dir",
        str(state),
        "label",
        "--reset",
        "--resource",
        "lamp",
        "--name",
        "Desk lamp",
        "--png",
        str(tmp_path / "label.png"),
        "--json",
    )
    device = start(
        [
            str(BIN / "device-agent"),
            "--state-dir",
            str(state),
            "pair",
            "--advertise",
            "--timeout",
            "60",
            *LOOPBACK,
        ]
    )
    del label  # the reset made a new code: the user scans the new label instead
    user = start(
        [
            *user_cmd(port, pin, pw),
            "add",
            "--qr",
            str(tmp_path / "label.png"),
            "--timeout",
            "60",
            *LOOPBACK,
            "--json",
        ]
    )
    code, out, err = finish(device)
    assert code == 0, err
    assert "paired: this device logs in as alice@localhost/lamp" in out
    ucode, uout, uerr = finish(user)
    assert ucode == 0, uerr
    (row,) = json.loads(uout)
    assert row["ok"] is True and row["name"] == "Desk lamp"


async def test_an_advertising_device_pairs_with_one_client_at_a_time(tmp_path: Path) -> None:
    """HomeKit's Busy: while one user's client is pairing, another is turned away."""
    import asyncio

    from device_agent.lan import PairingGaveUp, PairingLimits, wait_for_user
    from device_agent.setup_state import SetupState
    from pairing.protocol.setup_code import SetupLabel

    SetupState.create(tmp_path, SetupLabel.generate(), name="lamp", resource="lamp")
    lines: list[str] = []
    task = asyncio.create_task(
        wait_for_user(
            tmp_path,
            limits=PairingLimits(deadline=3),
            host="127.0.0.1",
            interfaces=["127.0.0.1"],
            report=lines.append,
        )
    )
    port = 0
    for _ in range(300):
        port = next((int(x.rsplit(" ", 2)[-2]) for x in lines if "on port" in x), 0)
        if port:
            break
        await asyncio.sleep(0.01)
    first_reader, first = await asyncio.open_connection("127.0.0.1", port)
    assert (await first_reader.read(3))[:1] == bytes([FrameType.DEVICE_HELLO])  # a session runs
    reader, second = await asyncio.open_connection("127.0.0.1", port)
    reply = await asyncio.wait_for(reader.read(16), 5)
    assert reply == Frame(FrameType.SETUP_FAILED, bytes([FailureReason.BUSY])).encode()
    first.close()
    second.close()
    with pytest.raises(PairingGaveUp):
        await task
