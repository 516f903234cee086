"""Which addresses a window listening on every interface advertises, on a network whose
interfaces this test makes itself (a private network namespace, see tests/support/netns.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pairing.lan.discovery import addresses_to_advertise

pytestmark = pytest.mark.lan


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's `ip` to add interfaces")
def test_every_non_loopback_address_and_loopback_only_when_alone() -> None:
    # Only loopback: devices can reach nothing else, so loopback is what is advertised.
    assert addresses_to_advertise("0.0.0.0", None) == ["127.0.0.1"]
    # Two interfaces (the ends of a veth pair: the kernel here has no dummy interfaces).
    ip("link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
    ip("addr", "add", "192.0.2.7/24", "dev", "lan0")
    ip("addr", "add", "198.51.100.3/24", "dev", "lan1")
    ip("link", "set", "lan0", "up")
    ip("link", "set", "lan1", "up")
    # Then every other IPv4 address, and never loopback, which a device on the LAN cannot dial.
    assert sorted(addresses_to_advertise("0.0.0.0", None)) == ["192.0.2.7", "198.51.100.3"]
