"""A running device is visible to its owner (issue 10): `device-agent run` sends presence with
the device's name, and the owner's own XMPP client, another resource of the same account,
receives it (RFC 6121 §4.2.2), whichever of the two comes online first."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from device_agent.runtime import run
from pairing.protocol.address import ServerAddress
from pairing.xmpp.connection import PairingClient, TrustAnchor, login, logout, make_client
from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.test_device_runtime import enrolled_agent, wait_for_line


class Owner:
    """The account owner's own client (slixmpp, password), recording the presence it gets."""

    def __init__(
        self, server: RunningServer, resource: str = "laptop", plugins: tuple[str, ...] = ()
    ) -> None:
        self.client: PairingClient = make_client(
            f"alice@localhost/{resource}",
            server=ServerAddress(server.host, server.port),
            trust=TrustAnchor(fingerprint=server.fingerprint),
            password=PASSWORD,
            plugins=plugins,
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


async def start_agent(state_dir: Path, stop: asyncio.Event) -> asyncio.Task[None]:
    """`device-agent run` for ``state_dir``, once it reports that it is online."""
    lines: list[str] = []
    task = asyncio.create_task(run(state_dir, report=lines.append, min_delay=0.1, stop=stop))
    await wait_for_line(lines, "online as alice@localhost/sensor")
    return task


async def test_the_owner_sees_the_device_come_online_with_its_name(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    store = await enrolled_agent(xmpp_server, tmp_path / "sensor", name="Kitchen sensor")
    owner = Owner(xmpp_server)
    await owner.online()
    stop = asyncio.Event()
    task = await start_agent(store.state_dir, stop)
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
    stop = asyncio.Event()
    task = await start_agent(store.state_dir, stop)
    owner = Owner(xmpp_server)
    await owner.online()
    _, _, status = await owner.wait_for("alice@localhost/sensor")
    assert status == "Kitchen sensor"
    stop.set()
    await asyncio.wait_for(task, 10)
    await logout(owner.client)


async def ping_server(client: PairingClient) -> None:
    """A round trip: whatever the server sent this client before is read by then."""
    iq = client.make_iq_get(ito="localhost")
    iq.xml.append(ET.Element("{urn:xmpp:ping}ping"))
    await iq.send(timeout=5)


async def test_an_inactive_client_is_spared_the_fleet_s_presence_and_catches_up(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """XEP-0352: a client that says it is inactive gets no presence broadcasts from the
    account's other resources (with thousands of devices on one account, each device coming
    online would otherwise reach all the others: N² stanzas in a reconnect storm). It gets
    the current presence of each when it becomes active, and while inactive it still hears
    that a resource it knew to be available went away. `device-agent run` says inactive."""
    from pairing.protocol.jid import JID
    from pairing.xmpp.connection import CLIENT_STATE, say_inactive

    store = await enrolled_agent(xmpp_server, tmp_path / "sensor", name="Kitchen sensor")
    laptop = Owner(xmpp_server)
    await laptop.online()
    kiosk = Owner(xmpp_server, resource="kiosk", plugins=(CLIENT_STATE,))
    await login(kiosk.client)
    assert say_inactive(kiosk.client)  # the server offered XEP-0352
    kiosk.client.send_presence()
    await laptop.wait_for("alice@localhost/kiosk")  # the active one hears the inactive one
    stop = asyncio.Event()
    task = await start_agent(store.state_dir, stop)
    _, _, status = await laptop.wait_for("alice@localhost/sensor")
    assert status == "Kitchen sensor"
    await ping_server(kiosk.client)
    assert kiosk.seen == []  # neither the laptop's presence nor the device's
    # The agent itself said inactive: the server spares it the others' presence too.
    device_session = xmpp_server.server.sessions.get(JID.parse("alice@localhost/sensor"))
    assert device_session is not None and device_session.csi_known is not None

    kiosk.client.plugin[CLIENT_STATE].send_active()
    _, _, status = await kiosk.wait_for("alice@localhost/sensor")
    assert status == "Kitchen sensor"
    await kiosk.wait_for("alice@localhost/laptop")
    # Inactive again: the device it now knows about goes away, and it hears that.
    assert say_inactive(kiosk.client)
    await ping_server(kiosk.client)
    stop.set()
    await asyncio.wait_for(task, 10)
    await kiosk.wait_for("alice@localhost/sensor", "unavailable")
    await logout(kiosk.client)
    await logout(laptop.client)
