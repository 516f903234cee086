"""A running device is visible to its owner (issue 10): `device-agent run` sends presence with
the device's name, and the owner's own XMPP client, another resource of the same account,
receives it (RFC 6121 §4.2.2), whichever of the two comes online first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from device_agent.runtime import run
from pairing.protocol.address import ServerAddress
from pairing.xmpp.connection import PairingClient, TrustAnchor, login, logout, make_client
from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.test_device_runtime import enrolled_agent, wait_for_line


class Owner:
    """The account owner's own client (slixmpp, password), recording the presence it gets."""

    def __init__(self, server: RunningServer) -> None:
        self.client: PairingClient = make_client(
            "alice@localhost/laptop",
            server=ServerAddress(server.host, server.port),
            trust=TrustAnchor(fingerprint=server.fingerprint),
            password=PASSWORD,
        )
        self.seen: list[tuple[str, str, str]] = []  # (from, type, status)
        self.client.add_event_handler("presence", self._on_presence)

    def _on_presence(self, presence: Any) -> None:
        self.seen.append((str(presence["from"]), str(presence["type"]), str(presence["status"])))

    async def online(self) -> None:
        await login(self.client)
        self.client.send_presence()

    async def wait_for(self, sender: str, kind: str = "available") -> tuple[str, str, str]:
        for _ in range(500):
            for entry in self.seen:
                if entry[0] == sender and entry[1] == kind:
                    return entry
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} presence from {sender}: {self.seen}")


async def test_the_owner_sees_the_device_come_online_with_its_name(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    store = await enrolled_agent(xmpp_server, tmp_path / "sensor", name="Kitchen sensor")
    owner = Owner(xmpp_server)
    await owner.online()
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run(store.state_dir, report=lines.append, min_delay=0.1, stop=stop))
    await wait_for_line(lines, "online as alice@localhost/sensor")
    _, _, status = await owner.wait_for("alice@localhost/sensor")
    assert status == "Kitchen sensor"
    stop.set()
    await asyncio.wait_for(task, 10)
    await owner.wait_for("alice@localhost/sensor", "unavailable")
    await logout(owner.client)


async def test_an_owner_who_comes_later_sees_the_running_device_with_its_name(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    store = await enrolled_agent(xmpp_server, tmp_path / "sensor", name="Kitchen sensor")
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run(store.state_dir, report=lines.append, min_delay=0.1, stop=stop))
    await wait_for_line(lines, "online as alice@localhost/sensor")
    owner = Owner(xmpp_server)
    await owner.online()
    _, _, status = await owner.wait_for("alice@localhost/sensor")
    assert status == "Kitchen sensor"
    stop.set()
    await asyncio.wait_for(task, 10)
    await logout(owner.client)
