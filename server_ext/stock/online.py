"""Who is online on a stock server, as the app layer's handlers expect to see it.

The ad-hoc handlers (``server_ext.app.adhoc``) read live sessions from a
:class:`~server_ext.app.router.SessionTable`: which sessions used a device's certificates,
which resources an account has, and they end sessions through them. For a stock server the
table is filled from :meth:`StockServer.online` for one request; ending a session only
records it, and the component face carries it out on the stock server afterwards.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

from pairing.protocol.jid import JID
from server_ext.app.router import SessionTable
from server_ext.model import DeviceState
from server_ext.storage.registry import Registry


@dataclass
class OnlineSession:
    """A session held by the stock server; nothing is delivered through it."""

    jid: JID
    fingerprint: str | None
    ended: list[tuple[JID, str]] = field(repr=False, default_factory=list)
    available: bool = True
    priority: int = 0
    csi_known: set[JID] | None = None  # never sent presence from here (XEP-0352 is moot)

    def deliver(self, element: ET.Element) -> None:
        """Stanzas between users are the stock server's business, never routed here."""

    def terminate(self, condition: str, text: str, application: ET.Element | None = None) -> None:
        self.ended.append((self.jid, text))


def online_table(
    registry: Registry,
    online: Mapping[JID, str | None],
    ended: list[tuple[JID, str]] | None = None,
) -> SessionTable:
    """A :class:`SessionTable` of ``online`` (full JID → certificate SHA-256 or None).

    ejabberd does not say which certificate a session used; a session whose full JID a live
    device's certificate names is then counted as that device's current certificate (one live
    device per full JID is a registry rule), so device lists can say who is online.
    """
    table = SessionTable()
    sink = ended if ended is not None else []
    for jid, fingerprint in online.items():
        if fingerprint is None:
            fingerprint = _attributed(registry, jid)
        table.add(OnlineSession(jid, fingerprint, sink))
    return table


def _attributed(registry: Registry, jid: JID) -> str | None:
    for device in registry.devices.for_jid(jid):
        if device.state is DeviceState.REVOKED:
            continue
        current = registry.devices.current(device.id)
        if current is not None:
            return current.fingerprint
    return None
