"""XEP-0352 in the dispatcher, without sockets: which presence an inactive client is sent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from pairing.protocol.jid import JID
from server_ext.app.delivery import Dispatcher
from server_ext.app.handlers import ServerContext
from server_ext.app.router import SessionTable
from server_ext.storage.registry import Registry

ALICE = JID.parse("alice@example.org")
PRESENCE = "{jabber:client}presence"


@dataclass(eq=False)
class Peer:
    """A bound session as the dispatcher sees it, recording what it is sent."""

    jid: JID
    fingerprint: str | None = None
    auth_method: str = "EXTERNAL"
    address: str = "192.0.2.1"
    available: bool = False
    priority: int = 0
    csi_known: set[JID] | None = None
    got: list[tuple[str, str]] = field(default_factory=list)  # (from, type)

    def set_presence(self, available: bool, priority: int) -> None:
        self.available, self.priority = available, priority

    def deliver(self, element: ET.Element) -> None:
        if element.tag == PRESENCE:
            self.got.append((element.get("from", ""), element.get("type", "available")))

    def terminate(self, condition: str, text: str, application: ET.Element | None = None) -> None:
        raise AssertionError("not expected")


class Account:
    def __init__(self, tmp_path: Path) -> None:
        self.sessions = SessionTable()
        registry = Registry.open(tmp_path / "registry.sqlite3")
        self.dispatcher = Dispatcher(ServerContext("example.org", registry, self.sessions), {})

    def bind(self, resource: str) -> Peer:
        peer = Peer(ALICE.with_resource(resource))
        self.sessions.add(peer)
        return peer

    def presence(self, peer: Peer, kind: str | None = None) -> None:
        element = ET.Element(PRESENCE, {"from": str(peer.jid)})
        if kind:
            element.set("type", kind)
        self.dispatcher.dispatch(peer, element)


def test_a_device_inactive_from_the_start_hears_nothing_of_its_siblings(tmp_path: Path) -> None:
    account = Account(tmp_path)
    phone = account.bind("phone")
    account.presence(phone)
    devices = [account.bind(f"d{i}") for i in range(5)]
    for device in devices:
        account.dispatcher.client_state(device, active=False)
        account.presence(device)
    assert all(device.got == [] for device in devices)  # not N², not even N
    assert [sender for sender, _ in phone.got] == [str(d.jid) for d in devices]
    account.presence(devices[0], "unavailable")
    assert devices[1].got == []  # it never learnt d0 was there
    assert phone.got[-1] == (str(devices[0].jid), "unavailable")


def test_an_inactive_client_hears_what_it_knew_go_away_and_catches_up_when_active(
    tmp_path: Path,
) -> None:
    account = Account(tmp_path)
    kiosk, cam, bot = account.bind("kiosk"), account.bind("cam"), account.bind("bot")
    account.presence(kiosk)
    account.presence(cam)
    kiosk.got.clear()
    account.dispatcher.client_state(kiosk, active=False)
    account.presence(bot)  # came while inactive: held back
    account.presence(cam)  # a change of one it knows: held back, the latest follows later
    assert kiosk.got == []
    account.presence(cam, "unavailable")  # one it knew went away: told, once
    account.presence(bot, "unavailable")  # one it never knew: not told
    account.presence(bot)
    assert kiosk.got == [(str(cam.jid), "unavailable")]
    account.dispatcher.went_offline(bot)  # the session ended without a word: the same rule
    account.sessions.remove(bot)
    assert kiosk.got == [(str(cam.jid), "unavailable")]
    account.presence(cam)
    kiosk.got.clear()
    account.dispatcher.client_state(kiosk, active=True)
    assert kiosk.got == [(str(cam.jid), "available")]  # the current presence of each
    account.presence(cam, "unavailable")
    assert kiosk.got[-1] == (str(cam.jid), "unavailable")  # active: everything again
