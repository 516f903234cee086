"""DNS-SD over mDNS (zeroconf) for pairing windows: ``_xmpp-dp._tcp.local.``.

TXT: ``v`` (protocol version) and ``w`` (a random window id). Never the user's JID, the
server or any secret: anyone on the LAN can read an advertisement.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import ifaddr
from zeroconf import IPVersion, NonUniqueNameException, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from pairing.errors import PairingError

log = logging.getLogger(__name__)

SERVICE_TYPE = "_xmpp-dp._tcp.local."  # user's pairing windows
DEVICE_SERVICE_TYPE = "_xmpp-dp-dev._tcp.local."  # unpaired devices (HomeKit-style reverse)
TXT_VERSION = "1"


class NameInUse(PairingError):
    """Another process on the network already advertises this window or device."""


@dataclass(frozen=True, slots=True)
class WindowAddress:
    """An advertised endpoint: a window (``window_id``) or a device (its device id)."""

    host: str
    port: int
    window_id: str
    properties: tuple[tuple[str, str], ...] = ()

    def property(self, key: str) -> str:
        return dict(self.properties).get(key, "")


def _zeroconf(interfaces: Sequence[str] | None) -> AsyncZeroconf:
    try:
        if interfaces:
            # Tests pin mDNS to 127.0.0.1 (IPv4 only): that is what works on loopback here.
            return AsyncZeroconf(interfaces=list(interfaces), ip_version=IPVersion.V4Only)
        return AsyncZeroconf()
    except OSError as exc:
        where = ", ".join(interfaces) if interfaces else "this machine's interfaces"
        raise PairingError(f"cannot use mDNS on {where}: {exc.strerror or exc}") from None


def addresses_to_advertise(host: str, interfaces: Sequence[str] | None) -> list[str]:
    """The IPv4 addresses devices should dial: the chosen interfaces, the host, or all."""
    if interfaces:
        return list(interfaces)
    if host not in ("0.0.0.0", ""):  # noqa: S104 - a comparison, not a bind
        return [host]
    found = [
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
    ]
    return found or ["127.0.0.1"]


@asynccontextmanager
async def advertise(
    port: int,
    window_id: str,
    *,
    addresses: Sequence[str],
    interfaces: Sequence[str] | None = None,
    service_type: str = SERVICE_TYPE,
    extra: dict[str, str] | None = None,
) -> AsyncIterator[None]:
    """Announce a window (or a device) while the block runs; withdraw it with real goodbyes."""
    azc = _zeroconf(interfaces)
    info = AsyncServiceInfo(
        service_type,
        f"pairing-{window_id}.{service_type}",
        addresses=[socket.inet_aton(address) for address in addresses],
        port=port,
        properties={"v": TXT_VERSION, "w": window_id, **(extra or {})},
    )
    try:
        try:
            # Both awaits matter: the inner one waits for the announcement to be broadcast.
            await (await azc.async_register_service(info))
        except NonUniqueNameException:
            # RFC 6762 §8.1: probing found the name in use. For a device that means another
            # agent for it is already advertising; for a window, an id collision.
            raise NameInUse(
                f"{info.name} is already advertised on this network by another process"
            ) from None
        try:
            yield
        finally:
            await (await azc.async_unregister_service(info))
    finally:
        await azc.async_close()


async def browse(
    *, interfaces: Sequence[str] | None = None, service_type: str = SERVICE_TYPE
) -> AsyncGenerator[WindowAddress, None]:
    """Windows (or devices) as they appear on the LAN (runs until the consumer stops).

    Close it with ``contextlib.aclosing`` so that zeroconf stops while the loop still runs.
    """
    azc = _zeroconf(interfaces)
    found: asyncio.Queue[str] = asyncio.Queue()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            found.put_nowait(name)

    browser = AsyncServiceBrowser(azc.zeroconf, service_type, handlers=[on_change])
    seen: set[tuple[str, int, str]] = set()
    try:
        while True:
            name = await found.get()
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(azc.zeroconf, 3000):
                continue
            props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            if props.get("v") != TXT_VERSION or not props.get("w"):
                log.info("ignoring a pairing window with version %r", props.get("v"))
                continue
            addresses = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
            if not addresses or info.port is None:
                continue
            key = (addresses[0], info.port, props["w"])
            if key in seen:
                continue
            seen.add(key)
            yield WindowAddress(addresses[0], info.port, props["w"], tuple(sorted(props.items())))
    finally:
        await browser.async_cancel()
        await azc.async_close()
