"""`--interface` keeps the pairing port on that interface (issue 10): `pairing listen` and
`device-agent pair --advertise` listened on 0.0.0.0 whatever the user said. Checked with the
addresses the kernel reports for the listening sockets, in the test's own network."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from pairing.lan.codebook import CodeBook
from pairing.lan.window import PairingWindow
from pairing.protocol.pair_messages import DeviceHello, EnrollmentOffer
from tests.integration.test_lan_pairing import LOOPBACK, make_label, user_cmd
from tests.integration.test_lan_windows import Watched, device

pytestmark = pytest.mark.lan


def listening_on(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: TCP_LISTEN
            addresses.add(socket.inet_ntoa(struct.pack("<I", int(address, 16))))
    return addresses


def test_pairing_listen_with_an_interface_listens_only_there(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    window = Watched(
        [
            *user_cmd(port, pin, tmp_path / "pw"),
            "listen",
            "--code",
            "314-15-926",
            "--timeout",
            "30",
            *LOOPBACK,
        ]
    )
    try:
        line = window.wait_for("pairing window")
        window_port = int(line.rsplit(":", 1)[1].split()[0])
        assert listening_on(window_port) == {"127.0.0.1"}
    finally:
        window.proc.terminate()
        window.finish()


def test_an_advertising_device_with_an_interface_listens_only_there(tmp_path: Path) -> None:
    make_label(tmp_path / "lamp", "lamp", "Lamp")
    lamp = Watched(device(tmp_path / "lamp", "--advertise", timeout=30))
    try:
        line = lamp.wait_for("waiting for a user's client")
        lamp_port = int(line.rsplit(" port ", 1)[1].split()[0])
        assert listening_on(lamp_port) == {"127.0.0.1"}
        assert "listening on 127.0.0.1," in line
    finally:
        lamp.proc.terminate()
        lamp.finish()


class NoEnroller:
    async def offer_for(self, hello: DeviceHello) -> EnrollmentOffer:
        raise AssertionError("no device pairs in this test")

    async def register(self, hello: DeviceHello, der: bytes) -> None:
        raise AssertionError("no device pairs in this test")


async def test_a_window_listens_on_its_interfaces_and_on_every_address_only_without() -> None:
    for interfaces, expected in ((["127.0.0.1"], {"127.0.0.1"}), (None, {"0.0.0.0"})):
        opened = asyncio.Event()

        def report(line: str, opened: asyncio.Event = opened) -> None:
            if "open on" in line:
                opened.set()

        window = PairingWindow(
            CodeBook(), NoEnroller(), timeout=30, interfaces=interfaces, report=report
        )
        task = asyncio.create_task(window.run())
        await asyncio.wait_for(opened.wait(), 10)
        assert {address for address, _ in window.bound} == expected
        assert listening_on(window.port) == expected
        window.close()
        await asyncio.wait_for(task, 10)
        assert listening_on(window.port) == set()
